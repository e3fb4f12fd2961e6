"""``gagent-guest check``: is the channel usable from this guest, and if not, why.

Every finding carries a fix hint.  The checks, in the order an operator would
look: the kernel side (virtio bus, virtio_console driver, a virtio-serial
device), every port with its node and udev link, the chosen port (present,
permissions, holder, host end connected or not), the qemu-ga processes and
their ports, whether the distribution's qemu-guest-agent unit stays on
libvirt's port, and the freeze dead-man's switch (``deadman_check.py``).
Nothing here blocks: the port is opened with O_NONBLOCK and polled with a
timeout, and nothing is ever read from or written to it.
"""

from __future__ import annotations

import errno
import os
import select

from .deadman_check import check_deadman
from .procs import Agent, Process, find_agents, holders, scan_processes
from .report import ERROR, INFO, OK, WARNING, Report
from .roots import PortIO, Roots
from .sysfs import KernelState, Port, kernel_state, list_ports
from .units import STOCK_PORT, check_stock

__all__ = ["DEFAULT_PORT", "NOT_A_VM_HINT", "check_port", "describe", "find_port", "port_of_agent"]

DEFAULT_PORT = "org.gagent.agent.0"
UNIT = "gagent-qga@{vport}.service"
NOT_A_VM_HINT = (
    "run gagent-guest inside the guest; on the host, gagent channel list DOMAIN shows "
    "a VM's channels"
)


def describe(procs: list[Process]) -> str:
    """``pid 12 (qemu-ga), pid 40 (cat)``."""
    return ", ".join(f"pid {p.pid} ({p.comm or '?'})" for p in procs)


def find_port(ports: list[Port], name: str) -> Port | None:
    return next((p for p in ports if p.name == name), None)


def port_of_agent(agent: Agent, ports: list[Port], roots: Roots) -> Port | None:
    """The port an agent serves: by its path, else by what it holds open."""
    for p in ports:
        if agent.path in (p.node, p.link):
            return p
    if agent.path.startswith("/dev/"):
        real = os.path.basename(os.path.realpath(roots.map(agent.path)))
        for p in ports:
            if real == p.vport:
                return p
    for p in ports:
        if agent.holds(p.node):
            return p
    return None


def _add_hint(name: str) -> str:
    suffix = "" if name == DEFAULT_PORT else f" --name {name}"
    return f"add the channel on the host: gagent channel add DOMAIN{suffix}"


def _check_kernel(report: Report, kernel: KernelState) -> None:
    if not kernel.virtio_bus:
        if kernel.pci_serial_functions:
            hint = "the VM has a virtio-serial PCI controller: modprobe virtio_pci virtio_console"
        else:
            hint = (
                "the VM has no virtio devices, or this kernel lacks virtio: "
                + _add_hint(report.target)
                + " (libvirt adds a virtio-serial controller), and boot a kernel with virtio_pci"
            )
        seen = f" (a VM: {kernel.hypervisor})" if kernel.hypervisor else ""
        report.add("virtio-missing", ERROR, f"no virtio bus in /sys/bus/virtio{seen}", hint)
        return
    if not kernel.driver_registered:
        hints = {
            "available": "modprobe virtio_console (and at boot: echo virtio_console > "
            "/etc/modules-load.d/virtio_console.conf)",
            "absent": f"kernel {kernel.release} has no virtio_console module: install a "
            "kernel built with CONFIG_VIRTIO_CONSOLE (or its modules package)",
        }
        report.add(
            "driver-missing",
            ERROR,
            "the virtio_console driver is not loaded",
            hints.get(kernel.module, "modprobe virtio_console"),
        )
    else:
        how = "loaded as a module" if kernel.module == "loaded" else "built into the kernel"
        report.add("driver", OK, f"virtio_console driver: {how}")
    serial = kernel.serial_devices
    if not serial:
        report.add(
            "device-missing",
            ERROR,
            "no virtio-serial device: the VM has no channel at all",
            _add_hint(report.target) + " (libvirt adds the virtio-serial controller)",
        )
    elif kernel.driver_registered and not any(d.driver for d in serial):
        report.add(
            "device-unbound",
            ERROR,
            f"virtio-serial device {serial[0].name} has no driver bound",
            "reload the driver: modprobe -r virtio_console; modprobe virtio_console",
        )
    else:
        report.add("device", OK, f"virtio-serial device: {', '.join(d.name for d in serial)}")


def _mknod_hint(p: Port) -> str:
    if p.devnum is None:
        return "mount devtmpfs on /dev (mount -t devtmpfs devtmpfs /dev)"
    major, minor = p.devnum
    return (
        f"mount devtmpfs on /dev (mount -t devtmpfs devtmpfs /dev), "
        f"or: rm -f {p.node}; mknod -m 600 {p.node} c {major} {minor}"
    )


