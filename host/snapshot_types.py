"""What a disk snapshot is made of: the domain's disks, the ``<domainsnapshot>`` XML
that libvirt is asked for, the method and what comes back (:class:`SnapshotResult`).

The values and XML of :mod:`gagent.host.snapshot`, apart from how it takes one
(freeze, libvirt's call, thaw); that module re-exports every name here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from gagent.errors import UsageError
from gagent.freeze import FreezeRecord

from .domxml import parse_domain, parse_xml

__all__ = [
    "CONSISTENCY", "Disk", "SnapshotDisk", "SnapshotMethod", "SnapshotResult", "domain_disks",
    "external_targets", "snapshot_xml",
]  # fmt: skip


class SnapshotMethod(enum.StrEnum):
    GAGENT_FREEZE = "gagent-freeze"
    LIBVIRT_QUIESCE = "libvirt-quiesce"
    CRASH_CONSISTENT = "crash-consistent"
    OFFLINE = "offline"


#: What each method's snapshot is worth, as the result says it.
CONSISTENCY = {
    SnapshotMethod.GAGENT_FREEZE: "application-consistent (filesystems frozen by gagent)",
    SnapshotMethod.LIBVIRT_QUIESCE: "application-consistent (filesystems frozen by libvirt's "
    "agent; freeze window not measured)",
    SnapshotMethod.CRASH_CONSISTENT: "CRASH-CONSISTENT only: no freeze, as if the power "
    "had been cut (applications may lose unflushed data)",
    SnapshotMethod.OFFLINE: "offline: the domain is not running, its disks are at rest",
}


@dataclass(frozen=True)
class Disk:
    """A disk of the domain XML."""

    target: str
    device: str
    source: str | None
    readonly: bool
    backing: str | None = None


@dataclass(frozen=True)
class SnapshotDisk:
    target: str
    overlay: str | None
    backing: str | None


@dataclass
class SnapshotResult:
    domain: str
    name: str
    method: SnapshotMethod
    metadata: bool
    disks: list[SnapshotDisk]
    #: The bare snapshotCreateXML call.
    snapshot_ms: float
    freeze: FreezeRecord | None = None
    thawed_on_connect: bool = False
    consistency: str = ""

    def __post_init__(self) -> None:
        self.consistency = self.consistency or CONSISTENCY[self.method]

    @property
    def overhead_ms(self) -> float | None:
        """Freeze window minus the snapshot call: what freezing through gagent cost."""
        if self.freeze is None or self.freeze.window_ms is None:
            return None
        return self.freeze.window_ms - self.snapshot_ms

    def describe(self) -> str:
        lines = [f"snapshot {self.name} of {self.domain}: {self.consistency}"]
        if self.thawed_on_connect:
            lines.append("note: the guest was found frozen (an earlier run?) and thawed first")
        record = self.freeze
        if record is not None and record.window_ms is not None:
            lines.append(
                f"froze {record.frozen} filesystem(s); freeze window {record.window_ms:.1f} ms "
                f"= snapshot call {self.snapshot_ms:.1f} ms + gagent {self.overhead_ms:.1f} ms "
                f"(of which the thaw round trip {record.thaw_ms:.1f} ms)"
            )
            lines += [f"warning: {w}" for w in record.warnings]
        else:
            lines.append(f"snapshot call {self.snapshot_ms:.1f} ms")
        for disk in self.disks:
            lines.append(f"{disk.target}: {disk.overlay} (backing {disk.backing})")
        if not self.metadata:
            lines.append("no metadata: libvirt keeps no record (not in 'snapshot list')")
        return "\n".join(lines)


# ---------------------------------------------------------------- XML


def domain_disks(domain_xml: str) -> list[Disk]:
    """The ``<disk>`` elements of a domain XML (live XML also gives the backing file)."""
    return [
        Disk(d.target, d.device, d.path or d.network_name, d.readonly, d.backing)
        for d in parse_domain(domain_xml).disks
        if d.target != "?"
    ]


def snapshot_xml(
    name: str, disks: list[Disk], chosen: Iterable[str] | None = None, description: str = ""
) -> str:
    """<domainsnapshot>: ``chosen`` disks (``vda`` or ``vda=/overlay/path``; default
    every writable disk) external, every other disk ``snapshot='no'``."""
    if not name or "/" in name:
        raise UsageError(f"bad snapshot name {name!r}")
    wanted: dict[str, str | None] = {}
    for item in chosen if chosen is not None else []:
        target, _, path = item.partition("=")
        wanted[target] = path or None
    known = {d.target: d for d in disks}
    for target in wanted:
        disk = known.get(target)
        if disk is None:
            raise UsageError(f"the domain has no disk {target!r} (it has: {', '.join(known)})")
        if disk.readonly or disk.device != "disk":
            raise UsageError(f"disk {target} is read-only or a {disk.device}: nothing to snapshot")
    if chosen is None:
        wanted = {d.target: None for d in disks if d.device == "disk" and not d.readonly}
    if not wanted:
        raise UsageError("no writable disk to snapshot")
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description
    listed = etree.SubElement(root, "disks")
    for disk in disks:
        el = etree.SubElement(listed, "disk", name=disk.target)
        if disk.target not in wanted:
            el.set("snapshot", "no")
            continue
        el.set("snapshot", "external")
        etree.SubElement(el, "driver", type="qcow2")
        if wanted[disk.target]:
            etree.SubElement(el, "source", file=wanted[disk.target])
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def external_targets(snapshot: str) -> set[str]:
    """The disks a ``<domainsnapshot>`` snapshots (every one not ``snapshot='no'``)."""
    root = parse_xml(snapshot, root_tag="domainsnapshot")
    return {d.get("name", "") for d in root.iterfind("disks/disk") if d.get("snapshot") != "no"}
