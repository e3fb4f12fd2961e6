"""Streaming channel state changes and domain lifecycle events.

libvirt reports ``state='connected|disconnected'`` for virtio channels in the
live XML, but raises an event only for its own agent channel
(org.qemu.guest_agent.0, the agent-lifecycle event).  So custom channels are
watched by re-reading the live XML of running domains (cheap: no guest I/O),
and libvirt's lifecycle and agent events are forwarded as they come.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import trio

from gagent.errors import HostError

from .channel import list_channels
from .virt import Domain, DomainEvent, DomainNotFound, Hypervisor, watch_events

__all__ = ["ChangeEvent", "channel_states", "watch"]

DEFAULT_POLL_INTERVAL = 0.5
#: How long one poll of the live XML may take before the watch reports libvirt hung.
DEFAULT_POLL_TIMEOUT = 30.0


@dataclass(frozen=True)
class ChangeEvent:
    """One thing that changed: a channel's state, or a libvirt event."""

    time: float
    domain: str
    subject: str  # channel name, "lifecycle" or "agent"
    old: str | None
    new: str

    def __str__(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        change = f"{self.old} -> {self.new}" if self.old is not None else self.new
        return f"{stamp} {self.domain} {self.subject}: {change}"


async def channel_states(domain: Domain) -> dict[str, str]:
    """Channel name -> live state ('connected', 'disconnected', 'unknown') of a running domain."""
    if not (await domain.state()).is_active:
        return {}
    return {
        c.name: c.state or "unknown"
        for c in list_channels(await domain.xml())
        if c.name and c.target_type == "virtio"
    }


async def watch(
    hypervisor: Hypervisor,
    send: trio.MemorySendChannel[ChangeEvent],
    domain_ref: str | None = None,
    *,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    poll_timeout: float = DEFAULT_POLL_TIMEOUT,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send every change to ``send`` until cancelled.

    A poll libvirt does not answer within ``poll_timeout`` ends the watch with a
    HostError (the caller bounds the start itself: registering and the baseline).

    The hypervisor must be opened with ``events=True`` for libvirt's events.
    Under ``nursery.start()`` it returns once nothing can be missed any more:
    libvirt's events are registered and the channels' baseline is taken (in
    that order, so a change between the two still arrives as an event).
    """
    only = (await hypervisor.lookup(domain_ref)).name if domain_ref else None
    known: dict[str, dict[str, str]] = {}

    async def poll_once() -> None:
        domains = [await hypervisor.lookup(only)] if only else await hypervisor.domains()
        for dom in domains:
            try:
                states = await channel_states(dom)
            except DomainNotFound:
                states = {}  # gone since the listing (transient domain destroyed, undefined)
            before = known.get(dom.name)
            known[dom.name] = states
            if before is None:
                continue  # the first look sets the baseline
            for name in sorted(states.keys() | before.keys()):
                old, new = before.get(name), states.get(name, "gone")
                if old != new:
                    await send.send(ChangeEvent(time.time(), dom.name, name, old, new))

    async def poll_forever() -> None:
        while True:
            await trio.sleep(poll_interval)
            try:
                with trio.fail_after(poll_timeout):
                    await poll_once()
            except trio.TooSlowError:
                # a watcher that silently stops reporting is worse than one that stops
                raise HostError(
                    f"libvirt at {hypervisor.uri} did not answer within {poll_timeout:g}s "
                    "while watching: is libvirtd hung? (the watch stopped)"
                ) from None

    async def forward_events(task_status: trio.TaskStatus[None]) -> None:
        events_send, events_receive = trio.open_memory_channel[DomainEvent](256)
        async with trio.open_nursery() as inner:
            await inner.start(partial(watch_events, hypervisor, events_send))
            task_status.started()
            async for event in events_receive:
                if only is None or event.domain == only:
                    change = ChangeEvent(time.time(), event.domain, event.kind, None, event.detail)
                    await send.send(change)

    async with trio.open_nursery() as nursery:
        await nursery.start(forward_events)
        await poll_once()
        nursery.start_soon(poll_forever)
        task_status.started()
