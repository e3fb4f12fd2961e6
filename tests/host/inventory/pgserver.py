"""A private, real PostgreSQL server for the tests (Debian's postgresql package).

``initdb`` + ``postgres`` from /usr/lib/postgresql/*/bin (or ``pg_config
--bindir``), in a fresh temporary directory, listening on a unix socket in that
directory only (``listen_addresses=''``: no TCP at all), trust authentication.
initdb refuses to run as root, so as root the server runs as the ``postgres``
user (created by the package).  Stopped by PID (SIGINT: fast shutdown, then
SIGKILL if it lingers); the directory is removed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count

__all__ = ["PgServer", "find_pg_bindir", "running_pg_server"]

_databases = count(1)


def find_pg_bindir() -> str | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    for bindir in candidates:
        if os.path.exists(os.path.join(bindir, "initdb")) and os.path.exists(
            os.path.join(bindir, "postgres")
        ):
            return bindir
    return None


@dataclass
class PgServer:
    socket_dir: str
    process: subprocess.Popen[bytes]
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"gagent_test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


@contextmanager
def running_pg_server(bindir: str) -> Iterator[PgServer]:
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else pwd.getpwuid(os.geteuid()).pw_name
    workdir = tempfile.mkdtemp(prefix="gagent-pg-")  # short: the socket path must fit 107 bytes
    data = os.path.join(workdir, "data")
    run_as: dict[str, object] = {}
    if as_root:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid}
    process = None
    try:
        subprocess.run(
            [
                os.path.join(bindir, "initdb"),
                "-D",
                data,
                "-U",
                user,
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            cwd=workdir,
            timeout=120,
            **run_as,
        )
        log = open(os.path.join(workdir, "server.log"), "wb")
        process = subprocess.Popen(
            [
                os.path.join(bindir, "postgres"),
                "-D",
                data,
                "-k",
                workdir,
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            **run_as,
        )
        log.close()
        server = PgServer(workdir, process, user)
        _wait_ready(server, os.path.join(workdir, "server.log"))
        yield server
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(server: PgServer, log_path: str, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise RuntimeError(f"postgres exited at start:\n{f.read()}")
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # fast shutdown: roll back, disconnect, exit
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