def _check_ports(report: Report, ports: list[Port], name: str) -> Port | None:
    for p in ports:
        chosen = p.name == name
        label = p.name or "(unnamed)"
        if p.node_state == "missing":
            report.add(
                "node-missing",
                ERROR if chosen else WARNING,
                f"port {label}: device node {p.node} is missing",
                _mknod_hint(p),
            )
        elif p.node_state != "ok":
            expected = f"{p.devnum[0]}:{p.devnum[1]}" if p.devnum else "?"
            report.add(
                "node-wrong",
                ERROR if chosen else WARNING,
                f"port {label}: {p.node} is not the port's character device {expected}",
                _mknod_hint(p),
            )
        if p.link_state == "missing":
            report.add(
                "link-missing",
                WARNING if chosen else INFO,
                f"port {label}: udev link {p.link} -> {p.vport} is missing",
                "udev makes it: is systemd-udevd running? (udevadm trigger --action=add "
                f"--subsystem-match=virtio-ports); without udev: mkdir -p /dev/virtio-ports "
                f"&& ln -s ../{p.vport} {p.link} (gagent-qga's init script does this)",
            )
        elif p.link_state == "wrong":
            report.add(
                "link-wrong",
                ERROR if chosen else WARNING,
                f"port {label}: {p.link} points to {p.link_target}, not {p.vport}",
                f"ln -sfn ../{p.vport} {p.link}",
            )
    port = find_port(ports, name)
    if port is None:
        names = [p.name for p in ports if p.name]
        seen = f" (ports here: {', '.join(names)})" if names else " (this guest has no named port)"
        report.add("port-missing", ERROR, f"no virtio port named {name}{seen}", _add_hint(name))
    elif port.node_state == "ok":
        link = f", link {port.link}" if port.link_state == "ok" else ""
        report.add("port", OK, f"port {name}: {port.node} ({port.node_mode}){link}")
    return port


def _host_state(io: PortIO, path: os.PathLike[str] | str, timeout: float) -> tuple[str, int]:
    """Open the free port and poll it once: ("connected"|"disconnected"|"quiet", fd flags)."""
    fd = io.open(path)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLOUT)
        events = poller.poll(max(0, int(timeout * 1000)))
    finally:
        os.close(fd)
    revents = events[0][1] if events else 0
    if revents & select.POLLHUP:
        return "disconnected", revents
    if revents & select.POLLOUT:
        return "connected", revents
    return "quiet", revents


def _report_host(report: Report, port: Port, name: str, served: bool, state: str) -> None:
    if state == "connected":
        report.add("host-connected", OK, f"host side of {name} is connected")
    elif state == "quiet":
        report.add(
            "host-connected",
            OK,
            f"host side of {name} is connected (the port does not take data right now)",
        )
    elif served:
        report.add(
            "host-disconnected",
            INFO,
            f"no host client is connected to {name} right now "
            "(normal between commands: the host connects per command)",
        )
    else:
        report.add(
            "host-disconnected",
            ERROR,
            f"host side of {name} is not connected: nothing on the host has the "
            "channel's socket open",
            f"on the host, connect to it: gagent channel probe DOMAIN --name {name} "
            f"(with gagent-guest probe --port {name} here); check the channel there: "
            "gagent channel list DOMAIN",
        )


