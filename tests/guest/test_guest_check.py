"""gagent-guest check against fake sysfs/dev/proc trees: every finding, with its hint."""

from __future__ import annotations

import errno
import json

import pytest

from gagent.guest.check import check_port
from gagent.guest.report import Finding, Report

AGENT = "org.gagent.agent.0"
PROBE = "org.gagent.probe.0"
STOCK_UNIT_TEXT = """[Unit]
Description=QEMU Guest Agent
BindsTo=dev-virtio\\x2dports-org.qemu.guest_agent.0.device
After=dev-virtio\\x2dports-org.qemu.guest_agent.0.device

[Service]
ExecStart=-/usr/sbin/qemu-ga
Restart=always
"""
OUR_RULE = (
    'SUBSYSTEM=="virtio-ports", ATTR{name}=="org.gagent.agent.0", \\\n'
    '  TAG+="systemd", ENV{SYSTEMD_WANTS}+="gagent-qga@%k.service"\n'
)


def run(guest, name: str = AGENT) -> Report:
    return check_port(name, roots=guest.roots, io=guest.io, timeout=0.05)


def finding(report: Report, code: str, severity: str | None = None) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert found, f"no {code} in {[(f.code, f.severity) for f in report.findings]}"
    if severity:
        assert found[0].severity == severity, found[0]
    return found[0]


def test_healthy_guest(guest):
    report = run(guest.healthy())
    assert report.healthy, report.to_text()
    assert report.codes("error") == []
    assert report.codes("warning") == []
    assert {"driver", "device", "port", "served", "host-unknown"} <= set(report.codes())
    assert "pid 300" in finding(report, "served", "ok").message
    data = json.loads(report.to_json())
    assert data["healthy"] is True
    assert [p["name"] for p in data["ports"]] == [AGENT, PROBE]
    assert data["agents"][0]["path"] == "/dev/virtio-ports/org.gagent.agent.0"
    assert "healthy" in report.to_text().splitlines()[-1]


# ---------------------------------------------------------------- kernel side


@pytest.mark.parametrize("pci", [True, False])
def test_no_virtio_bus_in_a_vm(guest, pci):
    guest.kernel(bus=False, pci_serial=pci, hypervisor=not pci)
    report = run(guest)
    f = finding(report, "virtio-missing", "error")
    assert ("modprobe virtio_pci" in f.hint) is pci
    assert ("gagent channel add DOMAIN" in f.hint) is not pci
    assert ("(a VM: CPU flag hypervisor)" in f.message) is not pci
    assert not report.healthy and report.outcome == "unhealthy"
    assert "not-a-vm" not in report.codes()


@pytest.mark.parametrize(
    ("bus", "reason"),
    [(False, "no virtio bus"), (True, "no virtio device, no hypervisor")],
)
def test_not_inside_a_vm(guest, bus, reason):
    """A bare-metal machine (a kernel may register the virtio bus with no device on it)."""
    guest.kernel(bus=bus, devices=())
    guest.write("/sys/bus/pci/devices/0000:00:1f.0/vendor", "0x8086\n")
    report = run(guest)
    assert report.codes() == ["not-a-vm"]  # no finding blames a VM that is not there
    f = finding(report, "not-a-vm", "error")
    assert f.message == f"not inside a VM ({reason})"
    assert "gagent channel list DOMAIN" in f.hint
    assert report.outcome == "not-a-vm" and not report.healthy
    assert report.as_dict()["outcome"] == "not-a-vm"
    assert report.to_text().splitlines()[-1] == "not inside a VM"


@pytest.mark.parametrize("evidence", ["cpu-flag", "dmi", "xen", "virtio-pci", "mmio-device"])
def test_any_sign_of_a_vm_is_not_bare_metal(guest, evidence):
    guest.kernel(bus=evidence == "mmio-device", devices=(), hypervisor=evidence == "cpu-flag")
    if evidence == "dmi":  # arm64 guests have no hypervisor CPU flag
        guest.write("/sys/class/dmi/id/sys_vendor", "QEMU\n")
    elif evidence == "xen":
        guest.write("/sys/hypervisor/type", "xen\n")
    elif evidence == "virtio-pci":  # a virtio NIC, virtio_pci not loaded
        guest.write("/sys/bus/pci/devices/0000:00:03.0/vendor", "0x1af4\n")
        guest.write("/sys/bus/pci/devices/0000:00:03.0/device", "0x1000\n")
    elif evidence == "mmio-device":  # virtio-mmio (microvm, arm virt): devices without PCI
        guest.write("/sys/bus/virtio/devices/virtio0/device", "0x0001\n")
    report = run(guest)
    assert "not-a-vm" not in report.codes()
    assert report.outcome == "unhealthy"


