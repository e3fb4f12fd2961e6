"""A stored guest as a row of the ``guests`` table and back, column by column NAME.

Every read and write of that table goes through :data:`GUEST_FIELDS`: a column
added by a later schema version cannot shift another one's value (schema v3's
``manager`` once did: ``show`` read the scan id from it).
"""

from __future__ import annotations

import json
from typing import Any

from .model import Guest

__all__ = [
    "GUEST_COLUMNS",
    "GUEST_FIELDS",
    "UPDATED_FIELDS",
    "guest_of",
    "guest_values",
    "row_by_name",
]

#: The guests table's columns, in the order of :data:`GUEST_COLUMNS`.
GUEST_FIELDS = (
    "name", "hypervisor", "type", "dom_id", "cpu", "memory", "uuid", "state", "nics", "disks",
    "agent", "agent_status", "agent_error", "manager", "scan_id", "updated_at",
)  # fmt: skip
GUEST_COLUMNS = ", ".join(GUEST_FIELDS)
#: What an update rewrites: all but the key (the name, and the hypervisor it is stored for).
UPDATED_FIELDS = tuple(f for f in GUEST_FIELDS if f not in ("name", "hypervisor"))


def guest_values(fields: tuple[str, ...], g: Guest, scan_id: int, now: str) -> tuple[Any, ...]:
    """The guest's row: the value of each of ``fields``, in that order."""
    data = g.to_json()
    by_name = {
        "name": g.name,
        "hypervisor": g.hypervisor,
        "type": g.type,
        "dom_id": g.id,
        "cpu": g.cpu,
        "memory": g.memory,
        "uuid": g.uuid,
        "state": g.state,
        "nics": json.dumps(data["nics"]),
        "disks": json.dumps(data["disks"]),
        "agent": None if g.agent is None else json.dumps(data["agent"]),
        "agent_status": g.agent_status,
        "agent_error": g.agent_error,
        "manager": g.manager,
        "scan_id": scan_id,
        "updated_at": now,
    }
    return tuple(by_name[f] for f in fields)


def row_by_name(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row selected as ``GUEST_COLUMNS``, by column name."""
    return dict(zip(GUEST_FIELDS, row, strict=True))


def guest_of(row: dict[str, Any]) -> Guest:
    agent = row["agent"]
    return Guest.from_json(
        {
            "type": row["type"],
            "name": row["name"],
            "hypervisor": row["hypervisor"],
            "id": row["dom_id"],
            "cpu": row["cpu"],
            "memory": row["memory"],
            "uuid": row["uuid"],
            "state": row["state"],
            "nics": json.loads(row["nics"]),
            "disks": json.loads(row["disks"]),
            "agent": None if agent is None else json.loads(agent),
            "agent_status": row["agent_status"],
            "agent_error": row["agent_error"],
            "manager": row["manager"],
        }
    )
