"""Scanning hypervisors concurrently (trio): every domain, then what its agent says.

* Hypervisors are scanned at most ``concurrency`` at a time, each under its
  own ``host_timeout`` (connect, list, XML, hostname).  One that cannot be
  reached, refuses, or times out is reported in :attr:`ScanResult.hypervisors`
  and the others go on.
* Agents are asked (running domains only) at most ``concurrency`` at a time,
  each under its own ``agent_timeout``, as soon as their hypervisor's listing
  is in: a silent agent only ever costs its own slot, never the others' time.
* The result is ordered by the targets' order, then by domain name, whatever
  finished first: the ``--write`` mode's "last found" depends on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial

import trio

from gagent.commands import AgentCommands
from gagent.errors import AgentUnavailable, GagentError

from ..channel_names import GAGENT_CHANNEL
from ..virt import DomainRecord, DomainState, Hypervisor, open_hypervisor
from .agentdata import check_route, gather_agent_data, open_guest_agent
from .model import AgentStatus, Guest, parse_domain_xml
from .targets import Target

__all__ = ["AgentOpener", "HypervisorReport", "ScanProgress", "ScanResult", "scan_hypervisors"]

AgentOpener = Callable[[Hypervisor, DomainRecord], AbstractAsyncContextManager[AgentCommands]]

logger = logging.getLogger("gagent.inventory")


@dataclass
class HypervisorReport:
    """How the scan of one hypervisor went."""

    uri: str
    name: str | None
    ok: bool = False
    error: str | None = None
    domains: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "uri": self.uri,
            "ok": self.ok,
            "error": self.error,
            "domains": self.domains,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ScanProgress:
    """Counters for a progress display, updated as the scan goes."""

    hypervisors_total: int = 0
    hypervisors_done: int = 0
    guests: int = 0
    agents_total: int = 0
    agents_done: int = 0


@dataclass
class ScanResult:
    guests: list[Guest] = field(default_factory=list)
    hypervisors: list[HypervisorReport] = field(default_factory=list)

    @property
    def failed(self) -> list[HypervisorReport]:
        return [h for h in self.hypervisors if not h.ok]

    def agent_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for guest in self.guests:
            counts[guest.agent_status] = counts.get(guest.agent_status, 0) + 1
        return counts


async def scan_hypervisors(
    targets: Sequence[Target],
    *,
    agent: bool = True,
    agent_timeout: float = 5.0,
    concurrency: int = 16,
    host_timeout: float = 60.0,
    on_progress: Callable[[ScanProgress], None] | None = None,
    channel_name: str = GAGENT_CHANNEL,
    agent_opener: AgentOpener = open_guest_agent,
    route_check: Callable[[DomainRecord], None] | None = check_route,
) -> ScanResult:
    """Scan ``targets``; never raises for one hypervisor's or one agent's failure.

    ``route_check`` runs before a domain's agent task is started (no I/O): an
    AgentUnavailable from it marks the guest at once.  ``agent_opener`` opens
    the agent (tests pass fakes of both; None: no route check); the real ones
    look for gagent's channel ``channel_name`` (else libvirt's org.qemu.guest_agent.0).
    """
    if agent_opener is open_guest_agent:
        agent_opener = partial(open_guest_agent, channel_name=channel_name)
    if route_check is check_route:
        route_check = partial(check_route, channel_name=channel_name)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    progress = ScanProgress(hypervisors_total=len(targets))
    notify = on_progress or (lambda _p: None)
    host_slots = trio.CapacityLimiter(concurrency)
    agent_slots = trio.CapacityLimiter(concurrency)
    reports = [HypervisorReport(t.uri, t.name) for t in targets]
    found: list[list[Guest]] = [[] for _ in targets]

    async def ask_agent(hv: Hypervisor, record: DomainRecord, guests: list[Guest], i: int):
        async with agent_slots:
            guests[i] = await _agent_of(guests[i], hv, record, agent_opener, agent_timeout)
        progress.agents_done += 1
        notify(progress)

    async def one(index: int, target: Target) -> None:
        report = reports[index]
        started = time.monotonic()
        hv: Hypervisor | None = None
        try:
            async with host_slots:
                with trio.move_on_after(host_timeout) as scope:
                    try:
                        hv = await open_hypervisor(target.uri, cancellable=True)
                        records = await hv.describe_domains()
                        if report.name is None:
                            report.name = await hv.hostname()
                    except GagentError as exc:
                        report.error = str(exc)
                if scope.cancelled_caught:
                    report.error = f"no answer within {host_timeout:g}s (--host-timeout)"
                    hv = None  # a worker thread may still use it: left to the garbage collector
            report.seconds = time.monotonic() - started
            if report.error is not None:
                logger.info("%s: not scanned after %.1fs: %s", target.uri, report.seconds,
                            report.error)  # fmt: skip
                return
            assert hv is not None and report.name is not None
            report.ok, report.domains = True, len(records)
            logger.info("%s (%s): %d domain(s) found in %.2fs", report.name, target.uri,
                        len(records), report.seconds)  # fmt: skip
            records.sort(key=lambda r: r.domain.name)
            guests = [
                parse_domain_xml(r.xml, hypervisor=report.name, state=r.state.value)
                for r in records
            ]
            for i, record in enumerate(records):
                if not record.state.is_active or record.state is DomainState.PAUSED:
                    guests[i] = guests[i].with_agent(AgentStatus.NOT_RUNNING)
                elif agent and route_check is not None:
                    try:
                        route_check(record)
                    except AgentUnavailable as exc:
                        guests[i] = guests[i].with_agent(AgentStatus.UNAVAILABLE, error=str(exc))
            progress.guests += len(guests)
            if agent:
                asked = [
                    i for i in range(len(records)) if guests[i].agent_status == AgentStatus.SKIPPED
                ]
                progress.agents_total += len(asked)
                notify(progress)
                async with trio.open_nursery() as nursery:
                    for i in asked:
                        nursery.start_soon(ask_agent, hv, records[i], guests, i)
                logger.info("%s: %d agent(s) asked, done in %.2fs", report.name, len(asked),
                            time.monotonic() - started)  # fmt: skip
            found[index] = guests
        finally:
            progress.hypervisors_done += 1
            notify(progress)
            if hv is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await hv.close()

    notify(progress)
    async with trio.open_nursery() as nursery:
        for index, target in enumerate(targets):
            nursery.start_soon(one, index, target)
    _reject_name_clashes(reports, found)
    return ScanResult([g for guests in found for g in guests], reports)


async def _agent_of(
    guest: Guest,
    hv: Hypervisor,
    record: DomainRecord,
    opener: AgentOpener,
    seconds: float,
) -> Guest:
    try:
        with trio.fail_after(seconds):
            async with opener(hv, record) as commands:
                data = await gather_agent_data(commands)
    except trio.TooSlowError:
        return guest.with_agent(AgentStatus.TIMEOUT, error=f"no answer within {seconds:g}s")
    except AgentUnavailable as exc:
        return guest.with_agent(AgentStatus.UNAVAILABLE, error=str(exc))
    except (GagentError, OSError) as exc:
        return guest.with_agent(AgentStatus.ERROR, error=str(exc) or type(exc).__name__)
    return guest.with_agent(AgentStatus.OK, data)


def _reject_name_clashes(reports: list[HypervisorReport], found: list[list[Guest]]) -> None:
    """Two hypervisors that ended up with one name (both reported the same hostname)
    cannot both be kept: the later one is failed and its guests dropped."""
    seen: dict[str, str] = {}
    for index, report in enumerate(reports):
        if not report.ok or report.name is None:
            continue
        if report.name in seen:
            report.ok = False
            report.error = (
                f"its name {report.name!r} is also the name of {seen[report.name]}; "
                "name each hypervisor (NAME=URI or 'NAME URI' in the hosts file)"
            )
            found[index] = []
            continue
        seen[report.name] = report.uri
