"""Reaching a domain's agent by name, UUID or ID.

``auto`` picks the transport from the domain's live XML: gagent's own channel
(a unix socket we may connect to) first; else libvirt's
``org.qemu.guest_agent.0`` through qemuAgentCommand.  When neither works the
error says why, in the order an operator would check: is the domain running,
does it have a channel, is the guest side of the channel open.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from gagent.client import Agent, open_agent
from gagent.commands import AgentCommands
from gagent.errors import AgentUnavailable, UsageError

from .channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL, Channel, list_channels
from .libvirt_agent import LibvirtAgent
from .virt import Domain, DomainState, Hypervisor, open_hypervisor

__all__ = ["AgentRoute", "Transport", "choose_route", "open_domain_agent"]


class Transport(enum.StrEnum):
    AUTO = "auto"
    SOCKET = "socket"
    LIBVIRT = "libvirt"


@dataclass(frozen=True)
class AgentRoute:
    """How to reach one domain's agent: a socket path, or libvirt."""

    transport: Transport
    channel: Channel
    socket_path: str | None = None

    def describe(self, domain: str) -> str:
        if self.transport is Transport.SOCKET:
            return f"domain {domain} via {self.socket_path}"
        return f"domain {domain} via libvirt ({self.channel.name})"


def choose_route(
    domain: str,
    state: DomainState,
    live_xml: str,
    *,
    transport: Transport = Transport.AUTO,
    channel_name: str = GAGENT_CHANNEL,
) -> AgentRoute:
    """Pick the route from the domain's state and live XML (pure: no I/O)."""
    if not state.is_active:
        raise AgentUnavailable(
            f"domain {domain} is {state.value}: its agent cannot answer",
            hint=f"start it first (virsh start {domain})",
        )
    if state is DomainState.PAUSED:
        raise AgentUnavailable(
            f"domain {domain} is paused: its agent cannot answer",
            hint=f"resume it first (virsh resume {domain})",
        )
    transport = Transport(transport)
    channels = {c.name: c for c in list_channels(live_xml) if c.target_type == "virtio"}
    ours = channels.get(channel_name)
    theirs = channels.get(LIBVIRT_AGENT_CHANNEL)
    if transport is Transport.LIBVIRT:
        if theirs is None:
            raise AgentUnavailable(
                f"domain {domain} has no {LIBVIRT_AGENT_CHANNEL} channel for libvirt to relay to",
                hint=f"add it: gagent channel add {domain} --name {LIBVIRT_AGENT_CHANNEL} "
                "--libvirt-managed, or use --transport socket",
            )
        return AgentRoute(Transport.LIBVIRT, theirs)
    if transport is Transport.AUTO and theirs is not None and theirs.state != "disconnected":
        # ours first; libvirt's when ours is missing, or is the default channel and
        # nobody in the guest opened it (a channel named on purpose is not swapped)
        if ours is None or (ours.state == "disconnected" and channel_name == GAGENT_CHANNEL):
            return AgentRoute(Transport.LIBVIRT, theirs)
    if ours is None:
        if transport is Transport.AUTO:
            raise AgentUnavailable(
                f"domain {domain} has no agent channel ({channel_name} or {LIBVIRT_AGENT_CHANNEL})",
                hint=f"add one: gagent channel add {domain}",
            )
        raise AgentUnavailable(
            f"domain {domain} has no channel named {channel_name}",
            hint=f"add one: gagent channel add {domain} --name {channel_name}",
        )
    if ours.kind != "unix" or not ours.path:
        raise AgentUnavailable(
            f"channel {channel_name} of domain {domain} is not a unix socket with a path "
            f"(type {ours.kind})",
            hint=f"recreate it: gagent channel remove {domain} && gagent channel add {domain}",
        )
    if channel_name == LIBVIRT_AGENT_CHANNEL:
        raise UsageError(
            f"{LIBVIRT_AGENT_CHANNEL} belongs to libvirt: its socket answers nobody else; "
            "use --transport libvirt"
        )
    if ours.state == "disconnected":
        raise AgentUnavailable(
            f"channel {channel_name} of domain {domain} is disconnected: nothing in the guest "
            "has the port open",
            hint="is qemu-ga running in the guest on that port? run 'gagent-guest check' there",
        )
    return AgentRoute(Transport.SOCKET, ours, ours.path)


async def resolve(
    hypervisor: Hypervisor,
    ref: str,
    *,
    transport: Transport = Transport.AUTO,
    channel_name: str = GAGENT_CHANNEL,
) -> tuple[Domain, AgentRoute]:
    domain = await hypervisor.lookup(ref)
    state = await domain.state()
    live_xml = await domain.xml() if state.is_active else ""
    route = choose_route(
        domain.name, state, live_xml, transport=transport, channel_name=channel_name
    )
    return domain, route


#: How long the first sync may take on a channel whose state libvirt does not
#: know yet (hot-plugged, never opened by the guest): a live agent answers in ms.
UNKNOWN_STATE_SYNC_LIMIT = 2.0


async def _first_sync(agent: Agent, domain: str, route: AgentRoute) -> None:
    if route.channel.state is not None:
        await agent.sync()
        return
    with trio.move_on_after(UNKNOWN_STATE_SYNC_LIMIT):
        await agent.sync()
        return
    raise AgentUnavailable(
        f"channel {route.channel.name} of domain {domain} did not answer within "
        f"{UNKNOWN_STATE_SYNC_LIMIT:g}s and libvirt reports no state for it yet: "
        "nothing in the guest seems to have the port open",
        hint="is qemu-ga running in the guest on that port? run 'gagent-guest check' there",
    )


@asynccontextmanager
async def open_domain_agent(
    ref: str,
    *,
    uri: str | None = None,
    hypervisor: Hypervisor | None = None,
    transport: Transport | str = Transport.AUTO,
    channel_name: str = GAGENT_CHANNEL,
) -> AsyncIterator[AgentCommands]:
    """The typed agent API for a domain, over its socket or through libvirt.

    Pass ``hypervisor`` to reuse an open connection (it is then not closed).
    """
    transport = Transport(transport)
    owned = hypervisor is None
    hv = hypervisor or await open_hypervisor(uri)
    try:
        domain, route = await resolve(hv, ref, transport=transport, channel_name=channel_name)
        if route.transport is Transport.SOCKET:
            assert route.socket_path is not None
            async with open_agent(route.socket_path, sync=False) as agent:
                agent.name = route.describe(domain.name)
                await _first_sync(agent, domain.name, route)
                yield agent
        else:
            agent = LibvirtAgent(domain)
            await agent.ping()  # fail early, with libvirt's reason, when nobody answers
            yield agent
    finally:
        if owned:
            await hv.close()
