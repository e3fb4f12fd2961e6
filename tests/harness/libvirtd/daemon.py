"""A real, private libvirt daemon (QEMU driver) for the test suite and CI.

Usage::

    from tests.harness.libvirtd.daemon import running_libvirtd

    with running_libvirtd(tmp_path / "libvirtd") as daemon:
        conn = libvirt.open(daemon.uri)   # qemu:///system?socket=<workdir>/run/libvirt-sock
        ...

or by hand: ``python tests/harness/libvirtd/daemon.py WORKDIR`` prints the URI
and keeps the daemon up until Ctrl-C (or SIGTERM).

Stdlib only.  Must run as root (it mounts things in a private namespace).

Why a private namespace and not the ``libvirt-daemon-system`` package
--------------------------------------------------------------------
Debian's ``libvirt-daemon`` (without ``libvirt-daemon-system``) cannot start
the privileged QEMU driver: the driver resolves its compiled-in default user
``libvirt-qemu`` *before* it reads qemu.conf, and that user is only created by
the postinst of ``libvirt-daemon-system``.  Installing that package was
rejected because:

* it modifies the host (adds users/groups, conffiles under /etc/libvirt, the
  ``default`` NAT network and nwfilters) and pulls in polkitd, iptables or
  firewalld, dnsmasq, logrotate and an init integration package;
* on a machine without systemd it resolves to ``libvirt-daemon-system-sysv``,
  whose postinst runs ``invoke-rc.d libvirtd start`` and ``virtlogd start``:
  whether a system daemon is left running after ``apt-get install`` depends on
  the policy-rc.d/runlevel situation of the machine, i.e. it is not
  deterministic across developer machines and CI;
* even with the user present, a privileged libvirtd hard-codes /run/libvirt,
  /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt
  (there is no qemu.conf knob for them), so two test runs, a crashed previous
  run or a system libvirtd would still collide there.

So the daemon runs under ``unshare --mount --pid --fork --mount-proc``:

* mount namespace: a fresh tmpfs on /run, and bind mounts of per-workdir
  directories on /run/libvirt, /etc/libvirt, /var/lib/libvirt,
  /var/log/libvirt and /var/cache/libvirt; copies of /etc/passwd and
  /etc/group with ``libvirt-qemu`` added are bind-mounted over the originals.
  Nothing in the host's /etc is modified.  The only host change is that the
  *empty* mount points /var/lib/libvirt, /var/cache/libvirt and
  /var/log/libvirt (and /etc/libvirt) are created if missing;
* /dev/kvm (if present) is covered by an empty file on a read-only bind
  mount, so libvirt considers KVM unusable and neither its capability probe
  nor any guest touches KVM: domains must be ``type='qemu'`` (TCG).  (With
  /dev/null there, libvirt thinks KVM usable, throws its TCG-only capability
  cache away on every lookup and re-probes QEMU: +6 s per define/start);
* PID namespace: a small stdlib reaper (this file, ``--_ns-init``) is PID 1,
  so the double-forked QEMU processes are reaped (libvirtd as PID 1 leaves
  zombies and then waits 40 s per capability probe for them to "die"), and
  when PID 1 exits the kernel kills every QEMU the daemon started.  The
  ``unshare`` process gets PR_SET_PDEATHSIG=SIGKILL and uses
  ``--kill-child=SIGKILL``, so even a SIGKILLed test runner leaves no daemon
  and no QEMU behind.  Caveat: PDEATHSIG fires when the *thread* that started
  the daemon exits; enter ``running_libvirtd`` from a thread that outlives it
  (pytest fixtures run on the main thread), or pass ``kill_on_parent_exit=False``.

Configuration: qemu.conf runs QEMU as root with no security driver, no
cgroups, no per-domain namespaces and ``stdio_handler = "file"`` (so no
virtlogd); the lock manager is the default "nop" (no virtlockd).  libvirtd.conf
puts its sockets in ``<workdir>/run`` with ``auth_unix_rw = "none"``, no TCP,
and logs to ``<workdir>/libvirtd.log``.  The daemon is started with explicit
``--config`` (which also puts the workdir in its command line, so a leftover
daemon can be recognised) and ``--pid-file``.

Teardown is by PID only: SIGTERM to libvirtd, the reaper then SIGTERMs what is
left (QEMU) and exits, which makes the kernel kill anything remaining; if that
takes too long the ``unshare`` process is SIGKILLed.  ``<workdir>/daemon.pid``
records the PIDs (with their start times, against PID reuse) so a run that
finds a leftover daemon of a previous run in the same workdir kills it first.

Workdir layout::

    run/libvirt-sock, run/libvirt-sock-ro, run/libvirt-admin-sock
    run/libvirtd.pid    libvirtd's own pidfile (PID inside the namespace)
    libvirtd.log        libvirtd's log (log_level, default 3 = warnings)
    daemon.out          stdout/stderr of unshare, the reaper and libvirtd
    daemon.pid          JSON: host PIDs + start times of our processes
    fs/...              the private /etc/libvirt, /run/libvirt, /var/... trees
                        (domain logs: fs/var/log/libvirt/qemu/<name>.log)
    cache/              /var/cache/libvirt (QEMU capability cache; kept
                        across runs in the same workdir, see ``cache_dir``)

Timings measured on a 2-core Debian 12 VM (libvirt 9.0, QEMU 7.2): socket
after ~0.2 s; the first connection succeeds after ~1.2-1.8 s, as it waits for
the QEMU capability probe (TCG only, qemu-system-i386 and -x86_64); with a
warm ``cache_dir`` ~0.3-0.5 s.  Domain define ~5 ms, start ~0.3-0.5 s, destroy
~0.2 s, daemon stop ~0.15 s even with a domain running.

Expected noise in libvirtd.log: dnsmasq not found, no D-Bus system bus,
dmidecode / DMI / CPUID / TSC errors, "At least one cgroup controller is
required" and the "high-privileges" taint warning.  None of them matters.

Packages (Debian 12), none of which starts anything or adds a user on
install: ``apt-get install --no-install-recommends libvirt-daemon
libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86`` (unshare comes
from util-linux; virsh from libvirt-clients is used for the readiness check,
with libvirt-python as a fallback).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LibvirtDaemon", "LibvirtdError", "running_libvirtd"]

LIBVIRTD = "/usr/sbin/libvirtd"
VIRSH = "/usr/bin/virsh"
QEMU_DRIVER_GLOB = "/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"
SOCKET_NAME = "libvirt-sock"
_LONGEST_SOCKET_NAME = "libvirt-admin-sock"
_UNIX_PATH_MAX = 107  # sizeof(sun_path) - 1
_SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PR_SET_PDEATHSIG = 1

# Host directories that get a private, per-workdir copy inside the namespace.
_PRIVATE_DIRS = ("etc/libvirt", "var/lib/libvirt", "var/log/libvirt")
_CACHE_DIR = "var/cache/libvirt"
# A workdir below one of these would be hidden by our own mounts.
_SHADOWED = (
    "/run",
    "/var/run",
    "/etc/libvirt",
    "/var/lib/libvirt",
    "/var/log/libvirt",
    "/var/cache/libvirt",
)

_QEMU_CONF = """\
# Generated by tests/harness/libvirtd/daemon.py
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"""

_LIBVIRTD_CONF = """\
# Generated by tests/harness/libvirtd/daemon.py
listen_tls = 0
listen_tcp = 0
unix_sock_dir = "{sock_dir}"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_level = {log_level}
log_outputs = "{log_level}:file:{log_path}"
"""


class LibvirtdError(RuntimeError):
    """The private libvirtd could not be started, or died."""


# --------------------------------------------------------------------------
# /proc helpers (no CONFIG_PROC_CHILDREN on some kernels: scan /proc)


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(comm, state, ppid, starttime) of a host PID, or None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    lpar, rpar = data.find("("), data.rfind(")")
    rest = data[rpar + 2 :].split()
    return data[lpar + 1 : rpar], rest[0], int(rest[1]), int(rest[19])


def _start_time(pid: int) -> int | None:
    st = _proc_stat(pid)
    return st[3] if st else None


def _alive(pid: int, start_time: int | None = None) -> bool:
    """True if PID exists, is not a zombie and (if given) has that start time."""
    st = _proc_stat(pid)
    if st is None or st[1] in ("Z", "X", "x"):
        return False
    return start_time is None or st[3] == start_time


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _children(ppid: int) -> list[tuple[int, str]]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st and st[2] == ppid and st[1] not in ("Z", "X"):
                out.append((int(entry.name), st[0]))
    return out


def _descendants(pid: int) -> list[tuple[int, str]]:
    """All live descendants (host PIDs) of pid, breadth first."""
    table: dict[int, list[tuple[int, str]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st and st[1] not in ("Z", "X"):
                table.setdefault(st[2], []).append((int(entry.name), st[0]))
    out, todo = [], [pid]
    while todo:
        for child in table.get(todo.pop(0), []):
            out.append(child)
            todo.append(child[0])
    return out


def _wait_gone(
    pids: Sequence[tuple[int, int | None]],
    timeout: float,
    reap: subprocess.Popen | None = None,
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if reap is not None:
            reap.poll()
        if not any(_alive(p, s) for p, s in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _kill(pid: int, sig: int, start_time: int | None = None) -> None:
    if _alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# --------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class _Layout:
    workdir: Path
    sock_dir: Path
    cache_dir: Path

    @property
    def fs(self) -> Path:
        return self.workdir / "fs"

    @property
    def etc(self) -> Path:
        return self.fs / "etc"

    @property
    def libvirtd_conf(self) -> Path:
        return self.fs / "etc/libvirt/libvirtd.conf"

    @property
    def run_libvirt(self) -> Path:
        return self.fs / "run/libvirt"

    @property
    def log_path(self) -> Path:
        return self.workdir / "libvirtd.log"

    @property
    def out_path(self) -> Path:
        return self.workdir / "daemon.out"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "daemon.pid"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.sock_dir / SOCKET_NAME}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "workdir": str(self.workdir),
                "sock_dir": str(self.sock_dir),
                "cache_dir": str(self.cache_dir),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> _Layout:
        d = json.loads(text)
        return cls(Path(d["workdir"]), Path(d["sock_dir"]), Path(d["cache_dir"]))


def _under(path: Path, prefix: str) -> bool:
    return path == Path(prefix) or Path(prefix) in path.parents


def _make_layout(workdir: Path, socket_dir: Path | None, cache_dir: Path | None) -> _Layout:
    workdir = Path(os.path.realpath(workdir))
    sock_dir = Path(os.path.realpath(socket_dir)) if socket_dir else workdir / "run"
    cache = Path(os.path.realpath(cache_dir)) if cache_dir else workdir / "cache"
    for p in (workdir, sock_dir, cache):
        for prefix in _SHADOWED:
            if _under(p, prefix):
                raise ValueError(
                    f"{p} is below {prefix}, which the private "
                    "namespace hides; use e.g. a temporary directory"
                )
    longest = sock_dir / _LONGEST_SOCKET_NAME
    if len(os.fsencode(longest)) > _UNIX_PATH_MAX:
        raise ValueError(
            f"socket path {longest} is longer than {_UNIX_PATH_MAX} "
            "bytes (AF_UNIX limit): use a shorter workdir or socket_dir"
        )
    return _Layout(workdir, sock_dir, cache)


def _passwd_with_qemu_user(passwd: str, group: str) -> tuple[str, str]:
    """Add the libvirt-qemu user/group (uid/gid 64055 as Debian does, if free)."""
    users = [line.split(":") for line in passwd.splitlines() if line.count(":") >= 6]
    groups = [line.split(":") for line in group.splitlines() if line.count(":") >= 3]
    used_uids = {int(u[2]) for u in users if u[2].isdigit()}
    used_gids = {int(g[2]) for g in groups if g[2].isdigit()}

    def free(used: set[int]) -> int:
        n = 64055
        while n in used:
            n -= 1
        return n

    if not passwd.endswith("\n"):
        passwd += "\n"
    if not group.endswith("\n"):
        group += "\n"
    gnames = {g[0]: g for g in groups}
    if "libvirt-qemu" in gnames:
        gid = int(gnames["libvirt-qemu"][2])
    else:
        gid = free(used_gids)
        used_gids.add(gid)
        group += f"libvirt-qemu:x:{gid}:libvirt-qemu\n"
    if "kvm" not in gnames:
        group += f"kvm:x:{free(used_gids)}:\n"
    if not any(u[0] == "libvirt-qemu" for u in users):
        uid = free(used_uids)
        passwd += f"libvirt-qemu:x:{uid}:{gid}:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n"
    return passwd, group


def _prepare_tree(layout: _Layout, *, fresh: bool, log_level: int) -> None:
    layout.workdir.mkdir(parents=True, exist_ok=True)
    if fresh and layout.fs.exists():
        shutil.rmtree(layout.fs)
    # Runtime state of a previous daemon must never be picked up again.
    if layout.run_libvirt.exists():
        shutil.rmtree(layout.run_libvirt)
    for sub in (*_PRIVATE_DIRS, "run/libvirt"):
        (layout.fs / sub).mkdir(parents=True, exist_ok=True)
    layout.cache_dir.mkdir(parents=True, exist_ok=True)
    layout.sock_dir.mkdir(parents=True, exist_ok=True)
    for stale in layout.sock_dir.glob("libvirt*-sock*"):
        stale.unlink()
    for stale in (layout.sock_dir / "libvirtd.pid",):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    passwd, group = _passwd_with_qemu_user(
        Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
    )
    (layout.etc / "passwd").write_text(passwd)
    (layout.etc / "group").write_text(group)
    (layout.fs / "dev-kvm-hidden").write_bytes(b"")
    (layout.fs / "etc/libvirt/qemu.conf").write_text(_QEMU_CONF)
    layout.libvirtd_conf.write_text(
        _LIBVIRTD_CONF.format(
            sock_dir=layout.sock_dir, log_level=log_level, log_path=layout.log_path
        )
    )
    # Empty mount points on the host (standard libvirt locations).
    for sub in (*_PRIVATE_DIRS, _CACHE_DIR):
        Path("/", sub).mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        layout.log_path.unlink()


def _check_host() -> None:
    if os.geteuid() != 0:
        raise LibvirtdError("the private libvirtd needs root (mount namespaces)")
    missing = [p for p in (LIBVIRTD,) if not os.access(p, os.X_OK)]
    if not shutil.which("unshare", path=_SYS_PATH):
        missing.append("unshare (util-linux)")
    import glob

    if not glob.glob(QEMU_DRIVER_GLOB):
        missing.append("libvirt QEMU driver (libvirt-daemon-driver-qemu)")
    if missing:
        raise LibvirtdError(
            "missing: "
            + ", ".join(missing)
            + " (apt-get install libvirt-daemon libvirt-daemon-driver-qemu "
            "libvirt-clients qemu-system-x86)"
        )


# --------------------------------------------------------------------------
# Stale daemons


def _write_pidfile(layout: _Layout, procs: Mapping[str, int]) -> None:
    data = {name: [pid, _start_time(pid)] for name, pid in procs.items()}
    tmp = layout.pidfile.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(layout.pidfile)


def _kill_stale(layout: _Layout) -> list[int]:
    """Kill (SIGKILL, by PID) what a previous run left in this workdir."""
    victims: list[tuple[int, int | None]] = []
    try:
        recorded = json.loads(layout.pidfile.read_text())
    except (FileNotFoundError, ValueError):
        recorded = {}
    # PID 1 of the namespace first: its death makes the kernel kill the rest.
    for name in ("init", "libvirtd", "supervisor"):
        pid, start = (recorded.get(name) or [None, None])[:2]
        if isinstance(pid, int) and start is not None and _alive(pid, start):
            victims.append((pid, start))
    # Belt and braces: a libvirtd whose command line names our config file.
    conf = str(layout.libvirtd_conf)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            pid = int(entry.name)
            argv = _cmdline(pid)
            if argv and os.path.basename(argv[0]) == "libvirtd" and conf in argv:
                victims.append((pid, _start_time(pid)))
    victims = list(dict.fromkeys(victims))
    for pid, start in victims:
        _kill(pid, signal.SIGKILL, start)
    if victims and not _wait_gone(victims, 15):
        raise LibvirtdError(f"could not kill leftover daemon processes {victims}")
    with contextlib.suppress(FileNotFoundError):
        layout.pidfile.unlink()
    return [p for p, _ in victims]


# --------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class LibvirtDaemon:
    """A running private libvirtd.

    ``pid`` is libvirtd's PID as seen from the host; ``supervisor_pid`` is the
    ``unshare`` process whose SIGKILL tears everything down (daemon and
    QEMUs).  ``timings`` holds seconds from spawn to ``socket`` and to
    ``ready`` (first successful connection).
    """

    uri: str
    pid: int
    log_path: Path
    workdir: Path
    supervisor_pid: int = 0
    init_pid: int = 0
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)

    @property
    def socket_path(self) -> Path:
        return Path(self.uri.split("socket=", 1)[1])

    @property
    def domain_log_dir(self) -> Path:
        """Where libvirt writes <domain>.log (QEMU command line, stderr)."""
        return self.workdir / "fs/var/log/libvirt/qemu"

    @property
    def run_dir(self) -> Path:
        """The daemon's private /run/libvirt (qemu/<domain>.pid, .xml, ...)."""
        return self.workdir / "fs/run/libvirt"

    def is_alive(self) -> bool:
        return _alive(self.pid)

    def processes(self) -> list[tuple[int, str]]:
        """(host PID, comm) of every live process of this daemon, QEMUs included."""
        root = self.supervisor_pid or self.pid
        own = [(root, (_proc_stat(root) or ("?",))[0])] if _alive(root) else []
        return own + _descendants(root)

    @contextlib.contextmanager
    def stopped(self, most: float = 90.0) -> Iterator[None]:
        """libvirtd SIGSTOPped (a hung daemon) for the block, SIGCONTed after it, and
        after ``most`` seconds whatever the block is doing: a test that hangs while
        the daemon is stopped must not take the daemon, and the whole run, with it."""
        watchdog = threading.Timer(most, _kill, (self.pid, signal.SIGCONT, _start_time(self.pid)))
        watchdog.daemon = True
        os.kill(self.pid, signal.SIGSTOP)
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()
            os.kill(self.pid, signal.SIGCONT)

    def diagnosis(self) -> str:
        """What each process of the daemon is doing (state, kernel wait channel), and the
        tails of its logs: the evidence when libvirtd stops answering."""
        lines = []
        for pid, comm in self.processes():
            st = _proc_stat(pid)
            try:
                wchan = Path(f"/proc/{pid}/wchan").read_text().strip() or "-"
            except OSError:
                wchan = "?"
            lines.append(f"{pid} {comm} state={st[1] if st else 'gone'} wchan={wchan}")
        return "\n".join(lines) + "\n" + _tails(self.workdir)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Block until a client connection succeeds; return seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = ""
        while True:
            if not _alive(self.pid):
                raise LibvirtdError("libvirtd died during start-up\n" + _tails(self.workdir))
            if self.socket_path.exists():
                ok, last = _probe_connection(self.uri, max(1.0, deadline - time.monotonic()))
                if ok:
                    return time.monotonic() - t0
            if time.monotonic() >= deadline:
                raise LibvirtdError(
                    f"libvirtd not ready after {timeout:.0f}s: {last}\n" + _tails(self.workdir)
                )
            time.sleep(0.1)


