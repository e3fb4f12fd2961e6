"""The kernel's view of virtio-serial: driver, devices and ports, from sysfs and /dev.

Facts only (no verdicts): :mod:`gagent.guest.check` turns them into findings.

* the driver: ``/sys/bus/virtio/drivers/virtio_console`` exists once the
  driver is registered, built in or loaded as a module (``/proc/modules``);
* the devices: ``/sys/bus/virtio/devices/virtioN/device`` is ``0x0003`` for a
  virtio console/serial device; a virtio-serial PCI function (vendor 0x1af4,
  device 0x1003 or 0x1043) without a virtio bus means virtio_pci is missing;
* the ports: ``/sys/class/virtio-ports/vportNpM/{name,dev}``, their nodes
  ``/dev/vportNpM`` and udev's links ``/dev/virtio-ports/NAME``;
* with debugfs mounted (root only), ``/sys/kernel/debug/virtio-ports/vportNpM``
  says whether the host end is connected even while an agent holds the port;
* whether this is a VM at all: virtio devices on the bus or on PCI, else the
  CPU's ``hypervisor`` flag, ``/sys/hypervisor/type`` or a virtual DMI vendor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .roots import PortIO, Roots, read_text, sort_key

__all__ = ["KernelState", "Port", "VirtioDevice", "kernel_state", "list_ports"]

VIRTIO_ID_CONSOLE = 3
VIRTIO_PCI_VENDOR = "0x1af4"
VIRTIO_SERIAL_PCI_DEVICES = ("0x1003", "0x1043")  # legacy/transitional, modern
DRIVER = "virtio_console"
# DMI system vendors of virtual machines (sys_vendor), for guests without the CPU flag (arm64)
VM_DMI_VENDORS = ("QEMU", "Red Hat", "oVirt", "Bochs", "Xen", "Nutanix")


@dataclass
class VirtioDevice:
    name: str  # virtio0
    device_id: int | None
    driver: str | None  # bound driver's name

    @property
    def is_serial(self) -> bool:
        return self.device_id == VIRTIO_ID_CONSOLE


@dataclass
class KernelState:
    release: str | None
    virtio_bus: bool
    driver_registered: bool
    #: "loaded" (module), "built-in", "available" (module file present, not
    #: loaded), "absent" (this kernel has none) or "unknown"
    module: str
    devices: list[VirtioDevice] = field(default_factory=list)
    pci_serial_functions: int = 0
    pci_virtio_functions: int = 0  # any virtio PCI function (vendor 0x1af4)
    hypervisor: str | None = None  # the evidence of one, e.g. "CPU flag hypervisor"

    @property
    def serial_devices(self) -> list[VirtioDevice]:
        return [d for d in self.devices if d.is_serial]

    def not_a_vm(self) -> str | None:
        """Why this looks like no VM at all (None when it may be one).

        No virtio device anywhere (a bare-metal kernel may still register the
        bus) and no hypervisor in sight: a KVM/libvirt guest always shows one.
        """
        if self.devices or self.pci_virtio_functions or self.hypervisor:
            return None
        return "no virtio bus" if not self.virtio_bus else "no virtio device, no hypervisor"


@dataclass
class Port:
    vport: str  # vport1p2
    name: str  # the port's name; "" for an unnamed (console) port
    devnum: tuple[int, int] | None  # from sysfs "dev"
    #: "ok", "missing", "not-chardev" or "wrong-number"
    node_state: str = "ok"
    node_mode: str | None = None  # e.g. "0600 0:0"
    #: "ok", "missing", "wrong" (points elsewhere), or None for unnamed ports
    link_state: str | None = None
    link_target: str | None = None
    #: from debugfs: True/False, None when debugfs is not available
    host_connected: bool | None = None
    guest_connected: bool | None = None

    @property
    def node(self) -> str:
        """The guest path of the port's device node."""
        return f"/dev/{self.vport}"

    @property
    def link(self) -> str | None:
        """The guest path of udev's link, for a named port."""
        return f"/dev/virtio-ports/{self.name}" if self.name else None

    def as_dict(self) -> dict[str, object]:
        return {
            "vport": self.vport,
            "name": self.name,
            "node": self.node,
            "node_state": self.node_state,
            "node_mode": self.node_mode,
            "link": self.link,
            "link_state": self.link_state,
            "link_target": self.link_target,
            "host_connected": self.host_connected,
            "guest_connected": self.guest_connected,
        }


def _module_state(roots: Roots, release: str | None, registered: bool) -> str:
    modules = read_text(roots.proc / "modules") or ""
    if any(line.split(" ", 1)[0] == DRIVER for line in modules.splitlines()):
        return "loaded"
    if registered:
        return "built-in"
    if not release:
        return "unknown"
    seen_dir = False
    for lib in (roots.lib, roots.usr_lib):
        moddir = lib / "modules" / release
        if not moddir.is_dir():
            continue
        seen_dir = True
        builtin = read_text(moddir / "modules.builtin", limit=1 << 22) or ""
        if f"/{DRIVER}.ko" in builtin:
            return "built-in"
        dep = read_text(moddir / "modules.dep", limit=1 << 24) or ""
        if f"/{DRIVER}.ko" in dep:
            return "available"
    return "absent" if seen_dir else "unknown"


