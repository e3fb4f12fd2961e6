"""The trio client: a thin I/O shell around :class:`gagent.protocol.QGAConnection`.

::

    async with gagent.open_agent("/run/vm1.agent.sock") as agent:
        info = await agent.info()

    # or over a stream the caller owns (memory stream, serial port, ...):
    async with gagent.open_agent_over(stream) as agent:
        ...

Timeouts belong to the caller (``with trio.fail_after(5): await agent.ping()``).
A cancelled or timed-out command leaves the client *out of sync*; the next
command resynchronises first (guest-sync-delimited with a fresh random id), so
a late reply to the abandoned command is never taken for the next one's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .errors import AgentTarget, ConnectionLost, ProtocolError, error_from_reply
from .exchange import SYNC_IDS, CodecTransport, connect_error, resync
from .inflight import note_cancelled_wait
from .protocol import (
    DEFAULT_MAX_REPLY_SIZE,
    NEED_DATA,
    NO_REPLY_COMMANDS,
    Closed,
    ErrorReply,
    QGAConnection,
    Reply,
)
from .replies import untyped_decoder

__all__ = ["Agent", "connect_unix", "open_agent", "open_agent_over"]

_RECEIVE_SIZE = 256 * 1024
#: How long a no-reply command (guest-shutdown, guest-suspend-*) waits for an
#: error reply before silence counts as success.
NO_REPLY_GRACE = 1.0


class Agent(CodecTransport):
    """One conversation with one guest agent over a :class:`trio.abc.Stream`.

    Requests are serialised by a lock: QGA answers strictly in order and has
    no request ids, so two commands in flight could not be told apart.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
        name: str | None = None,
    ):
        super().__init__()
        self.stream = stream
        self.name = name or "agent"
        self._conn = QGAConnection(max_reply_size=max_reply_size)
        self._lock = trio.Lock()
        self._random = SYNC_IDS

    async def sync(self) -> None:
        """Resynchronise the stream (guest-sync-delimited with a random id)."""
        async with self._lock:
            await self._sync_locked()

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one command and return its ``return`` value.

        Raises :class:`~gagent.errors.AgentError` subclasses for error replies,
        :class:`~gagent.errors.ConnectionLost` on EOF,
        :class:`~gagent.errors.ProtocolError` on garbage.
        """
        if command in NO_REPLY_COMMANDS:
            await self.execute_no_reply(command, arguments)
            return None
        return await self._exchange(command, arguments, untyped_decoder(command))

    async def _exchange(
        self,
        command: str,
        arguments: dict[str, Any] | None,
        decode: Callable[[bytes], Reply | ErrorReply] | None,
    ) -> Any:
        # The hot path, kept flat: an uncontended lock is taken without a
        # scheduler pass (send_all checkpoints anyway).
        lock = self._lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            conn = self._conn
            if conn.needs_sync:
                await self._sync_locked()
            data = conn.send_command(command, arguments, decode)
            stream = self.stream
            try:
                if type(stream) is trio.SocketStream:
                    event = await _round_trip_on_fd(conn, stream.socket.fileno(), data)
                else:
                    await stream.send_all(data)
                    event = conn.next_event()
                    while event is NEED_DATA:
                        conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
                        event = conn.next_event()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                conn.abandon()
                raise ConnectionLost(
                    f"{self.name}: connection lost during {command}: {exc}", command=command
                ) from exc
            except BaseException as exc:
                # Cancelled, timed out, or garbage: whatever reply is still
                # coming must not be read as the next command's.
                conn.abandon()
                if isinstance(exc, trio.Cancelled):
                    note_cancelled_wait(f"the reply of {self.name} to {command}")
                raise
            if type(event) is Reply:
                return event.value
            if type(event) is ErrorReply:
                raise error_from_reply(command, event.error, arguments=arguments)
            conn.abandon()
            if isinstance(event, Closed):
                raise ConnectionLost(
                    f"{self.name}: the agent closed the connection before answering {command}",
                    command=command,
                )
            raise ProtocolError(f"unexpected {event!r} in reply to {command}", command=command)
        finally:
            lock.release()

    async def execute_no_reply(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        grace: float = NO_REPLY_GRACE,
    ) -> None:
        """Send a command that answers only on failure (guest-shutdown, guest-suspend-*).

        Success is silence for ``grace`` seconds, or the agent closing the
        connection (the guest went down); an error reply raises.
        """
        async with self._lock:
            if self._conn.needs_sync:
                await self._sync_locked()
            await self._send_request(command, arguments)
            with trio.move_on_after(grace):
                try:
                    await self._await_reply(command, arguments)
                except ConnectionLost:
                    pass  # the guest went away: what shutdown/suspend is for
                else:
                    return  # an unexpected success reply is still success
            self._conn.command_done_without_reply()

    async def aclose(self) -> None:
        """Close the connection (``async with`` does it)."""
        await self.stream.aclose()

    # ------------------------------------------------------------------ internals

    async def _sync_locked(self) -> None:
        await resync(self._conn, self._send, self._next_event, self._random, self.name)

    async def _send_request(self, command: str, arguments: dict[str, Any] | None) -> None:
        data = self._conn.send_command(command, arguments)
        try:
            await self._send(data, command)
        except BaseException:
            self._conn.abandon()
            raise

    async def _await_reply(self, command: str, arguments: dict[str, Any] | None) -> Any:
        try:
            event = await self._next_event(command)
        except BaseException:
            # Cancelled, timed out, or broken: whatever reply is still coming
            # must not be read as the next command's.
            self._conn.abandon()
            raise
        if isinstance(event, Reply):
            return event.value
        if isinstance(event, ErrorReply):
            raise error_from_reply(command, event.error, arguments=arguments)
        self._conn.abandon()
        raise ProtocolError(f"unexpected {event!r} in reply to {command}", command=command)

    async def _send(self, data: bytes, command: str) -> None:
        try:
            stream = self.stream
            if type(stream) is trio.SocketStream:
                await _write_fd(stream.socket.fileno(), data)
            else:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(
                f"{self.name}: could not send {command}: {exc}", command=command
            ) from exc

    async def _receive(self, command: str) -> bytes | bytearray:
        try:
            stream = self.stream
            if type(stream) is trio.SocketStream:
                return await _read_fd(stream.socket.fileno())
            return await stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(
                f"{self.name}: connection lost waiting for the reply to {command}: {exc}",
                command=command,
            ) from exc
        except trio.Cancelled:
            note_cancelled_wait(f"the reply of {self.name} to {command}")
            raise


async def _round_trip_on_fd(conn: QGAConnection, fd: int, data: bytes) -> Any:
    """One request and its reply on a socket's (non-blocking) descriptor.

    The same as ``send_all`` + ``receive_some`` on the SocketStream, minus the
    layers a strictly serial, locked conversation does not need: on a round
    trip to a local agent those were about a quarter of the client's CPU time
    (bench/roundtrip.py).  Still a checkpoint: cancellation is checked first,
    and if nothing had to wait, the scheduler still gets its turn.
    """
    waited = await _write_fd(fd, data)
    event = conn.next_event()
    while event is NEED_DATA:
        try:
            chunk = os.read(fd, _RECEIVE_SIZE)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
            waited = True
            continue
        conn.receive_data(chunk)
        event = conn.next_event()
    if not waited:
        await trio.lowlevel.cancel_shielded_checkpoint()
    return event


async def _write_fd(fd: int, data: bytes) -> bool:
    """``send_all`` on a socket's descriptor, minus SocketStream's layers (a cold
    connect's sync costs less); True if it had to wait.  Cancellation is checked
    first, but a write that did not wait is no checkpoint: the read after it is."""
    if fd < 0:
        raise trio.ClosedResourceError("the agent's socket is closed")
    await trio.lowlevel.checkpoint_if_cancelled()
    waited = False
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            waited = True
    return waited


async def _read_fd(fd: int) -> bytes:
    """``receive_some`` on a socket's descriptor (b"" at EOF); a checkpoint."""
    if fd < 0:
        raise trio.ClosedResourceError("the agent's socket is closed")
    try:
        data = os.read(fd, _RECEIVE_SIZE)
    except BlockingIOError:
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, _RECEIVE_SIZE)
            except BlockingIOError:
                continue
    await trio.lowlevel.cancel_shielded_checkpoint()
    return data


