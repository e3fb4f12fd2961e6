"""What the trio client and the blocking client share, free of any I/O framework.

Both speak through the sans-IO codec (:mod:`gagent.protocol`); what is left
between the codec and a socket is written once, here:

* :func:`resync`: the guest-sync-delimited loop, over whatever ``send`` and
  ``next_event`` the transport provides (awaitables: the trio client's really
  suspend, the blocking client's do blocking I/O and never suspend);
* :func:`connect_error`: what an ``OSError`` from connecting to a unix socket
  means, as an :class:`~gagent.errors.AgentUnavailable` that says what to do;
* :class:`CodecTransport`: the typed commands over a codec, whose reply lines a
  typed command's decoder reads straight from the bytes (``_exchange``), and the
  loop that reads until the codec has an event (``_next_event``) over each
  client's own ``_receive``.
"""

from __future__ import annotations

import errno
import os
import random
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .commands import AgentCommands
from .errors import AgentUnavailable, ConnectionLost, ProtocolError
from .protocol import NEED_DATA, Closed, ErrorReply, QGAConnection, Reply, SyncReply

if TYPE_CHECKING:
    from .decoding import ReplyDecoder

__all__ = ["SYNC_ATTEMPTS", "SYNC_IDS", "CodecTransport", "connect_error", "resync"]

#: Syncs in a row that may be followed by unrequested data before giving up
#: (a peer that never stops talking must not make us loop forever).
SYNC_ATTEMPTS = 3

SYNC = "guest-sync-delimited"

#: Where sync ids come from, for every connection of the process: seeding a
#: generator of its own reads 2.5 KB of urandom, a tenth of a cold connect's
#: CPU time in a fan-out (bench/fanout.py), and ids need only differ from the
#: stale replies still in one stream, not be secret.
SYNC_IDS = random.Random()


class CodecTransport(AgentCommands):
    """The typed commands over :class:`QGAConnection` (the trio and the blocking client).

    A subclass sets ``_conn`` and ``name`` and provides ``_exchange(command, arguments,
    decode)``: send, and return the reply's value, decoded from the line by ``decode``
    (None: plain JSON), or raise its error; and ``_receive(command)``: the next bytes
    from the peer (b"" at EOF), its own failures raised as gagent's errors.
    """

    _conn: QGAConnection
    name: str

    @property
    def max_reply_size(self) -> int:  # type: ignore[override]
        """The bound on one reply's size, in bytes."""
        return self._conn.max_reply_size

    @property
    def in_sync(self) -> bool:
        """False after a timeout/cancellation/error until the next sync."""
        return not self._conn.needs_sync

    async def execute_decoded(
        self, command: str, arguments: dict[str, Any] | None, decoder: ReplyDecoder
    ) -> Any:
        """:meth:`execute`, the reply line decoded by ``decoder`` straight from its bytes."""
        return await self._exchange(command, arguments, decoder)

    async def _exchange(
        self,
        command: str,
        arguments: dict[str, Any] | None,
        decode: Callable[[bytes], Reply | ErrorReply] | None,
    ) -> Any:
        raise NotImplementedError

    async def _receive(self, command: str) -> bytes | bytearray:
        raise NotImplementedError

    async def _next_event(self, command: str) -> Reply | ErrorReply | SyncReply:
        """The codec's next event for ``command``'s reply, reading as needed; EOF first
        is ConnectionLost."""
        conn = self._conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(await self._receive(command))
                continue
            if isinstance(event, Closed):
                raise ConnectionLost(
                    f"{self.name}: the agent closed the connection before answering {command}",
                    command=command,
                )
            return event  # type: ignore[return-value]


async def resync(
    conn: QGAConnection,
    send: Callable[[bytes, str], Awaitable[None]],
    next_event: Callable[[str], Awaitable[Reply | ErrorReply | SyncReply]],
    rng: random.Random,
    name: str,
) -> None:
    """Resynchronise the stream with guest-sync-delimited (a random id each time).

    ``send(data, command)`` writes; ``next_event(command)`` returns the codec's
    next event, reading as needed (raising ConnectionLost on EOF).  Anything
    that interrupts the sync abandons it, so the next command syncs again.
    """
    for _ in range(SYNC_ATTEMPTS):
        sync_id = rng.randrange(1, 2**31)
        try:
            await send(conn.send_sync(sync_id), SYNC)
            while True:
                event = await next_event(SYNC)
                if isinstance(event, SyncReply):
                    break
        except BaseException:
            conn.abandon()
            raise
        if not conn.needs_sync:
            return
        # Data followed the sync reply: sync once more to flush it.
    raise ProtocolError(
        f"{name}: the agent keeps sending unrequested data after each sync reply", command=SYNC
    )


def connect_error(path: str, exc: OSError) -> AgentUnavailable:
    """An OSError from connecting to the unix socket ``path``, as advice."""
    if isinstance(exc, FileNotFoundError):
        return AgentUnavailable(
            f"no agent socket at {path}",
            path=path,
            hint="is the domain running with a gagent channel? see 'gagent channel list'",
        )
    if isinstance(exc, ConnectionRefusedError):
        # Linux also answers ECONNREFUSED for a path that is not a socket.
        if not _is_socket(path):
            return _not_a_socket(path)
        return AgentUnavailable(
            f"nothing is listening on {path}",
            path=path,
            hint="the socket is stale: the VM (or qemu-ga in listen mode) is not running",
        )
    if isinstance(exc, PermissionError):
        return AgentUnavailable(
            f"permission denied on {path}",
            path=path,
            hint="run as root or as the QEMU user that owns the socket",
        )
    if exc.errno in (errno.ENOTSOCK, errno.EINVAL, errno.ENOTDIR):
        return _not_a_socket(path)
    return AgentUnavailable(
        f"cannot connect to {path}: {exc.strerror or exc}",
        path=path,
        hint="check the path (unix socket paths are limited to 107 bytes)",
    )


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _not_a_socket(path: str) -> AgentUnavailable:
    return AgentUnavailable(
        f"{path} is not a unix socket",
        path=path,
        hint="give the path of the agent channel's socket, see 'gagent channel list'",
    )
