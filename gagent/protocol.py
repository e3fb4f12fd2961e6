"""Sans-IO codec for the QEMU guest agent (QGA) protocol.

No I/O and no trio here: bytes go in with :meth:`QGAConnection.receive_data`,
events come out of :meth:`QGAConnection.next_event`, and the bytes to write
come back from :meth:`QGAConnection.send_command` / :meth:`send_sync`.

The wire format, as qemu-ga speaks it:

* requests are JSON objects ``{"execute": NAME, "arguments": {...}}``; qemu-ga
  parses a stream of JSON values, so no separator is needed, but we end each
  with ``\\n`` like every other client;
* replies are one JSON object per line: ``{"return": VALUE}`` or
  ``{"error": {"class": ..., "desc": ...}}``;
* a 0xFF byte sent by the client resets qemu-ga's JSON parser (qemu-ga 7.2
  also answers it with a "stray" parse-error line);
* ``guest-sync-delimited`` makes the agent write 0xFF right before its reply,
  so a client can throw away everything that came before: stale replies to
  cancelled commands, half lines, that parse-error line.

Requests are strictly serial: one in flight at a time.  After anything that
can leave bytes in flight (an error reply, extra data after a reply, a reply
too large) the connection reports :attr:`QGAConnection.needs_sync` and the
caller must sync before the next command.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from .errors import ConnectionLost, ProtocolError, ReplyTooLarge, UsageError
from .protocol_json import encode_command, loads_or_none, parse_object

__all__ = [
    "DEFAULT_MAX_REPLY_SIZE",
    "NEED_DATA",
    "NO_REPLY_COMMANDS",
    "REPLY_SIZE_FLOORS",
    "SENTINEL",
    "Closed",
    "ErrorReply",
    "Event",
    "QGAConnection",
    "Reply",
    "State",
    "SyncReply",
    "encode_command",
]

SENTINEL: Final = b"\xff"

#: Bound on one reply line.  qemu-ga answers guest-file-read of its largest
#: count (48 MiB) with ~64 MiB of base64; 16 MiB is ample for everything else
#: and keeps a confused peer from eating the host's memory.
DEFAULT_MAX_REPLY_SIZE: Final = 16 * 1024 * 1024

#: Replies whose legitimate size is known to exceed that default get at least
#: this much room, whatever ``max_reply_size`` says: qemu-ga keeps up to 16 MiB
#: of each of a program's stdout and stderr (GUEST_EXEC_MAX_OUTPUT) and sends
#: both base64-encoded in one guest-exec-status reply (~43 MiB), so a program
#: with a lot of output must not turn into a ReplyTooLarge.
REPLY_SIZE_FLOORS: Final = {"guest-exec-status": 48 * 1024 * 1024}

#: Commands qemu-ga answers only on failure (``success-response: false``).
NO_REPLY_COMMANDS: Final = frozenset(
    {"guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"}
)


@dataclass(frozen=True, slots=True)
class Reply:
    """``{"return": value}`` for the command in flight."""

    value: Any


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """``{"error": error}`` for the command in flight (``error`` is the raw object)."""

    error: Any


@dataclass(frozen=True, slots=True)
class SyncReply:
    """The delimited reply carrying our sync id: the stream is clean from here."""

    sync_id: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed its end (EOF)."""


Event = Reply | ErrorReply | SyncReply | Closed


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`QGAConnection.next_event` when more bytes are needed.
NEED_DATA: Final = _NeedData()


class State(enum.Enum):
    IDLE = "idle"  # nothing in flight
    AWAIT_REPLY = "await-reply"  # a command was sent, its reply line is awaited
    AWAIT_SYNC = "await-sync"  # discarding until 0xFF, then the sync reply
    CLOSED = "closed"


_SYNC_LINE_LIMIT: Final = 4096


