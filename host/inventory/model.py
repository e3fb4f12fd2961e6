"""What the inventory knows of one guest, and how it is read from libvirt's domain XML.

A :class:`Guest` holds the rscan fields (type, name, hypervisor, id, cpu,
memory, nics, disks) plus uuid, state and what the guest's own agent reported
(:class:`AgentData`, or None).  ``to_json``/``from_json`` give the one JSON
shape used by ``inventory scan --format json``, ``inventory list --json`` and
the store's columns.

Pure: no libvirt, no I/O; lxml (the domain XML parser) only when XML is read, so the
stored inventory (``inventory list/show/diff``) needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..domxml import DiskRef

__all__ = [
    "AgentData",
    "AgentStatus",
    "Disk",
    "Guest",
    "Nic",
    "parse_domain_xml",
]


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
    #: who owns the domain's definition (oVirt/VDSM, OpenStack nova, KubeVirt), by its XML
    manager: str | None = None

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
            "manager": self.manager,
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
            manager=value.get("manager"),
        )


def parse_domain_xml(xml: str | bytes, *, hypervisor: str, state: str) -> Guest:
    """The rscan fields of one domain from its XML (``virsh dumpxml``), read through the
    one read model of :mod:`gagent.host.domxml`."""
    from ..domxml import parse_domain
    from ..managed import manager_of

    facts = parse_domain(xml)
    manager = manager_of(facts)  # from the XML alone: vdsmd may run on another host
    memory = facts.memory_kib
    return Guest(
        type=facts.virt_type,
        name=facts.name,
        hypervisor=hypervisor,
        id=facts.id,
        cpu=facts.vcpus,
        memory=round(memory / 1024) if memory else None,
        nics=[Nic(i.kind, i.source, i.mac) for i in facts.interfaces],
        disks=[d for d in (_disk(ref) for ref in facts.disks) if d is not None],
        uuid=facts.uuid or None,
        state=state,
        manager=manager.name if manager else None,
    )


def _disk(ref: DiskRef) -> Disk | None:
    if ref.kind == "network":
        name = ref.network_name or ""
        path = f"{ref.protocol}:{name}" if ref.protocol else name
    elif ref.kind == "volume":
        path = f"{ref.pool or ''}/{ref.volume or ''}"
        path = "" if path == "/" else path
    else:
        path = ref.path or ""
    if not path:
        return None  # an empty CD-ROM drive
    return Disk(ref.kind, ref.device, path, None if ref.target == "?" else ref.target)