def _probe_connection(uri: str, timeout: float) -> tuple[bool, str]:
    if os.access(VIRSH, os.X_OK):
        try:
            r = subprocess.run(
                [VIRSH, "-c", uri, "version"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return False, "virsh version timed out"
        return r.returncode == 0, (r.stderr or r.stdout).strip()
    try:  # no libvirt-clients: fall back to libvirt-python if importable
        import libvirt  # type: ignore[import-not-found]
    except ImportError:
        raise LibvirtdError("neither virsh (libvirt-clients) nor libvirt-python found") from None
    try:
        libvirt.open(uri).close()
        return True, ""
    except libvirt.libvirtError as exc:
        return False, str(exc)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(missing)"


def _tails(workdir: Path) -> str:
    return (
        f"--- {workdir / 'libvirtd.log'} ---\n{_tail(workdir / 'libvirtd.log')}\n"
        f"--- {workdir / 'daemon.out'} ---\n{_tail(workdir / 'daemon.out')}"
    )


def _spawn(layout: _Layout, kill_on_parent_exit: bool) -> subprocess.Popen:
    unshare = shutil.which("unshare", path=_SYS_PATH)
    me = os.path.abspath(__file__)
    argv = [
        unshare,
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "--kill-child=SIGKILL",
        sys.executable,
        "-I",
        me,
        "--_ns-init",
        layout.to_json(),
    ]
    if kill_on_parent_exit:
        argv = [sys.executable, "-I", me, "--_launch", str(os.getpid()), "--", *argv]
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":" + _SYS_PATH if env.get("PATH") else _SYS_PATH
    with open(layout.out_path, "wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _find_pids(proc: subprocess.Popen, layout: _Layout, timeout: float) -> tuple[int, int]:
    """Host PIDs of the namespace's PID 1 (our reaper) and of libvirtd."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            if "root filesystem propagation" in _tail(layout.out_path):
                raise LibvirtdError(
                    "unshare cannot make / private: / is not a mount point "
                    "(a chroot?); bind-mount the root onto itself first\n" + _tails(layout.workdir)
                )
            raise LibvirtdError(
                f"namespace launcher exited with {proc.returncode}\n" + _tails(layout.workdir)
            )
        init = [p for p, _ in _children(proc.pid)]
        if init:
            lv = [p for p, comm in _children(init[0]) if comm == "libvirtd"]
            if lv:
                return init[0], lv[0]
        if time.monotonic() >= deadline:
            raise LibvirtdError("libvirtd process did not appear\n" + _tails(layout.workdir))
        time.sleep(0.02)


def _stop(proc: subprocess.Popen, daemon_pid: int, init_pid: int, timeout: float = 20.0) -> None:
    """Stop by PID.

    SIGTERM to libvirtd; the namespace's PID 1 then SIGTERMs what is left
    (QEMUs) and exits, which makes the kernel kill the rest.  If that takes
    longer than ``timeout``: SIGKILL to PID 1 of the namespace, then to unshare.
    """
    known = [(p, _start_time(p)) for p in (daemon_pid, init_pid, proc.pid) if p]
    if proc.poll() is None:
        if daemon_pid and _alive(daemon_pid):
            _kill(daemon_pid, signal.SIGTERM)
        elif init_pid and _alive(init_pid):
            _kill(init_pid, signal.SIGTERM)
        else:
            timeout = 0
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid, start in known:
                if pid != daemon_pid:  # PID 1 of the namespace first, then unshare
                    _kill(pid, signal.SIGKILL, start)
            proc.wait(10)
    _wait_gone(known, 10, reap=proc)


@contextlib.contextmanager
def running_libvirtd(
    workdir: Path,
    *,
    start_timeout: float = 60,
    log_level: int = 3,
    fresh: bool = True,
    cache_dir: Path | None = None,
    socket_dir: Path | None = None,
    kill_on_parent_exit: bool = True,
) -> Iterator[LibvirtDaemon]:
    """Start a private libvirtd in ``workdir``; yield once a client can connect.

    ``fresh`` wipes persistent libvirt state (domain definitions) left in the
    workdir; runtime state is always wiped.  ``cache_dir`` (default
    ``<workdir>/cache``) holds the QEMU capability cache: sharing one between
    runs saves the capability probe on the first connection.  ``socket_dir``
    (default ``<workdir>/run``) must give socket paths under 108 bytes.
    """
    _check_host()
    layout = _make_layout(Path(workdir), socket_dir, cache_dir)
    _kill_stale(layout)
    _prepare_tree(layout, fresh=fresh, log_level=log_level)
    t0 = time.monotonic()
    proc = _spawn(layout, kill_on_parent_exit)
    init_pid = daemon_pid = 0
    timings: dict[str, float] = {}
    try:
        _write_pidfile(layout, {"supervisor": proc.pid})
        init_pid, daemon_pid = _find_pids(proc, layout, min(start_timeout, 15))
        _write_pidfile(layout, {"supervisor": proc.pid, "init": init_pid, "libvirtd": daemon_pid})
        daemon = LibvirtDaemon(
            uri=layout.uri,
            pid=daemon_pid,
            log_path=layout.log_path,
            workdir=layout.workdir,
            supervisor_pid=proc.pid,
            init_pid=init_pid,
            timings=timings,
        )
        deadline = t0 + start_timeout
        while not daemon.socket_path.exists():
            if not _alive(daemon_pid):
                raise LibvirtdError("libvirtd exited during start-up\n" + _tails(layout.workdir))
            if time.monotonic() > deadline:
                raise LibvirtdError("libvirtd socket did not appear\n" + _tails(layout.workdir))
            time.sleep(0.02)
        timings["socket"] = time.monotonic() - t0
        daemon.wait_ready(max(1.0, deadline - time.monotonic()))
        timings["ready"] = time.monotonic() - t0
        yield daemon
    finally:
        t1 = time.monotonic()
        _stop(proc, daemon_pid, init_pid)
        timings["stop"] = time.monotonic() - t1
        with contextlib.suppress(FileNotFoundError):
            layout.pidfile.unlink()


# --------------------------------------------------------------------------
# Helper process entry points (run as separate interpreters)


def _launch_main(argv: list[str]) -> int:
    """--_launch PARENT_PID -- CMD...: exec CMD, dying with our parent."""
    parent = int(argv[0])
    cmd = argv[argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return 1
    if os.getppid() != parent:  # parent already gone
        return 1
    os.execv(cmd[0], cmd)
    return 1  # not reached


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT = 1, 2, 4, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18


def _mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2) through ctypes (no mount(8): it would touch the host's /run/mount)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def enc(v: str | None) -> bytes | None:
        return None if v is None else os.fsencode(v)

    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind(source: str, target: str) -> None:
    _mount(source, target, None, _MS_BIND)


def _ns_init_main(argv: list[str]) -> int:
    """--_ns-init LAYOUT_JSON: PID 1 of the namespace; mount, run libvirtd, reap."""
    layout = _Layout.from_json(argv[0])
    os.environ["PATH"] = _SYS_PATH
    fs = layout.fs
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # unshare did it; be sure
    _mount("tmpfs", "/run", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    os.mkdir("/run/libvirt")
    _bind(str(fs / "run/libvirt"), "/run/libvirt")
    for sub in _PRIVATE_DIRS:
        _bind(str(fs / sub), "/" + sub)
    _bind(str(layout.cache_dir), "/" + _CACHE_DIR)
    _bind(str(fs / "etc/passwd"), "/etc/passwd")
    _bind(str(fs / "etc/group"), "/etc/group")
    if os.path.exists("/dev/kvm"):
        # Never let libvirt or QEMU touch KVM.  An empty regular file on a
        # read-only bind mount: access(W_OK) fails with EROFS even for root,
        # so libvirt sees KVM as unusable.  (/dev/null would look usable and
        # libvirt would then discard its TCG-only capability cache, and
        # re-probe QEMU, on every domain definition/start: ~6 s each.)
        _bind(str(fs / "dev-kvm-hidden"), "/dev/kvm")
        _mount(None, "/dev/kvm", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)

    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.execv(
                LIBVIRTD,
                [
                    LIBVIRTD,
                    "--config",
                    str(layout.libvirtd_conf),
                    "--pid-file",
                    str(layout.sock_dir / "libvirtd.pid"),
                ],
            )
        finally:
            os._exit(127)

    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    status = 0
    while True:  # reap everything; stop when libvirtd is gone
        try:
            done, st = os.wait()
        except ChildProcessError:
            break
        if done == pid:
            status = os.waitstatus_to_exitcode(st)
            break
    # Give what is left (QEMUs) a graceful SIGTERM; the kernel SIGKILLs the
    # rest of the namespace when we return.
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if done == 0:
            time.sleep(0.05)
    return status if status >= 0 else 128 - status


def _cli(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="daemon.py", description="Run a private libvirtd (QEMU driver) until Ctrl-C."
    )
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--start-timeout", type=float, default=60)
    ap.add_argument("--log-level", type=int, default=3, choices=(1, 2, 3, 4))
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument(
        "--keep", action="store_true", help="keep domain definitions from a previous run in WORKDIR"
    )
    args = ap.parse_args(argv)

    stop = {"flag": False}

    def on_term(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        with running_libvirtd(
            args.workdir,
            start_timeout=args.start_timeout,
            log_level=args.log_level,
            fresh=not args.keep,
            cache_dir=args.cache_dir,
        ) as d:
            print(d.uri, flush=True)
            print(
                f"# libvirtd pid {d.pid} (supervisor {d.supervisor_pid}); "
                f"socket after {d.timings['socket']:.2f}s, ready after "
                f"{d.timings['ready']:.2f}s; log {d.log_path}",
                file=sys.stderr,
            )
            print(
                f"# virsh -c '{d.uri}' list --all     (Ctrl-C to stop)", file=sys.stderr, flush=True
            )
            while not stop["flag"] and d.is_alive():
                time.sleep(0.2)
            if not d.is_alive():
                print("# libvirtd died\n" + _tails(d.workdir), file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    print("# stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_launch":
        sys.exit(_launch_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "--_ns-init":
        sys.exit(_ns_init_main(sys.argv[2:]))
    sys.exit(_cli(sys.argv[1:]))
