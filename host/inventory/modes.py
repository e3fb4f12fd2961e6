"""The rscan write modes, as a pure decision: what to write, what conflicts.

The store keeps one guest per *name* (as xCAT's node tables do); the
hypervisor is one of its attributes.  So a name found on two hypervisors, or
found on one while stored for another, is a conflict, resolved per mode:

``--write/-w``  write what was found.
    Not stored, found on several hypervisors: store the last found (in the
    order the hypervisors were given) and report each other one.  Stored for
    A and found on B: do not overwrite, report.  Stored for A and found on A:
    update.
``--update/-u``  only update stored guests with the same name AND hypervisor.
    Not stored, found on several hypervisors: write nothing, report.  Not
    stored, found once: nothing to update (skipped, not a conflict).
``--new/-n``  only add guests whose name is not stored yet.
    Found on several hypervisors: as ``-w`` (the last found, reported).  Stored
    for A and found on B: not added, reported.  Stored and found on A: skipped.

Every conflict names the guest and two hypervisors, in one line.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import Guest

__all__ = ["Conflict", "Mode", "Plan", "plan_writes"]


class Mode(enum.StrEnum):
    WRITE = "write"
    UPDATE = "update"
    NEW = "new"


@dataclass(frozen=True)
class Conflict:
    """One name on two hypervisors.

    ``kind`` is ``duplicate`` (found on both in this scan, not stored) or
    ``stored-elsewhere`` (stored for ``first``, found on ``second``).
    ``written`` is the hypervisor whose data the store holds for the name after
    the scan (None: nothing is stored for it).
    """

    name: str
    kind: str
    first: str
    second: str
    written: str | None
    mode: Mode

    @property
    def message(self) -> str:
        if self.kind == "duplicate":
            if self.written is None:
                return (
                    f"conflict: {self.name} found on both {self.first} and {self.second} and not "
                    f"stored: nothing written (--{self.mode.value} only updates stored guests)"
                )
            return (
                f"conflict: {self.name} found on both {self.first} and {self.second}: "
                f"stored the one on {self.written} (the last found)"
            )
        action = "not added" if self.mode is Mode.NEW else "not overwritten"
        return (
            f"conflict: {self.name} is stored for {self.first} but was found on "
            f"{self.second}: {action}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "hypervisors": [self.first, self.second],
            "written": self.written,
            "message": self.message,
        }


@dataclass
class Plan:
    inserts: list[Guest] = field(default_factory=list)
    updates: list[Guest] = field(default_factory=list)
    skipped: list[Guest] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def plan_writes(found: Sequence[Guest], stored: Mapping[str, str], mode: Mode) -> Plan:
    """Decide the writes for ``found`` (in target order) against ``stored`` (name -> hypervisor)."""
    mode = Mode(mode)
    groups: dict[str, list[Guest]] = {}
    for guest in found:
        groups.setdefault(guest.name, []).append(guest)
    plan = Plan()
    for name, finds in groups.items():
        home = stored.get(name)
        if home is None:
            last = finds[-1]
            written = None if mode is Mode.UPDATE else last.hypervisor
            for earlier in finds[:-1]:
                plan.conflicts.append(
                    Conflict(name, "duplicate", earlier.hypervisor, last.hypervisor, written, mode)
                )
            if written is None:
                plan.skipped.extend(finds)
            else:
                plan.inserts.append(last)
                plan.skipped.extend(finds[:-1])
            continue
        for guest in finds:
            if guest.hypervisor == home:
                if mode is Mode.NEW:
                    plan.skipped.append(guest)
                else:
                    plan.updates.append(guest)
            else:
                plan.conflicts.append(
                    Conflict(name, "stored-elsewhere", home, guest.hypervisor, home, mode)
                )
                plan.skipped.append(guest)
    return plan
