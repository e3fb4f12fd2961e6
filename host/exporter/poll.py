"""The exporter's trio loops: one watcher per hypervisor, feeding :class:`ExporterCache`.

Per hypervisor (:class:`HypervisorPoller`):

* connect with libvirt's events on; a failed connect, or a libvirt call that
  fails or outlives ``host_timeout``, drops the connection (``gagent_hypervisor_up``
  0, its domains' guest data stale) and connects again after a backoff that
  doubles up to ``backoff_max``;
* the listing (every domain's state and live XML, in one worker thread) runs at
  the ``libvirt`` interval, and at once on a lifecycle event: it gives the
  domains' state and their channels' state (no guest I/O);
* liveness comes from libvirt, not from pings: an agent-lifecycle event or a
  channel seen disconnected marks the agent down at once, and one seen
  connected again asks for a collection at once;
* agent collections (:mod:`.guest`) run per group at that group's interval,
  each domain under its own deadline (``agent_timeout``) and at most
  ``concurrency`` at a time; a domain still being collected is not started
  again, so a hung guest holds only its own slot and only its own series go
  stale.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from gagent.errors import GagentError, UsageError

from ..channel_names import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from ..domxml import Channel, parse_channels, parse_domain
from ..reach import AgentRoute, Transport
from ..session import DomainSession
from ..virt import DomainEvent, DomainRecord, DomainState, Hypervisor, open_hypervisor, watch_events
from .cache import ExporterCache
from .guest import AGENT_GROUPS, DeadmanPaths, collect

__all__ = ["GROUPS", "ExporterSettings", "HypervisorPoller", "parse_intervals", "run_pollers"]

#: Collection groups: the libvirt listing, then the agent's (see gagent.host.exporter.guest).
GROUPS = ("libvirt", *AGENT_GROUPS)
DEFAULT_INTERVAL = 60.0
#: The listing costs no guest I/O and carries our channel's liveness: more often by default.
DEFAULT_LIBVIRT_INTERVAL = 15.0

Connect = Callable[..., Awaitable[Hypervisor]]
#: A collection reaches the agent by the route chosen at listing: no facts of the XML needed.
_NO_FACTS = parse_domain("<domain/>")


def parse_intervals(default: float | None, specs: tuple[str, ...] = ()) -> dict[str, float]:
    """``--interval`` values: a number sets every agent group, ``GROUP=SECONDS`` one group."""
    intervals = {g: DEFAULT_INTERVAL for g in AGENT_GROUPS} | {"libvirt": DEFAULT_LIBVIRT_INTERVAL}
    if default is not None:
        intervals |= dict.fromkeys(AGENT_GROUPS, default)
    for spec in specs:
        group, sep, value = spec.partition("=")
        try:
            seconds = float(value) if sep else float(spec)
        except ValueError:
            seconds = -1.0
        if sep and group not in GROUPS:
            raise UsageError(f"--interval {spec}: no group {group!r} (one of {', '.join(GROUPS)})")
        if not math.isfinite(seconds) or seconds <= 0:
            raise UsageError(f"--interval {spec}: want SECONDS > 0 or GROUP=SECONDS, like fs=300")
        if sep:
            intervals[group] = seconds
        else:
            intervals |= dict.fromkeys(AGENT_GROUPS, seconds)
    return intervals


@dataclass(frozen=True)
class ExporterSettings:
    intervals: dict[str, float] = field(default_factory=lambda: parse_intervals(None))
    agent_timeout: float = 10.0
    host_timeout: float = 30.0
    concurrency: int = 32
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    deadman: DeadmanPaths = field(default_factory=DeadmanPaths)
    #: gagent's channel, watched when a domain has it (else libvirt's).
    channel_name: str = GAGENT_CHANNEL


@dataclass
class _Known:
    """One domain of the latest listing, with its route to an agent (None: none now)."""

    record: DomainRecord
    route: AgentRoute | None
    channels: dict[str, str]


def hypervisor_name(name: str | None, uri: str) -> str:
    """The ``hypervisor`` label: the target's name, else this host for a local URI."""
    return name or socket.gethostname()


def backoff_after(previous: float, listed: bool, settings: ExporterSettings) -> float:
    """How long to wait before connecting again: doubling from ``backoff_initial`` up to
    ``backoff_max``, and from the start again when the lost connection had worked."""
    if listed or previous <= 0:
        return settings.backoff_initial
    return min(previous * 2, settings.backoff_max)


