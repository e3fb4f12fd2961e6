"""Host side of ``gagent channel probe``: is the wire itself working?

The host connects to the channel's unix socket (QEMU listens on it), sends
probes with fresh nonces, and times each round trip; in the guest,
``gagent-guest probe --port NAME`` answers them on a port that no agent
holds.  The line protocol lives with the guest helper
(:mod:`gagent.guest.wire`, stdlib only) so both ends share one codec.

While the guest has not opened its port, QEMU leaves our bytes in the socket
buffer, so a probe is resent with a new nonce every ``resend`` seconds until
``wait`` runs out; only the ACK of the latest nonce counts.  An agent holding
the port answers a probe with a JSON error: that is reported as such, not as
a silent timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from gagent.client import connect_unix
from gagent.errors import AgentUnavailable, ConnectionLost, UsageError
from gagent.guest.wire import (
    Ack,
    LineBuffer,
    Other,
    encode_fin,
    encode_probe,
    new_nonce,
)

from .channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from .domxml import parse_channels
from .reach import Advice, add_fix, plain_advice, recreate_fix
from .session import open_domain
from .virt import DomainState

__all__ = ["ProbeResult", "ProbeRound", "probe_domain", "probe_route", "probe_socket"]

PROBE_PORT_HINT = "org.gagent.probe.0"


@dataclass(frozen=True)
class ProbeRound:
    seq: int
    rtt: float  # seconds, PROBE sent -> ACK received
    guest: str  # the guest's name for itself (its hostname)


@dataclass
class ProbeResult:
    target: str  # what was probed: "NAME of DOMAIN" or the socket path
    socket_path: str
    count: int
    rounds: list[ProbeRound] = field(default_factory=list)
    ignored_lines: int = 0

    @property
    def guest(self) -> str | None:
        return self.rounds[-1].guest if self.rounds else None

    def summary(self) -> str:
        rtts = [r.rtt * 1000 for r in self.rounds]
        return (
            f"{self.target}: {len(rtts)}/{self.count} probes answered by {self.guest}; "
            f"round trip min/avg/max {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/"
            f"{max(rtts):.3f} ms"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "socket": self.socket_path,
            "count": self.count,
            "answered": len(self.rounds),
            "guest": self.guest,
            "rtt_ms": [round(r.rtt * 1000, 3) for r in self.rounds],
            "ignored_lines": self.ignored_lines,
        }


def probe_route(
    domain: str, state: DomainState, live_xml: str, name: str, advice: Advice | None = None
) -> str:
    """The socket path of channel ``name`` of a running domain (pure: no I/O).

    ``advice`` builds the commands the errors name (the domain session passes itself).
    """
    advice = advice or plain_advice(domain)
    named = ("--name", name)
    if not state.is_active or state is DomainState.PAUSED:
        verb = "resume" if state is DomainState.PAUSED else "start"
        raise AgentUnavailable(
            f"domain {domain} is {state.value}: nothing in it can answer a probe",
            hint=f"{verb} it first: {advice.virsh(verb)}",
        )
    if name == LIBVIRT_AGENT_CHANNEL:
        raise UsageError(
            f"{LIBVIRT_AGENT_CHANNEL} belongs to libvirt, which holds its socket: "
            "probe a channel of gagent's own"
        )
    channels = parse_channels(live_xml)
    channel = next((c for c in channels if c.name == name), None)
    # a managed domain gets no channel of gagent's: the hints say what works there
    theirs = next((c for c in channels if c.name == LIBVIRT_AGENT_CHANNEL), None)
    if channel is None:
        raise AgentUnavailable(
            f"domain {domain} has no channel named {name}",
            hint=add_fix(advice, named, libvirt_channel=theirs),
        )
    if channel.kind != "unix" or not channel.path:
        raise AgentUnavailable(
            f"channel {name} of domain {domain} is not a unix socket with a path "
            f"(type {channel.kind})",
            hint=recreate_fix(advice, named, libvirt_channel=theirs),
        )
    return channel.path


def _agent_holds(name: str, line: bytes, add_port: str) -> AgentUnavailable:
    return AgentUnavailable(
        f"an agent holds {name} in the guest: it answered the probe with {line[:60]!r}",
        hint=f"probe a port no agent holds: {add_port}, and in the guest: "
        f"gagent-guest probe --port {PROBE_PORT_HINT}",
    )


async def _receive_ack(
    stream: trio.SocketStream,
    lines: LineBuffer,
    nonce: str,
    seconds: float,
    name: str,
    add_port: str,
) -> tuple[Ack | None, int]:
    """The ACK of ``nonce`` within ``seconds`` (None if none), and lines ignored meanwhile."""
    ignored = 0
    with trio.move_on_after(max(0.0, seconds)):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionLost(
                    f"QEMU closed the socket of {name}: the domain stopped or the channel "
                    "was removed"
                )
            for msg in lines.feed(data):
                if isinstance(msg, Ack) and msg.nonce == nonce:
                    return msg, ignored
                if isinstance(msg, Other) and msg.looks_like_agent:
                    raise _agent_holds(name, msg.line, add_port)
                ignored += 1  # stale ACKs of earlier resends, or noise
    return None, ignored


async def probe_socket(
    path: str | os.PathLike[str],
    *,
    count: int = 3,
    wait: float = 60.0,
    resend: float = 1.0,
    pause: float = 0.05,
    name: str = GAGENT_CHANNEL,
    target: str | None = None,
    on_event: Callable[[str], None] = lambda _msg: None,
    add_port: str = f"gagent channel add DOMAIN --name {PROBE_PORT_HINT}",
) -> ProbeResult:
    """Probe the guest through the socket at ``path``: ``count`` timed round trips.

    ``add_port``: the command that adds a free port, named when an agent holds this one
    (:func:`probe_domain` builds it for the real domain and connection)."""
    if count < 1 or wait < 0 or resend <= 0:
        raise UsageError("need count >= 1, wait >= 0 and resend > 0")
    path = os.fspath(path)
    result = ProbeResult(target or path, path, count)
    lines = LineBuffer()
    stream = await connect_unix(path)
    try:
        async with stream:
            await _rounds(
                stream, result, lines, count, wait, resend, pause, name, on_event, add_port
            )
    except trio.BrokenResourceError as exc:
        raise ConnectionLost(
            f"the socket of {name} broke ({exc.__cause__ or exc}): the domain stopped or "
            "the channel was removed"
        ) from None
    return result


async def _rounds(
    stream: trio.SocketStream,
    result: ProbeResult,
    lines: LineBuffer,
    count: int,
    wait: float,
    resend: float,
    pause: float,
    name: str,
    on_event: Callable[[str], None],
    add_port: str,
) -> None:
    path = result.socket_path
    deadline = trio.current_time() + wait
    told = False
    warm = False  # the guest answered once: later answers time the wire alone
    seq = 1
    while seq <= count:
        attempts = 0
        while True:
            attempts += 1
            nonce = new_nonce()
            sent = time.perf_counter_ns()
            await stream.send_all(encode_probe(nonce, seq, count))
            left = deadline - trio.current_time()
            ack, ignored = await _receive_ack(
                stream, lines, nonce, min(resend, left), name, add_port
            )
            result.ignored_lines += ignored
            if ack is not None:
                break
            if trio.current_time() >= deadline:
                raise AgentUnavailable(
                    f"no answer from the guest side of {name} within {wait:g}s",
                    path=path,
                    hint=f"run in the guest: gagent-guest probe --port {name} (on a port "
                    "no agent holds); gagent-guest check there says what is wrong",
                )
            if not told:
                told = True
                on_event(f"waiting for the guest: run there 'gagent-guest probe --port {name}'")
        rtt_ns = time.perf_counter_ns() - sent
        if not warm and attempts > 1:
            # The answer came when the guest opened its port, not one round trip
            # after our probe: not a timing.  Probe again, now that it listens.
            warm = True
            on_event("the guest answered; timing the next probes")
            continue
        warm = True
        await stream.send_all(encode_fin(ack.guest_nonce, rtt_ns, seq, count))
        result.rounds.append(ProbeRound(seq, rtt_ns / 1e9, ack.guest))
        on_event(f"probe {seq}/{count}: round trip {rtt_ns / 1e6:.3f} ms ({ack.guest})")
        seq += 1
        await trio.sleep(pause)  # also lets the last FIN leave before we close


async def probe_domain(
    ref: str,
    *,
    name: str = GAGENT_CHANNEL,
    uri: str | None = None,
    count: int = 3,
    wait: float = 60.0,
    on_event: Callable[[str], None] = lambda _msg: None,
) -> ProbeResult:
    """Probe channel ``name`` of the running domain ``ref`` (by name, UUID or ID)."""
    async with open_domain(ref, uri=uri) as session:
        path = probe_route(session.name, session.state, session.xml, name, advice=session)
        channel = session.facts.channel(name)
        if channel is not None and channel.state == "disconnected":
            on_event(f"{name} is closed in the guest (nothing has the port open yet)")
        target = f"{name} of {session.name}"
        add_port = session.command("channel", "add", options=("--name", PROBE_PORT_HINT))
        if session.manager is not None:  # refused unless forced; a probe port may be lost
            add_port += f" --force (a port {session.manager.name} drops when it redefines it)"
    return await probe_socket(
        path, count=count, wait=wait, name=name, target=target, on_event=on_event,
        add_port=add_port,
    )  # fmt: skip
