"""The domain session: the only way a command reaches a domain.

A :class:`DomainSession` is opened once per command (``async with
open_domain(ref, uri=...) as session``).  It connects to libvirt (or reuses a
connection), looks the domain up by name, UUID or ID, reads its state and its
XML once into the read model of :mod:`gagent.host.domxml`, chooses the route
to the agent in one place (:func:`gagent.host.reach.choose_route`) and opens
the agent in one place (:meth:`DomainSession.agent`, with the reconnect a
thaw needs).  It also builds every piece of advice a command prints from what
it really used: the domain's name, the connection's URI and the channel
(:meth:`DomainSession.command`), so a message never names a command that would
act on another domain or connection.

Deadlines belong to the caller: every libvirt call under a session is
abandoned on cancellation (see :mod:`gagent.host.virt_calls`), so a hung
libvirtd or an unanswering remote host cannot outlive the caller's
``trio.fail_after``.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from gagent.commands import AgentCommands
from gagent.errors import AgentTarget, AgentUnavailable

from . import managed
from .channel_names import GAGENT_CHANNEL, channel_flag
from .domxml import DomainFacts, parse_domain
from .libvirt_agent import LibvirtAgent
from .reach import AgentRoute, Transport, channel_fix, choose_route
from .virt import Domain, DomainState, Hypervisor, open_hypervisor
from .virt_types import looks_like_uuid

logger = logging.getLogger("gagent.session")

__all__ = ["DomainSession", "open_domain", "open_domain_agent", "open_hypervisor_session"]

#: How long the first sync may take on a channel whose state libvirt does not
#: know yet (hot-plugged, never opened by the guest): a live agent answers in ms.
UNKNOWN_STATE_SYNC_LIMIT = 2.0


@asynccontextmanager
async def open_hypervisor_session(
    uri: str | None = None, *, hypervisor: Hypervisor | None = None, events: bool = False
) -> AsyncIterator[Hypervisor]:
    """A connection for the block: ``hypervisor`` is reused (and left open), else one is
    opened and closed (bounded, also on cancellation)."""
    if hypervisor is not None:
        yield hypervisor
        return
    async with await open_hypervisor(uri, events=events) as opened:
        yield opened


@dataclass
class DomainSession:
    """One domain, read once: its connection, state, XML and read model."""

    hypervisor: Hypervisor
    domain: Domain
    state: DomainState
    xml: str
    facts: DomainFacts
    #: the URI the caller asked for (None: libvirt's default), for advice
    requested_uri: str | None = None

    @property
    def name(self) -> str:
        """The domain's name (libvirt's, whatever reference opened it)."""
        return self.domain.name

    @property
    def uri(self) -> str:
        """The connection's own URI (what advice names with -c)."""
        return self.hypervisor.uri

    async def refresh(self) -> None:
        """Read state and XML again (after a change such as a snapshot)."""
        self.state = await self.domain.state()
        self.xml = await self.domain.xml(inactive=not self.state.is_active)
        self.facts = parse_domain(self.xml)

    # ------------------------------------------------------------- advice

    @property
    def manager(self) -> managed.Manager | None:
        """The manager that owns the domain's definition (its metadata in the XML read at
        open, or vdsmd on this host, as ``channel add`` finds it), or None: advice then
        names no ``channel add``, which would be refused."""
        local = managed.uri_is_local(self.uri)
        return managed.manager_of(self.facts, vdsm_host=local and managed.vdsm_running())

    @property
    def advice_ref(self) -> str:
        """How advice names the domain: its name, unless gagent and virsh would read that
        name as an ID or a UUID first (a domain named ``1``): then its UUID."""
        name = self.name
        if name.isdigit() or looks_like_uuid(name):
            return self.domain.uuid
        return name

    def command(self, *words: str, options: tuple[str, ...] = ()) -> str:
        """The exact ``gagent`` command for this domain on this connection.

        ``command("thaw")`` -> ``gagent thaw vm1 -c qemu:///system``; the URI
        is the connection's own, so the advice works whatever the environment
        of whoever runs it.
        """
        return shlex.join(["gagent", *words, self.advice_ref, "-c", self.uri, *options])

    def virsh(self, verb: str) -> str:
        """The exact virsh command for this domain on this connection (start, resume...)."""
        return shlex.join(["virsh", "-c", self.uri, verb, self.advice_ref])

    def agent_target(self, channel: str = GAGENT_CHANNEL) -> AgentTarget:
        """The guest as its agent's errors name it: this domain on this connection, its
        thaw, and what gives gagent a way to its agent when libvirt's relay finds none
        (a channel add, or for a managed domain its manager's way)."""
        named = channel_flag(channel, "--name")
        add = "add a channel gagent can use: " + self.command("channel", "add", options=named)
        reach = channel_fix(self, add, libvirt_channel=None)
        return AgentTarget(self.name, self.uri, thaw=self.thaw_command(channel), reach=reach)

    def thaw_command(self, channel: str = GAGENT_CHANNEL) -> str:
        """How an operator thaws this domain by hand (through every agent it has)."""
        return self.command("thaw", options=channel_flag(channel))

    # --------------------------------------------------------------- agent

    def route(
        self, transport: Transport | str = Transport.AUTO, channel_name: str = GAGENT_CHANNEL
    ) -> AgentRoute:
        """How to reach the agent (pure: from the state and XML read at open)."""
        return choose_route(
            self.name,
            self.state,
            self.xml if self.state.is_active else "",
            transport=Transport(transport),
            channel_name=channel_name,
            advice=self,
        )

    def reconnect_for(self, route: AgentRoute):  # -> Reconnect | None
        """A factory that opens the route's socket again (a thaw after a lost connection)."""
        path = route.socket_path
        if path is None:
            return None
        from gagent.client import open_agent  # the trio client: blocking callers never load it

        return lambda: open_agent(path)

    @asynccontextmanager
    async def agent(
        self,
        transport: Transport | str = Transport.AUTO,
        channel_name: str = GAGENT_CHANNEL,
        *,
        route: AgentRoute | None = None,
    ) -> AsyncIterator[AgentCommands]:
        """The typed agent API over the chosen route, synced (socket) or pinged (libvirt)."""
        route = route or self.route(transport, channel_name)
        if logger.isEnabledFor(logging.INFO):
            logger.info("agent route: %s", route.describe(self.name))
        # the agent's own errors (a frozen guest) advise this domain's thaw, on this connection
        target = self.agent_target(channel_name)
        async with AsyncExitStack() as stack:
            if route.transport is Transport.SOCKET:
                assert route.socket_path is not None
                from gagent.client import open_agent

                agent = await stack.enter_async_context(open_agent(route.socket_path, sync=False))
                agent.name = route.describe(self.name)
                agent.target = target
                await self._first_sync(agent, route)
                yield agent
            else:
                relay = LibvirtAgent(self.domain)
                relay.target = target
                await relay.ping()  # fail early, with libvirt's reason, when nobody answers
                yield relay

    async def _first_sync(self, agent, route: AgentRoute) -> None:  # agent: gagent.client.Agent
        if route.channel.state is not None:
            await agent.sync()
            return
        import trio

        with trio.move_on_after(UNKNOWN_STATE_SYNC_LIMIT):
            await agent.sync()
            return
        raise silent_unknown_channel(route, self.name)


