"""The freeze dead-man's switch: the guest thaws itself when a freeze outlives its deadline.

A freeze is held by whoever asked qemu-ga for it; if that process dies (a host
``gagent`` killed with SIGKILL, qemu-ga itself killed), nothing ever thaws the
guest and every write in it hangs.  This module is the guest's own way out:

* ``/etc/gagent/fsfreeze-hook`` runs before qemu-ga freezes.  It makes sure
  this daemon is running (``python3 -m gagent.guest.deadman start`` forks it
  once; it stays resident, fully loaded, and sleeps in ``sigtimedwait``),
  writes the freeze's request (deadline, qemu-ga pid) to ``/run/gagent/deadman``
  and sends SIGUSR1, then waits for the ``armed`` acknowledgement.
* Armed, the daemon holds an open directory fd on every freezable mount (taken
  from ``/proc/self/mountinfo`` before the freeze) and waits for SIGUSR2 (the
  thaw hook: disarm) or the deadline.
* At the deadline it thaws with the FITHAW ioctl on those fds (a filesystem that
  is not frozen answers EINVAL: ignored), and only *then* writes its record
  (``/run/gagent/deadman/fired``, JSON lines) and a kernel log line
  (``/dev/kmsg``, which the journal collects): nothing is written while frozen,
  and nothing it needs is read from the frozen filesystems.

qemu-ga still believes the guest frozen afterwards (only its own thaw resets
that): the host's ``gagent thaw DOMAIN`` does, thawing nothing and returning 0.
``gagent-guest check`` reports the switch's deadline, whether it is armed and
every time it fired.  One switch per guest: the latest freeze hook arms it and
any agent's thaw hook disarms it (two qemu-ga instances with hooks share it).
The deadline lives in ``/etc/gagent/deadman.conf`` (``GAGENT_FREEZE_DEADLINE=60``;
0 turns the switch off).

Stdlib only, Python >= 3.9 (the guest's system python).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

__all__ = [
    "CONFIG",
    "DEFAULT_DEADLINE",
    "STATE_DIR",
    "Config",
    "fired_records",
    "main",
    "parse_config",
    "read_config",
]

CONFIG = "/etc/gagent/deadman.conf"
STATE_DIR = "/run/gagent/deadman"
#: Long enough for any sane snapshot (libvirt's disk-only snapshot takes well
#: under a second; a slow storage backend seconds), short enough that a guest
#: left frozen recovers before its services time out.  Windows VSS allows 10 s.
DEFAULT_DEADLINE = 60
FITHAW = 0xC0045878  # _IOWR('X', 120, int)
#: Filesystems qemu-ga never freezes and whose mountpoints may hang on open.
NEVER_FROZEN = frozenset(
    "nfs nfs4 cifs smb3 smbfs ceph glusterfs 9p virtiofs afs ncpfs lustre gfs2 ocfs2".split()
)
KEEP_FIRED = 20


class Config:
    """``deadman.conf``: ``KEY=value`` lines (the fsfreeze hook sources the same file)."""

    def __init__(self, deadline: int = DEFAULT_DEADLINE, source: str = "default") -> None:
        self.deadline = deadline
        self.source = source


def read_config(path: Path | str = CONFIG) -> Config:
    """The configured deadline; a missing file means the default, a bad value too."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return Config()
    return parse_config(text, str(path))


def parse_config(text: str, source: str) -> Config:
    """``deadman.conf``'s text (the host reads it through the agent with these rules too)."""
    deadline = DEFAULT_DEADLINE
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "GAGENT_FREEZE_DEADLINE":
            value = value.strip().strip("'\"")
            if value.isdigit():
                deadline = int(value)
    return Config(deadline, source)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def freezable_mounts(mountinfo: str) -> list[str]:
    """Mountpoints qemu-ga may have frozen: block-device filesystems (and btrfs),
    one per device, never network or FUSE filesystems (opening those may hang)."""
    seen: set[str] = set()
    points: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        device, point = fields[2], _unescape(fields[4])
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype in NEVER_FROZEN or fstype.startswith("fuse"):
            continue
        if device.startswith("0:") and fstype != "btrfs":
            continue  # no block device: tmpfs, proc, overlay...
        if device in seen:
            continue
        seen.add(device)
        points.append(point)
    return points