@pytest.mark.parametrize(
    ("module", "hint"),
    [
        ("available", "modprobe virtio_console"),
        ("absent", "CONFIG_VIRTIO_CONSOLE"),
        ("unknown", "modprobe virtio_console"),
    ],
)
def test_driver_missing(guest, module, hint):
    guest.kernel(driver=False, module=module, devices=(("virtio0", "0x0003", None),))
    if module == "unknown":
        (guest.root / "proc/sys/kernel/osrelease").unlink()
    f = finding(run(guest), "driver-missing", "error")
    assert hint in f.hint


def test_driver_built_in(guest):
    guest.healthy()
    (guest.root / "proc/modules").write_text("ext4 1 0\n")
    assert "built into" in finding(run(guest), "driver", "ok").message


def test_no_serial_device(guest):
    guest.kernel(devices=(("virtio0", "0x0002", "virtio_blk"),))
    f = finding(run(guest), "device-missing", "error")
    assert f.hint.startswith("add the channel on the host: gagent channel add DOMAIN")
    assert "--name" not in f.hint  # the default port needs no --name


def test_device_without_driver(guest):
    guest.kernel(devices=(("virtio0", "0x0003", None),))
    assert "modprobe" in finding(run(guest), "device-unbound", "error").hint


# ---------------------------------------------------------------- ports


def test_port_missing_lists_the_ports_there(guest):
    guest.kernel().port("vport1p1", "org.other.0")
    report = run(guest, "org.gagent.x")
    f = finding(report, "port-missing", "error")
    assert "org.other.0" in f.message
    assert f.hint == "add the channel on the host: gagent channel add DOMAIN --name org.gagent.x"


def test_port_missing_without_any_port(guest):
    guest.kernel()
    assert "no named port" in finding(run(guest), "port-missing", "error").message


@pytest.mark.parametrize(("chosen", "severity"), [(True, "error"), (False, "warning")])
def test_node_missing(guest, chosen, severity):
    guest.healthy()
    vport = "vport1p1" if chosen else "vport1p2"
    (guest.root / "dev" / vport).unlink()
    f = finding(run(guest), "node-missing", severity)
    assert f"/dev/{vport}" in f.message
    assert "devtmpfs" in f.hint and "mknod -m 600" in f.hint


@pytest.mark.parametrize("node", ["file", "wrong"])
def test_node_wrong(guest, node):
    guest.kernel().port("vport1p1", AGENT, node=node, devnum=(250, 1))
    f = finding(run(guest), "node-wrong", "error")
    assert "250:1" in f.message and "mknod -m 600 /dev/vport1p1 c 250 1" in f.hint


def test_link_missing(guest):
    guest.kernel().port("vport1p1", AGENT, link=None).port("vport1p2", PROBE, link=None)
    guest.qga(300, "/dev/vport1p1", hold="/dev/vport1p1")
    report = run(guest)
    mine = [f for f in report.findings if f.code == "link-missing" and AGENT in f.message]
    other = [f for f in report.findings if f.code == "link-missing" and PROBE in f.message]
    assert mine[0].severity == "warning" and other[0].severity == "info"
    assert "udevadm trigger" in mine[0].hint and "ln -s ../vport1p1" in mine[0].hint
    assert report.healthy  # qemu-ga opened the node itself


def test_link_wrong(guest):
    guest.kernel().port("vport1p1", AGENT, link="wrong")
    f = finding(run(guest), "link-wrong", "error")
    assert "vport9p9" in f.message and f.hint == "ln -sfn ../vport1p1 /dev/virtio-ports/" + AGENT


# ---------------------------------------------------------------- the chosen port