def silent_unknown_channel(route: AgentRoute, domain: str) -> AgentUnavailable:
    """A channel libvirt knows no state of stayed silent for UNKNOWN_STATE_SYNC_LIMIT."""
    return AgentUnavailable(
        f"channel {route.channel.name} of domain {domain} did not answer within "
        f"{UNKNOWN_STATE_SYNC_LIMIT:g}s and libvirt reports no state for it yet: "
        "nothing in the guest seems to have the port open",
        hint="is qemu-ga running in the guest on that port? run 'gagent-guest check' there",
    )


@asynccontextmanager
async def open_domain(
    ref: str,
    *,
    uri: str | None = None,
    hypervisor: Hypervisor | None = None,
    inactive: bool = False,
) -> AsyncIterator[DomainSession]:
    """Open a :class:`DomainSession` for ``ref`` (name, UUID or ID).

    Reads the live XML of a running domain (the inactive definition with
    ``inactive=True`` or when it is not running).  Pass ``hypervisor`` to reuse
    an open connection (it is then not closed).
    """
    async with open_hypervisor_session(uri, hypervisor=hypervisor) as hv:
        domain = await hv.lookup(ref)
        state = await domain.state()
        logger.info("%s is %s", domain.name, state.value)
        xml = await domain.xml(inactive=inactive or not state.is_active)
        yield DomainSession(hv, domain, state, xml, parse_domain(xml), requested_uri=uri)


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
    async with (
        open_domain(ref, uri=uri, hypervisor=hypervisor) as session,
        session.agent(transport, channel_name) as agent,
    ):
        yield agent
