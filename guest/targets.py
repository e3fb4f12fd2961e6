"""What ``--port NAME`` and ``--serial DEV`` may name, decided before anything is opened.

A port name ends up in the fixes the helper prints (``gagent channel add
DOMAIN --name NAME``, a udev rule ``ATTR{name}=="NAME"``, a unit
``gagent-qga@...``) and the guest sees the port as ``/dev/virtio-ports/NAME``:
so names follow the rule ``gagent channel add`` enforces on the host
(host/channel.py, which this package may not import): letters, digits, '.',
'-' and '_', starting with a letter or digit, at most 255 characters.  libvirt
itself accepts any string, but a name with '/', quotes or glob characters could
not be used safely in those places anyway.

A serial device must be a character device that sysfs
(``/sys/dev/char/MAJ:MIN``) knows as a tty with hardware behind it (a UART,
a USB serial adapter) or a hypervisor console (``hvcN``), or a virtio port;
``/dev/null``, virtual terminals and pseudo-terminals are not serial lines.
A virtio port given as ``--serial`` is checked as the port it is.

Stdlib only, Python >= 3.9.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .roots import PortIO, Roots, read_text

__all__ = ["BadTarget", "SerialTarget", "check_port_name", "classify_serial"]

PORT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PORT_NAME_MAX = 255  # NAME_MAX of the /dev/virtio-ports/NAME entry

_SERIAL_FIX = (
    "use a serial line such as /dev/ttyS1, or a virtio port: gagent-guest check --port NAME; "
    "gagent-guest ports lists them"
)


class BadTarget(Exception):
    """``--port`` or ``--serial`` names nothing the helper may use; ``hint`` is the fix."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def check_port_name(name: str) -> None:
    """Raise BadTarget unless ``name`` is a port name the helper accepts."""
    if PORT_NAME_RE.fullmatch(name) and len(name) <= PORT_NAME_MAX:
        return
    # repr() keeps control characters and escapes off the operator's terminal
    shown = repr(name) if len(name) <= 80 else repr(name[:80]) + "..."
    raise BadTarget(
        f"invalid port name {shown}: a virtio port name has letters, digits, '.', '-' and "
        f"'_' only, starts with a letter or digit and has at most {PORT_NAME_MAX} characters",
        "name a port this guest has: gagent-guest ports",
    )


@dataclass(frozen=True)
class SerialTarget:
    """What a ``--serial`` device is: a serial line, a virtio port, or unknown."""

    kind: str  # "tty", "virtio-port" or "unknown" (no sysfs to tell by)
    kernel_name: str | None = None  # ttyS1, hvc0, vport1p2
    port_name: str | None = None  # a virtio port's name


def _subsystem(device_dir: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(device_dir / "subsystem"))
    except OSError:
        return None


def classify_serial(device: str, roots: Roots, io: PortIO | None = None) -> SerialTarget | None:
    """What ``device`` is; None when it does not exist; raises BadTarget when unusable."""
    if not device.startswith("/") or not sys.platform.startswith("linux"):
        return SerialTarget("unknown")  # COM3 on Windows, or no sysfs to ask
    io = io or PortIO()
    try:
        number = io.device_number(roots.map(device))
    except FileNotFoundError:
        return None  # the check reports it missing, with how to add one
    except OSError:
        return SerialTarget("unknown")  # opening it will say what is wrong
    if number is None:
        raise BadTarget(f"{device} is not a character device", _SERIAL_FIX)
    char_dir = roots.sys / "dev/char"
    if not char_dir.is_dir():
        return SerialTarget("unknown")  # sysfs not mounted: pyserial will refuse non-ttys
    where = f"char {number[0]}:{number[1]}"
    entry = char_dir / f"{number[0]}:{number[1]}"
    if not entry.exists():
        raise BadTarget(
            f"{device} ({where}) is not a serial line or a virtio port: sysfs knows no such "
            "device (a pseudo-terminal?)",
            _SERIAL_FIX,
        )
    device_dir = Path(os.path.realpath(entry))
    name = device_dir.name
    subsystem = _subsystem(device_dir)
    if subsystem == "virtio-ports":
        port = (read_text(device_dir / "name") or "").strip()
        if not port:
            raise BadTarget(
                f"{device} is the unnamed virtio port {name} (a console, not an agent channel)",
                "list the named ports: gagent-guest ports",
            )
        return SerialTarget("virtio-port", name, port)
    if subsystem == "tty":
        virtual = device_dir.is_relative_to(Path(os.path.realpath(roots.sys / "devices/virtual")))
        if virtual and not name.startswith("hvc"):
            raise BadTarget(
                f"{device} is {name}, a virtual tty, not a serial line ({where})",
                _SERIAL_FIX,
            )
        return SerialTarget("tty", name)
    raise BadTarget(
        f"{device} is not a serial line or a virtio port (it is the "
        f"{subsystem or 'unknown'} device {name}, {where})",
        _SERIAL_FIX,
    )
