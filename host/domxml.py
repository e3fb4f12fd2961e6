"""The one read model of a domain's XML, and the one hardened parser (pure: lxml, no I/O).

:func:`parse_domain` reads the live XML of a running domain (or the inactive
one) into :class:`DomainFacts`: identity, virtualization type, architecture,
CPU, memory, disks (with their backing files), network interfaces, host
devices, agent channels and gagent's metadata.  Every command that reads a
domain reads it through here (the domain session of :mod:`gagent.host.session`
parses the XML once); the writers (:mod:`gagent.host.channel` edits channels
in place) keep their own editing tree.

The parser resolves no entities and touches no network, and its errors are
gagent errors (:class:`DomainXmlError`), never lxml's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from gagent.errors import UsageError

__all__ = [
    "Channel", "DiskRef", "DomainFacts", "DomainXmlError", "HostDevice", "InterfaceRef",
    "channel_of", "parse_channels", "parse_domain", "parse_xml",
]  # fmt: skip


class DomainXmlError(UsageError):
    """A document that is not a well-formed libvirt domain XML."""


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def parse_xml(text: str | bytes, *, root_tag: str | None = "domain") -> etree._Element:
    """Parse XML from libvirt or a user safely: no entities, no network, gagent errors."""
    what = f"{root_tag or 'the'} XML"
    if not isinstance(text, str | bytes):
        raise DomainXmlError(f"{what} must be str or bytes, not {type(text).__name__}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DomainXmlError(f"{what} is not UTF-8: {exc}") from None
    # lxml refuses a str that declares its encoding: parse the UTF-8 bytes instead
    try:
        root = etree.fromstring(text.encode(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise DomainXmlError(f"malformed {what}: {exc.msg} (line {exc.lineno})") from None
    if root_tag is not None and root.tag != root_tag:
        raise DomainXmlError(f"not a {what} document: the root element is <{root.tag}>")
    return root


@dataclass(frozen=True)
class Channel:
    """One ``<channel>`` as the domain XML describes it."""

    name: str | None  # <target name=...>; None for guestfwd channels
    kind: str  # <channel type=...>: 'unix', 'spicevmc', 'pty', ...
    target_type: str | None  # <target type=...>: 'virtio', 'guestfwd', 'xen'
    path: str | None  # <source path=...>
    mode: str | None  # <source mode=...>: 'bind' or 'connect'
    state: str | None  # live XML only: 'connected' / 'disconnected'


@dataclass(frozen=True)
class DiskRef:
    """One ``<disk>``: where its data lives."""

    target: str  # vda, hdc...
    device: str  # disk, cdrom, floppy, lun
    kind: str  # <disk type=...>: file, block, dir, volume, network
    path: str | None = None  # file/block/dir
    pool: str | None = None  # volume
    volume: str | None = None
    protocol: str | None = None  # network: rbd, iscsi, nbd, gluster...
    network_name: str | None = None
    readonly: bool = False
    backing: str | None = None  # live XML: the image under this one (<backingStore>)

    @property
    def has_source(self) -> bool:
        return bool(self.path or self.volume or self.network_name or self.protocol)

    def describe(self) -> str:
        if self.kind == "volume":
            return f"{self.target} (volume {self.volume} of pool {self.pool})"
        if self.kind == "network":
            return f"{self.target} ({self.protocol} {self.network_name or ''})".replace(" )", ")")
        return f"{self.target} ({self.path})"


@dataclass(frozen=True)
class InterfaceRef:
    """One ``<interface>``: what the destination must provide for it."""

    kind: str  # network, bridge, direct, hostdev, user, ethernet...
    source: str | None  # network name, bridge name, or host device for direct
    mac: str | None = None


@dataclass(frozen=True)
class HostDevice:
    """A device passed through from the host (``<hostdev>``, ``<interface type='hostdev'>``)."""

    kind: str  # pci, usb, scsi, mdev, ...
    address: str

    def describe(self) -> str:
        return f"{self.kind} {self.address}".strip()


@dataclass(frozen=True)
class DomainFacts:
    name: str
    uuid: str
    id: int | None  # live XML of a running domain only
    virt_type: str  # <domain type=...>: kvm, qemu, test
    os_type: str | None
    arch: str | None
    machine: str | None
    emulator: str | None
    cpu_mode: str | None  # None: no <cpu> element
    cpu_model: str | None
    cpu_xml: str | None
    memory_kib: int
    current_memory_kib: int
    vcpus: int | None = None  # <vcpu current=...> or <vcpu>
    disks: list[DiskRef] = field(default_factory=list)
    interfaces: list[InterfaceRef] = field(default_factory=list)
    hostdevs: list[HostDevice] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    #: (namespace URI, local name) of each element under <metadata>: whose the XML is
    #: (oVirt, nova and KubeVirt write theirs there; see gagent.host.managed)
    metadata: list[tuple[str, str]] = field(default_factory=list)

    def channel(self, name: str) -> Channel | None:
        """The channel whose ``<target name=...>`` is ``name``, if any."""
        return next((c for c in self.channels if c.name == name), None)

    def source_paths(self) -> set[str]:
        """Every host path a device of the domain binds or opens (sockets, files)."""
        paths = {c.path for c in self.channels if c.path}
        return paths | {d.path for d in self.disks if d.path}


def parse_domain(xml: str | bytes) -> DomainFacts:
    root = parse_xml(xml)
    raw_id = root.get("id")
    vcpu = root.find("vcpu")
    os_type = root.find("os/type")
    cpu = root.find("cpu")
    memory = _kib(root.find("memory"))
    return DomainFacts(
        name=root.findtext("name", "").strip(),
        uuid=root.findtext("uuid", "").strip(),
        id=_int(raw_id) if _int(raw_id) is not None and _int(raw_id) >= 0 else None,
        virt_type=root.get("type", ""),
        os_type=os_type.text.strip() if os_type is not None and os_type.text else None,
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        emulator=(root.findtext("devices/emulator") or "").strip() or None,
        cpu_mode=None if cpu is None else cpu.get("mode", "custom"),
        cpu_model=None if cpu is None else (cpu.findtext("model") or "").strip() or None,
        cpu_xml=None if cpu is None else etree.tostring(cpu, encoding="unicode"),
        memory_kib=memory,
        current_memory_kib=_kib(root.find("currentMemory")) or memory,
        vcpus=None if vcpu is None else (_int(vcpu.get("current")) or _int(vcpu.text)),
        disks=[_disk(d) for d in root.iterfind("devices/disk")],
        interfaces=[_interface(i) for i in root.iterfind("devices/interface")],
        hostdevs=_hostdevs(root),
        channels=[channel_of(c) for c in root.iterfind("devices/channel")],
        metadata=[_qualified(el) for el in root.iterfind("metadata/*")],
    )


def _qualified(element: etree._Element) -> tuple[str, str]:
    name = etree.QName(element)
    return name.namespace or "", name.localname


def parse_channels(xml: str | bytes) -> list[Channel]:
    """Every ``<channel>`` of a domain XML, in document order."""
    return [channel_of(c) for c in parse_xml(xml).iterfind("devices/channel")]


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def channel_of(el: etree._Element) -> Channel:
    """One <channel> element as the read model describes it."""
    target = el.find("target")
    tget = target.get if target is not None else {}.get
    sources = el.findall("source")  # udp channels have two; the one with a path matters
    source = next((s for s in sources if s.get("path")), sources[0] if sources else {})
    return Channel(
        tget("name"), el.get("type", ""), tget("type"),
        source.get("path"), source.get("mode"), tget("state"),
    )  # fmt: skip


_UNITS = {
    "b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
    "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4, "t": 1024**4,
    "tib": 1024**4,
}  # fmt: skip


def _kib(element: etree._Element | None) -> int:
    """A libvirt memory element in KiB (its unit attribute defaults to KiB)."""
    if element is None or not (element.text or "").strip():
        return 0
    scale = _UNITS.get(element.get("unit", "KiB").lower(), 1024)
    return int(element.text.strip()) * scale // 1024


def _disk(disk: etree._Element) -> DiskRef:
    source = disk.find("source")
    kind = disk.get("type", "file")
    get = (lambda name: source.get(name)) if source is not None else (lambda _name: None)
    return DiskRef(
        target=disk.find("target").get("dev", "?") if disk.find("target") is not None else "?",
        device=disk.get("device", "disk"),
        kind=kind,
        path=get("file") or get("dev") or get("dir"),
        pool=get("pool"),
        volume=get("volume"),
        protocol=get("protocol"),
        network_name=get("name"),
        readonly=disk.find("readonly") is not None,
        backing=_backing(disk.find("backingStore")),
    )


def _backing(store: etree._Element | None) -> str | None:
    source = None if store is None else store.find("source")
    if source is None:
        return None
    return source.get("file") or source.get("dev") or source.get("name")


def _interface(iface: etree._Element) -> InterfaceRef:
    kind = iface.get("type", "")
    source = iface.find("source")
    name = None
    if source is not None:
        name = source.get({"network": "network", "bridge": "bridge"}.get(kind, "dev"))
        if kind == "network" and name is None:
            name = source.get("network")
    mac = iface.find("mac")
    return InterfaceRef(kind, name, mac.get("address") if mac is not None else None)


def _hostdevs(root: etree._Element) -> list[HostDevice]:
    found = []
    for dev in root.iterfind("devices/hostdev"):
        found.append(HostDevice(dev.get("type", dev.get("mode", "?")), _address(dev)))
    for iface in root.iterfind("devices/interface[@type='hostdev']"):
        found.append(HostDevice("pci (network interface)", _address(iface)))
    return found


def _address(dev: etree._Element) -> str:
    """A host device's source address as text (PCI d:b:s.f, USB vendor:product, mdev UUID...)."""
    source = dev.find("source")
    if source is None:
        return ""
    address = source.find("address")
    if address is not None and address.get("bus") is not None and address.get("slot"):
        parts = [address.get(k, "0") for k in ("domain", "bus", "slot", "function")]
        dom, bus, slot, fn = (int(p, 0) for p in parts)
        return f"{dom:04x}:{bus:02x}:{slot:02x}.{fn:x}"
    vendor, product = source.find("vendor"), source.find("product")
    if vendor is not None and product is not None:
        return f"{vendor.get('id')}:{product.get('id')}"
    if address is not None and address.get("uuid"):
        return address.get("uuid")
    adapter = source.find("adapter")
    if adapter is not None and address is not None:
        where = " ".join(f"{k}={v}" for k, v in address.attrib.items())
        return f"{adapter.get('name')} {where}"
    return etree.tostring(source, encoding="unicode").strip()
