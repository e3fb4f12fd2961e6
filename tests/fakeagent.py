"""A scripted fake QEMU guest agent for fault injection (tests only).

It speaks the wire format like qemu-ga 7.2 does:

* requests are a stream of JSON objects (no separator needed);
* a 0xFF byte resets the parser and is answered with the "stray" parse-error
  line qemu-ga sends (``{"error": {... "JSON parse error, stray '\\uFFFD'"}}``);
* ``guest-sync-delimited`` is answered with ``0xFF`` + ``{"return": id}``;
* requests are handled strictly one after the other (a slow command delays
  everything behind it, as in qemu-ga).

Each command follows a script: behaviours queued with :meth:`FakeAgent.on` are
used once each, in order; then the command's default applies (see
:meth:`FakeAgent.set_default`).  Every request is recorded, so tests can assert
the exact sequence the client sent.

Serve it over any :class:`trio.abc.Stream` (:func:`fake_over_memory` wraps
``trio.testing.memory_stream_pair`` / ``lockstep_stream_pair``) or over a real
unix socket (:func:`fake_unix_socket`), so that ``open_agent(path)`` is
exercised too.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

__all__ = [
    "FAKE_FILESYSTEMS",
    "FREEZE_ALLOWLIST",
    "STRAY_LINE",
    "Default",
    "Delay",
    "Disconnect",
    "DisconnectMidReply",
    "Echo",
    "Extra",
    "Fail",
    "FakeAgent",
    "Garbage",
    "Oversized",
    "Return",
    "Sequence",
    "Silence",
    "fake_over_memory",
    "fake_unix_socket",
]

#: What qemu-ga 7.2 writes when it meets the 0xFF a client sends before a sync.
STRAY_LINE = (
    b'{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n'
)

NO_REPLY = frozenset(
    {"guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"}
)
#: What qemu-ga 7.2 still serves while frozen (qga/main.c ga_freeze_allowlist).
FREEZE_ALLOWLIST = frozenset(
    {"guest-ping", "guest-info", "guest-sync", "guest-sync-delimited",
     "guest-fsfreeze-status", "guest-fsfreeze-thaw"}
)  # fmt: skip
#: The freeze commands a ``freezable`` fake implements, with a freeze state.
FSFREEZE = frozenset(
    {"guest-fsfreeze-status", "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list",
     "guest-fsfreeze-thaw"}
)  # fmt: skip
#: How many filesystems a fake freeze freezes.
FAKE_FILESYSTEMS = 2


# ---------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class Default:
    """The command's default answer (a correct one, for the built-in commands)."""


@dataclass(frozen=True)
class Return:
    """``{"return": value}``."""

    value: Any = field(default_factory=dict)


@dataclass(frozen=True)
class Echo:
    """``{"return": arguments}``: lets concurrent callers tell their replies apart.

    With ``tag``, ``{"return": {"late": tag, **arguments}}`` instead.
    """

    tag: str | None = None


@dataclass(frozen=True)
class Fail:
    """``{"error": {"class": ..., "desc": ...}}``."""

    error_class: str = "GenericError"
    desc: str = "the fake agent was told to fail"


@dataclass(frozen=True)
class Silence:
    """Never answer (the agent goes on serving the next requests)."""


@dataclass(frozen=True)
class Garbage:
    """Answer with raw bytes that are not a QGA reply."""

    data: bytes = b"this is not json\n"