def test_libvirt_port_is_explained(guest):
    guest.kernel().port("vport1p1", "org.qemu.guest_agent.0")
    guest.qga(300, "/dev/virtio-ports/org.qemu.guest_agent.0", hold="/dev/vport1p1")
    report = run(guest, "org.qemu.guest_agent.0")
    assert "--transport libvirt" in finding(report, "libvirt-port", "info").message
    assert report.healthy


def test_port_held_by_another_process(guest):
    guest.kernel().port("vport1p1", AGENT)
    guest.process(444, ["/usr/bin/cat", "/dev/vport1p1"], fds=["/dev/vport1p1"])
    report = run(guest)
    f = finding(report, "port-held", "error")
    assert "pid 444 (cat)" in f.message and "kill 444" in f.hint
    assert guest.io.opened == []  # a held port is never opened


@pytest.mark.parametrize(("debugfs", "code", "severity"), [
    (None, "host-unknown", "info"),
    (True, "host-connected", "ok"),
    (False, "host-disconnected", "info"),
])  # fmt: skip
def test_served_port_host_state_from_debugfs(guest, debugfs, code, severity):
    guest.kernel().port("vport1p1", AGENT, debugfs=debugfs)
    guest.qga(300, "/dev/virtio-ports/org.gagent.agent.0", hold="/dev/vport1p1")
    report = run(guest)
    f = finding(report, code, severity)
    if code == "host-disconnected":
        assert "normal between commands" in f.message
    assert report.healthy


def test_free_port_with_host_disconnected(guest):
    guest.kernel().port("vport1p1", AGENT, host="disconnected")
    report = run(guest)
    f = finding(report, "host-disconnected", "error")
    assert "gagent channel probe DOMAIN --name org.gagent.agent.0" in f.hint
    n = finding(report, "not-served", "error")
    assert "systemctl start gagent-qga@vport1p1.service" in n.hint
    assert "qemu-ga -d -m virtio-serial -p /dev/virtio-ports/org.gagent.agent.0" in n.hint
    assert guest.io.opened == ["/dev/vport1p1"]
    assert not report.healthy


def test_free_port_with_host_connected(guest):
    guest.kernel().port("vport1p1", AGENT, host="connected")
    report = run(guest)
    finding(report, "host-connected", "ok")
    finding(report, "not-served", "error")


@pytest.mark.parametrize("configured", [True, False])
def test_port_busy_with_holder_hidden(guest, configured):
    guest.kernel().port("vport1p1", AGENT, host=errno.EBUSY)
    if configured:
        guest.process(300, ["/usr/sbin/qemu-ga", "-p", "/dev/virtio-ports/" + AGENT], fds=None)
    f = finding(run(guest), "port-busy", "warning")
    assert ("presumably qemu-ga pid 300" in f.message) is configured
    assert "as root" in f.hint


def test_permission_denied(guest):
    guest.kernel().port("vport1p1", AGENT, host=errno.EACCES)
    f = finding(run(guest), "port-permission", "error")
    assert "run as root" in f.hint and "0" in f.message


def test_open_failed(guest):
    guest.kernel().port("vport1p1", AGENT, host=errno.ENODEV)
    assert "No such device" in finding(run(guest), "open-failed", "error").message


def test_agent_configured_but_not_holding(guest):
    guest.kernel().port("vport1p1", AGENT)
    guest.qga(300, "/dev/virtio-ports/org.gagent.agent.0", hold=None)
    f = finding(run(guest), "agent-idle", "error")
    assert "pid 300" in f.message and "systemctl restart gagent-qga@vport1p1.service" in f.hint


def test_not_root_note(guest, monkeypatch):
    guest.kernel().port("vport1p1", AGENT)
    guest.process(1, ["/sbin/init"], fds=None)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    f = finding(run(guest), "not-root", "info")
    assert "uid 1000" in f.message


# ---------------------------------------------------------------- agents


def test_stale_agent(guest):
    guest.healthy()
    guest.qga(301, "/dev/virtio-ports/org.gone.0")
    f = finding(run(guest), "agent-stale", "warning")
    assert "pid 301" in f.message and "kill 301" in f.hint


def test_other_agents_are_listed(guest):
    guest.healthy()
    guest.port("vport1p3", "org.qemu.guest_agent.0", devnum=(250, 3))
    guest.process(302, ["/usr/sbin/qemu-ga"], fds=["/dev/vport1p3"])  # default path
    guest.process(303, ["qemu-ga", "-m", "unix-listen", "-p", "/run/x.sock"])
    messages = [f.message for f in run(guest).findings if f.code == "agent"]
    assert "qemu-ga pid 302 serves org.qemu.guest_agent.0" in messages
    assert "qemu-ga pid 303: unix-listen /run/x.sock" in messages


