"""Where the guest helper looks, and how it opens ports: both replaceable for tests.

:class:`Roots` maps the guest's absolute paths (``/sys``, ``/dev``, ``/proc``,
``/etc``, ``/run``, ``/lib``, ``/usr/lib``) to directories on disk, so the
unit tests build a fake sysfs/dev/proc tree in a temporary directory.  Paths
that are *compared* with what the kernel reports (``/proc/PID/fd`` links,
qemu-ga's ``-p`` argument) always stay guest paths such as ``/dev/vport1p2``;
only file access goes through :meth:`Roots.map`.

:class:`PortIO` is the only place that opens a device: never blocking
(``O_NONBLOCK``, no controlling tty), so no check can hang on a port.

Stdlib only, Python >= 3.9 (the helper runs on guests' system pythons).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PortIO", "Roots", "read_text", "sort_key"]


@dataclass(frozen=True)
class Roots:
    """Directories standing for the guest's /sys, /dev, /proc, /etc, /run and lib dirs."""

    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    proc: Path = Path("/proc")
    etc: Path = Path("/etc")
    run: Path = Path("/run")
    lib: Path = Path("/lib")
    usr_lib: Path = Path("/usr/lib")

    @classmethod
    def under(cls, prefix: os.PathLike[str] | str) -> Roots:
        """All roots below ``prefix`` (``prefix/sys``, ``prefix/dev``...)."""
        p = Path(prefix)
        return cls(
            sys=p / "sys",
            dev=p / "dev",
            proc=p / "proc",
            etc=p / "etc",
            run=p / "run",
            lib=p / "lib",
            usr_lib=p / "usr" / "lib",
        )

    def map(self, guest_path: str) -> Path:
        """The file standing for the guest's absolute ``guest_path``."""
        table = (
            ("/usr/lib", self.usr_lib),
            ("/sys", self.sys),
            ("/dev", self.dev),
            ("/proc", self.proc),
            ("/etc", self.etc),
            ("/run", self.run),
            ("/var/run", self.run),
            ("/lib", self.lib),
        )
        for prefix, root in table:
            if guest_path == prefix or guest_path.startswith(prefix + "/"):
                return root / guest_path[len(prefix) :].lstrip("/")
        return Path(guest_path)

    def unit_dirs(self) -> tuple[Path, ...]:
        """systemd unit directories, highest precedence first."""
        return (
            self.etc / "systemd/system",
            self.run / "systemd/system",
            self.lib / "systemd/system",
            self.usr_lib / "systemd/system",
        )

    def udev_rule_dirs(self) -> tuple[Path, ...]:
        """udev rules directories, highest precedence first."""
        return (
            self.etc / "udev/rules.d",
            self.run / "udev/rules.d",
            self.lib / "udev/rules.d",
            self.usr_lib / "udev/rules.d",
        )


class PortIO:
    """Opening and inspecting device nodes (tests substitute fakes)."""

    open_flags = os.O_RDWR | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC

    def open(self, path: Path) -> int:
        """A non-blocking read-write fd on the port (raises OSError)."""
        return os.open(path, self.open_flags)

    def device_number(self, path: Path) -> tuple[int, int] | None:
        """(major, minor) if ``path`` is a character device, else None (raises OSError)."""
        st = os.stat(path)
        if not stat.S_ISCHR(st.st_mode):
            return None
        return os.major(st.st_rdev), os.minor(st.st_rdev)

    def can_open(self, path: Path) -> bool:
        """Whether this user may open ``path`` read-write (permission bits only)."""
        return os.access(path, os.R_OK | os.W_OK)


def read_text(path: Path, limit: int = 1 << 16) -> str | None:
    """A small file's text (sysfs/procfs attribute), or None when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:  # gone, no permission, or an attribute that refuses reads
        return None


def sort_key(name: str) -> tuple[object, ...]:
    """Natural order: vport1p2 before vport1p10."""
    out: list[object] = []
    num = ""
    text = ""
    for ch in name:
        if ch.isdigit():
            if text:
                out.append(text)
                text = ""
            num += ch
        else:
            if num:
                out.append(int(num))
                num = ""
            text += ch
    if num:
        out.append(int(num))
    if text:
        out.append(text)
    # ints and strs never compare with each other at the same position for our names;
    # wrap each as (kind, value) to be safe.
    return tuple((0, v) if isinstance(v, int) else (1, v) for v in out)
