"""The probe's line protocol (sans-IO, stdlib only): shared by both ends.

A probe checks the wire itself (host socket <-> QEMU <-> virtio port <->
guest), on a port that no agent holds.  Three ASCII lines per round, each
ending with ``\\n``, fields separated by one space, version first::

    host  -> guest   GAGENT-PROBE 1 <nonce> <seq> <count>
    guest -> host    GAGENT-PROBE-ACK 1 <nonce> <guest-nonce> <guest-name>
    host  -> guest   GAGENT-PROBE-FIN 1 <guest-nonce> <host-rtt-ns> <seq> <count>

Nonces are 8-64 lowercase hex digits, fresh for each line (``new_nonce``):
an ACK counts only if it carries the nonce of the host's latest PROBE, a FIN
only if it carries the guest nonce of an ACK the guest sent, so replies to
stale or repeated probes are ignored.  The host measures PROBE -> ACK, the
guest ACK -> FIN; the FIN tells the guest the host's figure too.  Anything
else on the line (e.g. an agent's JSON error reply, which means an agent holds
the port) is reported as :class:`Other`.  Lines are bounded by
:data:`MAX_LINE`; a longer one is cut and reported as :class:`Other`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Union

__all__ = [
    "MAX_LINE",
    "VERSION",
    "Ack",
    "Fin",
    "LineBuffer",
    "Message",
    "Other",
    "Probe",
    "encode_ack",
    "encode_fin",
    "encode_probe",
    "new_nonce",
    "parse_line",
]

VERSION = "1"
MAX_LINE = 512
PROBE = "GAGENT-PROBE"
ACK = "GAGENT-PROBE-ACK"
FIN = "GAGENT-PROBE-FIN"
_NONCE = re.compile(r"[0-9a-f]{8,64}")
_NAME = re.compile(r"[!-~]{1,64}")  # printable ASCII, no spaces


@dataclass(frozen=True)
class Probe:
    nonce: str
    seq: int
    count: int


@dataclass(frozen=True)
class Ack:
    nonce: str
    guest_nonce: str
    guest: str


@dataclass(frozen=True)
class Fin:
    guest_nonce: str
    host_rtt_ns: int
    seq: int
    count: int


@dataclass(frozen=True)
class Other:
    """A line that is not (valid) probe protocol; ``line`` is its first bytes."""

    line: bytes

    @property
    def looks_like_agent(self) -> bool:
        """An agent's JSON reply (``{"error": ...}``): an agent holds the port."""
        return self.line.lstrip(b"\xff ").startswith(b"{")


Message = Union[Probe, Ack, Fin, Other]  # noqa: UP007 (runs on python 3.9)


def new_nonce() -> str:
    return secrets.token_hex(8)


def _nonce(value: str) -> str:
    if not _NONCE.fullmatch(value):
        raise ValueError(f"bad nonce {value!r}")
    return value


def _count(seq: int, count: int) -> None:
    if not 1 <= seq <= count:
        raise ValueError(f"bad sequence {seq}/{count}")


def encode_probe(nonce: str, seq: int, count: int) -> bytes:
    _count(seq, count)
    return f"{PROBE} {VERSION} {_nonce(nonce)} {seq} {count}\n".encode()


def encode_ack(nonce: str, guest_nonce: str, guest: str) -> bytes:
    name = "".join(ch for ch in guest if "!" <= ch <= "~")[:64] or "-"
    return f"{ACK} {VERSION} {_nonce(nonce)} {_nonce(guest_nonce)} {name}\n".encode()


def encode_fin(guest_nonce: str, host_rtt_ns: int, seq: int, count: int) -> bytes:
    _count(seq, count)
    if host_rtt_ns < 0:
        raise ValueError("negative round trip")
    return f"{FIN} {VERSION} {_nonce(guest_nonce)} {host_rtt_ns} {seq} {count}\n".encode()


def parse_line(line: bytes) -> Message:
    """One line (without its newline) -> a message; :class:`Other` when not ours."""
    try:
        words = line.decode("ascii").strip().split(" ")
    except UnicodeDecodeError:
        return Other(line[:80])
    try:
        kind, version, *rest = words
        if version != VERSION:
            return Other(line[:80])
        if kind == PROBE and len(rest) == 3:
            seq, count = int(rest[1]), int(rest[2])
            _count(seq, count)
            return Probe(_nonce(rest[0]), seq, count)
        if kind == ACK and len(rest) == 3 and _NAME.fullmatch(rest[2]):
            return Ack(_nonce(rest[0]), _nonce(rest[1]), rest[2])
        if kind == FIN and len(rest) == 4:
            rtt, seq, count = int(rest[1]), int(rest[2]), int(rest[3])
            _count(seq, count)
            if rtt < 0:
                raise ValueError("negative round trip")
            return Fin(_nonce(rest[0]), rtt, seq, count)
    except ValueError:
        pass
    return Other(line[:80])


class LineBuffer:
    """Bytes in, messages out; lines longer than MAX_LINE are cut and skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    if not self._skipping:
                        out.append(Other(bytes(self._buf[:80])))
                    self._skipping = True
                    del self._buf[:]
                return out
            line = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > MAX_LINE:
                out.append(Other(line[:80]))
            elif line.strip():
                out.append(parse_line(line))