class Switch:
    """The resident daemon's state: idle, or armed for one freeze."""

    def __init__(self, state_dir: Path, mountinfo: Path) -> None:
        self.state_dir = state_dir
        self.mountinfo = mountinfo
        self.armed: dict[str, object] | None = None
        self.fds: dict[str, int] = {}
        self.due = 0.0

    def _write(self, name: str, text: str) -> None:
        tmp = self.state_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.state_dir / name)

    def arm(self) -> None:
        """Take the hook's request; open the mounts now, while nothing is frozen."""
        request = {}
        try:
            for line in (self.state_dir / "request").read_text().splitlines():
                key, _, value = line.partition("=")
                request[key.strip()] = value.strip()
        except OSError:
            pass
        self._close()
        deadline = int(request.get("deadline") or DEFAULT_DEADLINE)
        qga_pid = request.get("qga_pid", "")
        self.armed = {
            "freeze": request.get("id", ""),
            "armed_at": time.time(),
            "armed_uptime": _uptime(),
            "deadline_s": deadline,
            "qga_pid": int(qga_pid) if qga_pid.isdigit() else None,
            "channel": _channel_of(qga_pid),
        }
        try:
            points = freezable_mounts(self.mountinfo.read_text())
        except OSError:
            points = []
        for point in points:
            try:
                self.fds[point] = os.open(point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue  # a file bind mount, or gone: qemu-ga cannot freeze it either
        self.due = time.monotonic() + deadline
        self._write("armed", json.dumps(self.armed) + "\n")

    def disarm(self, *, by_thaw: bool = True) -> None:
        """The thaw hook's disarm records the freeze it ended in ``last`` (how long it held)."""
        self._close()
        if self.armed is not None and by_thaw:
            last = dict(self.armed, disarmed_at=time.time(), disarmed_uptime=_uptime())
            self._write("last", json.dumps(last) + "\n")
        elif self.armed is None and by_thaw:
            self._note_thaw_after_firing()
        self.armed = None
        try:
            (self.state_dir / "armed").unlink()
        except FileNotFoundError:
            pass

    def fire(self) -> None:
        """Thaw first; write only afterwards (nothing is frozen any more by then)."""
        fired_at, fired_uptime = time.time(), _uptime()  # before the thaw: no write beats it
        thawed, errors = [], []
        for point, fd in self.fds.items():
            try:
                fcntl.ioctl(fd, FITHAW, 0)
                thawed.append(point)
            except OSError as exc:
                if exc.errno != 22:  # EINVAL: that filesystem was not frozen
                    errors.append(f"{point}: {exc.strerror}")
        record = dict(
            self.armed or {},
            fired_at=fired_at,
            fired_uptime=fired_uptime,
            thawed=thawed,
            errors=errors,
        )
        self.disarm(by_thaw=False)
        path = self.state_dir / "fired"
        try:
            old = path.read_text().splitlines()[-(KEEP_FIRED - 1) :]
        except OSError:
            old = []
        self._write("fired", "".join(line + "\n" for line in [*old, json.dumps(record)]))
        _kmsg(
            f"gagent-deadman: freeze {record.get('freeze')} outlived its "
            f"{record.get('deadline_s')} s deadline: thawed {', '.join(thawed) or 'nothing'}"
            + (f"; failed: {'; '.join(errors)}" if errors else "")
        )

    def _note_thaw_after_firing(self) -> None:
        """A thaw hook after a firing: qemu-ga got its thaw, so it no longer says frozen."""
        records = fired_records(self.state_dir)
        if records and "qga_thawed_at" not in records[-1]:
            records[-1]["qga_thawed_at"] = time.time()
            self._write("fired", "".join(json.dumps(r) + "\n" for r in records))

    def _close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def serve(self) -> None:
        waited = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        while True:
            timeout = None if self.armed is None else max(0.0, self.due - time.monotonic())
            if timeout is None:
                info = signal.sigwaitinfo(waited)
            else:
                info = signal.sigtimedwait(waited, timeout)
            signo = None if info is None else info.si_signo
            if signo in (signal.SIGTERM, signal.SIGINT):
                # stopped while armed (shutdown): a frozen guest must not stay so
                if self.armed is not None:
                    self.fire()
                return
            try:
                if signo is None:
                    self.fire()
                elif signo == signal.SIGUSR1:
                    self.arm()
                elif signo == signal.SIGUSR2:
                    self.disarm()
            except (OSError, ValueError) as exc:  # the switch must outlive one bad event
                _kmsg(f"gagent-deadman: {exc}")


def _uptime() -> float:
    """Seconds since boot, the clock of /proc/uptime (what a shell in the guest can read)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _channel_of(qga_pid: str) -> str | None:
    """The -p/--path qemu-ga ``qga_pid`` serves (read now, while nothing is frozen)."""
    try:
        argv = Path(f"/proc/{int(qga_pid)}/cmdline").read_bytes().decode().split("\0")
    except (OSError, ValueError):
        return None
    for i, word in enumerate(argv):
        if word in ("-p", "--path") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--path="):
            return word.split("=", 1)[1]
    return None


def _kmsg(line: str) -> None:
    try:
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"<4>{line}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _running_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"gagent.guest.deadman" in cmdline else None


def start(state_dir: Path, mountinfo: Path) -> int:
    """Fork the resident daemon (unless one runs); return once it waits for signals."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if _running_pid(state_dir) is not None:
        return 0
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            return 0 if ready.read(1) == b"1" else 1
    os.close(ready_r)
    try:
        os.setsid()
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        # Nothing the hook's shell passed on (a hook script's files, a device) stays
        # open for the daemon's lifetime: it would pin that file or device.
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, os.sysconf("SC_OPEN_MAX"))
        # blocked before the pid is published: a signal sent right away waits for us
        signal.pthread_sigmask(
            signal.SIG_BLOCK,
            {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP},
        )
        switch = Switch(state_dir, mountinfo)
        switch._write("pid", f"{os.getpid()}\n")
        os.write(ready_w, b"1")
        os.close(ready_w)
        switch.serve()
    finally:
        os._exit(0)


def fired_records(state_dir: Path) -> list[dict[str, object]]:
    """Every recorded firing since boot, oldest first."""
    try:
        lines = (state_dir / "fired").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def armed_record(state_dir: Path, name: str = "armed") -> dict[str, object] | None:
    """The freeze the switch guards now (``armed``), or the last one a thaw ended (``last``)."""
    try:
        return json.loads((state_dir / name).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    state_dir = Path(os.environ.get("GAGENT_DEADMAN_STATE", STATE_DIR))
    mountinfo = Path(os.environ.get("GAGENT_DEADMAN_MOUNTINFO", "/proc/self/mountinfo"))
    if args == ["start"]:
        return start(state_dir, mountinfo)
    print("usage: python3 -m gagent.guest.deadman start", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