def _pci_virtio_functions(roots: Roots) -> tuple[int, int]:
    """(virtio-serial functions, virtio functions of any kind) on the PCI bus."""
    serial = virtio = 0
    try:
        entries = sorted(os.listdir(roots.sys / "bus/pci/devices"))
    except OSError:
        return 0, 0
    for entry in entries:
        base = roots.sys / "bus/pci/devices" / entry
        if (read_text(base / "vendor") or "").strip() != VIRTIO_PCI_VENDOR:
            continue
        virtio += 1
        if (read_text(base / "device") or "").strip() in VIRTIO_SERIAL_PCI_DEVICES:
            serial += 1
    return serial, virtio


def _hypervisor(roots: Roots) -> str | None:
    """Evidence that this kernel runs under a hypervisor, or None."""
    kind = (read_text(roots.sys / "hypervisor/type") or "").strip()
    if kind:
        return f"/sys/hypervisor/type {kind}"
    for line in (read_text(roots.proc / "cpuinfo", limit=1 << 20) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and "hypervisor" in value.split():
            return "CPU flag hypervisor"
    vendor = (read_text(roots.sys / "class/dmi/id/sys_vendor") or "").strip()
    if any(vendor.startswith(v) for v in VM_DMI_VENDORS):
        return f"DMI vendor {vendor}"
    return None


def kernel_state(roots: Roots) -> KernelState:
    """What the kernel offers for virtio-serial."""
    release = (read_text(roots.proc / "sys/kernel/osrelease") or "").strip() or None
    bus = roots.sys / "bus/virtio"
    registered = (bus / "drivers" / DRIVER).is_dir()
    devices = []
    try:
        names = sorted(os.listdir(bus / "devices"), key=sort_key)
    except OSError:
        names = []
    for name in names:
        base = bus / "devices" / name
        raw = (read_text(base / "device") or "").strip()
        try:
            device_id: int | None = int(raw, 16)
        except ValueError:
            device_id = None
        try:
            driver: str | None = os.path.basename(os.readlink(base / "driver"))
        except OSError:
            driver = None
        devices.append(VirtioDevice(name, device_id, driver))
    pci_serial, pci_virtio = _pci_virtio_functions(roots)
    return KernelState(
        release=release,
        virtio_bus=bus.is_dir(),
        driver_registered=registered,
        module=_module_state(roots, release, registered),
        devices=devices,
        pci_serial_functions=pci_serial,
        pci_virtio_functions=pci_virtio,
        hypervisor=_hypervisor(roots),
    )


def _parse_devnum(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (text or "").strip().split(":")
        return int(major), int(minor)
    except ValueError:
        return None


def _debugfs(roots: Roots, vport: str) -> dict[str, str]:
    text = read_text(roots.sys / "kernel/debug/virtio-ports" / vport)
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _flag(value: str | None) -> bool | None:
    if value in ("1", "yes"):
        return True
    if value in ("0", "no"):
        return False
    return None


def _inspect_node(port: Port, roots: Roots, io: PortIO) -> None:
    path = roots.map(port.node)
    try:
        number = io.device_number(path)
        st = os.stat(path)
    except OSError:
        port.node_state = "missing"
        return
    port.node_mode = f"{st.st_mode & 0o7777:04o} {st.st_uid}:{st.st_gid}"
    if number is None:
        port.node_state = "not-chardev"
    elif port.devnum is not None and number != port.devnum:
        port.node_state = "wrong-number"
    else:
        port.node_state = "ok"


def _inspect_link(port: Port, roots: Roots, io: PortIO) -> None:
    if not port.link:
        return
    path = roots.map(port.link)
    try:
        target = os.readlink(path)
    except FileNotFoundError:
        port.link_state = "missing"
        return
    except OSError:  # not a symlink: accept a node with the port's number
        try:
            number = io.device_number(path)
        except OSError:
            number = None
        port.link_state = "ok" if number is not None and number == port.devnum else "wrong"
        return
    port.link_target = target
    port.link_state = "ok" if os.path.basename(target) == port.vport else "wrong"


def list_ports(roots: Roots, io: PortIO | None = None) -> list[Port]:
    """Every virtio port the kernel has, with its node, link and debugfs state."""
    io = io or PortIO()
    cls = roots.sys / "class/virtio-ports"
    try:
        vports = sorted((n for n in os.listdir(cls) if n.startswith("vport")), key=sort_key)
    except OSError:
        return []
    ports = []
    for vport in vports:
        base: Path = cls / vport
        name = (read_text(base / "name") or "").strip()
        port = Port(vport=vport, name=name, devnum=_parse_devnum(read_text(base / "dev")))
        _inspect_node(port, roots, io)
        _inspect_link(port, roots, io)
        debug = _debugfs(roots, vport)
        port.host_connected = _flag(debug.get("host_connected"))
        port.guest_connected = _flag(debug.get("guest_connected"))
        ports.append(port)
    return ports
