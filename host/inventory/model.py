"""What the inventory knows of one guest, and how it is read from libvirt's domain XML.

A :class:`Guest` holds the rscan fields (type, name, hypervisor, id, cpu,
memory, nics, disks) plus uuid, state and what the guest's own agent reported
(:class:`AgentData`, or None).  ``to_json``/``from_json`` give the one JSON
shape used by ``inventory scan --format json``, ``inventory list --json`` and
the store's columns.

Pure: lxml only, no libvirt, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from lxml import etree

__all__ = [
    "AgentData",
    "AgentStatus",
    "Disk",
    "Guest",
    "Nic",
    "parse_domain_xml",
]

_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}
_MIB = 1024**2


class AgentStatus:
    """Values of :attr:`Guest.agent_status`."""

    OK = "ok"  # the agent answered (some commands may still be missing: AgentData.missing)
    TIMEOUT = "timeout"  # no answer within --agent-timeout
    UNAVAILABLE = "unavailable"  # no channel, nobody listening, libvirt says no agent
    ERROR = "error"  # the agent or the transport failed otherwise
    NOT_RUNNING = "not running"  # shut off or paused: not asked
    SKIPPED = "skipped"  # --no-agent


@dataclass(frozen=True)
class Nic:
    """One ``<interface>``: its type, what it is plugged into (bridge, network...) and MAC."""

    type: str
    source: str | None
    mac: str | None

    def cell(self) -> str:
        return "/".join(part for part in (self.source or self.type, self.mac) if part)


@dataclass(frozen=True)
class Disk:
    """One ``<disk>`` with a source: a file, a block device, a network volume..."""

    type: str
    device: str
    source: str
    target: str | None = None


@dataclass(frozen=True)
class AgentData:
    """What the guest agent reported; a part is None when its command was not available
    (``missing`` then says which and why)."""

    version: str | None = None
    os: str | None = None
    kernel: str | None = None
    hostname: str | None = None
    interfaces: list[dict[str, Any]] | None = None  # {name, mac, addresses: ["ip/prefix"]}
    filesystems: list[dict[str, Any]] | None = None  # {mountpoint, type, used_bytes, total_bytes}
    users: list[dict[str, Any]] | None = None  # {user, domain, login_time}
    missing: list[str] = field(default_factory=list)

    def addresses(self) -> list[str]:
        return [a for i in self.interfaces or [] for a in i.get("addresses", [])]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "os": self.os,
            "kernel": self.kernel,
            "hostname": self.hostname,
            "interfaces": self.interfaces,
            "filesystems": self.filesystems,
            "users": self.users,
            "missing": list(self.missing),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> AgentData:
        return cls(
            version=value.get("version"),
            os=value.get("os"),
            kernel=value.get("kernel"),
            hostname=value.get("hostname"),
            interfaces=value.get("interfaces"),
            filesystems=value.get("filesystems"),
            users=value.get("users"),
            missing=list(value.get("missing") or []),
        )


@dataclass(frozen=True)
class Guest:
    """One domain on one hypervisor, as a scan found it (or as the store keeps it)."""

    type: str
    name: str
    hypervisor: str
    id: int | None
    cpu: int | None
    memory: int | None  # MiB
    nics: list[Nic]
    disks: list[Disk]
    uuid: str | None
    state: str
    agent: AgentData | None = None
    agent_status: str = AgentStatus.SKIPPED
    agent_error: str | None = None

    def with_agent(self, status: str, data: AgentData | None = None, error: str | None = None):
        return replace(self, agent_status=status, agent=data, agent_error=error)

    def row(self) -> list[str]:
        """The rscan table's cells: type name hypervisor id cpu memory nic disk."""
        return [
            self.type,
            self.name,
            self.hypervisor,
            "" if self.id is None else str(self.id),
            "" if self.cpu is None else str(self.cpu),
            "" if self.memory is None else str(self.memory),
            ",".join(n.cell() for n in self.nics),
            ",".join(d.source for d in self.disks),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "hypervisor": self.hypervisor,
            "id": self.id,
            "cpu": self.cpu,
            "memory": self.memory,
            "nics": [{"type": n.type, "source": n.source, "mac": n.mac} for n in self.nics],
            "disks": [
                {"type": d.type, "device": d.device, "source": d.source, "target": d.target}
                for d in self.disks
            ],
            "uuid": self.uuid,
            "state": self.state,
            "agent": None if self.agent is None else self.agent.to_json(),
            "agent_status": self.agent_status,
            "agent_error": self.agent_error,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Guest:
        agent = value.get("agent")
        return cls(
            type=value["type"],
            name=value["name"],
            hypervisor=value["hypervisor"],
            id=value.get("id"),
            cpu=value.get("cpu"),
            memory=value.get("memory"),
            nics=[Nic(n["type"], n.get("source"), n.get("mac")) for n in value.get("nics", [])],
            disks=[
                Disk(d["type"], d.get("device", "disk"), d["source"], d.get("target"))
                for d in value.get("disks", [])
            ],
            uuid=value.get("uuid"),
            state=value.get("state", ""),
            agent=None if agent is None else AgentData.from_json(agent),
            agent_status=value.get("agent_status", AgentStatus.SKIPPED),
            agent_error=value.get("agent_error"),
        )


def parse_domain_xml(xml: str | bytes, *, hypervisor: str, state: str) -> Guest:
    """The rscan fields of one domain from its XML (``virsh dumpxml``)."""
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    raw_id = root.get("id")
    vcpu = root.find("vcpu")
    cpu = None
    if vcpu is not None:
        cpu = _int(vcpu.get("current")) or _int(vcpu.text)
    devices = root.find("devices")
    nics: list[Nic] = []
    disks: list[Disk] = []
    if devices is not None:
        nics = [_nic(el) for el in devices.iterfind("interface")]
        disks = [d for d in (_disk(el) for el in devices.iterfind("disk")) if d is not None]
    return Guest(
        type=root.get("type", ""),
        name=root.findtext("name", ""),
        hypervisor=hypervisor,
        id=None if raw_id is None or int(raw_id) < 0 else int(raw_id),
        cpu=cpu,
        memory=_memory_mib(root.find("memory")),
        nics=nics,
        disks=disks,
        uuid=root.findtext("uuid"),
        state=state,
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _memory_mib(el: Any) -> int | None:
    if el is None or _int(el.text) is None:
        return None
    scale = _UNITS.get((el.get("unit") or "KiB").lower(), 1024)
    return round(int(el.text) * scale / _MIB)


def _nic(el: Any) -> Nic:
    kind = el.get("type", "")
    source = el.find("source")
    name = None
    if source is not None:
        name = (
            source.get("bridge")
            or source.get("network")
            or source.get("dev")
            or source.get("path")
            or source.get("address")
        )
    mac = el.find("mac")
    return Nic(kind, name, None if mac is None else mac.get("address"))


def _disk(el: Any) -> Disk | None:
    kind = el.get("type", "file")
    source = el.find("source")
    if source is None:
        return None  # an empty CD-ROM drive
    if kind == "network":
        name = source.get("name") or ""
        protocol = source.get("protocol")
        path = f"{protocol}:{name}" if protocol else name
    elif kind == "volume":
        path = f"{source.get('pool', '')}/{source.get('volume', '')}"
    else:
        path = source.get("file") or source.get("dev") or source.get("dir") or ""
    if not path:
        return None
    target = el.find("target")
    return Disk(kind, el.get("device", "disk"), path, None if target is None else target.get("dev"))
