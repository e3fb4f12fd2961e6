"""What gagent.host.virt hands out, with no libvirt in it: errors, URIs, states, events, facts.

Everything here is re-exported by :mod:`gagent.host.virt`; import it from there.
Only ``host/virt_calls.py`` imports libvirt: the codes this module turns into
names are libvirt's public enum values (stable across releases), and
tests/host/test_virt_types.py checks them against libvirt's own constants.
"""

from __future__ import annotations

import enum
import os
import uuid as uuid_module
from dataclasses import dataclass

from gagent.errors import HostError

__all__ = [
    "DEFAULT_URI",
    "CpuCompatibility",
    "DomainEvent",
    "DomainNotFound",
    "DomainState",
    "JobProgress",
    "LibvirtAgentError",
    "NetworkInfo",
    "Unsupported",
    "resolve_uri",
]

#: The embedded default for demos and tests: built into libvirt, no daemon.
DEFAULT_URI = "test:///default"


def looks_like_uuid(text: str) -> bool:
    """Would libvirt (and virsh) read ``text`` as a UUID?"""
    try:
        uuid_module.UUID(text)
    except ValueError:
        return False
    return True


def resolve_uri(uri: str | None) -> str | None:
    """An explicit URI wins, then LIBVIRT_DEFAULT_URI; None lets libvirt choose (as virsh)."""
    return uri or os.environ.get("LIBVIRT_DEFAULT_URI") or None


# ------------------------------------------------------------------ errors


class DomainNotFound(HostError):
    """No domain with that name, UUID or ID on this hypervisor."""


class LibvirtAgentError(HostError):
    """libvirt's qemuAgentCommand failed (agent absent, unresponsive, or it refused)."""


class Unsupported(HostError):
    """The connection's driver does not implement the call (VIR_ERR_NO_SUPPORT)."""


# ------------------------------------------------------------------ domains


class DomainState(enum.Enum):
    NOSTATE = "no state"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutting down"
    SHUTOFF = "shut off"
    CRASHED = "crashed"
    PMSUSPENDED = "suspended"

    @classmethod
    def from_libvirt(cls, code: int) -> DomainState:
        order = [
            cls.NOSTATE,
            cls.RUNNING,
            cls.BLOCKED,
            cls.PAUSED,
            cls.SHUTDOWN,
            cls.SHUTOFF,
            cls.CRASHED,
            cls.PMSUSPENDED,
        ]
        return order[code] if 0 <= code < len(order) else cls.NOSTATE

    @property
    def is_active(self) -> bool:
        return self in (DomainState.RUNNING, DomainState.BLOCKED, DomainState.PAUSED)


#: virDomainEventType, as event names
_LIFECYCLE = {
    0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed",
    5: "stopped", 6: "shutdown", 7: "pmsuspended", 8: "crashed",
}  # fmt: skip
#: virConnectDomainEventAgentLifecycleState, as event names
_AGENT_STATE = {1: "agent connected", 2: "agent disconnected"}


@dataclass(frozen=True)
class DomainEvent:
    """A lifecycle or agent-lifecycle event of one domain."""

    domain: str
    kind: str  # "lifecycle" or "agent"
    detail: str

    @classmethod
    def lifecycle(cls, domain: str, event: int) -> DomainEvent:
        return cls(domain, "lifecycle", _LIFECYCLE.get(event, f"event {event}"))

    @classmethod
    def agent(cls, domain: str, state: int) -> DomainEvent:
        return cls(domain, "agent", _AGENT_STATE.get(state, f"state {state}"))


# -- facts for pre-migration checks and migration (gagent.host.migration) ---


class CpuCompatibility(enum.Enum):
    """compareHypervisorCPU's answer."""

    INCOMPATIBLE = "incompatible"
    IDENTICAL = "identical"
    SUPERSET = "superset"

    @classmethod
    def from_libvirt(cls, code: int) -> CpuCompatibility:
        """virCPUCompareResult: 1 identical, 2 superset; anything else (0, -1) incompatible."""
        return {1: cls.IDENTICAL, 2: cls.SUPERSET}.get(code, cls.INCOMPATIBLE)


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    active: bool
    bridge: str | None


@dataclass(frozen=True)
class JobProgress:
    """A domain job (jobInfo); sizes in bytes, times in milliseconds."""

    kind: str  # none, bounded, unbounded, completed, failed, cancelled
    elapsed_ms: int
    remaining_ms: int
    data_total: int
    data_processed: int
    data_remaining: int

    @classmethod
    def from_libvirt(cls, info: list[int]) -> JobProgress:
        kinds = ["none", "bounded", "unbounded", "completed", "failed", "cancelled"]
        kind = kinds[info[0]] if 0 <= info[0] < len(kinds) else f"type {info[0]}"
        return cls(kind, *(int(v) for v in info[1:6]))
