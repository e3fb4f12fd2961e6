"""A domain's snapshots as libvirt keeps them: list and delete (see :mod:`gagent.host.snapshot`).

NO_METADATA snapshots are invisible here (libvirt keeps no record of them);
gagent's own consistency records (:mod:`gagent.host.consistency`) still know them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from gagent.errors import HostError

from .domxml import parse_xml
from .snapshot import SnapshotDisk
from .virt import Domain

__all__ = ["SnapshotInfo", "delete_snapshot", "list_snapshots"]


def _source_of(el: etree._Element | None) -> str | None:
    source = None if el is None else el.find("source")
    if source is None:
        return None
    return source.get("file") or source.get("dev") or source.get("name")


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: int | None  # seconds since the epoch
    state: str
    current: bool
    description: str
    disks: list[SnapshotDisk] = field(default_factory=list)


async def list_snapshots(domain: Domain) -> list[SnapshotInfo]:
    """Snapshots libvirt keeps metadata for, oldest first."""
    found = []
    for name, xml, current in await domain.list_snapshots():
        root = parse_xml(xml, root_tag="domainsnapshot")
        created = root.findtext("creationTime")
        disks = [
            SnapshotDisk(d.get("name", ""), _source_of(d), None)
            for d in root.iterfind("disks/disk")
            if d.get("snapshot") == "external"
        ]
        when = int(created) if created and created.isdigit() else None
        state, about = root.findtext("state") or "", root.findtext("description") or ""
        found.append(SnapshotInfo(name, when, state, current, about, disks))
    return sorted(found, key=lambda s: (s.created or 0, s.name))


async def delete_snapshot(domain: Domain, name: str, *, metadata_only: bool = False) -> str:
    """Delete one snapshot (see the module doc for what libvirt supports); returns a message."""
    try:
        await domain.delete_snapshot(name, metadata_only=metadata_only)
    except HostError as exc:
        if metadata_only or "external" not in str(exc):
            raise
        raise HostError(
            f"{exc}; this libvirt cannot merge external snapshots: forget it with "
            f"--metadata-only, then merge by hand (virsh blockcommit {domain.name} DISK "
            "--active --pivot)",
            code=exc.code,
            libvirt_message=exc.libvirt_message,
        ) from None
    if metadata_only:
        return f"forgot snapshot {name} of {domain.name} (its overlay files stay in use)"
    return f"deleted snapshot {name} of {domain.name} (overlays merged back by libvirt)"
