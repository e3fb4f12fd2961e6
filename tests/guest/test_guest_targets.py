"""What --port and --serial may name, who counts as qemu-ga, and the outcomes the CLI reports.

The fake trees come from conftest's FakeGuest; where the CLI's real PortIO must
see a character device, a fake node is a symlink to the real /dev/null (char
1:3) and the fake sysfs says what 1:3 is in that guest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gagent.errors import UsageError
from gagent.guest.cli import main
from gagent.guest.procs import find_agents, scan_processes
from gagent.guest.serialcheck import check_serial
from gagent.guest.targets import BadTarget, check_port_name, classify_serial
from gagent.host.channel import ChannelSpec, validate

AGENT = "org.gagent.agent.0"
GOOD_NAMES = [
    AGENT,
    "org.qemu.guest_agent.0",
    "com.redhat.spice.0",
    "org.libguestfs.channel.0",
    "a",
    "x" * 255,
]
BAD_NAMES = [
    "",
    "../../etc/passwd",
    "a/b",
    "..",
    ".hidden",
    "-p",
    "x" * 256,
    "two words",
    'quo"te',
    "glob*",
    "\x1b[31mred",
    "caf\u00e9",
]
NULL = (1, 3)  # the real /dev/null's number


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gagent-guest: error: ")
    return lines[0]


# ---------------------------------------------------------------- port names


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_port_names(name):
    check_port_name(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_port_names(name):
    with pytest.raises(BadTarget) as info:
        check_port_name(name)
    assert "\x1b" not in str(info.value)  # shown escaped, never sent to the terminal
    assert info.value.hint == "name a port this guest has: gagent-guest ports"


@pytest.mark.parametrize("name", GOOD_NAMES + BAD_NAMES)
def test_port_names_follow_the_host_rule(name):
    """The guest accepts exactly the names `gagent channel add --name` accepts."""
    try:
        validate(ChannelSpec(name=name), libvirt_managed=True, check_dir=False)
        host_ok = True
    except UsageError:
        host_ok = False
    try:
        check_port_name(name)
        guest_ok = True
    except BadTarget:
        guest_ok = False
    assert guest_ok == host_ok


@pytest.mark.parametrize("command", ["check", "probe"])
@pytest.mark.parametrize("name", ["../../etc/passwd", ""])
def test_cli_refuses_a_bad_port_name(guest, capsys, command, name):
    guest.healthy()
    code = main([command, "--root", str(guest.root), "--port", name])
    assert code == 2
    line = _one_line_error(capsys)
    assert "invalid port name" in line and "(name a port this guest has" in line
    assert "udev" not in line and "channel add" not in line  # never suggested with that name


def test_cli_bad_port_name_as_json(guest, capsys):
    guest.healthy()
    assert main(["check", "--root", str(guest.root), "--port", "a/b", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and "invalid port name 'a/b'" in data["error"]


# ---------------------------------------------------------------- serial devices


@pytest.fixture
def devices(guest):
    """A guest with a UART, a hypervisor console, a virtual terminal, a named and an
    unnamed virtio port and /dev/null, as FakeIO nodes with their sysfs entries."""
    uart = "/sys/devices/platform/serial8250/tty/ttyS1"
    guest.char_device((4, 65), uart, "tty").write("/dev/ttyS1", "chr 4:65")
    guest.char_device((229, 0), "/sys/devices/virtual/tty/hvc0", "tty")
    guest.write("/dev/hvc0", "chr 229:0")
    guest.char_device((4, 1), "/sys/devices/virtual/tty/tty1", "tty")
    guest.write("/dev/tty1", "chr 4:1")
    port_dir = "/sys/devices/pci0000:00/0000:00:05.0/virtio1/virtio-ports"
    guest.char_device((250, 1), f"{port_dir}/vport1p1", "virtio-ports")
    guest.write(f"{port_dir}/vport1p1/name", AGENT + "\n")
    guest.write("/dev/vport1p1", "chr 250:1")
    guest.char_device((250, 0), f"{port_dir}/vport1p0", "virtio-ports")
    guest.write(f"{port_dir}/vport1p0/name", "")
    guest.write("/dev/vport1p0", "chr 250:0")
    guest.char_device(NULL, "/sys/devices/virtual/mem/null", "mem")
    guest.write("/dev/null", "chr 1:3")
    guest.write("/dev/pts/0", "chr 136:0")  # ptys have no sysfs entry
    guest.write("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    return guest


@pytest.mark.parametrize(
    ("device", "kind", "kernel_name", "port"),
    [
        ("/dev/ttyS1", "tty", "ttyS1", None),
        ("/dev/hvc0", "tty", "hvc0", None),
        ("/dev/vport1p1", "virtio-port", "vport1p1", AGENT),
    ],
)
def test_usable_serial_devices(devices, device, kind, kernel_name, port):
    target = classify_serial(device, devices.roots, devices.io)
    assert (target.kind, target.kernel_name, target.port_name) == (kind, kernel_name, port)


@pytest.mark.parametrize(
    ("device", "said"),
    [
        ("/dev/null", "not a serial line or a virtio port (it is the mem device null, char 1:3)"),
        ("/dev/tty1", "is tty1, a virtual tty, not a serial line"),
        ("/dev/pts/0", "sysfs knows no such device"),
        ("/dev/vport1p0", "unnamed virtio port vport1p0"),
        ("/etc/passwd", "is not a character device"),
    ],
)
def test_unusable_serial_devices(devices, device, said):
    with pytest.raises(BadTarget) as info:
        classify_serial(device, devices.roots, devices.io)
    assert said in str(info.value)
    assert "gagent-guest ports" in info.value.hint


def test_serial_device_missing_or_unknowable(devices):
    assert classify_serial("/dev/ttyS7", devices.roots, devices.io) is None
    (devices.root / "sys/dev/char").rename(devices.root / "sys/dev/gone")  # no sysfs
    assert classify_serial("/dev/null", devices.roots, devices.io).kind == "unknown"


@pytest.mark.skipif(not os.path.isdir("/sys/dev/char"), reason="needs sysfs")
@pytest.mark.parametrize("command", ["check", "probe"])
def test_cli_refuses_the_real_dev_null(capsys, command):
    """The reported case: `check --serial /dev/null` said healthy, naming bash as qemu-ga."""
    assert main([command, "--serial", "/dev/null", "--timeout", "1"]) == 2
    line = _one_line_error(capsys)
    assert "/dev/null is not a serial line or a virtio port" in line
    assert "(use a serial line such as /dev/ttyS1, or a virtio port:" in line


@pytest.mark.skipif(not os.path.exists("/sys/dev/char/5:0"), reason="needs sysfs and /dev/tty")
def test_cli_refuses_the_real_controlling_tty_device(capsys):
    assert main(["check", "--serial", "/dev/tty"]) == 2
    assert "a virtual tty, not a serial line" in _one_line_error(capsys)


def _real_char_node(guest, guest_path: str) -> None:
    """A node the real PortIO sees as char 1:3 (the fake sysfs says what 1:3 is here)."""
    guest.symlink(guest_path, os.devnull)


def test_cli_checks_a_virtio_port_given_as_serial(guest, capsys):
    guest.kernel().port("vport1p1", AGENT, devnum=NULL, node=None)
    _real_char_node(guest, "/dev/vport1p1")
    port_dir = "/sys/devices/pci0000:00/0000:00:05.0/virtio1/virtio-ports/vport1p1"
    guest.char_device(NULL, port_dir, "virtio-ports").write(f"{port_dir}/name", AGENT + "\n")
    guest.qga(300, f"/dev/virtio-ports/{AGENT}", hold="/dev/vport1p1")
    assert main(["check", "--root", str(guest.root), "--serial", "/dev/vport1p1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "virtio" and report["target"] == AGENT
    note = report["findings"][0]
    assert note["code"] == "serial-is-port" and f"checked as --port {AGENT}" in note["message"]
    assert "served" in [f["code"] for f in report["findings"]]


def test_cli_serial_line_with_no_agent_is_not_healthy(guest, capsys):
    """A UART held only by a shell, a daemon and a qemu-ga whose stdin it is: nobody serves it."""
    guest.kernel()
    _real_char_node(guest, "/dev/ttyS1")
    guest.char_device(NULL, "/sys/devices/platform/serial8250/tty/ttyS1", "tty")
    guest.process(400, ["-bash"], comm="bash", fds=["/dev/ttyS1"], exe="/usr/bin/bash")
    guest.process(401, ["/usr/sbin/libvirtd", "--timeout", "120"], fds=["/dev/ttyS1"])
    guest.qga(402, f"/dev/virtio-ports/{AGENT}", hold="/dev/ttyS1")  # virtio-serial, stdin
    assert main(["check", "--root", str(guest.root), "--serial", "/dev/ttyS1"]) == 1
    out = capsys.readouterr().out
    assert "served" not in out and out.splitlines()[-1].startswith("NOT healthy")
    held = next(line for line in out.splitlines() if "is held by" in line)
    assert "pid 400 (bash)" in held and "pid 401 (libvirtd)" in held and "pid 402" in held


# ---------------------------------------------------------------- who is qemu-ga


def test_served_names_only_the_agent_set_to_the_line(guest):
    guest.write("/dev/ttyS1", "chr 4:65")
    guest.process(500, ["/usr/bin/qemu-ga", "-m", "isa-serial", "-p", "/dev/ttyS1"],
                  fds=["/dev/ttyS1"])  # fmt: skip
    guest.process(501, ["/sbin/agetty", "ttyS1"], fds=["/dev/ttyS1"])
    report = check_serial("/dev/ttyS1", roots=guest.roots)
    served = [f for f in report.findings if f.code == "served"]
    assert len(served) == 1 and served[0].message == "served by qemu-ga (pid 500 (qemu-ga))"
    held = [f for f in report.findings if f.code == "port-held"]
    assert "pid 501 (agetty)" in held[0].message and "pid 500" not in held[0].message
    assert not report.healthy  # the getty reads what the agent should get


def test_a_qemu_ga_set_elsewhere_does_not_serve_the_line(guest):
    guest.write("/dev/ttyS1", "chr 4:65")
    guest.qga(600, f"/dev/virtio-ports/{AGENT}", hold="/dev/ttyS1")
    report = check_serial("/dev/ttyS1", roots=guest.roots)
    assert "served" not in report.codes() and report.codes("error") == ["port-held"]


@pytest.mark.parametrize(
    ("argv", "exe", "is_qga"),
    [
        (["/usr/sbin/qemu-ga", "-m", "virtio-serial"], None, True),
        (["qemu-ga"], "/usr/bin/qemu-ga (deleted)", True),  # upgraded while running
        (["/usr/bin/qemu-guest-agent"], None, True),
        (["/bin/sh", "-c", "/usr/sbin/qemu-ga -p /dev/ttyS1"], None, False),
        (["bash", "/usr/sbin/qemu-ga"], "/usr/bin/bash", False),
        (["qemu-ga"], "/usr/bin/bash", False),  # exec -a qemu-ga bash
        (["/usr/sbin/libvirtd"], None, False),
    ],
)
def test_qemu_ga_is_known_by_its_program_only(guest, argv, exe, is_qga):
    guest.process(700, argv, comm="qemu-ga", exe=exe)  # comm can be set to anything
    procs = scan_processes(guest.roots)
    assert [p.is_qga for p in procs] == [is_qga]
    assert len(find_agents(guest.roots, procs)) == int(is_qga)


# ---------------------------------------------------------------- not inside a VM


def test_cli_not_inside_a_vm(guest, capsys):
    guest.kernel(bus=False)
    assert main(["check", "--root", str(guest.root)]) == 4
    out = capsys.readouterr().out.splitlines()
    assert "not inside a VM (no virtio bus)" in out[1]
    assert out[-1] == "not inside a VM"
    assert main(["check", "--root", str(guest.root), "--json"]) == 4
    assert json.loads(capsys.readouterr().out)["outcome"] == "not-a-vm"
    assert main(["probe", "--root", str(guest.root), "--timeout", "1"]) == 4
    assert "not inside a VM (no virtio bus)" in _one_line_error(capsys)


def test_help_states_the_exit_codes(capsys):
    for argv in (["--help"], ["check", "--help"], ["probe", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "2 bad usage" in text and "4 not inside a VM" in text, argv


def test_man_page_states_the_exit_codes():
    man = (Path(__file__).resolve().parents[2] / "packaging/man/gagent-guest.1").read_text()
    assert "4 not inside a VM" in " ".join(man.split())
