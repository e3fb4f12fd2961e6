"""The emergency thaw: every agent of a domain, and around a hung libvirtd.

``gagent thaw DOMAIN`` is what an operator runs when a guest may have been
left frozen.  It thaws through every agent the domain has (gagent's channel
and libvirt's ``org.qemu.guest_agent.0``: each keeps its own freeze state, and
a thaw through either thaws every filesystem) and confirms each thaw.  When
libvirt itself does not answer, it finds the channel's socket from the
domain's running QEMU process and thaws there.
"""

from __future__ import annotations

import shlex
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import urlparse

import trio

from gagent.client import open_agent
from gagent.errors import AgentUnavailable, GagentError, HostError
from gagent.freeze import DEFAULT_THAW_TIMEOUT, ThawUnconfirmed, thaw

from .channel import GAGENT_CHANNEL
from .qemu_procs import find_channel_sockets
from .reach import Transport
from .session import DomainSession, open_domain
from .virt import Hypervisor, open_hypervisor, resolve_uri

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "ThawReport", "emergency_thaw"]

DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ThawReport:
    route: str
    thawed: int | None = None
    confirmed: bool = False
    error: str | None = None
    #: how to try again by hand
    retry: str = ""


async def emergency_thaw(
    hypervisor: Hypervisor | None,
    ref: str,
    *,
    uri: str | None = None,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    channel_name: str = GAGENT_CHANNEL,
) -> list[ThawReport]:
    """Thaw through every agent the domain has (ours and libvirt's): each keeps its own
    freeze state, and a thaw through either thaws every filesystem.

    When a libvirtd on this machine does not answer within ``connect_timeout``
    (hung), or cannot be connected to at all (stopped or crashed), the thaw goes
    straight to the channel's socket, found from the domain's running QEMU
    process (:mod:`gagent.host.qemu_procs`).  Never for a remote URI (the QEMU
    processes here are not that host's), and never when libvirt answered (a
    domain it does not know is not guessed at).
    """
    resolved = resolve_uri(uri) if hypervisor is None else hypervisor.uri
    local = resolved is None or not urlparse(resolved).hostname
    async with AsyncExitStack() as stack:
        why = session = None
        try:
            with trio.fail_after(connect_timeout):
                hv = hypervisor
                if hv is None:
                    try:
                        hv = await stack.enter_async_context(await open_hypervisor(uri))
                    except HostError as exc:  # no daemon (stopped, crashed): not an answer
                        why = f"libvirt cannot be reached ({exc})"
                if hv is not None:  # libvirt answers: its word stands (no such domain...)
                    session = await stack.enter_async_context(open_domain(ref, hypervisor=hv))
        except trio.TooSlowError:
            why = f"libvirt did not answer within {connect_timeout:g}s"
        if why is not None:
            if not local:
                raise AgentUnavailable(
                    f"{why} at {resolved}, and a domain on another host can only be thawed "
                    "through it or from that host",
                    hint=f"on that host run: gagent thaw {ref}",
                )
            return [
                await _thaw_without_libvirt(ref, channel_name, why, thaw_timeout, connect_timeout)
            ]
        assert session is not None
        return await _thaw_every_route(session, channel_name, thaw_timeout, connect_timeout)


async def _thaw_every_route(
    session: DomainSession, channel_name: str, thaw_timeout: float, connect_timeout: float
) -> list[ThawReport]:
    reports = []
    retry = session.thaw_command(channel_name)
    for transport in (Transport.SOCKET, Transport.LIBVIRT):
        try:
            route = session.route(transport, channel_name)
        except AgentUnavailable:
            continue
        where = route.describe(session.name)
        try:
            async with AsyncExitStack() as stack:
                with trio.fail_after(connect_timeout):
                    agent = await stack.enter_async_context(session.agent(route=route))
                record = await thaw(
                    agent, thaw_timeout=thaw_timeout, domain=session.name, retry=retry
                )
            reports.append(ThawReport(where, record.thawed, record.confirmed, retry=retry))
        except trio.TooSlowError:
            error = f"no answer within {connect_timeout:g}s"
            reports.append(ThawReport(where, error=error, retry=retry))
        except GagentError as exc:
            reports.append(ThawReport(where, error=_why(exc), retry=retry))
    if not reports:
        raise AgentUnavailable(
            f"domain {session.name} has no reachable agent channel to thaw through",
            hint=f"is it running? '{session.command('channel', 'list')}'",
        )
    return reports


async def _thaw_without_libvirt(
    ref: str, channel_name: str, why: str, thaw_timeout: float, connect_timeout: float
) -> ThawReport:
    found = [c for c in find_channel_sockets(ref, channel_name) if c.socket_path]
    if len(found) != 1:
        listed = "; ".join(
            f"QEMU pid {c.pid} (uuid {c.uuid}): gagent agent --socket {c.socket_path} fsfreeze thaw"
            for c in found
        )
        raise AgentUnavailable(
            f"{why}, and "
            + (
                f"{len(found)} running QEMU processes are named {ref}: say which by UUID "
                f"(gagent thaw UUID) or thaw one by its socket: {listed}"
                if found
                else f"no running QEMU process of {ref} has a socket for channel {channel_name}"
            ),
            hint=None
            if found
            else "find the channel's socket (ps -ef | grep qemu) and run "
            "'gagent agent --socket SOCKET fsfreeze thaw'",
        )
    channel = found[0]
    path = channel.socket_path
    assert path is not None
    where = f"QEMU pid {channel.pid} socket {path} ({why})"
    retry = shlex.join(["gagent", "agent", "--socket", path, "fsfreeze", "thaw"])
    try:
        async with AsyncExitStack() as stack:
            with trio.fail_after(connect_timeout):
                agent = await stack.enter_async_context(open_agent(path))
            record = await thaw(agent, thaw_timeout=thaw_timeout, domain=channel.name, retry=retry)
        return ThawReport(where, record.thawed, record.confirmed, retry=retry)
    except trio.TooSlowError:
        return ThawReport(where, error=f"no answer within {connect_timeout:g}s", retry=retry)
    except GagentError as exc:
        return ThawReport(where, error=_why(exc), retry=retry)


def _why(error: GagentError) -> str:
    """What went wrong on one route (an unconfirmed thaw's own reasons: the command's
    error line says THE GUEST MAY STILL BE FROZEN once, not once per route)."""
    if isinstance(error, ThawUnconfirmed):
        return "; ".join(error.reasons) or "no answer"
    return str(error)