def _check_chosen(
    report: Report,
    port: Port,
    name: str,
    *,
    roots: Roots,
    io: PortIO,
    procs: list[Process],
    agents: list[Agent],
    ports: list[Port],
    timeout: float,
) -> bool:
    """Holder, permissions, host end; returns whether an agent serves the port."""
    if name == STOCK_PORT:
        report.add(
            "libvirt-port",
            INFO,
            f"{name} is libvirt's own agent port: libvirtd holds its host end; "
            "gagent reaches that agent with --transport libvirt",
        )
    if port.node_state != "ok":
        return False
    held, complete = holders(procs, port.node)
    configured = [a for a in agents if port_of_agent(a, ports, roots) is port]
    qga = [p for p in held if p.is_qga]
    others = [p for p in held if not p.is_qga]
    if others:
        report.add(
            "port-held",
            ERROR,
            f"{port.node} is held by {describe(others)}: no agent can open it "
            "(a virtio port takes one opener at a time)",
            f"stop it (kill {others[0].pid}), or give the agent another port",
        )
    if qga:
        agent = next((a for a in agents if a.pid == qga[0].pid), None)
        how = f", {agent.path} from {agent.source}" if agent else ""
        report.add("served", OK, f"served by qemu-ga (pid {qga[0].pid}{how})")
        if port.host_connected is None:
            report.add(
                "host-unknown",
                INFO,
                "host side: cannot tell while qemu-ga holds the port (as root, mount "
                "debugfs to see it: mount -t debugfs none /sys/kernel/debug)",
            )
        else:
            _report_host(report, port, name, True, "connected" if port.host_connected else "")
        return True
    if held:
        return False
    try:
        state, _ = _host_state(io, roots.map(port.node), timeout)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            guess = f", presumably qemu-ga pid {configured[0].pid}" if configured else ""
            report.add(
                "port-busy",
                WARNING,
                f"{port.node} is open by a process this user cannot see{guess}",
                "run gagent-guest check as root to name the holder",
            )
            return bool(configured)
        if exc.errno in (errno.EACCES, errno.EPERM):
            report.add(
                "port-permission",
                ERROR,
                f"cannot open {port.node} as uid {os.geteuid()} (mode {port.node_mode})",
                "run as root (qemu-ga runs as root), or grant access with a udev rule "
                '(e.g. GROUP="...", MODE="0660")',
            )
            return False
        report.add(
            "open-failed",
            ERROR,
            f"opening {port.node} failed: {exc.strerror or exc}",
            "the port may be going away (hot-unplug): check again; see dmesg",
        )
        return False
    _report_host(report, port, name, False, state)
    if configured:
        report.add(
            "agent-idle",
            ERROR,
            f"qemu-ga pid {configured[0].pid} is set to {configured[0].path} but does not "
            "hold the port",
            f"restart it (systemctl restart {UNIT.format(vport=port.vport)}, or gagent-qga "
            "restart without systemd)",
        )
    else:
        report.add(
            "not-served",
            ERROR,
            f"no agent serves {name}: the port is free",
            f"start one: systemctl start {UNIT.format(vport=port.vport)} (package "
            f"gagent-guest); without systemd: qemu-ga -d -m virtio-serial -p "
            f"{port.link or port.node} -t /run/gagent-qga/{port.vport}; for a test of the "
            f"wire itself: gagent-guest probe --port {name}",
        )
    if not complete and os.geteuid() != 0:
        report.add(
            "not-root",
            INFO,
            f"running as uid {os.geteuid()}: other users' open files are hidden",
            "run as root for the full picture",
        )
    return False


def _check_agents(report: Report, agents: list[Agent], ports: list[Port], roots: Roots) -> None:
    for agent in agents:
        port = port_of_agent(agent, ports, roots)
        if agent.method == "virtio-serial" and port is None:
            report.add(
                "agent-stale",
                WARNING,
                f"qemu-ga pid {agent.pid} is set to {agent.path} ({agent.source}), "
                "which is no virtio port here",
                f"it serves nothing (was the port removed?): stop it (kill {agent.pid})",
            )
        elif port is not None and port.name != report.target:
            report.add("agent", INFO, f"qemu-ga pid {agent.pid} serves {port.name or port.vport}")
        elif port is None:
            report.add("agent", INFO, f"qemu-ga pid {agent.pid}: {agent.method} {agent.path}")


def check_port(
    name: str = DEFAULT_PORT,
    *,
    roots: Roots | None = None,
    io: PortIO | None = None,
    timeout: float = 0.2,
) -> Report:
    """Check the virtio port ``name`` and everything it depends on."""
    roots = roots or Roots()
    io = io or PortIO()
    report = Report(name)
    kernel = kernel_state(roots)
    ports = list_ports(roots, io)
    procs = scan_processes(roots)
    agents = find_agents(roots, procs)
    report.facts = {
        "kernel": {
            "release": kernel.release,
            "virtio_bus": kernel.virtio_bus,
            "driver": kernel.driver_registered,
            "module": kernel.module,
            "serial_devices": [d.name for d in kernel.serial_devices],
            "hypervisor": kernel.hypervisor,
        },
        "ports": [p.as_dict() for p in ports],
        "agents": [a.as_dict() for a in agents],
    }
    outside = kernel.not_a_vm()
    if outside:  # every other finding would blame a VM that is not there
        report.add("not-a-vm", ERROR, f"not inside a VM ({outside})", NOT_A_VM_HINT)
        return report
    _check_kernel(report, kernel)
    port = _check_ports(report, ports, name)
    served = False
    if port is not None:
        served = _check_chosen(
            report, port, name, roots=roots, io=io, procs=procs, agents=agents,
            ports=ports, timeout=timeout,
        )  # fmt: skip
    _check_agents(report, agents, ports, roots)
    check_stock(report, name, roots, served)
    check_deadman(report, roots)
    return report
