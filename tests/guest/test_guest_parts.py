"""The helper's parsers and the serial-line check (pyserial, real and faked)."""

from __future__ import annotations

import errno
import os
import sys
import termios
import types
from pathlib import Path

import pytest

from gagent.guest.procs import parse_qga_args
from gagent.guest.roots import Roots, sort_key
from gagent.guest.serialcheck import check_serial
from gagent.guest.units import device_unit_path, udev_activations

serial = pytest.importorskip("serial")


QGA = "/usr/sbin/qemu-ga"
ARGV_CASES = [
    ([QGA], None, None, None, False),
    ([QGA, "-m", "isa-serial", "-p", "/dev/ttyS1"], "isa-serial", "/dev/ttyS1", None, False),
    ([QGA, "-misa-serial", "-p/dev/ttyS1", "-d"], "isa-serial", "/dev/ttyS1", None, True),
    ([QGA, "--method=virtio-serial", "--path", "/dev/x"], "virtio-serial", "/dev/x", None, False),
    ([QGA, "-dvF", "-p", "/dev/y"], None, "/dev/y", "", True),
    ([QGA, "-F/etc/hook", "--daemonize", "-p", "/dev/z"], None, "/dev/z", "/etc/hook", True),
    ([QGA, "--fsfreeze-hook=/h", "-t", "/run/s", "-p", "/dev/w"], None, "/dev/w", "/h", False),
]


@pytest.mark.parametrize(("argv", "method", "path", "hook", "daemon"), ARGV_CASES)
def test_parse_qga_args(argv, method, path, hook, daemon):
    args = parse_qga_args(argv)
    assert (args.method, args.path, args.fsfreeze_hook, args.daemonize) == (
        method,
        path,
        hook,
        daemon,
    )


def test_device_unit_path():
    assert (
        device_unit_path("dev-virtio\\x2dports-org.qemu.guest_agent.0.device")
        == "/dev/virtio-ports/org.qemu.guest_agent.0"
    )
    assert device_unit_path("dev-vport1p2.device") == "/dev/vport1p2"
    assert device_unit_path("foo.service") is None


def test_udev_rules_etc_masks_lib(tmp_path):
    roots = Roots.under(tmp_path)
    (tmp_path / "lib/udev/rules.d").mkdir(parents=True)
    (tmp_path / "etc/udev/rules.d").mkdir(parents=True)
    rule = 'SUBSYSTEM=="virtio-ports", ATTR{name}=="a.b|c.*", ENV{SYSTEMD_WANTS}+="x@%k.service"'
    (tmp_path / "lib/udev/rules.d/61-x.rules").write_text(f"# comment\n{rule}\n")
    (tmp_path / "lib/udev/rules.d/62-y.rules").write_text(
        'SUBSYSTEM=="block", ENV{SYSTEMD_WANTS}+="nope.service"\n'
    )
    [act] = udev_activations(roots)
    assert act.units == ["x@%k.service"] and act.line == 2
    assert act.matches("a.b") and act.matches("c.z") and not act.matches("a.c")
    (tmp_path / "etc/udev/rules.d/61-x.rules").write_text("")  # masks lib's
    assert udev_activations(roots) == []


def test_sort_key_is_natural():
    assert sorted(["vport1p10", "vport1p2", "vport0p1"], key=sort_key) == [
        "vport0p1",
        "vport1p2",
        "vport1p10",
    ]


def test_roots_map():
    roots = Roots.under("/x")
    assert roots.map("/dev/vport1p1") == Path("/x/dev/vport1p1")
    assert roots.map("/usr/lib/udev") == Path("/x/usr/lib/udev")
    assert roots.map("/var/run/qga") == Path("/x/run/qga")
    assert roots.map("/opt/y") == Path("/opt/y")


# ---------------------------------------------------------------- serial lines


def _serial_guest(tmp_path) -> Roots:
    roots = Roots.under(tmp_path)
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "dev").mkdir(exist_ok=True)
    return roots


def _proc(tmp_path, pid, argv, fds=()):
    base = tmp_path / "proc" / str(pid)
    (base / "fd").mkdir(parents=True)
    (base / "comm").write_text(os.path.basename(argv[0]) + "\n")
    (base / "cmdline").write_text("\0".join(argv) + "\0")
    for i, target in enumerate(fds):
        (base / "fd" / str(i)).symlink_to(target)


