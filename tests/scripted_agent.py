"""A scripted agent on trio memory streams (tests only): every command is answered by a
handler, for what the real qemu-ga will not do on demand (short writes, hangs, exec on
the host).  Fault injection with a wire-level script is tests/fakeagent.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

import gagent
from gagent.errors import AgentError

__all__ = ["ScriptedAgent", "b64", "guest_info", "with_fake"]


class ScriptedAgent:
    """The agent end of a memory stream: answers syncs itself, everything else
    through ``handlers[command](arguments)``; a handler may raise AgentError
    (sent as an error reply) or return NO_REPLY."""

    NO_REPLY = object()

    def __init__(self, stream: trio.abc.Stream, handlers: dict[str, Callable[[Any], Any]]):
        self.stream = stream
        self.handlers = handlers
        self.requests: list[tuple[str, Any, float]] = []

    async def serve(self) -> None:
        buffer = b""
        while data := await self.stream.receive_some(65536):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                line = line.replace(b"\xff", b"").strip()
                if line:
                    await self._answer(json.loads(line))

    async def _answer(self, request: dict[str, Any]) -> None:
        command, arguments = request["execute"], request.get("arguments")
        if command == "guest-sync-delimited":
            await self.stream.send_all(b"\xff" + self._line({"return": arguments["id"]}))
            return
        self.requests.append((command, arguments, trio.current_time()))
        try:
            value = self.handlers[command](arguments)
        except AgentError as exc:
            reply = {"error": {"class": exc.error_class, "desc": exc.desc}}
        else:
            if value is self.NO_REPLY:
                return
            reply = {"return": value}
        await self.stream.send_all(self._line(reply))

    @staticmethod
    def _line(value: Any) -> bytes:
        return json.dumps(value).encode() + b"\n"

    def sent(self, command: str) -> list[tuple[Any, float]]:
        return [(args, when) for name, args, when in self.requests if name == command]


def guest_info(*commands: str) -> Callable[[Any], Any]:
    names = ("guest-ping", *commands)
    return lambda _: {
        "version": "7.2.0",
        "supported_commands": [
            {"name": n, "enabled": True, "success-response": True} for n in names
        ],
    }


async def with_fake(
    handlers: dict[str, Callable[[Any], Any]], body, **client_options: Any
) -> ScriptedAgent:
    """Run ``await body(agent)`` against a ScriptedAgent; returns it (its requests)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    fake = ScriptedAgent(server_stream, handlers)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake.serve)
        async with gagent.open_agent_over(client_stream, name="fake", **client_options) as agent:
            await body(agent)
        nursery.cancel_scope.cancel()
    return fake


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
