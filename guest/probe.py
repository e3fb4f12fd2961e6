"""``gagent-guest probe``: answer the host's probes on a port no agent holds.

The guest end of the wire test (protocol: :mod:`gagent.guest.wire`).  The
port is a non-blocking fd polled with timeouts.  While the host end is
closed a virtio port reports POLLHUP and read() returns b'' at once, so the
loop backs off (50 ms doubling to 500 ms) instead of spinning, and waits for
the host to connect until the deadline.  It ends after the host's last FIN,
or when the host hangs up after at least one complete round.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .wire import Ack, Fin, LineBuffer, Other, Probe, encode_ack, new_nonce

__all__ = ["ProbeOutcome", "Round", "serve_probe"]

BACKOFF_MIN = 0.05
BACKOFF_MAX = 0.5
_HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL


@dataclass
class Round:
    seq: int
    count: int
    guest_rtt_ns: int  # ACK sent -> FIN received, measured here
    host_rtt_ns: int  # PROBE sent -> ACK received, measured by the host

    def as_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "count": self.count,
            "guest_rtt_ms": round(self.guest_rtt_ns / 1e6, 3),
            "host_rtt_ms": round(self.host_rtt_ns / 1e6, 3),
        }


@dataclass
class ProbeOutcome:
    rounds: list[Round] = field(default_factory=list)
    #: "done" (the host's last FIN), "hangup" (host left after >= 1 round),
    #: "timeout", or "error"
    end: str = "timeout"
    host_seen: bool = False  # the host end was connected at some point
    junk_lines: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.rounds) and self.end in ("done", "hangup")


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
            continue
        except BlockingIOError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the port does not take data (host end full or gone)")
        poller.poll(int(min(remaining, 0.2) * 1000) + 1)


def serve_probe(
    fd: int,
    *,
    timeout: float = 60.0,
    guest_name: str | None = None,
    say: Callable[[str], None] = lambda _line: None,
    clock: Callable[[], int] = time.monotonic_ns,
) -> ProbeOutcome:
    """Answer probes on ``fd`` (non-blocking) until done, hang-up after a round, or timeout."""
    name = guest_name or socket.gethostname()
    deadline = time.monotonic() + timeout
    outcome = ProbeOutcome()
    lines = LineBuffer()
    pending: dict[str, int] = {}  # guest nonce -> ACK send time
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    backoff = BACKOFF_MIN
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome.end = "timeout"
            return outcome
        events = poller.poll(int(min(remaining, 0.5) * 1000) + 1)
        revents = events[0][1] if events else 0
        data = b""
        if revents & select.POLLIN:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    outcome.end, outcome.detail = "error", f"read failed: {exc.strerror}"
                    return outcome
        if data:
            outcome.host_seen = True
            backoff = BACKOFF_MIN
            for msg in lines.feed(data):
                if isinstance(msg, Probe):
                    guest_nonce = new_nonce()
                    pending[guest_nonce] = clock()
                    _write_all(fd, encode_ack(msg.nonce, guest_nonce, name), deadline + 1)
                elif isinstance(msg, Fin) and msg.guest_nonce in pending:
                    rtt = clock() - pending.pop(msg.guest_nonce)
                    r = Round(msg.seq, msg.count, rtt, msg.host_rtt_ns)
                    outcome.rounds.append(r)
                    say(
                        f"probe {r.seq}/{r.count}: round trip {rtt / 1e6:.3f} ms here, "
                        f"{r.host_rtt_ns / 1e6:.3f} ms on the host"
                    )
                    if msg.seq >= msg.count:
                        outcome.end = "done"
                        return outcome
                elif isinstance(msg, (Other, Ack)):
                    outcome.junk_lines += 1
            continue
        if revents & select.POLLNVAL:
            outcome.end, outcome.detail = "error", "the port was closed"
            return outcome
        if revents & _HUP or revents & select.POLLIN:
            # host end closed (virtio: POLLHUP, read() == b''): back off, do not spin
            if outcome.rounds:
                outcome.end = "hangup"
                return outcome
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_MAX)