async def connect_unix(path: str | os.PathLike[str]) -> trio.SocketStream:
    """Connect to a unix socket, turning OS errors into an :class:`AgentUnavailable`
    that says what to do."""
    path = os.fspath(path)
    try:
        return await trio.open_unix_socket(path)
    except OSError as exc:
        raise connect_error(path, exc) from None


@asynccontextmanager
async def open_agent(
    path: str | os.PathLike[str],
    *,
    sync: bool = True,
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    thaw_on_connect: bool = False,
) -> AsyncIterator[Agent]:
    """Connect to an agent's unix socket, sync, and close it on exit.

    A channel serves one client at a time, so the socket is released as soon
    as the block ends, also on error or cancellation.  ``thaw_on_connect``
    thaws a guest found frozen (left so by a crashed earlier run), logging it.
    """
    stream = await connect_unix(path)
    agent = Agent(stream, max_reply_size=max_reply_size, name=os.fspath(path))
    agent.target = AgentTarget.for_socket(path)  # advice names the socket
    try:
        if sync:
            await agent.sync()
        if thaw_on_connect:
            await _thaw_if_frozen(agent)
        yield agent
    finally:
        # What SocketStream.aclose does, minus a scheduler pass: closing needs no
        # waiting, and aclose_forcefully's cancelled scope around aclose's
        # checkpoint cost a cold fan-out ~70 us of CPU per connection
        # (bench/fanout.py).  A cancellation (the caller's deadline) is still
        # delivered here, as it was.
        stream.socket.close()
        await trio.lowlevel.checkpoint_if_cancelled()


@asynccontextmanager
async def open_agent_over(
    stream: trio.abc.Stream,
    *,
    sync: bool = True,
    max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    name: str | None = None,
    thaw_on_connect: bool = False,
) -> AsyncIterator[Agent]:
    """Use a stream the caller owns (and closes): memory streams, serial ports..."""
    agent = Agent(stream, max_reply_size=max_reply_size, name=name)
    if sync:
        await agent.sync()
    if thaw_on_connect:
        await _thaw_if_frozen(agent)
    yield agent


async def _thaw_if_frozen(agent: Agent) -> None:
    from .freeze import thaw_if_frozen  # freeze builds on this module

    await thaw_if_frozen(agent, domain=agent.name)