def test_agent_path_from_config_file(guest):
    guest.kernel().port("vport1p1", AGENT)
    guest.write("/etc/gagent/qga.conf", f"[general]\npath=/dev/virtio-ports/{AGENT}\n")
    guest.process(
        300,
        ["/usr/sbin/qemu-ga"],
        fds=["/dev/vport1p1"],
        environ={"QGA_CONF": "/etc/gagent/qga.conf"},
    )
    report = run(guest)
    assert "from config /etc/gagent/qga.conf" in finding(report, "served", "ok").message


# ---------------------------------------------------------------- stock unit and udev


def test_stock_unit_on_its_own_port(guest):
    guest.healthy()
    guest.write("/lib/systemd/system/qemu-guest-agent.service", STOCK_UNIT_TEXT)
    guest.write("/lib/udev/rules.d/61-gagent-qga.rules", OUR_RULE)
    report = run(guest)
    finding(report, "stock-unit", "ok")
    assert "gagent-qga@%k.service" in finding(report, "activation", "ok").message
    assert report.facts["stock_unit"]["binds_to"] == ["/dev/virtio-ports/org.qemu.guest_agent.0"]


@pytest.mark.parametrize("how", ["bindsto", "execstart", "config", "udev"])
def test_stock_agent_on_our_port(guest, how):
    guest.healthy()
    unit = STOCK_UNIT_TEXT
    if how == "bindsto":
        guest.write(
            "/etc/systemd/system/qemu-guest-agent.service.d/override.conf",
            "[Unit]\nBindsTo=\nBindsTo=dev-virtio\\x2dports-org.gagent.agent.0.device\n",
        )
    elif how == "execstart":
        unit = unit.replace(
            "ExecStart=-/usr/sbin/qemu-ga",
            f"ExecStart=-/usr/sbin/qemu-ga -p /dev/virtio-ports/{AGENT}",
        )
    elif how == "config":
        guest.write("/etc/qemu/qemu-ga.conf", f"[general]\npath=/dev/virtio-ports/{AGENT}\n")
    else:
        guest.write(
            "/etc/udev/rules.d/99-local.rules",
            'SUBSYSTEM=="virtio-ports", ATTR{name}=="org.gagent.*", '
            'ENV{SYSTEMD_WANTS}="qemu-guest-agent.service"\n',
        )
    guest.write("/lib/systemd/system/qemu-guest-agent.service", unit)
    report = run(guest)
    f = finding(report, "stock-agent-on-port", "error")
    assert "qemu-guest-agent" in f.hint
    assert not report.healthy


def test_stock_unit_bound_elsewhere(guest):
    guest.healthy()
    guest.write(
        "/lib/systemd/system/qemu-guest-agent.service",
        "[Service]\nExecStart=/usr/sbin/qemu-ga\n",
    )
    f = finding(run(guest), "stock-unit-binding", "warning")
    assert "no device" in f.message and "systemctl revert" in f.hint


def test_masked_stock_unit_is_ignored(guest):
    guest.healthy()
    guest.write("/lib/systemd/system/qemu-guest-agent.service", STOCK_UNIT_TEXT)
    guest.symlink("/etc/systemd/system/qemu-guest-agent.service", "/dev/null")
    report = run(guest)
    assert report.facts["stock_unit"] is None
    assert "stock-unit" not in report.codes()


def test_no_activation_for_an_unserved_port(guest):
    guest.kernel().port("vport1p1", "org.custom.0")
    f = finding(run(guest, "org.custom.0"), "no-activation", "warning")
    assert 'ATTR{name}=="org.custom.0"' in f.hint and "gagent-qga@%k.service" in f.hint


def test_text_report_shows_hints(guest):
    guest.kernel().port("vport1p1", AGENT)
    text = run(guest).to_text()
    assert "ERROR   no agent serves org.gagent.agent.0" in text
    assert "        fix: start one:" in text
    assert text.splitlines()[-1].startswith("NOT healthy (2 errors")