class QGAConnection:
    """State machine of one client conversation with one agent."""

    def __init__(self, *, max_reply_size: int = DEFAULT_MAX_REPLY_SIZE):
        if max_reply_size <= 0:
            raise UsageError("max_reply_size must be positive")
        self.max_reply_size = max_reply_size
        self._reply_limit = max_reply_size  # for the reply in flight (see REPLY_SIZE_FLOORS)
        self.state = State.IDLE
        #: True until a sync has succeeded, and again after anything that may
        #: leave an unread reply in the stream.
        self.needs_sync = True
        self.command: str | None = None
        self._decode: Callable[[bytes], Reply | ErrorReply] | None = None
        self._sync_id: int | None = None
        self._buffer = bytearray()
        self._scan_from = 0  # where the newline search resumes (keeps big replies O(n))
        self._seen_sentinel = False
        self._eof = False
        #: Complete delimited lines (0xFF + line) that were not our sync reply.
        self.stale_replies_dropped = 0

    # ------------------------------------------------------------------ sending

    def send_command(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        decode: Callable[[bytes], Reply | ErrorReply] | None = None,
    ) -> bytes:
        """Start a command; returns the bytes to write.

        ``decode``, when given, turns the reply line's bytes into the Reply or
        ErrorReply event in one pass (a typed reply: :class:`gagent.decoding.ReplyDecoder`),
        raising ProtocolError for a reply of the wrong shape; by default the line
        is parsed as plain JSON.
        """
        self._require_idle(name)
        if self._buffer:
            # Bytes nobody asked for are pending: they belong to an earlier
            # exchange, and the reply we would read next could be theirs.
            self.needs_sync = True
            raise ProtocolError(
                "unread data from an earlier exchange is pending; sync first",
                data=bytes(self._buffer),
                command=name,
            )
        data = encode_command(name, arguments)
        self.command = name
        self._decode = decode
        self.state = State.AWAIT_REPLY
        floor = REPLY_SIZE_FLOORS.get(name)
        self._reply_limit = (
            self.max_reply_size if floor is None else max(floor, self.max_reply_size)
        )
        return data

    def send_sync(self, sync_id: int) -> bytes:
        """Start a ``guest-sync-delimited``; returns the bytes to write.

        The leading 0xFF resets the agent's parser in case a half request of
        ours is stuck in it.
        """
        if self.state is State.CLOSED:
            raise ConnectionLost("connection closed by the agent", command="guest-sync-delimited")
        if not isinstance(sync_id, int) or isinstance(sync_id, bool):
            raise UsageError("sync id must be an int")
        # A sync may interrupt anything: what was in flight is abandoned.
        self.state = State.AWAIT_SYNC
        self.command = "guest-sync-delimited"
        self._reply_limit = self.max_reply_size
        self._sync_id = sync_id
        self._seen_sentinel = False
        self.needs_sync = True
        pending = bytes(self._buffer)
        self._clear_buffer()
        if pending:
            self.receive_data(pending)
        # encode_command's bytes, without json.dumps (on every connect).
        return b'\xff{"execute":"guest-sync-delimited","arguments":{"id":%d}}\n' % sync_id

    def command_done_without_reply(self) -> None:
        """Close a no-reply command (guest-shutdown, guest-suspend-*) that got none.

        The agent may still speak later (or have gone away), so sync next time.
        """
        if self.state is State.AWAIT_REPLY:
            self.state = State.IDLE
            self.command = None
            self.needs_sync = True

    def abandon(self) -> None:
        """The caller gave up on what was in flight (timeout, cancellation)."""
        if self.state is not State.CLOSED:
            self.state = State.IDLE
            self.command = None
            self.needs_sync = True
            self._clear_buffer()

    # ---------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the peer; ``b""`` means EOF."""
        if not data:
            self._eof = True
            return
        if self.state is State.IDLE:
            # Nobody asked: whatever this is, the next command must not take
            # it for its reply (same verdict as when it shares a chunk with
            # the reply before it).
            self.needs_sync = True
        if self.state is State.AWAIT_SYNC and not self._seen_sentinel:
            # Discard eagerly so a flood of stale bytes costs no memory.  The
            # *first* sentinel counts: what follows it is checked line by line
            # (a later sentinel in the same chunk may follow our own reply).
            index = data.find(SENTINEL)
            if index < 0:
                return
            self._seen_sentinel = True
            self._clear_buffer()
            data = data[index + 1 :]
        self._buffer += data

    def next_event(self) -> Event | _NeedData:
        """The next event, or :data:`NEED_DATA`.  Raises ProtocolError on garbage."""
        if self.state is State.CLOSED:
            return Closed()
        if self.state is State.IDLE:
            return self._closed_or_need()
        if self.state is State.AWAIT_SYNC:
            return self._next_sync_event()
        return self._next_reply_event()

    # ---------------------------------------------------------------- internals

    def _require_idle(self, name: str) -> None:
        if self.state is State.CLOSED:
            raise ConnectionLost("connection closed by the agent", command=name)
        if self.state is not State.IDLE:
            raise UsageError(
                f"cannot send {name}: {self.command} is still in flight (QGA is strictly serial)"
            )

    def _closed_or_need(self) -> Closed | _NeedData:
        if self._eof:
            self.state = State.CLOSED
            return Closed()
        return NEED_DATA

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._scan_from = 0

    def _take_line(self) -> bytes | None:
        """The next complete reply line, or None.

        Raises ReplyTooLarge when the line is longer than ``max_reply_size``
        (or the command's floor), whether it arrived in one piece or not (the
        verdict must not depend on how the bytes were chunked).
        """
        limit = self._reply_limit
        newline = self._buffer.find(b"\n", self._scan_from)
        if newline < 0:
            self._scan_from = len(self._buffer)
            if len(self._buffer) > limit:
                self._too_large()
            return None
        if newline > limit:
            self._too_large()
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        self._scan_from = 0
        return line

    def _too_large(self) -> NoReturn:
        command = self.command
        # The rest of the oversized reply may still be coming: only a sync
        # (which skips to the next 0xFF) can get past it.
        self._fail()
        self._clear_buffer()
        raise ReplyTooLarge(self._reply_limit, command=command)

    def _fail(self) -> None:
        """What was in flight is over, and the stream cannot be trusted."""
        self.state = State.IDLE
        self.command = None
        self.needs_sync = True

    def _next_sync_event(self) -> Event | _NeedData:
        """Skip everything but a ``0xFF`` + one line without 0xFF carrying our id.

        Nothing here raises: whatever is not our reply (stale sync replies,
        half lines, noise, even a stray 0xFF) is dropped, so a sync always
        gets through whatever an earlier exchange left in the stream.
        """
        while True:
            if not self._seen_sentinel:
                return self._closed_or_need_in_flight()
            buffer = self._buffer
            newline = buffer.find(b"\n", self._scan_from)
            end = len(buffer) if newline < 0 else newline
            # A later sentinel supersedes an earlier one (which was noise, or
            # the start of a reply that never ended).
            last = buffer.rfind(SENTINEL, 0, end)
            if last >= 0:
                del buffer[: last + 1]
                self._scan_from = 0
                continue
            if newline < 0:
                self._scan_from = len(buffer)
                if len(buffer) > _SYNC_LINE_LIMIT:
                    # Too long for a sync reply: not one.  Wait for the next
                    # sentinel (there is none in the buffer).
                    self._seen_sentinel = False
                    self._clear_buffer()
                return self._closed_or_need_in_flight()
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            self._scan_from = 0
            if not line.strip():
                continue
            value = loads_or_none(line)
            reply_id = value.get("return") if isinstance(value, dict) else None
            if type(reply_id) is int and reply_id == self._sync_id:
                self.state = State.IDLE
                self.command = None
                # Bytes after the sync reply were not asked for.
                self.needs_sync = bool(self._buffer)
                return SyncReply(reply_id)
            # A reply to an earlier sync (or anything else): stale, keep looking
            # for the next sentinel.
            self.stale_replies_dropped += 1
            self._seen_sentinel = False
            rest = bytes(self._buffer)
            self._clear_buffer()
            if rest:
                self.receive_data(rest)

    def _next_reply_event(self) -> Event | _NeedData:
        while True:
            line = self._take_line()
            if line is None:
                return self._closed_or_need_in_flight()
            if not line.strip():
                continue
            command = self.command
            decode = self._decode
            self._fail()
            if decode is not None:
                event = decode(line)
                if type(event) is Reply:
                    self.needs_sync = bool(self._buffer)
                return event
            value = parse_object(line, command)
            if "return" in value:
                # Extra bytes already here were not asked for: resync next time.
                self.needs_sync = bool(self._buffer)
                return Reply(value["return"])
            if "error" in value:
                # Some failures (a request over qemu-ga's token limit) produce
                # more than one error reply: sync before trusting the stream.
                return ErrorReply(value["error"])
            raise ProtocolError(
                f"reply to {command} has neither 'return' nor 'error'", data=line, command=command
            )

    def _closed_or_need_in_flight(self) -> Closed | _NeedData:
        if self._eof:
            self.state = State.CLOSED
            return Closed()
        return NEED_DATA
