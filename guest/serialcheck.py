"""``gagent-guest check --serial DEV``: an agent over a serial line, through pyserial.

Virtio ports are not ttys (pyserial 3.5 fails on them with ENOTTY), so they
are checked with plain os.open + poll (:mod:`gagent.guest.check`).  pyserial
is the tool for real serial lines: ``qemu-ga -m isa-serial -p /dev/ttyS1`` on
guests without virtio, and Windows guests' COM ports.  A serial line carries
no connection state, so only the probe can tell whether the host end listens.

pyserial is imported lazily: nothing else in the helper needs it.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

from .check import describe
from .procs import find_agents, holders, scan_processes
from .report import ERROR, INFO, OK, Report
from .roots import Roots

__all__ = ["check_serial", "open_serial"]


def _import_serial() -> Any:
    import serial  # pyserial

    return serial


def open_serial(device: str, *, serial_module: Any = None) -> Any:
    """Open ``device`` raw, non-blocking (timeout 0), with pyserial; raises OSError."""
    serial = serial_module or _import_serial()
    import termios

    try:
        return serial.Serial(device, baudrate=115200, timeout=0, write_timeout=0)
    except termios.error as exc:  # tcgetattr on a non-tty (pyserial 3.5 lets it through)
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else errno.ENOTTY
        raise OSError(code, os.strerror(code)) from None
    except serial.SerialException as exc:
        # pyserial 3.5 wraps tcgetattr's termios.error without its errno
        inner = exc.__context__
        code = getattr(exc, "errno", None)
        if code is None and isinstance(inner, termios.error) and inner.args:
            code = inner.args[0]
        code = code if isinstance(code, int) else errno.EIO
        raise OSError(code, os.strerror(code) if code != errno.EIO else str(exc)) from None


def check_serial(device: str, *, roots: Roots | None = None, serial_module: Any = None) -> Report:
    """Check a serial line an agent would use (``qemu-ga -m isa-serial -p DEVICE``)."""
    roots = roots or Roots()
    report = Report(device, kind="serial")
    procs = scan_processes(roots) if sys.platform.startswith("linux") else []
    agents = [a for a in find_agents(roots, procs) if a.method == "isa-serial"]
    report.facts["agents"] = [a.as_dict() for a in agents]
    local = roots.map(device) if device.startswith("/") else device
    if device.startswith("/") and not os.path.exists(local):
        report.add(
            "serial-missing",
            ERROR,
            f"{device} does not exist",
            "give the VM a serial port for the agent (libvirt: <serial type='unix'>), "
            "and check the name: ls /dev/ttyS*",
        )
        return report
    mine = [a for a in agents if a.path == device]
    held, _complete = holders(procs, device)
    # Only a qemu-ga set to this line serves it: any process may hold a tty
    # (a shell's stdin, a qemu-ga whose stdin it is), and ttys take many openers.
    serving = [p for p in held if any(a.pid == p.pid for a in mine)]
    others = [p for p in held if p not in serving]
    if others:
        report.add(
            "port-held",
            ERROR,
            f"{device} is held by {describe(others)} (a getty or a console?)"
            + (": it reads what the agent should get" if serving else ""),
            f"stop it (kill {others[0].pid}; disable the getty on that line), "
            "or give the agent another serial port",
        )
    if serving:
        report.add("served", OK, f"served by qemu-ga ({describe(serving)})")
    elif not held:
        try:
            port = open_serial(device, serial_module=serial_module)
        except ImportError:
            report.add(
                "pyserial-missing",
                ERROR,
                "pyserial is not installed",
                "apt install python3-serial (dnf install python3-pyserial; pip install pyserial)",
            )
            return report
        except OSError as exc:
            if exc.errno == errno.ENOTTY:
                report.add(
                    "serial-not-tty",
                    ERROR,
                    f"{device} is not a tty: is it a virtio port?",
                    "check virtio ports with: gagent-guest check --port NAME",
                )
            elif exc.errno in (errno.EACCES, errno.EPERM):
                report.add(
                    "port-permission",
                    ERROR,
                    f"cannot open {device}: permission denied",
                    "run as root (qemu-ga runs as root)",
                )
            else:
                report.add(
                    "open-failed",
                    ERROR,
                    f"cannot open {device}: {exc.strerror or exc}",
                    "is there a UART behind it? (dmesg | grep ttyS)",
                )
            return report
        port.close()
        report.add("serial", OK, f"{device} opens as a serial line (pyserial)")
        if mine:
            report.add(
                "agent-idle",
                ERROR,
                f"qemu-ga pid {mine[0].pid} is set to {device} but does not hold it",
                "restart it",
            )
        else:
            report.add(
                "not-served",
                ERROR,
                f"no agent serves {device}",
                f"start one: qemu-ga -d -m isa-serial -p {device}",
            )
    report.add(
        "serial-no-carrier",
        INFO,
        "a serial line has no connection state: whether the host end listens cannot "
        "be seen from here",
        f"test the wire with gagent-guest probe --serial {device} against the host's "
        "socket (gagent channel probe --socket PATH)",
    )
    return report
