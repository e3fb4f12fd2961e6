"""``gagent.sync.open_domain_agent``: a domain's agent for synchronous callers.

The least libvirt work that reaches the agent: connect, look the domain up,
read its state and XML (:func:`gagent.host.virt_calls.read_domain_blocking`,
one thread), choose the route and build the advice with the domain session's
own (pure) methods (:class:`gagent.host.session.DomainSession`), then

* gagent's channel: close the libvirt connection and talk on the socket with
  the blocking client (:class:`gagent.sync.BlockingAgent`);
* libvirt's channel: relay each command through qemuAgentCommand, with the
  reply and error mapping of :class:`~gagent.host.libvirt_agent.LibvirtAgent`
  (:meth:`~gagent.host.libvirt_agent.LibvirtAgent.relay`).

libvirt-python blocks and cannot be interrupted, so each libvirt call runs in
a daemon thread that the caller waits for only until its deadline: a hung
libvirtd ends in :class:`gagent.sync.AgentTimeout` on time (the thread finishes
by itself, or with the process).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from gagent.sync import (
    DEFAULT_TIMEOUT,
    AgentTimeout,
    BlockingAgent,
    SyncAgent,
    connect_unix,
)

from .channel_names import GAGENT_CHANNEL
from .domxml import parse_domain
from .libvirt_agent import LibvirtAgent
from .reach import AgentRoute, Transport
from .session import UNKNOWN_STATE_SYNC_LIMIT, DomainSession, silent_unknown_channel
from .virt import Domain, Hypervisor
from .virt_calls import (
    VirConnect,
    VirDomain,
    agent_command_blocking,
    read_domain_blocking,
    within,
)
from .virt_types import DomainState, resolve_uri

logger = logging.getLogger("gagent.sync_domain")

__all__ = ["BlockingLibvirtAgent", "open_domain_agent"]

T = TypeVar("T")

#: How long closing a libvirt connection may take (a hung libvirtd never acknowledges it).
CLOSE_TIMEOUT = 2.0


def _left(deadline: float | None, doing: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise AgentTimeout(f"the deadline passed before {doing}")
    return left


class _BlockingDomain:
    """What LibvirtAgent.relay needs of a domain: its name and a (blocking) agent_command."""

    def __init__(self, dom: VirDomain, name: str):
        self.dom, self.name = dom, name
        #: how long the caller waits for libvirt's answer (None: as long as libvirt takes)
        self.wait: float | None = None

    async def agent_command(self, request: str, wait_seconds: int) -> str:
        doing = f"agent command through libvirt on {self.name}"
        return within(
            self.wait,
            lambda: agent_command_blocking(self.dom, request, wait_seconds, doing=doing),
            doing,
        )


class BlockingLibvirtAgent(LibvirtAgent):
    """LibvirtAgent's relay, blocking, within :attr:`deadline` (``time.monotonic()``)."""

    def __init__(self, dom: VirDomain, name: str):
        super().__init__(_BlockingDomain(dom, name))  # type: ignore[arg-type]
        self.deadline: float | None = None

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        left = _left(self.deadline, command)
        self.domain.wait = left  # type: ignore[attr-defined]
        # libvirt's own wait ends with ours (-1: libvirt's default)
        return await self.relay(command, arguments, -1 if left is None else max(1, math.ceil(left)))


def _close(conn: VirConnect) -> None:
    try:
        within(CLOSE_TIMEOUT, conn.close, "closing the connection")
    except Exception:  # closing is best effort: the process may be about to exit anyway
        pass


@contextmanager
def open_domain_agent(
    ref: str,
    *,
    uri: str | None = None,
    transport: Transport | str = Transport.AUTO,
    channel_name: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Iterator[SyncAgent]:
    """See :func:`gagent.sync.open_domain_agent`."""
    channel_name = channel_name or GAGENT_CHANNEL
    deadline = time.monotonic() + timeout if timeout else None
    logger.info("reading domain %s on %s", ref, uri or "libvirt's default URI")
    conn, dom, actual_uri, code, xml = within(
        _left(deadline, f"reading domain {ref}"),
        lambda: read_domain_blocking(resolve_uri(uri), ref),
        f"reading domain {ref}",
    )
    try:
        # The domain session's own route and advice, over what was just read (no I/O:
        # its async methods, which would call libvirt, are not used here).
        hypervisor = Hypervisor(conn, actual_uri)
        session = DomainSession(
            hypervisor,
            Domain(hypervisor, dom),
            DomainState.from_libvirt(code),
            xml,
            parse_domain(xml),
            requested_uri=uri,
        )
        name = session.name  # libvirt keeps it: no call to the daemon
        route = session.route(transport, channel_name)
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s on %s is %s: agent route %s", name, actual_uri, session.state.value,
                        route.describe(name))  # fmt: skip
        target = session.agent_target(channel_name)
        if route.transport is Transport.SOCKET:
            _close(conn)  # the socket route needs libvirt no more
            conn = None
            agent = _socket_agent(route, name, deadline, timeout)
        else:
            relay = BlockingLibvirtAgent(dom, name)
            relay.target = target  # its first ping's errors advise this domain, this URI
            agent = SyncAgent(relay, timeout)
            left = _left(deadline, "the first ping")
            agent.run(relay.ping(), left)  # fail early, with libvirt's reason
        agent.commands.target = target
        with agent:
            yield agent
    finally:
        if conn is not None:
            _close(conn)


def _socket_agent(
    route: AgentRoute, name: str, deadline: float | None, timeout: float | None
) -> SyncAgent:
    assert route.socket_path is not None
    sock = connect_unix(route.socket_path, _left(deadline, "connecting"))
    transport = BlockingAgent(sock, name=route.describe(name))
    transport.path = route.socket_path
    agent = SyncAgent(transport, timeout)
    try:
        left = _left(deadline, "the first sync")
        if route.channel.state is not None:
            agent.run(transport.sync(), left)
        else:  # hot-plugged, or never opened by the guest: a live agent answers in ms
            limit = min(left or UNKNOWN_STATE_SYNC_LIMIT, UNKNOWN_STATE_SYNC_LIMIT)
            try:
                agent.run(transport.sync(), limit)
            except AgentTimeout:
                if limit < UNKNOWN_STATE_SYNC_LIMIT:
                    raise  # the caller's own deadline came first
                raise silent_unknown_channel(route, name) from None
    except BaseException:
        transport.close()
        raise
    return agent
