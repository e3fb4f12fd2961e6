"""Choosing the route to a domain's agent (pure: no I/O).

The domain session (:mod:`gagent.host.session`) opens what this chooses.
``auto`` picks the transport from the domain's live XML: gagent's own channel
(a unix socket we may connect to) first; else libvirt's
``org.qemu.guest_agent.0`` through qemuAgentCommand.  When neither works the
error says why, in the order an operator would check: is the domain running,
does it have a channel, is the guest side of the channel open.
"""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gagent.errors import AgentUnavailable, UsageError

from .channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from .channel_names import channel_flag
from .domxml import Channel, parse_channels
from .virt_types import DomainState

if TYPE_CHECKING:
    from .managed import Manager

__all__ = [
    "Advice",
    "AgentRoute",
    "Transport",
    "add_fix",
    "channel_fix",
    "choose_route",
    "recreate_fix",
]


class Advice(Protocol):
    """Builds the exact gagent command for a domain (the domain session does), and knows
    the manager that owns its definition (whose domains gagent adds no channel to)."""

    @property
    def manager(self) -> Manager | None: ...

    def command(self, *words: str, options: tuple[str, ...] = ()) -> str: ...

    def virsh(self, verb: str) -> str: ...


@dataclass(frozen=True)
class _PlainAdvice:
    """Advice without a session: the domain as the caller named it, no URI."""

    domain: str
    manager: Manager | None = None

    def command(self, *words: str, options: tuple[str, ...] = ()) -> str:
        return shlex.join(["gagent", *words, self.domain, *options])

    def virsh(self, verb: str) -> str:
        return shlex.join(["virsh", verb, self.domain])


def plain_advice(domain: str) -> Advice:
    """Advice for a caller that has no domain session: the domain as named, no URI."""
    return _PlainAdvice(domain)


def channel_fix(advice: Advice, fix: str, *, libvirt_channel: Channel | None) -> str:
    """``fix`` (a ``channel add``/``remove`` of gagent's), or for a managed domain, whose
    channel edits ``channel add`` refuses, what works there: reaching the agent through
    libvirt when the domain has ``org.qemu.guest_agent.0``, else the manager's way to
    add that channel."""
    manager = advice.manager
    if manager is None:
        return fix
    refused = f"{manager.name} manages the domain, so gagent adds no channel to it"
    if libvirt_channel is not None:
        ping = advice.command("agent", options=("--transport", "libvirt", "ping"))
        if libvirt_channel.state == "disconnected":
            return (
                f"{refused}; its agent answers through libvirt once qemu-ga in the guest opens "
                f"{LIBVIRT_AGENT_CHANNEL} (closed now): {ping}"
            )
        return f"{refused}; reach its agent through libvirt ({LIBVIRT_AGENT_CHANNEL}): {ping}"
    return f"{refused}: {manager.advice}"


def add_fix(advice: Advice, options: tuple[str, ...], *, libvirt_channel: Channel | None) -> str:
    """What to do for a missing channel: add it (or, managed, :func:`channel_fix`)."""
    fix = "add one: " + advice.command("channel", "add", options=options)
    return channel_fix(advice, fix, libvirt_channel=libvirt_channel)


def recreate_fix(advice: Advice, named: tuple[str, ...], *, libvirt_channel: Channel | None) -> str:
    """What to do for a channel gagent cannot use: recreate it (managed: :func:`channel_fix`)."""
    fix = (
        "recreate it: "
        + advice.command("channel", "remove", options=named)
        + " && "
        + advice.command("channel", "add", options=named)
    )
    return channel_fix(advice, fix, libvirt_channel=libvirt_channel)


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
    advice: Advice | None = None,
) -> AgentRoute:
    """Pick the route from the domain's state and live XML (pure: no I/O).

    ``advice`` builds the commands the errors name (the domain session passes
    itself, so they carry the real URI).
    """
    advice = advice or plain_advice(domain)
    named = ("--name", channel_name)
    if not state.is_active:
        raise AgentUnavailable(
            f"domain {domain} is {state.value}: its agent cannot answer",
            hint=f"start it first: {advice.virsh('start')}",
        )
    if state is DomainState.PAUSED:
        raise AgentUnavailable(
            f"domain {domain} is paused: its agent cannot answer",
            hint=f"resume it first: {advice.virsh('resume')}",
        )
    transport = Transport(transport)
    listed = parse_channels(live_xml) if live_xml else []
    channels = {c.name: c for c in listed if c.target_type == "virtio"}
    ours = channels.get(channel_name)
    theirs = channels.get(LIBVIRT_AGENT_CHANNEL)
    if transport is Transport.LIBVIRT:
        if theirs is None:
            raise AgentUnavailable(
                f"domain {domain} has no {LIBVIRT_AGENT_CHANNEL} channel for libvirt to relay to",
                hint=channel_fix(
                    advice,
                    "add it: "
                    + advice.command(
                        "channel",
                        "add",
                        options=("--name", LIBVIRT_AGENT_CHANNEL, "--libvirt-managed"),
                    )
                    + ", or use --transport socket",
                    libvirt_channel=None,
                ),
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
                hint=add_fix(advice, channel_flag(channel_name, "--name"), libvirt_channel=theirs),
            )
        raise AgentUnavailable(
            f"domain {domain} has no channel named {channel_name}",
            hint=add_fix(advice, named, libvirt_channel=theirs),
        )
    if ours.kind != "unix" or not ours.path:
        raise AgentUnavailable(
            f"channel {channel_name} of domain {domain} is not a unix socket with a path "
            f"(type {ours.kind})",
            hint=recreate_fix(advice, named, libvirt_channel=theirs),
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
