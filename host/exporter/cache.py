"""What the exporter knows of each hypervisor and domain: the cache a scrape reads.

Pure (no I/O, no trio): the polling loops (:mod:`.poll`) write it from the
trio thread, and the HTTP server's thread reads it through
:meth:`ExporterCache.snapshot` when Prometheus scrapes.  Every domain entry is
an immutable record replaced whole under a lock, so a scrape copies a list of
references and never sees half an update, nor waits for a guest.

Staleness: a running domain whose agent stops answering (or that is paused)
keeps its entry, but its guest data is no longer served
(:attr:`DomainEntry.serves_guest_data` is False) and :attr:`DomainEntry.stale_since`
says since when, so Prometheus marks exactly those series stale.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = [
    "Deadman",
    "DomainEntry",
    "ExporterCache",
    "Filesystem",
    "GuestInfo",
    "HypervisorEntry",
    "Snapshot",
]


@dataclass(frozen=True, slots=True)
class Filesystem:
    mountpoint: str
    fstype: str
    size_bytes: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class GuestInfo:
    os: str
    kernel: str
    hostname: str
    agent_version: str


@dataclass(frozen=True, slots=True)
class Deadman:
    """The guest's freeze dead-man's switch (guest/deadman.py), as its files tell."""

    deadline_seconds: int  # 0: switched off
    armed: bool
    fired: int  # firings recorded since the guest booted
    last_fired: float | None = None  # unix time of the latest firing


@dataclass(frozen=True, slots=True)
class DomainEntry:
    """One domain as last seen; ``None`` means not known (no series is served for it)."""

    name: str
    state: str = "no state"
    running: bool = False
    #: virtio channel name -> 'connected' / 'disconnected' / 'unknown' (live XML, running only)
    channels: tuple[tuple[str, str], ...] = ()
    #: the last agent exchange succeeded within its deadline
    agent_up: bool = False
    round_trip_seconds: float | None = None
    frozen: bool | None = None
    filesystems: tuple[Filesystem, ...] | None = None
    info: GuestInfo | None = None
    users: int | None = None
    deadman: Deadman | None = None
    #: unix time since which this domain's guest data is not fresh (None: fresh)
    stale_since: float | None = None
    #: why the last exchange failed (for the log and tests)
    error: str | None = None

    @property
    def serves_guest_data(self) -> bool:
        return self.running and self.stale_since is None


@dataclass(slots=True)
class HypervisorEntry:
    name: str
    uri: str
    up: bool = False
    #: error kind ('libvirt', 'agent') -> count since the exporter started
    errors: dict[str, int] = field(default_factory=dict)
    #: collection group -> seconds the last collection of that group took
    durations: dict[str, float] = field(default_factory=dict)
    domains: dict[str, DomainEntry] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HypervisorView:
    """A hypervisor as one scrape sees it (copies: nothing changes under the scrape)."""

    name: str
    uri: str
    up: bool
    errors: tuple[tuple[str, int], ...]
    durations: tuple[tuple[str, float], ...]
    domains: tuple[DomainEntry, ...]


Snapshot = tuple[HypervisorView, ...]

#: Error kinds every hypervisor reports (0 until one happens), so a counter exists from the start.
ERROR_KINDS = ("libvirt", "agent")


class ExporterCache:
    """Every hypervisor's and domain's latest state; thread-safe, one writer thread."""

    def __init__(self, hypervisors: Iterable[tuple[str, str]] = ()) -> None:
        self._lock = threading.Lock()
        self._hypervisors: dict[str, HypervisorEntry] = {}
        self._version = 0  # bumped by every change: what a rendered exposition was made from
        for name, uri in hypervisors:
            self.add_hypervisor(name, uri)

    def add_hypervisor(self, name: str, uri: str) -> None:
        with self._lock:
            self._hypervisors[name] = HypervisorEntry(
                name, uri, errors=dict.fromkeys(ERROR_KINDS, 0)
            )

    # ------------------------------------------------------------- reading

    @property
    def version(self) -> int:
        return self._version

    def snapshot(self) -> Snapshot:
        with self._lock:
            return tuple(
                HypervisorView(
                    hv.name,
                    hv.uri,
                    hv.up,
                    tuple(hv.errors.items()),
                    tuple(hv.durations.items()),
                    tuple(hv.domains.values()),
                )
                for hv in self._hypervisors.values()
            )

    def domain(self, hypervisor: str, name: str) -> DomainEntry | None:
        with self._lock:
            return self._hypervisors[hypervisor].domains.get(name)

    def hypervisor(self, name: str) -> HypervisorEntry:
        """The live entry (for tests and the writer; readers use :meth:`snapshot`)."""
        return self._hypervisors[name]

    # ------------------------------------------------------------- writing

    def set_up(self, hypervisor: str, up: bool) -> None:
        with self._lock:
            self._version += 1
            self._hypervisors[hypervisor].up = up

    def count_error(self, hypervisor: str, kind: str) -> None:
        with self._lock:
            self._version += 1
            errors = self._hypervisors[hypervisor].errors
            errors[kind] = errors.get(kind, 0) + 1

    def set_duration(self, hypervisor: str, group: str, seconds: float) -> None:
        with self._lock:
            self._version += 1
            self._hypervisors[hypervisor].durations[group] = seconds

    def set_listing(
        self, hypervisor: str, listing: Iterable[tuple[str, str, bool, dict[str, str]]], now: float
    ) -> None:
        """The domains libvirt lists now: (name, state, running, channel states).

        Domains no longer listed are dropped.  A domain that stops running loses
        its guest data; one that runs but is paused goes stale (see :meth:`agent_failed`).
        """
        with self._lock:
            self._version += 1
            old = self._hypervisors[hypervisor].domains
            new: dict[str, DomainEntry] = {}
            for name, state, running, channels in listing:
                entry = old.get(name) or DomainEntry(name)
                ordered = tuple(sorted(channels.items()))
                if not running and state != "paused":
                    entry = DomainEntry(name, state=state, channels=ordered)
                else:
                    entry = replace(entry, state=state, running=running, channels=ordered)
                    if state == "paused" and entry.stale_since is None:
                        entry = replace(entry, agent_up=False, stale_since=now, error="paused")
                new[name] = entry
            self._hypervisors[hypervisor].domains = new

    def set_channel(self, hypervisor: str, name: str, channel: str, state: str) -> None:
        """One channel's state changed (an agent-lifecycle event)."""
        self._update(
            hypervisor, name, lambda e: replace(e, channels=_with(e.channels, channel, state))
        )

    def agent_answered(self, hypervisor: str, name: str, **data: object) -> None:
        """An exchange succeeded: fresh again; ``data`` replaces what was collected."""
        fresh = {"agent_up": True, "stale_since": None, "error": None, **data}
        # an answer that was under way when the domain paused or stopped says nothing of now
        self._update(hypervisor, name, lambda e: replace(e, **fresh) if e.running else e)

    def agent_failed(self, hypervisor: str, name: str, now: float, error: str) -> None:
        """The agent did not answer within its deadline (or refused): this domain goes stale."""

        def failed(entry: DomainEntry) -> DomainEntry:
            since = entry.stale_since if entry.stale_since is not None else now
            return replace(entry, agent_up=False, stale_since=since, error=error)

        self._update(hypervisor, name, failed)

    def agent_absent(self, hypervisor: str, name: str, error: str) -> None:
        """No route to an agent at all (no channel): nothing to go stale, nothing served."""
        self._update(
            hypervisor,
            name,
            lambda e: DomainEntry(e.name, e.state, e.running, e.channels, error=error),
        )

    def _update(self, hypervisor: str, name: str, change) -> None:
        with self._lock:
            self._version += 1
            domains = self._hypervisors[hypervisor].domains
            entry = domains.get(name)
            if entry is not None:
                domains[name] = change(entry)


def _with(channels: tuple[tuple[str, str], ...], name: str, state: str):
    return tuple(sorted({**dict(channels), name: state}.items()))
