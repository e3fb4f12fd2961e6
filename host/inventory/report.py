"""Inventory results as text: the rscan table, CSV, JSON, summaries and a progress line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .model import Guest
from .modes import Conflict
from .store import Applied

if TYPE_CHECKING:  # the scan needs libvirt; listing what is stored does not
    from .scan import ScanResult

__all__ = [
    "FORMATS",
    "format_guests",
    "format_show",
    "scan_json",
    "summary_lines",
]

FORMATS = ("table", "wide", "json", "csv")
TABLE_HEADERS = ["type", "name", "hypervisor", "id", "cpu", "memory", "nic", "disk"]
WIDE_HEADERS = ["state", "manager", "agent", "hostname", "os", "addresses"]


def _wide(guest: Guest) -> list[str]:
    agent = guest.agent
    return [
        guest.state,
        guest.manager or "",
        guest.agent_status,
        (agent.hostname if agent else None) or "",
        (agent.os if agent else None) or "",
        ",".join(agent.addresses()) if agent else "",
    ]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, three spaces apart (the seed's look); blank cells stay blank."""
    rows = [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out = []
    for row in [list(headers), *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        out.append("   ".join(cells).rstrip())
    return "\n".join(out)


def _dumps(value: Any, pretty: bool) -> str:
    # indented JSON goes through the pure-Python encoder: for thousands of guests that
    # is a tenth of a second, so only people (a terminal) get it
    return json.dumps(value, indent=2) if pretty else json.dumps(value, separators=(",", ":"))


def format_guests(guests: Sequence[Guest], fmt: str, *, pretty: bool = True) -> str:
    """Guests as ``table`` (rscan's columns), ``wide`` (plus state and agent data),
    ``csv`` (both) or ``json`` (a list of guest objects; ``pretty``: indented)."""
    if fmt == "json":
        return _dumps([g.to_json() for g in guests], pretty)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*TABLE_HEADERS, "uuid", *WIDE_HEADERS])
        for g in guests:
            writer.writerow([*g.row(), g.uuid or "", *_wide(g)])
        return buffer.getvalue().rstrip("\n")
    if fmt == "wide":
        return table(TABLE_HEADERS + WIDE_HEADERS, (g.row() + _wide(g) for g in guests))
    return table(TABLE_HEADERS, (g.row() for g in guests))


def scan_json(
    result: ScanResult,
    conflicts: Sequence[Conflict],
    applied: Applied | None,
    *,
    pretty: bool = True,
) -> str:
    return _dumps(
        {
            "guests": [g.to_json() for g in result.guests],
            "hypervisors": [h.to_json() for h in result.hypervisors],
            "conflicts": [c.to_json() for c in conflicts],
            "agents": result.agent_counts(),
            "store": None if applied is None else applied.to_json(),
        },
        pretty,
    )


def summary_lines(
    result: ScanResult, seconds: float, applied: Applied | None, where: str | None
) -> list[str]:
    reached = [h for h in result.hypervisors if h.ok]
    lines = [
        f"scanned {len(result.hypervisors)} hypervisor(s), {len(reached)} reached, "
        f"in {seconds:.2f}s: {len(result.guests)} guest(s)"
    ]
    counts = result.agent_counts()
    if counts:
        lines.append(
            "agents: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        )
    for guest in result.guests:
        if guest.agent_status in ("timeout", "error"):
            lines.append(
                f"agent {guest.agent_status}: {guest.name} on {guest.hypervisor}: "
                f"{guest.agent_error}"
            )
    for h in result.failed:
        lines.append(
            f"unreachable: {h.name} ({h.uri}): {h.error}"
            if h.name
            else f"unreachable: {h.uri}: {h.error}"
        )
    if applied is not None:
        plan = applied.plan
        lines.append(
            f"stored as scan {applied.scan_id} in {where}: {len(plan.inserts)} added, "
            f"{len(plan.updates)} updated, {len(plan.skipped)} not written, "
            f"{len(plan.conflicts)} conflict(s)"
        )
    return lines


def format_show(info: dict[str, Any]) -> str:
    """``inventory show NAME`` for people."""
    guest = Guest.from_json(info)
    pairs = [
        ("name", guest.name),
        ("hypervisor", guest.hypervisor),
        ("type", guest.type),
        ("state", guest.state),
        ("id", "" if guest.id is None else str(guest.id)),
        ("uuid", guest.uuid or ""),
        ("cpu", str(guest.cpu)),
        ("memory", f"{guest.memory} MiB"),
    ]
    pairs += [
        (f"nic {i}", f"{n.type} {n.source or ''} {n.mac or ''}".strip())
        for i, n in enumerate(guest.nics)
    ]
    pairs += [(f"disk {d.target or i}", f"{d.type} {d.source}") for i, d in enumerate(guest.disks)]
    pairs += [("manager", guest.manager)] if guest.manager else []
    pairs.append(
        ("agent", guest.agent_status + (f" ({guest.agent_error})" if guest.agent_error else ""))
    )
    agent = guest.agent
    if agent is not None:
        pairs += [
            ("agent version", agent.version or ""),
            ("os", agent.os or ""),
            ("kernel", agent.kernel or ""),
            ("hostname", agent.hostname or ""),
        ]
        for iface in agent.interfaces or []:
            pairs.append((f"if {iface['name']}", " ".join(iface["addresses"]) or "-"))
        for fs in agent.filesystems or []:
            pairs.append((f"fs {fs['mountpoint']}", f"{fs['type']} {_usage(fs)}"))
        if agent.users is not None:
            pairs.append(("users", ",".join(u["user"] for u in agent.users) or "-"))
        pairs += [("missing", m) for m in agent.missing]
    seen = info.get("last_seen") or {}
    pairs += [
        ("written by scan", f"{info.get('scan_id')} at {info.get('updated_at')}"),
        (
            "last seen on",
            ", ".join(seen.get("hypervisors") or []) + f" (scan {seen.get('scan_id')})",
        ),
    ]
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}   {v}" for k, v in pairs)


def _usage(fs: dict[str, Any]) -> str:
    used, total = fs.get("used_bytes"), fs.get("total_bytes")
    if used is None or total is None:
        return "-"
    gib = 1024**3
    return f"{used / gib:.1f}/{total / gib:.1f} GiB used"