class HypervisorPoller:
    def __init__(
        self,
        name: str,
        uri: str,
        cache: ExporterCache,
        settings: ExporterSettings,
        *,
        connect: Connect = open_hypervisor,
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.name, self.uri, self.cache, self.settings = name, uri, cache, settings
        self.connect, self.log = connect, log
        self.known: dict[str, _Known] = {}
        self.due: dict[str, dict[str, float]] = {}
        self.in_flight: set[str] = set()
        self.wake = trio.Event()
        self.relist = trio.Event()
        self.limiter = trio.CapacityLimiter(settings.concurrency)
        self.connections = 0  # connections made so far (tests watch reconnects)
        self.listed = False  # the current connection was listed at least once

    # ------------------------------------------------------------ connection

    async def run(self) -> None:
        """Watch the hypervisor until cancelled, reconnecting with backoff."""
        backoff = 0.0
        while True:
            hv: Hypervisor | None = None
            self.listed = False
            try:
                with trio.fail_after(self.settings.host_timeout):
                    hv = await self.connect(self.uri, events=True)
                self.connections += 1
                await self._watch(hv)
            except (GagentError, trio.TooSlowError) as exc:
                self._lost(self._reason(exc))
            except BaseExceptionGroup as group:  # from the watch's nursery
                matched, rest = group.split((GagentError, trio.TooSlowError))
                if rest is not None or matched is None:
                    raise
                self._lost(self._reason(_first_leaf(matched)))
            finally:
                if hv is not None:
                    await _close_quietly(hv)
            backoff = backoff_after(backoff, self.listed, self.settings)
            await trio.sleep(backoff)

    def _reason(self, exc: BaseException) -> str:
        return str(exc) or f"no answer within {self.settings.host_timeout:g}s (--host-timeout)"

    def _lost(self, error: str) -> None:
        self.cache.set_up(self.name, False)
        self.cache.count_error(self.name, "libvirt")
        self.log(f"gagent exporter: {self.name} ({self.uri}): {error}; reconnecting")
        now = time.time()
        for name, known in self.known.items():
            if known.record.state.is_active:
                self.cache.agent_failed(self.name, name, now, f"hypervisor lost: {error}")
        self.known = {}

    async def _watch(self, hv: Hypervisor) -> None:
        events_send, events_receive = trio.open_memory_channel[DomainEvent](4096)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(self.settings.host_timeout):
                await nursery.start(partial(watch_events, hv, events_send))
                await self._list(hv)
            self.cache.set_up(self.name, True)
            self.listed = True
            self.log(f"gagent exporter: {self.name} ({self.uri}): connected")
            nursery.start_soon(self._events, events_receive)
            nursery.start_soon(self._agents, hv)
            await self._listing_loop(hv)  # ends only by raising

    # ------------------------------------------------------------ libvirt side

    async def _listing_loop(self, hv: Hypervisor) -> None:
        while True:
            self.relist = trio.Event()
            with trio.move_on_after(self.settings.intervals["libvirt"]):
                await self.relist.wait()
            with trio.fail_after(self.settings.host_timeout):
                await self._list(hv)

    async def _list(self, hv: Hypervisor) -> None:
        started = trio.current_time()
        records = await hv.describe_domains()
        now_wall, now = time.time(), trio.current_time()
        previous, self.known = self.known, {}
        listing = []
        for record in records:
            name, state = record.domain.name, record.state
            found = _channels(record) if state.is_active else []
            channels = {c.name: c.state or "unknown" for c in found}
            running = state in (DomainState.RUNNING, DomainState.BLOCKED)
            route = watched_route(found, self.settings.channel_name) if running else None
            self.known[name] = known = _Known(record, route, channels)
            listing.append((name, state.value, running, channels))
            self._liveness(name, previous.get(name), known, now, now_wall)
        self.cache.set_listing(self.name, listing, now_wall)
        for name, known in self.known.items():
            if known.record.state is DomainState.RUNNING and known.route is None:
                self.cache.agent_absent(self.name, name, "no agent channel")
        self.due = {name: self.due.get(name, {}) for name in self.known}
        self.cache.set_duration(self.name, "libvirt", trio.current_time() - started)
        self.wake.set()

    def _liveness(self, name: str, before: _Known | None, now_known: _Known, now: float, wall):
        """What the listing says of the agent: its channel closed (down at once), or
        (re)opened, or the domain became reachable (collect at once)."""
        route = now_known.route
        if route is None:
            return
        channel = route.channel.name
        was = before.channels.get(channel) if before and before.route else None
        state = now_known.channels.get(channel)
        if state == "disconnected":
            if was != "disconnected":
                self.cache.agent_failed(self.name, name, wall, f"channel {channel} disconnected")
            return
        if before is None or before.route is None or was != state:
            self.due[name] = {}  # everything due now

    async def _events(self, receive: trio.MemoryReceiveChannel[DomainEvent]) -> None:
        async for event in receive:
            if event.kind == "lifecycle":
                self.relist.set()
            elif event.kind == "agent":
                connected = event.detail == "agent connected"
                state = "connected" if connected else "disconnected"
                self.cache.set_channel(self.name, event.domain, LIBVIRT_AGENT_CHANNEL, state)
                known = self.known.get(event.domain)
                if known is None:
                    continue
                known.channels[LIBVIRT_AGENT_CHANNEL] = state
                if known.route is None or known.route.channel.name != LIBVIRT_AGENT_CHANNEL:
                    continue
                if connected:
                    self.due[event.domain] = {}
                    self.wake.set()
                else:
                    down = "agent disconnected"
                    self.cache.agent_failed(self.name, event.domain, time.time(), down)

    # ------------------------------------------------------------ agent side

    async def _agents(self, hv: Hypervisor) -> None:
        intervals = self.settings.intervals
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                batch, next_due = [], now + intervals["libvirt"]
                for name, known in self.known.items():
                    if known.route is None or name in self.in_flight:
                        continue
                    if known.channels.get(known.route.channel.name) == "disconnected":
                        continue  # down: a collection would only wait for its deadline
                    due = self.due.setdefault(name, {})
                    groups = tuple(g for g in AGENT_GROUPS if due.get(g, now) <= now)
                    for group in groups:
                        due[group] = now + intervals[group]
                    if groups:
                        batch.append((name, known, groups))
                    next_due = min(next_due, *due.values()) if due else next_due
                if batch:
                    self.in_flight.update(name for name, _, _ in batch)
                    nursery.start_soon(self._collect_batch, hv, batch)
                self.wake = trio.Event()
                with trio.move_on_at(next_due):
                    await self.wake.wait()

    async def _collect_batch(self, hv: Hypervisor, batch) -> None:
        started = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                for name, known, groups in batch:
                    nursery.start_soon(self._collect_one, hv, name, known, groups)
        finally:
            self.cache.set_duration(self.name, "agent", trio.current_time() - started)
            self.wake.set()

    async def _collect_one(self, hv: Hypervisor, name: str, known: _Known, groups) -> None:
        record, route = known.record, known.route
        assert route is not None
        timeout = self.settings.agent_timeout
        try:
            async with self.limiter:
                with trio.fail_after(timeout):
                    session = DomainSession(hv, record.domain, record.state, record.xml, _NO_FACTS)
                    async with session.agent(route=route) as agent:
                        data = await collect(agent, groups, self.settings.deadman)
        except trio.TooSlowError:
            self._agent_error(name, f"no answer within {timeout:g}s")
        except (GagentError, OSError) as exc:
            self._agent_error(name, str(exc) or type(exc).__name__)
        else:
            self.cache.agent_answered(self.name, name, **data)
        finally:
            self.in_flight.discard(name)

    def _agent_error(self, name: str, error: str) -> None:
        self.cache.count_error(self.name, "agent")
        self.cache.agent_failed(self.name, name, time.time(), error)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _close_quietly(hv: Hypervisor) -> None:
    try:
        await hv.close()
    except Exception:  # libvirt's own error: a lost connection refuses to close
        pass


def _channels(record: DomainRecord) -> list[Channel]:
    if "<channel" not in record.xml:
        return []
    return [c for c in parse_channels(record.xml) if c.name and c.target_type == "virtio"]


def watched_route(channels: list[Channel], channel_name: str = GAGENT_CHANNEL) -> AgentRoute | None:
    """The one agent the exporter watches: gagent's channel when the domain has one (a
    unix socket), else libvirt's.  Never the other one when it goes down (as ``auto``
    does for a command): then ``gagent_agent_up`` would not say that it is down."""
    by_name = {c.name: c for c in channels}
    ours = by_name.get(channel_name)
    if ours is not None and ours.kind == "unix" and ours.path:
        return AgentRoute(Transport.SOCKET, ours, ours.path)
    theirs = by_name.get(LIBVIRT_AGENT_CHANNEL)
    return None if theirs is None else AgentRoute(Transport.LIBVIRT, theirs)


async def run_pollers(
    targets: list[tuple[str, str]],
    cache: ExporterCache,
    settings: ExporterSettings,
    *,
    connect: Connect = open_hypervisor,
    log: Callable[[str], None] = lambda _line: None,
    task_status: trio.TaskStatus[list[HypervisorPoller]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch every (name, URI) until cancelled."""
    pollers = [
        HypervisorPoller(name, uri, cache, settings, connect=connect, log=log)
        for name, uri in targets
    ]
    async with trio.open_nursery() as nursery:
        for poller in pollers:
            nursery.start_soon(poller.run)
        task_status.started(pollers)