def test_serial_missing(tmp_path):
    report = check_serial("/dev/ttyS1", roots=_serial_guest(tmp_path))
    assert report.codes("error") == ["serial-missing"]


def test_serial_not_a_tty_with_real_pyserial(tmp_path):
    """pyserial 3.5 fails with ENOTTY on what is not a tty (a virtio port, a file)."""
    roots = _serial_guest(tmp_path)
    (tmp_path / "dev/vport1p1").write_text("")
    # the device opened is the real path under the fake root: map it for the test
    report = check_serial(str(tmp_path / "dev/vport1p1"), roots=Roots(proc=tmp_path / "proc"))
    assert report.codes("error") == ["serial-not-tty"]
    assert "--port NAME" in report.findings[0].hint
    assert roots  # (roots only used to build the tree)


def test_serial_line_opens_with_real_pyserial_on_a_pty(tmp_path):
    master, slave = os.openpty()
    try:
        name = os.ttyname(slave)
        report = check_serial(name, roots=Roots(proc=_serial_guest(tmp_path).proc))
    finally:
        os.close(master)
        os.close(slave)
    assert "serial" in report.codes("ok")
    assert report.codes("error") == ["not-served"]
    assert f"qemu-ga -d -m isa-serial -p {name}" in report.findings[-2].hint
    assert report.codes("info") == ["serial-no-carrier"]


def test_serial_served_by_qga(tmp_path):
    roots = _serial_guest(tmp_path)
    (tmp_path / "dev/ttyS1").write_text("")
    _proc(
        tmp_path, 200, ["/usr/sbin/qemu-ga", "-m", "isa-serial", "-p", "/dev/ttyS1"], ["/dev/ttyS1"]
    )
    report = check_serial("/dev/ttyS1", roots=roots)
    assert report.healthy and "served" in report.codes("ok")
    assert report.facts["agents"][0]["pid"] == 200


def test_serial_held_by_a_getty(tmp_path):
    roots = _serial_guest(tmp_path)
    (tmp_path / "dev/ttyS1").write_text("")
    _proc(tmp_path, 201, ["/sbin/agetty", "ttyS1"], ["/dev/ttyS1"])
    report = check_serial("/dev/ttyS1", roots=roots)
    assert report.codes("error") == ["port-held"] and "getty" in report.findings[0].message


def _fake_serial(exc: BaseException) -> types.SimpleNamespace:
    class SerialException(OSError):
        pass

    def Serial(*_a, **_k):
        raise exc(SerialException) if callable(exc) else exc

    return types.SimpleNamespace(Serial=Serial, SerialException=SerialException)


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (termios.error(errno.ENOTTY, "Inappropriate ioctl for device"), "serial-not-tty"),
        (lambda cls: cls(errno.EACCES, "denied"), "port-permission"),
        (lambda cls: cls(errno.EIO, "could not open port"), "open-failed"),
    ],
)
def test_serial_open_errors(tmp_path, raised, code):
    roots = _serial_guest(tmp_path)
    (tmp_path / "dev/ttyS1").write_text("")
    report = check_serial("/dev/ttyS1", roots=roots, serial_module=_fake_serial(raised))
    assert report.codes("error") == [code]


def test_serial_idle_agent(tmp_path):
    roots = _serial_guest(tmp_path)
    (tmp_path / "dev/ttyS1").write_text("")
    _proc(tmp_path, 202, ["qemu-ga", "-m", "isa-serial", "-p", "/dev/ttyS1"])
    ok = types.SimpleNamespace(
        Serial=lambda *_a, **_k: types.SimpleNamespace(close=lambda: None),
        SerialException=OSError,
    )
    report = check_serial("/dev/ttyS1", roots=roots, serial_module=ok)
    assert report.codes("error") == ["agent-idle"]


def test_pyserial_missing(tmp_path, monkeypatch):
    roots = _serial_guest(tmp_path)
    (tmp_path / "dev/ttyS1").write_text("")
    monkeypatch.setitem(sys.modules, "serial", None)
    report = check_serial("/dev/ttyS1", roots=roots)
    assert report.codes("error") == ["pyserial-missing"]
    assert "python3-serial" in report.findings[0].hint
