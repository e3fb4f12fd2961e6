"""How consistent each snapshot is: the record gagent keeps of how it was taken.

A :class:`ConsistencyRecord` says which of ``filesystem`` (gagent's own freeze:
which filesystems, whether fsfreeze hooks were present), ``libvirt-quiesce``
(libvirt froze through its agent), ``crash`` (no freeze) or ``offline`` (the
domain was not running) a snapshot is, per disk, with the freeze window in ms
and the qemu-ga version.  ``fallback`` says why a ``--consistency prefer``
snapshot is crash-consistent although a freeze was wanted.

The record lives in gagent's own store, not in libvirt's snapshot XML: the
freeze window is known only after the thaw, when libvirt's object exists
already, and a ``--no-metadata`` snapshot has no libvirt object at all.  One
JSON file per snapshot, ``<state dir>/snapshots/<domain UUID>/<name>.json``,
written atomically (a temporary file, fsync, rename): a crash leaves the old
record or the new one, never half of one.  The state directory is
``$GAGENT_STATE_DIR``, else ``/var/lib/gagent`` for root and
``$XDG_STATE_HOME/gagent`` (``~/.local/state/gagent``) for others.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "CONSISTENCY_KINDS", "ConsistencyRecord", "DiskConsistency", "delete_record",
    "load_records", "state_dir", "write_json", "write_record",
]  # fmt: skip

#: What a snapshot can be, most consistent first.
CONSISTENCY_KINDS = ("filesystem", "libvirt-quiesce", "crash", "offline")
VERSION = 1


@dataclass
class DiskConsistency:
    target: str
    overlay: str | None
    backing: str | None
    consistency: str
    #: frozen filesystems found on this disk (guest-get-fsinfo's disk names)
    mountpoints: list[str] = field(default_factory=list)


_DISK_FIELDS = frozenset(DiskConsistency.__dataclass_fields__)


@dataclass
class ConsistencyRecord:
    domain: str
    domain_uuid: str
    snapshot: str
    consistency: str
    policy: str
    created: float = field(default_factory=time.time)
    metadata: bool = True
    #: why a freeze was wanted but the snapshot is crash-consistent (policy prefer)
    fallback: str | None = None
    route: str | None = None
    qga_version: str | None = None
    freeze_window_ms: float | None = None
    #: filesystems the freeze covered: mountpoint -> type
    filesystems: dict[str, str] = field(default_factory=dict)
    #: fsfreeze hook -> present (None: unknown)
    hooks: dict[str, bool | None] = field(default_factory=dict)
    deadman_deadline: int | None = None
    disks: list[DiskConsistency] = field(default_factory=list)
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ConsistencyRecord:
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        known["disks"] = [
            DiskConsistency(**{k: v for k, v in d.items() if k in _DISK_FIELDS})
            for d in value.get("disks", [])
        ]  # fmt: skip
        return cls(**known)

    def summary(self) -> str:
        """A short column for 'snapshot list': ``filesystem 12.3ms``, ``crash (fallback)``."""
        text = self.consistency
        if self.freeze_window_ms is not None:
            text += f" {self.freeze_window_ms:.0f}ms"
        if self.fallback:
            text += " (fallback)"
        mixed = {d.consistency for d in self.disks} - {self.consistency}
        if mixed:
            text += (
                " (per disk: " + " ".join(f"{d.target}={d.consistency}" for d in self.disks) + ")"
            )
        return text


def state_dir() -> Path:
    explicit = os.environ.get("GAGENT_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/gagent")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gagent"


def _domain_dir(domain_uuid: str, root: Path | None) -> Path:
    return (root or state_dir()) / "snapshots" / quote(domain_uuid, safe="")


def _file_name(snapshot: str) -> str:
    return quote(snapshot, safe="") + ".json"


def write_record(record: ConsistencyRecord, root: Path | None = None) -> Path:
    """Store ``record`` atomically; returns its path (OSError when the store is not writable)."""
    target = _domain_dir(record.domain_uuid, root) / _file_name(record.snapshot)
    return write_json(target, record.to_json())


def write_json(target: Path, value: Any) -> Path:
    """Write ``value`` to ``target`` atomically (temporary file, fsync, rename, fsync of the
    directory): a crash leaves the old file or the new one, never half of one."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(value, out, indent=1, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def load_records(domain_uuid: str, root: Path | None = None) -> dict[str, ConsistencyRecord]:
    """snapshot name -> record, for one domain; unreadable files are skipped."""
    folder = _domain_dir(domain_uuid, root)
    found: dict[str, ConsistencyRecord] = {}
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            record = ConsistencyRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if record.snapshot == unquote(path.name.removesuffix(".json")):
            found[record.snapshot] = record
    return found


def delete_record(domain_uuid: str, snapshot: str, root: Path | None = None) -> bool:
    try:
        (_domain_dir(domain_uuid, root) / _file_name(snapshot)).unlink()
    except FileNotFoundError:
        return False
    return True
