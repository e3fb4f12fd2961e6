"""What a group snapshot did, member by member, and gagent's store of it.

A :class:`GroupRecord` keeps, for each member, when (monotonic and wall clock,
:class:`gagent.freeze.Instant`) its freeze was sent and confirmed, its snapshot
call started and ended, and its thaw was sent and confirmed; and the group's
**common frozen window**: from the last freeze confirmed to the first thaw sent.
Every member's disks were caught inside its own freeze, and all those freezes
overlapped in that window, so the snapshots together show the application as it
was at any instant of it: a consistent cut.  The window must be non-empty (and
every member frozen) for the group to be called ``consistent``.

One JSON file per group, ``<state dir>/groups/<name>.json``, written atomically
beside the per-snapshot consistency records (:mod:`gagent.host.consistency`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from gagent.freeze import Instant

from .consistency import state_dir, write_json

__all__ = [
    "GroupRecord", "MemberRecord", "common_window", "conclude", "delete_group", "group_path",
    "load_group", "load_groups", "write_group",
]  # fmt: skip

VERSION = 1
#: Member states: its snapshot exists and is kept; was removed after the group failed;
#: was never taken; failed (see ``error``).
KEPT, REMOVED, NOT_TAKEN, FAILED = "kept", "removed", "not-taken", "failed"
STEPS = (
    "freeze_sent", "freeze_confirmed", "snapshot_start", "snapshot_end", "thaw_sent",
    "thaw_confirmed",
)  # fmt: skip


@dataclass
class MemberRecord:
    label: str
    domain: str
    uri: str | None
    domain_uuid: str | None = None
    state: str = NOT_TAKEN
    #: filesystem, libvirt-quiesce, crash or offline (as a single snapshot's record)
    consistency: str | None = None
    disks: list[dict[str, Any]] = field(default_factory=list)
    freeze_sent: Instant | None = None
    freeze_confirmed: Instant | None = None
    snapshot_start: Instant | None = None
    snapshot_end: Instant | None = None
    thaw_sent: Instant | None = None
    thaw_confirmed: Instant | None = None
    #: freeze reply -> thaw reply (gagent.freeze's window)
    frozen_ms: float | None = None
    thawed: bool | None = None
    error: str | None = None
    #: what an operator runs when something was left behind
    advice: str | None = None

    @property
    def froze(self) -> bool:
        return self.freeze_confirmed is not None


@dataclass
class GroupRecord:
    name: str
    policy: str
    created: float = field(default_factory=time.time)
    #: consistent (every member frozen in one non-empty common window), crash, or failed
    consistency: str = "failed"
    window_start: Instant | None = None
    window_end: Instant | None = None
    window_ms: float | None = None
    members: list[MemberRecord] = field(default_factory=list)
    version: int = VERSION

    @property
    def consistent(self) -> bool:
        return self.consistency == "consistent"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> GroupRecord:
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        for key in ("window_start", "window_end"):
            known[key] = _instant(known.get(key))
        members = []
        for item in value.get("members", []):
            fields = {k: v for k, v in item.items() if k in MemberRecord.__dataclass_fields__}
            for step in STEPS:
                fields[step] = _instant(fields.get(step))
            members.append(MemberRecord(**fields))
        known["members"] = members
        return cls(**known)

    def summary(self) -> str:
        """One line: ``consistent, window 12.3 ms, 3 members``."""
        text = self.consistency
        if self.window_ms is not None:
            text += f", common window {self.window_ms:.1f} ms"
        kept = sum(m.state == KEPT for m in self.members)
        return f"{text}, {kept}/{len(self.members)} member snapshot(s) kept"

    def describe(self) -> str:
        lines = [f"group snapshot {self.name}: {self.summary()}"]
        for m in self.members:
            where = f"{m.domain}" + (f" ({m.uri})" if m.uri else "")
            frozen = f", frozen {m.frozen_ms:.1f} ms" if m.frozen_ms is not None else ""
            line = f"  {m.label}: {m.state}, {m.consistency or '-'}{frozen} [{where}]"
            if m.error:
                line += f": {m.error}"
            lines.append(line)
            if m.advice:
                lines.append(f"    run: {m.advice}")
        return "\n".join(lines)


def _instant(value: Any) -> Instant | None:
    if isinstance(value, dict):
        return Instant(float(value["monotonic"]), float(value["wall"]))
    return value if isinstance(value, Instant) else None


def common_window(members: list[MemberRecord]) -> tuple[Instant, Instant] | None:
    """(last freeze confirmed, first thaw sent) over the members that ran (a shut-off one
    has its disks at rest), or None when one of those did not freeze or sent no thaw."""
    running = [m for m in members if m.consistency != "offline"]
    if not running or any(m.freeze_confirmed is None or m.thaw_sent is None for m in running):
        return None
    start = max((m.freeze_confirmed for m in running), key=lambda i: i.monotonic)  # type: ignore[union-attr]
    end = min((m.thaw_sent for m in running), key=lambda i: i.monotonic)  # type: ignore[union-attr]
    return start, end  # type: ignore[return-value]


def conclude(group: GroupRecord) -> None:
    """Set the group's common window and consistency from its members' records."""
    window = common_window(group.members)
    if window is not None:
        group.window_start, group.window_end = window
        group.window_ms = (window[1].monotonic - window[0].monotonic) * 1000
    kept = [m for m in group.members if m.state == KEPT]
    at_rest = all(m.consistency == "offline" for m in kept)  # (no guest ran: nothing to freeze)
    frozen_together = group.window_ms is not None and group.window_ms > 0
    if len(kept) == len(group.members) and (frozen_together or at_rest):
        group.consistency = "consistent"
    else:
        group.consistency = "crash" if kept else "failed"


# ------------------------------------------------------------------- store


def _folder(root: Path | None) -> Path:
    return (root or state_dir()) / "groups"


def group_path(name: str, root: Path | None = None) -> Path:
    return _folder(root) / (quote(name, safe="") + ".json")


def write_group(record: GroupRecord, root: Path | None = None) -> Path:
    """Store ``record`` atomically (OSError when the store cannot be written)."""
    return write_json(group_path(record.name, root), record.to_json())


def load_group(name: str, root: Path | None = None) -> GroupRecord | None:
    try:
        value = json.loads(group_path(name, root).read_text(encoding="utf-8"))
        return GroupRecord.from_json(value)
    except FileNotFoundError:
        return None


def load_groups(root: Path | None = None) -> list[GroupRecord]:
    """Every stored group, oldest first; unreadable files are skipped."""
    found = []
    try:
        paths = sorted(_folder(root).glob("*.json"))
    except OSError:
        return found
    for path in paths:
        try:
            record = GroupRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if record.name == unquote(path.name.removesuffix(".json")):
            found.append(record)
    return sorted(found, key=lambda r: (r.created, r.name))


def delete_group(name: str, root: Path | None = None) -> bool:
    try:
        group_path(name, root).unlink()
    except FileNotFoundError:
        return False
    return True
