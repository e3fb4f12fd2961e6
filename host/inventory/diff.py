"""What changed between two scans: new, gone, moved between hypervisors, changed cpu/memory.

Pure.  The caller supplies the sightings of the latest scan and, for each
hypervisor that scan reached, the sightings of the previous scan that reached
it.  A hypervisor the latest scan did not reach says nothing: its guests are
not "gone".  A name that left one hypervisor and appeared on another moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Diff", "Sighting", "compute_diff"]


@dataclass(frozen=True)
class Sighting:
    """One guest seen on one hypervisor by one scan."""

    name: str
    hypervisor: str
    uuid: str | None = None
    cpu: int | None = None
    memory: int | None = None
    state: str | None = None


@dataclass
class Diff:
    scan_id: int | None = None
    #: hypervisor -> id of the scan compared against (None: first time it was reached)
    previous: dict[str, int | None] = field(default_factory=dict)
    new: list[Sighting] = field(default_factory=list)
    gone: list[Sighting] = field(default_factory=list)
    moved: list[tuple[Sighting, Sighting]] = field(default_factory=list)  # (before, after)
    changed: list[tuple[Sighting, Sighting, list[str]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.new or self.gone or self.moved or self.changed)

    def lines(self) -> list[str]:
        out = [f"new      {s.name} on {s.hypervisor}" for s in self.new]
        out += [f"gone     {s.name} from {s.hypervisor}" for s in self.gone]
        out += [f"moved    {a.name} from {a.hypervisor} to {b.hypervisor}" for a, b in self.moved]
        for before, after, fields in self.changed:
            parts = [f"{f} {getattr(before, f)} -> {getattr(after, f)}" for f in fields]
            out.append(f"changed  {after.name} on {after.hypervisor}: " + ", ".join(parts))
        return out

    def to_json(self) -> dict[str, Any]:
        def one(s: Sighting) -> dict[str, Any]:
            return {"name": s.name, "hypervisor": s.hypervisor, "cpu": s.cpu, "memory": s.memory}

        return {
            "scan_id": self.scan_id,
            "previous": self.previous,
            "new": [one(s) for s in self.new],
            "gone": [one(s) for s in self.gone],
            "moved": [
                {"name": a.name, "from": a.hypervisor, "to": b.hypervisor} for a, b in self.moved
            ],
            "changed": [
                {
                    "name": after.name,
                    "hypervisor": after.hypervisor,
                    **{
                        f: {"before": getattr(before, f), "after": getattr(after, f)}
                        for f in fields
                    },
                }
                for before, after, fields in self.changed
            ],
        }


def compute_diff(previous: Iterable[Sighting], current: Iterable[Sighting]) -> Diff:
    """``previous``: what the hypervisors of ``current``'s scan held before."""
    before = {(s.name, s.hypervisor): s for s in previous}
    after = {(s.name, s.hypervisor): s for s in current}
    diff = Diff()
    appeared = [s for key, s in after.items() if key not in before]
    vanished = [s for key, s in before.items() if key not in after]
    for key, now in after.items():
        then = before.get(key)
        if then is not None:
            fields = [f for f in ("cpu", "memory") if getattr(then, f) != getattr(now, f)]
            if fields:
                diff.changed.append((then, now, fields))
    unmatched = list(vanished)
    for now in appeared:
        match = next((v for v in unmatched if v.name == now.name), None)
        if match is None:
            diff.new.append(now)
        else:
            unmatched.remove(match)
            diff.moved.append((match, now))
    diff.gone = unmatched
    key = _order
    diff.new.sort(key=key)
    diff.gone.sort(key=key)
    diff.moved.sort(key=lambda pair: _order(pair[1]))
    diff.changed.sort(key=lambda triple: _order(triple[1]))
    return diff


def _order(s: Sighting) -> tuple[str, str]:
    return (s.name, s.hypervisor)
