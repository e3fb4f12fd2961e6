"""Run the real qemu-ga on this host, in unix-listen mode, with dangerous RPCs blocked.

Used by ``gagent demo``, the test suite and the benchmarks: a real peer that
needs no VM.  Everything that could change the host is blocked: freezing the
host's own filesystems would hang it, and shutdown/suspend/exec/set-* act on
the machine qemu-ga runs on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import AgentUnavailable

__all__ = ["BLOCKED_RPCS", "LocalAgent", "find_qemu_ga", "local_qemu_ga", "start_local_qemu_ga"]

#: Never allowed on a qemu-ga that runs on the host itself.
BLOCKED_RPCS = (
    "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list",
    "guest-fstrim",
    "guest-shutdown",
    "guest-suspend-disk",
    "guest-suspend-ram",
    "guest-suspend-hybrid",
    "guest-set-time",
    "guest-exec",
    "guest-set-user-password",
    "guest-set-vcpus",
    "guest-set-memory-blocks",
    "guest-ssh-add-authorized-keys",
    "guest-ssh-remove-authorized-keys",
)


def find_qemu_ga() -> str:
    """Path of the qemu-ga binary (Debian installs it in /usr/sbin, often off PATH)."""
    found = shutil.which("qemu-ga") or shutil.which("qemu-ga", path="/usr/sbin:/usr/bin:/sbin")
    if not found:
        raise AgentUnavailable("qemu-ga is not installed", hint="apt-get install qemu-guest-agent")
    return found


@dataclass
class LocalAgent:
    """A qemu-ga process listening on ``socket_path``; stop it with :meth:`stop`."""

    socket_path: Path
    state_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_local_qemu_ga(
    workdir: str | os.PathLike[str],
    *,
    name: str = "qga",
    blocked: tuple[str, ...] = BLOCKED_RPCS,
    ready_timeout: float = 10.0,
) -> LocalAgent:
    """Start qemu-ga with its socket and state dir under ``workdir``; wait until it listens."""
    workdir = Path(workdir)
    socket_path = workdir / f"{name}.sock"
    state_dir = workdir / f"{name}.state"
    state_dir.mkdir(parents=True, exist_ok=True)
    missing = set(BLOCKED_RPCS) - set(blocked)
    if missing:
        raise ValueError(f"refusing to run qemu-ga on the host with {sorted(missing)} allowed")
    if socket_path.exists():
        socket_path.unlink()
    argv = [
        find_qemu_ga(),
        "-m", "unix-listen",
        "-p", str(socket_path),
        "-t", str(state_dir),
        "-b", ",".join(blocked),
    ]  # fmt: skip
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall qemu-ga
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
        )
    agent = LocalAgent(socket_path, state_dir, process)
    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            err = log_path.read_text(errors="replace")
            raise AgentUnavailable(f"qemu-ga exited with {process.returncode}: {err.strip()}")
        if _listening(socket_path):
            return agent
        if time.monotonic() > deadline:
            agent.stop()
            raise AgentUnavailable(
                f"qemu-ga did not listen on {socket_path} within {ready_timeout}s"
            )
        time.sleep(0.01)


def _listening(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextmanager
def local_qemu_ga(workdir: str | os.PathLike[str], **kwargs: object) -> Iterator[LocalAgent]:
    agent = start_local_qemu_ga(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield agent
    finally:
        agent.stop()