@dataclass(frozen=True)
class Delay:
    """Sleep, then behave like ``then``.  Requests behind it wait, as in qemu-ga."""

    seconds: float
    then: Any = field(default_factory=Default)


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without a word."""


@dataclass(frozen=True)
class DisconnectMidReply:
    """Write the first ``keep`` bytes of ``{"return": value}`` and close."""

    value: Any = field(default_factory=lambda: {"half": "of a reply that never ends"})
    keep: int = 12


@dataclass(frozen=True)
class Oversized:
    """``{"return": "aaa..."}`` of ``size`` payload bytes, written in ``chunk`` pieces."""

    size: int
    chunk: int = 64 * 1024


@dataclass(frozen=True)
class Sequence:
    """Each behaviour in turn (separate writes), ``gap`` seconds apart: two replies..."""

    steps: tuple[Any, ...]
    gap: float = 0.0


@dataclass(frozen=True)
class Extra:
    """The ``answer``, then an unrequested stale ``extra`` line in the same write."""

    answer: Any = field(default_factory=Default)
    extra: bytes = b'{"return": "stale extra reply"}\n'


Behaviour = (
    Default
    | Return
    | Echo
    | Fail
    | Silence
    | Garbage
    | Delay
    | Disconnect
    | DisconnectMidReply
    | Oversized
    | Sequence
    | Extra
)


def _line(obj: Any) -> bytes:
    # qemu-ga's own spacing, one object per line
    return json.dumps(obj).encode() + b"\n"


class _Disconnected(Exception):
    """The script closed the connection."""


# ----------------------------------------------------------- request parser


class RequestParser:
    """Splits a byte stream into JSON values the way qemu-ga's streamer does."""

    def __init__(self) -> None:
        self._partial = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        """Events: ("sentinel", partial_bytes), ("request", obj), ("invalid", desc)."""
        events: list[tuple[str, Any]] = []
        for byte in data:
            if byte == 0xFF:
                events.append(("sentinel", bytes(self._partial)))
                self._reset()
                continue
            if self._depth == 0 and not self._partial:
                if byte in b" \t\r\n":
                    continue
                if byte not in b"{[":
                    # a bare token: qemu-ga complains; so do we
                    events.append(("invalid", f"JSON parse error, invalid token {chr(byte)!r}"))
                    continue
            self._partial.append(byte)
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif byte == ord("\\"):
                    self._escape = True
                elif byte == ord('"'):
                    self._in_string = False
                continue
            if byte == ord('"'):
                self._in_string = True
            elif byte in b"{[":
                self._depth += 1
            elif byte in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    raw = bytes(self._partial)
                    self._reset()
                    try:
                        value = json.loads(raw)
                    except ValueError as exc:
                        events.append(("invalid", f"JSON parse error, {exc}"))
                        continue
                    if not isinstance(value, dict):
                        events.append(("invalid", "QMP input must be a JSON object"))
                    else:
                        events.append(("request", value))
        return events

    def _reset(self) -> None:
        self._partial.clear()
        self._depth = 0
        self._in_string = False
        self._escape = False


# -------------------------------------------------------------------- agent


