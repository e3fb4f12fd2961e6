"""The blocking agent behind :mod:`gagent.sync`: the transport and :class:`SyncAgent`.

:class:`BlockingAgent` runs the typed commands of
:class:`~gagent.commands.AgentCommands` over a blocking unix socket, through the
same sans-IO codec and resync loop as the trio client; :class:`SyncAgent` runs
each of them as a plain call within its ``timeout`` (:class:`AgentTimeout` when
it passes).  Its own module so that :mod:`gagent.sync` (the public facade, which
opens agents and freezes) and :mod:`gagent.sync_freeze` (which it loads on use)
both build on it, neither on the other.  Standard library only: no trio.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .commands import AgentCommands
from .errors import ConnectionLost, GagentError, ProtocolError, error_from_reply
from .exchange import SYNC_IDS, CodecTransport, connect_error, resync
from .protocol import (
    DEFAULT_MAX_REPLY_SIZE,
    NO_REPLY_COMMANDS,
    ErrorReply,
    QGAConnection,
    Reply,
)
from .sync_commands import SyncCommands

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_REPLY_GRACE",
    "AgentTimeout",
    "BlockingAgent",
    "StillSuspended",
    "SyncAgent",
    "connect_unix",
    "run_blocking",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
_RECEIVE_SIZE = 256 * 1024
#: How long a no-reply command (guest-shutdown, guest-suspend-*) waits for an
#: error reply before silence counts as success (as the trio client).
NO_REPLY_GRACE = 1.0


class AgentTimeout(GagentError, TimeoutError):
    """No answer within the call's ``timeout`` (the next call resynchronises first).

    ``waiting_for`` names what did not answer (``"the reply of vm1 to guest-info"``,
    ``"libvirt (looking up vm1)"``), as :mod:`gagent.inflight` does for the trio API.
    """

    def __init__(self, message: str, waiting_for: str | None = None):
        super().__init__(message)
        self.waiting_for = waiting_for


class StillSuspended(RuntimeError):
    """A coroutine driven by :func:`run_blocking` awaited something that needs an event loop."""


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end without an event loop.

    Works for coroutines that never really suspend: the typed commands over a
    blocking transport.  One that does (it awaited trio or asyncio) is closed
    and :class:`StillSuspended` raised: that is a bug, never a silent hang.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise StillSuspended(
        f"{getattr(coro, '__qualname__', coro)} suspended on {yielded!r}: it needs an event loop "
        "(use the async API, gagent.open_agent, under trio)"
    )


# ------------------------------------------------------------------ transport


class BlockingAgent(CodecTransport):
    """The typed commands over a connected blocking unix socket.

    ``execute`` is ``async`` only to fit :class:`AgentCommands`: it does its
    I/O blocking, within :attr:`deadline` (``time.monotonic()``; None: none).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
        name: str | None = None,
    ):
        super().__init__()
        self.sock = sock
        self.name = name or "agent"
        self.deadline: float | None = None
        #: The socket's path, when there is one to connect to again (:meth:`reopen`).
        self.path: str | None = None
        self._conn = QGAConnection(max_reply_size=max_reply_size)
        self._random = SYNC_IDS

    async def sync(self) -> None:
        """Resynchronise with the agent (guest-sync-delimited), dropping stale replies."""
        await resync(self._conn, self._send, self._next_event, self._random, self.name)

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one command and return its ``return`` value (error replies raise)."""
        return await self._exchange(command, arguments, None)

    async def _exchange(
        self,
        command: str,
        arguments: dict[str, Any] | None,
        decode: Callable[[bytes], Reply | ErrorReply] | None,
    ) -> Any:
        conn = self._conn
        if conn.needs_sync:
            await self.sync()
        if command in NO_REPLY_COMMANDS:
            decode = None
        data = conn.send_command(command, arguments, decode)
        try:
            await self._send(data, command)
            if command in NO_REPLY_COMMANDS:
                return await self._no_reply(command, arguments)
            event = await self._next_event(command)
        except BaseException:
            conn.abandon()  # whatever reply is still coming belongs to no one
            raise
        if type(event) is Reply:
            return event.value
        if type(event) is ErrorReply:
            raise error_from_reply(command, event.error, arguments=arguments)
        conn.abandon()
        raise ProtocolError(f"unexpected {event!r} in reply to {command}", command=command)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def reopen(self) -> None:
        """Connect to :attr:`path` again (the connection was lost; the freeze state is
        qemu-ga's, not the connection's); the next command syncs first."""
        if self.path is None:
            raise ConnectionLost(f"{self.name}: no socket path to connect to again")
        sock = connect_unix(self.path, self._remaining("connect"))
        self.sock.close()
        self.sock = sock
        self._conn = QGAConnection(max_reply_size=self._conn.max_reply_size)

    # ------------------------------------------------------------ internals

    async def _no_reply(self, command: str, arguments: dict[str, Any] | None) -> None:
        """Success is silence for a grace period, or the agent going away."""
        deadline = self.deadline
        grace_end = time.monotonic() + NO_REPLY_GRACE
        self.deadline = grace_end if deadline is None else min(deadline, grace_end)
        try:
            event = await self._next_event(command)
        except (AgentTimeout, ConnectionLost):
            self._conn.command_done_without_reply()
            return None
        finally:
            self.deadline = deadline
        if type(event) is ErrorReply:
            raise error_from_reply(command, event.error, arguments=arguments)
        return None  # an unexpected success reply is still success

    def _remaining(self, command: str) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AgentTimeout(
                f"{self.name}: no answer to {command} in time", self._reply_of(command)
            )
        return left

    def _reply_of(self, command: str) -> str:
        return f"the reply of {self.name} to {command}"

    async def _send(self, data: bytes, command: str) -> None:
        try:
            self.sock.settimeout(self._remaining(command))
            self.sock.sendall(data)
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: could not send {command} in time", self._reply_of(command)
            ) from None
        except OSError as exc:
            raise ConnectionLost(
                f"{self.name}: could not send {command}: {exc}", command=command
            ) from exc

    async def _receive(self, command: str) -> bytes:
        try:
            self.sock.settimeout(self._remaining(command))
            return self.sock.recv(_RECEIVE_SIZE)
        except TimeoutError:
            raise AgentTimeout(
                f"{self.name}: no answer to {command} in time", self._reply_of(command)
            ) from None
        except OSError as exc:
            raise ConnectionLost(
                f"{self.name}: connection lost waiting for the reply to {command}: {exc}",
                command=command,
            ) from exc


def connect_unix(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    """A connected blocking unix socket; AgentUnavailable (with advice) when it is not."""
    path = os.fspath(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except TimeoutError:
        sock.close()
        raise AgentTimeout(
            f"connecting to {path} took longer than {timeout:g}s", f"the connection to {path}"
        ) from None
    except OSError as exc:
        sock.close()
        raise connect_error(path, exc) from None
    return sock


# ------------------------------------------------------------------ the facade


class SyncAgent(SyncCommands):
    """Every typed command of :class:`~gagent.commands.AgentCommands`, as a plain call.

    The methods come from :class:`~gagent.sync_commands.SyncCommands`, which
    scripts/gen-sync.py writes from AgentCommands' source (so type checkers see
    them, and they cannot drift from the async API); each runs its coroutine
    through :meth:`run`.  ``commands`` is the transport underneath (its
    ``frozen``, ``target``, ``name``...).
    """

    def __init__(self, commands: AgentCommands, timeout: float | None = DEFAULT_TIMEOUT):
        self.commands = commands
        #: Seconds each call may take (None or 0: no bound).
        self.timeout = timeout
        # QGA answers strictly in order, without request ids: callers in several
        # threads take turns, a whole call (guest-info check included) at a time.
        self._turn = threading.Lock()

    @property
    def name(self) -> str:
        """The agent's name in messages (the domain's, or "agent")."""
        return getattr(self.commands, "name", "agent")

    @property
    def frozen(self) -> bool:
        """True while a freeze made through this agent is believed in force."""
        return self.commands.frozen

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Drive one coroutine of ``commands`` to its end within ``timeout`` (default: ours)."""
        seconds = self.timeout if timeout is None else timeout
        with self._turn:
            self.commands.deadline = time.monotonic() + seconds if seconds else None  # type: ignore[attr-defined]
            try:
                return run_blocking(coro)
            finally:
                self.commands.deadline = None  # type: ignore[attr-defined]

    def sync(self) -> None:
        """Resynchronise with the agent now (each connection already syncs when needed)."""
        self.run(self.commands.sync())  # type: ignore[attr-defined]

    def close(self) -> None:
        """Close the connection underneath (also at the end of a ``with`` block)."""
        close = getattr(self.commands, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> SyncAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