class FakeAgent:
    """A scripted agent; one connection at a time, like qemu-ga.

    ``disabled`` commands are blocked as by ``qemu-ga -b``; ``extra`` maps more
    commands it implements to their return value; ``freezable`` adds the
    fsfreeze commands with a freeze state (``frozen``: a freeze left behind),
    during which, as in qemu-ga, guest-info shows every command outside
    :data:`FREEZE_ALLOWLIST` disabled and the agent refuses them "in frozen state".
    """

    def __init__(
        self,
        *,
        disabled: frozenset[str] | set[str] = frozenset(),
        stray_line: bool = True,
        version: str = "7.2.0-fake",
        extra: dict[str, Any] | None = None,
        freezable: bool = False,
        frozen: bool = False,
    ):
        self.disabled = frozenset(disabled)
        self.extra = dict(extra or {})
        self.freezable = freezable or frozen
        self.frozen = frozen
        self.stray_line = stray_line
        self.version = version
        #: Every request received, parsed, in arrival order (syncs included).
        self.requests: list[dict[str, Any]] = []
        #: Everything received, in order: ("sentinel",), ("request", name), ("invalid", desc).
        self.log: list[tuple[Any, ...]] = []
        #: Every byte received.
        self.raw = bytearray()
        self.sentinels = 0
        #: Requests that arrived while an earlier one was still being answered.
        self.overlaps = 0
        self.connections = 0
        #: Set when the client closed its end (EOF) or reset the connection.
        self.eof = trio.Event()
        self._request_seen = trio.Event()
        self._scripts: dict[str, deque[Any]] = {}
        self._defaults: dict[str, Any] = {}
        self._busy = False

    # ------------------------------------------------------------- scripting

    def on(self, command: str, *behaviours: Any) -> FakeAgent:
        """Queue one-shot behaviours for ``command`` (used in order, then the default)."""
        self._scripts.setdefault(command, deque()).extend(behaviours)
        return self

    def set_default(self, command: str, behaviour: Any) -> FakeAgent:
        self._defaults[command] = behaviour
        return self

    @property
    def commands(self) -> list[str]:
        """Names of the commands received, in order."""
        return [str(r.get("execute")) for r in self.requests]

    async def wait_for_requests(self, count: int) -> None:
        """Return once ``count`` requests in all have been received."""
        while len(self.requests) < count:
            await self._request_seen.wait()

    @property
    def invalid(self) -> list[str]:
        return [entry[1] for entry in self.log if entry[0] == "invalid"]

    # --------------------------------------------------------------- serving

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the client goes away or the script disconnects."""
        self.connections += 1
        self.eof = trio.Event() if self.eof.is_set() else self.eof
        send, receive = trio.open_memory_channel(math.inf)
        disconnect = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, stream, send)
            try:
                await self._handle_all(stream, receive)
            except _Disconnected:
                disconnect = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away while we were writing
            nursery.cancel_scope.cancel()  # stop reading before closing
        if disconnect:
            await trio.aclose_forcefully(stream)

    async def _read(self, stream: trio.abc.Stream, send: trio.MemorySendChannel[Any]) -> None:
        parser = RequestParser()
        async with send:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.log.append(("eof",))
                    self.eof.set()
                    return
                self.raw += data
                for kind, value in parser.feed(data):
                    if kind == "sentinel":
                        self.sentinels += 1
                        self.log.append(("sentinel",))
                    elif kind == "request":
                        if self._busy:
                            self.overlaps += 1
                        self.requests.append(value)
                        self.log.append(("request", str(value.get("execute"))))
                        self._request_seen.set()
                        self._request_seen = trio.Event()
                    else:
                        self.log.append(("invalid", value))
                    await send.send((kind, value))

    async def _handle_all(
        self, stream: trio.abc.Stream, receive: trio.MemoryReceiveChannel[Any]
    ) -> None:
        async with receive:
            async for kind, value in receive:
                if kind == "sentinel":
                    if self.stray_line:
                        await stream.send_all(STRAY_LINE)
                elif kind == "invalid":
                    await stream.send_all(
                        _line({"error": {"class": "GenericError", "desc": value}})
                    )
                else:
                    self._busy = True
                    try:
                        await self._perform(stream, value, self._next_behaviour(value))
                    finally:
                        self._busy = False

    def _next_behaviour(self, request: dict[str, Any]) -> Any:
        name = str(request.get("execute"))
        queue = self._scripts.get(name)
        if queue:
            return queue.popleft()
        return self._defaults.get(name, Default())

    async def _perform(self, stream: trio.abc.Stream, request: dict[str, Any], how: Any) -> None:
        name = str(request.get("execute"))
        if isinstance(how, Default):
            await self._answer(stream, self._default_answer(request))
        elif isinstance(how, Return):
            await self._answer(stream, _line({"return": how.value}))
        elif isinstance(how, Echo):
            await self._answer(stream, _render(how, request))
        elif isinstance(how, Fail):
            await self._answer(
                stream, _line({"error": {"class": how.error_class, "desc": how.desc}})
            )
        elif isinstance(how, Silence):
            self._busy = False
        elif isinstance(how, Garbage):
            await self._answer(stream, how.data)
        elif isinstance(how, Delay):
            await trio.sleep(how.seconds)
            await self._perform(stream, request, how.then)
        elif isinstance(how, Disconnect):
            raise _Disconnected
        elif isinstance(how, DisconnectMidReply):
            await stream.send_all(_line({"return": how.value})[: how.keep])
            raise _Disconnected
        elif isinstance(how, Oversized):
            await stream.send_all(b'{"return": "')
            left = how.size
            while left > 0:
                n = min(how.chunk, left)
                await stream.send_all(b"a" * n)
                left -= n
            await self._answer(stream, b'"}\n')
        elif isinstance(how, Sequence):
            for index, step in enumerate(how.steps):
                if index and how.gap:
                    await trio.sleep(how.gap)
                await self._perform(stream, request, step)
        elif isinstance(how, Extra):
            answer = (
                self._default_answer(request)
                if isinstance(how.answer, Default)
                else _render(how.answer, request)
            )
            await self._answer(stream, answer + how.extra)
        else:  # pragma: no cover - a mistake in a test
            raise TypeError(f"unknown behaviour {how!r} for {name}")

    async def _answer(self, stream: trio.abc.Stream, data: bytes) -> None:
        # The request counts as answered once its (last) reply starts going out.
        self._busy = False
        if data:
            await stream.send_all(data)

    def _default_answer(self, request: dict[str, Any]) -> bytes:
        name = str(request.get("execute"))
        arguments = request.get("arguments") or {}
        if name == "guest-sync-delimited":
            return b"\xff" + _line({"return": arguments.get("id")})
        if name == "guest-sync":
            return _line({"return": arguments.get("id")})
        if name in self.disabled:
            return _line(
                {"error": {"class": "CommandNotFound", "desc": f"Command {name} has been disabled"}}
            )
        if self.frozen and name not in FREEZE_ALLOWLIST and name in self._implemented():
            desc = f"Command {name} has been disabled: the agent is in frozen state"
            return _line({"error": {"class": "CommandNotFound", "desc": desc}})
        if self.freezable and name in FSFREEZE:
            return _line({"return": self._freeze_step(name)})
        if name in self.extra:
            return _line({"return": self.extra[name]})
        if name == "guest-ping":
            return _line({"return": {}})
        if name in NO_REPLY:
            return b""  # success is silence
        if name == "guest-info":
            return _line({"return": self.info()})
        return _line(
            {
                "error": {
                    "class": "CommandNotFound",
                    "desc": f"The command {name} has not been found",
                }
            }
        )

    def _freeze_step(self, name: str) -> Any:
        if name == "guest-fsfreeze-status":
            return "frozen" if self.frozen else "thawed"
        if name == "guest-fsfreeze-thaw":
            count, self.frozen = (FAKE_FILESYSTEMS if self.frozen else 0), False
            return count
        self.frozen = True  # freeze or freeze-list (refused above while frozen)
        return FAKE_FILESYSTEMS

    def _implemented(self) -> set[str]:
        names = {"guest-ping", "guest-info", "guest-sync", "guest-sync-delimited"} | NO_REPLY
        return names | set(self.extra) | (FSFREEZE if self.freezable else set())

    def info(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "supported_commands": [
                {
                    "name": name,
                    "enabled": name not in self.disabled
                    and not (self.frozen and name not in FREEZE_ALLOWLIST),
                    "success-response": name not in NO_REPLY,
                }
                for name in sorted(self._implemented())
            ],
        }


def _render(how: Any, request: dict[str, Any]) -> bytes:
    if isinstance(how, Return):
        return _line({"return": how.value})
    if isinstance(how, Echo):
        arguments = request.get("arguments", {})
        return _line({"return": arguments if how.tag is None else {"late": how.tag, **arguments}})
    if isinstance(how, Fail):
        return _line({"error": {"class": how.error_class, "desc": how.desc}})
    if isinstance(how, Garbage):
        return how.data
    raise TypeError(f"{how!r} cannot be rendered as one write")


# ------------------------------------------------------------------ hosting

StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


@asynccontextmanager
async def fake_over_memory(
    fake: FakeAgent, pair: StreamPair = trio.testing.memory_stream_pair
) -> AsyncIterator[trio.abc.Stream]:
    """Serve ``fake`` on one end of an in-memory stream pair; yield the client end."""
    client, server = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake.serve, server)
        yield client
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def fake_unix_socket(fake: FakeAgent, path: str | os.PathLike[str]) -> AsyncIterator[str]:
    """Serve ``fake`` on a real unix socket at ``path`` (one client at a time)."""
    path = os.fspath(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(1)
    listener = trio.SocketListener(sock)

    async def accept_loop() -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                async with stream:
                    await fake.serve(stream)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_loop)
            yield path
            nursery.cancel_scope.cancel()
    finally:
        await trio.Path(path).unlink(missing_ok=True)
