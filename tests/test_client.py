"""The trio client under fault injection (tests/fakeagent.py) and against the real qemu-ga.

Every test runs under a deadline (``trio.fail_after``) so none can hang; tests
that wait use the autojump MockClock, so waiting costs no real time.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakeagent import (  # tests/ is on sys.path (rootdir conftest)
    STRAY_LINE,
    Delay,
    Disconnect,
    DisconnectMidReply,
    Echo,
    Extra,
    Fail,
    FakeAgent,
    Garbage,
    Oversized,
    Return,
    Sequence,
    Silence,
    fake_over_memory,
    fake_unix_socket,
)

from gagent.client import NO_REPLY_GRACE, Agent, connect_unix, open_agent, open_agent_over
from gagent.errors import (
    AgentError,
    AgentUnavailable,
    CommandDisabled,
    ConnectionLost,
    GuestFrozen,
    ProtocolError,
    ReplyTooLarge,
)
from gagent.localagent import find_qemu_ga
from gagent.protocol import QGAConnection, SyncReply

#: No test may take longer than this (virtual seconds under the MockClock).
DEADLINE = 60
#: Real-time bound for tests on real sockets / the real qemu-ga.
REAL_DEADLINE = 10

SYNC = "guest-sync-delimited"


@pytest.fixture(
    params=[trio.testing.memory_stream_pair, trio.testing.lockstep_stream_pair],
    ids=["memory", "lockstep"],
)
def pair(request: pytest.FixtureRequest) -> Any:
    return request.param


@asynccontextmanager
async def connected(
    fake: FakeAgent, pair: Any = trio.testing.memory_stream_pair, **kwargs: Any
) -> AsyncIterator[Agent]:
    async with fake_over_memory(fake, pair) as stream, open_agent_over(stream, **kwargs) as agent:
        yield agent


# ------------------------------------------------------------------ basics


async def test_sync_on_open_then_commands(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            assert agent.in_sync
            assert fake.commands == [SYNC]
            assert fake.sentinels == 1  # the 0xFF before the sync
            assert await agent.execute("guest-ping") == {}
            info = await agent.info()
            assert info.version == "7.2.0-fake"
    assert fake.commands == [SYNC, "guest-ping", "guest-info"]
    assert fake.invalid == []
    # the request bytes, exactly
    sync_id = fake.requests[0]["arguments"]["id"]
    assert bytes(fake.raw) == (
        b'\xff{"execute":"guest-sync-delimited","arguments":{"id":%d}}\n'
        b'{"execute":"guest-ping"}\n{"execute":"guest-info"}\n' % sync_id
    )


async def test_sync_false_still_syncs_before_the_first_command(autojump_clock: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(DEADLINE):
        async with connected(fake, sync=False) as agent:
            assert not agent.in_sync
            assert fake.commands == []
            assert await agent.execute("guest-ping") == {}
            assert agent.in_sync
    assert fake.commands == [SYNC, "guest-ping"]


async def test_sync_ids_are_fresh(autojump_clock: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            for _ in range(5):
                await agent.sync()
    ids = [r["arguments"]["id"] for r in fake.requests]
    assert len(set(ids)) == len(ids) == 6
    assert all(isinstance(i, int) and 0 < i < 2**31 for i in ids)


async def test_error_reply_maps_to_agent_error_and_resyncs(autojump_clock: Any) -> None:
    fake = FakeAgent().on(
        "guest-fsfreeze-freeze",
        Fail("CommandNotFound", "Command guest-fsfreeze-freeze has been disabled"),
    )
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(CommandDisabled) as info:
                await agent.execute("guest-fsfreeze-freeze")
            assert info.value.command == "guest-fsfreeze-freeze"
            assert info.value.error_class == "CommandNotFound"
            assert not agent.in_sync  # an error reply may come with a second one
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-fsfreeze-freeze", SYNC, "guest-ping"]


# ------------------------------------------------------- silence & timeouts


async def test_timeout_is_the_callers_and_late_reply_is_not_taken(
    autojump_clock: Any, pair: Any
) -> None:
    fake = FakeAgent().on("guest-ping", Delay(10, Return("late reply to ping")))
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            with pytest.raises(trio.TooSlowError) as info:
                with trio.fail_after(1):
                    await agent.execute("guest-ping")
            assert type(info.value) is trio.TooSlowError  # not wrapped
            assert not agent.in_sync
            start = trio.current_time()
            value = await agent.execute("guest-info")
            # the agent was busy with the ping: the resync waited for it
            assert trio.current_time() - start == pytest.approx(9)
            assert value["version"] == "7.2.0-fake"  # ITS reply, not the late one
            assert agent.in_sync
    assert fake.commands == [SYNC, "guest-ping", SYNC, "guest-info"]


async def test_silence_times_out_then_next_command_recovers(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent().on("guest-ping", Silence())
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(5):
                    await agent.execute("guest-ping")
            assert not agent.in_sync
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-ping", SYNC, "guest-ping"]


async def test_stale_replies_after_timeouts_are_dropped(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent().on("guest-ping", Delay(10, Return("late 1")), Return({}))
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(1):
                    await agent.execute("guest-ping")
            # the resync itself times out too: its reply will be stale
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(1):
                    await agent.execute("guest-info")
            assert not agent.in_sync
            # late ping reply, stale 0xFF sync reply, then ours
            assert await agent.execute("guest-ping") == {}
            assert agent._conn.stale_replies_dropped == 1
            assert agent.in_sync
    assert fake.commands == [SYNC, "guest-ping", SYNC, SYNC, "guest-ping"]
    first, second = (r["arguments"]["id"] for r in fake.requests[2:4])
    assert first != second


async def test_slow_sync_on_open_times_out_unwrapped(autojump_clock: Any) -> None:
    fake = FakeAgent().on(SYNC, Silence())
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream:
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(3):
                    async with open_agent_over(stream):
                        pytest.fail("must not get here")  # pragma: no cover


# ------------------------------------------------------------ cancellation


async def test_cancelled_from_outside_propagates_unwrapped(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent().on("guest-ping", Delay(10, Return("slow")))
    seen: list[object] = []
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            scope = trio.CancelScope()

            async def caller() -> None:
                with scope:
                    try:
                        await agent.execute("guest-ping")
                    except BaseException as exc:
                        seen.append(type(exc))
                        raise
                    seen.append("returned")  # pragma: no cover

            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                await trio.sleep(1)
                scope.cancel()
            assert scope.cancelled_caught
            assert seen == [trio.Cancelled]
            assert not agent.in_sync
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-ping", SYNC, "guest-ping"]


async def test_cancelled_while_waiting_for_the_lock_keeps_sync(autojump_clock: Any) -> None:
    fake = FakeAgent().on("guest-ping", Delay(5, Return("first")))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            results: list[Any] = []
            waiter = trio.CancelScope()

            async def first() -> None:
                results.append(await agent.execute("guest-ping"))

            async def second() -> None:
                with waiter:
                    await agent.execute("guest-info")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.sleep(1)
                nursery.start_soon(second)
                await trio.sleep(1)
                waiter.cancel()
            assert results == ["first"]
            assert waiter.cancelled_caught
            assert agent.in_sync  # the cancelled caller never sent anything
    assert fake.commands == [SYNC, "guest-ping"]


# ------------------------------------------------------------------ garbage


@pytest.mark.parametrize(
    "garbage",
    [b"<html>not an agent</html>\n", b"[1, 2, 3]\n", b'{"greeting": 1}\n', b"[" * 3000 + b"\n"],
    ids=["html", "array", "neither", "deep"],
)
async def test_garbage_reply_is_protocol_error_then_recovery(
    autojump_clock: Any, pair: Any, garbage: bytes
) -> None:
    fake = FakeAgent().on("guest-ping", Garbage(garbage))
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            with pytest.raises(ProtocolError) as info:
                await agent.execute("guest-ping")
            assert type(info.value) is ProtocolError
            assert info.value.command == "guest-ping"
            assert info.value.data == garbage.rstrip(b"\n")[:512]
            assert not agent.in_sync
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-ping", SYNC, "guest-ping"]


async def test_agent_that_never_stops_talking_after_sync_is_an_error(autojump_clock: Any) -> None:
    extra = Extra(extra=b'{"return": "chatter"}\n')
    fake = FakeAgent().set_default(SYNC, extra)
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream:
            with pytest.raises(ProtocolError, match="unrequested data"):
                async with open_agent_over(stream):
                    pass  # pragma: no cover
    assert fake.commands == [SYNC, SYNC, SYNC]  # bounded: no endless resync loop


async def test_one_unrequested_line_after_sync_costs_one_more_sync(autojump_clock: Any) -> None:
    fake = FakeAgent().on(SYNC, Extra(extra=b'{"return": "chatter"}\n'))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            assert agent.in_sync
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, SYNC, "guest-ping"]


# --------------------------------------------------------------- disconnect


async def test_disconnect_mid_reply_is_connection_lost(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent().on("guest-info", DisconnectMidReply())
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            with pytest.raises(ConnectionLost) as info:
                await agent.execute("guest-info")
            assert info.value.command == "guest-info"
            assert "guest-info" in str(info.value)
            # the connection stays dead
            with pytest.raises(ConnectionLost):
                await agent.execute("guest-ping")


async def test_disconnect_without_reply_is_connection_lost(autojump_clock: Any) -> None:
    fake = FakeAgent().on("guest-ping", Disconnect())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(ConnectionLost) as info:
                await agent.execute("guest-ping")
            assert info.value.command == "guest-ping"


async def test_disconnect_during_sync(autojump_clock: Any) -> None:
    fake = FakeAgent().on(SYNC, DisconnectMidReply(keep=3))
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream:
            with pytest.raises(ConnectionLost) as info:
                async with open_agent_over(stream):
                    pass  # pragma: no cover
            assert info.value.command == SYNC


async def test_send_to_a_closed_peer_is_connection_lost(autojump_clock: Any) -> None:
    client, server = trio.testing.memory_stream_pair()
    await server.aclose()
    agent = Agent(client)
    with trio.fail_after(DEADLINE):
        with pytest.raises(ConnectionLost) as info:
            await agent.execute("guest-ping")
    assert info.value.command == SYNC
    await agent.aclose()
    with pytest.raises(ConnectionLost):  # our own end closed: still a GagentError
        await agent.execute("guest-ping")


# ---------------------------------------------------------------- too large


async def test_oversized_reply_then_recovery_on_the_same_connection(
    autojump_clock: Any, pair: Any
) -> None:
    fake = FakeAgent().on("guest-file-read", Oversized(2 * 1024 * 1024))
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair, max_reply_size=64 * 1024) as agent:
            with pytest.raises(ReplyTooLarge) as info:
                await agent.execute("guest-file-read", {"handle": 1, "count": 48 * 2**20})
            assert info.value.limit == 64 * 1024
            assert info.value.command == "guest-file-read"
            assert not agent.in_sync
            # the rest of the 2 MiB is skipped by the resync, on the same stream
            assert await agent.execute("guest-ping") == {}
            assert len(agent._conn._buffer) == 0
    assert fake.commands == [SYNC, "guest-file-read", SYNC, "guest-ping"]
    assert fake.connections == 1


# --------------------------------------------------------- no-reply commands


async def test_no_reply_command_silence_is_success_after_grace(autojump_clock: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            start = trio.current_time()
            assert await agent.execute("guest-shutdown") is None
            assert trio.current_time() - start == pytest.approx(NO_REPLY_GRACE)
            assert not agent.in_sync  # the agent may still speak
            start = trio.current_time()
            await agent.execute_no_reply("guest-suspend-ram", grace=7)
            assert trio.current_time() - start == pytest.approx(7)
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-shutdown", SYNC, "guest-suspend-ram", SYNC, "guest-ping"]


async def test_no_reply_command_eof_is_success(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent().on("guest-shutdown", Disconnect())
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            start = trio.current_time()
            assert await agent.execute("guest-shutdown", {"mode": "powerdown"}) is None
            assert trio.current_time() - start < NO_REPLY_GRACE  # did not wait it out
            with pytest.raises(ConnectionLost):  # the guest is gone
                await agent.execute("guest-ping")
    assert fake.requests[1] == {"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}}


@pytest.mark.parametrize(
    ("behaviour", "error_type"),
    [
        (Fail("CommandNotFound", "Command guest-shutdown has been disabled"), CommandDisabled),
        (
            Fail(
                "CommandNotFound",
                "Command guest-shutdown has been disabled: the agent is in frozen state",
            ),
            GuestFrozen,
        ),
        (Fail("GenericError", "failed to execute child process"), AgentError),
        (Delay(0.5, Fail("GenericError", "late but within grace")), AgentError),
    ],
    ids=["disabled", "frozen", "generic", "delayed"],
)
async def test_no_reply_command_error_reply_raises(
    autojump_clock: Any, behaviour: Any, error_type: type[AgentError]
) -> None:
    fake = FakeAgent().on("guest-shutdown", behaviour)
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(error_type) as info:
                await agent.execute("guest-shutdown")
            assert type(info.value) is error_type
            assert info.value.command == "guest-shutdown"
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-shutdown", SYNC, "guest-ping"]


async def test_no_reply_command_error_after_grace_is_not_taken_later(autojump_clock: Any) -> None:
    fake = FakeAgent().on("guest-suspend-disk", Delay(5, Fail("GenericError", "too late")))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            assert await agent.execute("guest-suspend-disk") is None
            assert await agent.execute("guest-ping") == {}


async def test_no_reply_command_unexpected_success_reply(autojump_clock: Any) -> None:
    fake = FakeAgent().on("guest-shutdown", Return({}))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            start = trio.current_time()
            assert await agent.execute("guest-shutdown") is None
            assert trio.current_time() - start < NO_REPLY_GRACE


# ------------------------------------------------------------- two replies


@pytest.mark.parametrize("gap", [0.0, 0.5, 3.0])
async def test_two_error_replies_second_not_read_by_next_command(
    autojump_clock: Any, pair: Any, gap: float
) -> None:
    """What qemu-ga does with a request over its JSON token limit."""
    fake = FakeAgent().on(
        "guest-file-write",
        Sequence(
            (
                Fail("GenericError", "JSON token size limit exceeded"),
                Fail("GenericError", "JSON parse error, invalid keyword 'aaaaaaaaaa'"),
            ),
            gap=gap,
        ),
    )
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            with pytest.raises(AgentError, match="token size limit"):
                await agent.execute("guest-file-write", {"handle": 1, "buf-b64": "QUFB" * 100})
            assert await agent.execute("guest-ping") == {}
            assert await agent.execute("guest-info") != {}
    assert fake.commands == [SYNC, "guest-file-write", SYNC, "guest-ping", "guest-info"]


@pytest.mark.parametrize(
    "answer", [Return({"first": True}), Fail("GenericError", "first")], ids=["return", "error"]
)
async def test_stale_extra_reply_in_the_same_write(
    autojump_clock: Any, pair: Any, answer: Any
) -> None:
    fake = FakeAgent().on("guest-get-time", Extra(answer, b'{"return": "stale extra"}\n'))
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:
            if isinstance(answer, Return):
                assert await agent.execute("guest-get-time") == {"first": True}
            else:
                with pytest.raises(AgentError):
                    await agent.execute("guest-get-time")
            assert not agent.in_sync
            assert await agent.execute("guest-ping") == {}
    assert fake.commands == [SYNC, "guest-get-time", SYNC, "guest-ping"]


# --------------------------------------------------------------- concurrency


async def test_concurrent_callers_are_serialised(autojump_clock: Any, pair: Any) -> None:
    fake = FakeAgent().set_default("test-echo", Echo()).on("test-echo", Delay(1, Echo()))
    results: dict[int, Any] = {}
    with trio.fail_after(DEADLINE):
        async with connected(fake, pair) as agent:

            async def call(n: int) -> None:
                results[n] = await agent.execute("test-echo", {"n": n, "pad": "x" * 1000 * n})

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(call, n)
    assert results == {n: {"n": n, "pad": "x" * 1000 * n} for n in range(8)}
    assert fake.overlaps == 0  # never a second request before the previous reply
    assert fake.invalid == []  # never interleaved bytes
    assert fake.commands == [SYNC] + ["test-echo"] * 8
    assert sorted(r["arguments"]["n"] for r in fake.requests[1:]) == list(range(8))


async def test_concurrent_callers_with_a_timeout_in_the_middle(autojump_clock: Any) -> None:
    fake = (
        FakeAgent()
        .set_default("test-echo", Echo())
        .on("test-echo", Delay(1, Echo()), Delay(30, Echo("late")))
    )
    deadlines = [10, 10, 10, 50]
    results: dict[int, Any] = {}
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:

            async def call(n: int) -> None:
                try:
                    with trio.fail_after(deadlines[n]):
                        results[n] = await agent.execute("test-echo", {"n": n})
                except trio.TooSlowError:
                    results[n] = "timeout"

            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(call, n)
                    await trio.sleep(0.1)
    # 0: answered after 1 s; 1: its reply takes 30 s, it gives up at 10.1 s;
    # 2: gets the lock at 10.1 s but the resync waits for the agent (busy until
    # 31 s), gives up at 10.2 s; 3: resyncs past the late reply, gets its own.
    assert results == {0: {"n": 0}, 1: "timeout", 2: "timeout", 3: {"n": 3}}
    assert fake.commands == [SYNC, "test-echo", "test-echo", SYNC, SYNC, "test-echo"]
    assert fake.invalid == []


async def test_fake_agent_parses_like_qemu_ga() -> None:
    """The fake's own request parser: split requests, 0xFF resets, bad input."""
    from fakeagent import RequestParser

    parser = RequestParser()
    events = []
    for byte in b'{"execute":"guest-ping"}{"execute": "x", "arguments": {"s": "}{\\""}}\n':
        events += parser.feed(bytes([byte]))
    assert events == [
        ("request", {"execute": "guest-ping"}),
        ("request", {"execute": "x", "arguments": {"s": '}{"'}}),
    ]
    assert parser.feed(b'{"execute":"guest-pi\xff{"execute":"guest-sync-delimited"}') == [
        ("sentinel", b'{"execute":"guest-pi'),
        ("request", {"execute": "guest-sync-delimited"}),
    ]
    assert parser.feed(b"[1]") == [("invalid", "QMP input must be a JSON object")]
    assert parser.feed(b"x")[0][0] == "invalid"


# ------------------------------------------------- unix socket & open_agent


async def test_open_agent_over_a_real_unix_socket(tmp_path: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                assert agent.in_sync
                assert agent.name == path
                assert await agent.execute("guest-ping") == {}
            await fake.eof.wait()  # closed on exit
    assert fake.commands == [SYNC, "guest-ping"]
    assert fake.sentinels == 1


async def test_leaving_open_agent_delivers_a_pending_cancellation(tmp_path: Any) -> None:
    """A deadline that passed while a shielded step ran (a thaw) ends the caller's
    block at open_agent's exit, as a checkpoint would: nothing after it runs."""
    fake = FakeAgent()
    reached = False
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            with trio.CancelScope() as scope:
                async with open_agent(path) as agent:
                    with trio.CancelScope(shield=True):
                        scope.cancel()
                        assert await agent.execute("guest-ping") == {}
                reached = True  # pragma: no cover - must not run
            await fake.eof.wait()  # closed all the same
    assert scope.cancelled_caught and not reached


async def test_no_reply_commands_over_a_real_unix_socket(tmp_path: Any) -> None:
    """On a socket the sync and the no-reply commands use its descriptor directly:
    an error reply still raises, and the agent going away is still success."""
    fake = FakeAgent().on("guest-suspend-ram", Fail("GenericError", "no"))
    fake.on("guest-shutdown", Disconnect())
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                with pytest.raises(AgentError, match="no"):
                    await agent.execute("guest-suspend-ram")
                assert await agent.execute("guest-shutdown", {"mode": "halt"}) is None
                with pytest.raises(ConnectionLost):
                    await agent.execute("guest-ping")
    assert fake.commands == [SYNC, "guest-suspend-ram", SYNC, "guest-shutdown"]


async def test_open_agent_closes_on_error(tmp_path: Any) -> None:
    fake = FakeAgent().on("guest-ping", Fail("GenericError", "no"))
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            with pytest.raises(AgentError):
                async with open_agent(path) as agent:
                    await agent.execute("guest-ping")
            await fake.eof.wait()
            with pytest.raises(ConnectionLost):  # and the agent object is dead
                await agent.execute("guest-ping")


async def test_open_agent_closes_on_cancellation(tmp_path: Any) -> None:
    fake = FakeAgent().on("guest-ping", Silence())
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            with trio.move_on_after(0.2) as scope:
                async with open_agent(path) as agent:
                    await agent.execute("guest-ping")
            assert scope.cancelled_caught
            await fake.eof.wait()


async def test_open_agent_closes_when_its_sync_is_cancelled(tmp_path: Any) -> None:
    fake = FakeAgent().on(SYNC, Silence())
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def open_it() -> None:
                        async with open_agent(path):
                            pytest.fail("sync cannot have succeeded")  # pragma: no cover

                    nursery.start_soon(open_it)
                    await fake.wait_for_requests(1)
                    scope.cancel()
            await fake.eof.wait()
    assert fake.commands == [SYNC]


async def test_connect_unix_returns_a_stream(tmp_path: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            stream = await connect_unix(path)
            async with stream, open_agent_over(stream) as agent:
                assert await agent.execute("guest-ping") == {}


async def test_open_agent_over_does_not_close_the_callers_stream(autojump_clock: Any) -> None:
    fake = FakeAgent().on("guest-info", Fail("GenericError", "boom"))
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream:
            async with open_agent_over(stream) as agent:
                assert await agent.execute("guest-ping") == {}
            with pytest.raises(AgentError):
                async with open_agent_over(stream) as agent:
                    await agent.execute("guest-info")
            await trio.testing.wait_all_tasks_blocked()
            assert not fake.eof.is_set()
            # the stream still works, for another client on it
            async with open_agent_over(stream) as agent:
                assert await agent.execute("guest-ping") == {}
            assert not fake.eof.is_set()
    assert fake.commands == [SYNC, "guest-ping", SYNC, "guest-info", SYNC, "guest-ping"]


# ------------------------------------------------------------ connect errors


def _stale_socket(path: Any) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays, nobody listens
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda tmp: tmp / "missing.sock", "no agent socket"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "not a unix socket"),
        (lambda tmp: tmp, "not a unix socket"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "sock", "not a unix socket"),
        (lambda tmp: _stale_socket(tmp / "stale.sock"), "nothing is listening"),
        (lambda tmp: tmp / ("x" * 200), "cannot connect"),
    ],
    ids=["missing", "regular-file", "directory", "under-a-file", "no-listener", "too-long"],
)
async def test_connect_errors_are_agent_unavailable_with_path_and_hint(
    tmp_path: Any, make: Any, words: str
) -> None:
    path = make(tmp_path)
    with trio.fail_after(REAL_DEADLINE):
        with pytest.raises(AgentUnavailable) as info:
            async with open_agent(path):
                pytest.fail("connected to nothing")  # pragma: no cover
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert words in str(info.value)
    assert info.value.hint
    assert info.value.hint in str(info.value)


# ---------------------------------------------------------- the real qemu-ga

try:
    find_qemu_ga()
    HAVE_QEMU_GA = True
except AgentUnavailable:
    HAVE_QEMU_GA = False


async def _read_until(stream: trio.abc.Stream, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = await stream.receive_some(65536)
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


@pytest.mark.qemu_ga
@pytest.mark.skipif(not HAVE_QEMU_GA, reason="qemu-ga is not installed")
async def test_qemu_ga_sync_on_connect(qemu_ga: Any) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with open_agent(qemu_ga.socket_path) as agent:
            assert agent.in_sync
            assert await agent.execute("guest-ping") == {}
            info = await agent.info()
            assert info.version
            assert not info.commands["guest-shutdown"].enabled  # localagent blocks it


@pytest.mark.qemu_ga
@pytest.mark.skipif(not HAVE_QEMU_GA, reason="qemu-ga is not installed")
async def test_qemu_ga_stray_parse_error_line_before_the_sentinel(qemu_ga: Any) -> None:
    with trio.fail_after(REAL_DEADLINE):
        stream = await trio.open_unix_socket(str(qemu_ga.socket_path))
        async with stream:
            conn = QGAConnection()
            await stream.send_all(conn.send_sync(99))
            data = await _read_until(stream, b'\xff{"return": 99}\n')
    assert data == STRAY_LINE + b'\xff{"return": 99}\n'  # measured on qemu-ga 7.2
    conn.receive_data(data)
    assert conn.next_event() == SyncReply(99)


@pytest.mark.qemu_ga
@pytest.mark.skipif(not HAVE_QEMU_GA, reason="qemu-ga is not installed")
@pytest.mark.parametrize("wait", [True, False], ids=["arrived", "in-flight"])
async def test_qemu_ga_stale_reply_is_not_read(qemu_ga: Any, wait: bool) -> None:
    with trio.fail_after(REAL_DEADLINE):
        stream = await trio.open_unix_socket(str(qemu_ga.socket_path))
        async with stream:
            # somebody else's requests, whose replies nobody reads: a command
            # reply and a delimited sync reply with another id
            await stream.send_all(
                b'{"execute":"guest-info"}\n'
                b'\xff{"execute":"guest-sync-delimited","arguments":{"id":424242}}\n'
            )
            if wait:
                await trio.sleep(0.3)
            async with open_agent_over(stream, sync=False) as agent:
                assert await agent.execute("guest-ping") == {}  # not the info dict
                assert agent._conn.stale_replies_dropped == 1
                assert (await agent.info()).commands


@pytest.mark.qemu_ga
@pytest.mark.skipif(not HAVE_QEMU_GA, reason="qemu-ga is not installed")
async def test_qemu_ga_disabled_no_reply_command(qemu_ga: Any) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with open_agent(qemu_ga.socket_path) as agent:
            info = await agent.info()
            if info.commands["guest-shutdown"].enabled:  # pragma: no cover - safety net
                pytest.fail("refusing: guest-shutdown is enabled on the host's qemu-ga")
            with pytest.raises(CommandDisabled, match="has been disabled"):
                await agent.execute("guest-shutdown")
            assert await agent.execute("guest-ping") == {}


@pytest.mark.qemu_ga
@pytest.mark.skipif(not HAVE_QEMU_GA, reason="qemu-ga is not installed")
async def test_qemu_ga_request_over_the_token_limit(qemu_ga: Any) -> None:
    """qemu-ga answers a >64 MiB request with several error replies (measured: 3)."""
    with trio.fail_after(REAL_DEADLINE):
        async with open_agent(qemu_ga.socket_path) as agent:
            start = time.monotonic()
            with pytest.raises(AgentError, match="JSON token size limit exceeded") as info:
                await agent.execute("guest-ping", {"pad": "a" * (64 * 2**20 + 16)})
            # the evidence is abbreviated, not 64 MiB
            assert len(json.dumps(info.value.arguments)) < 1000
            assert not agent.in_sync
            # the further error replies are not taken for the next command's
            assert await agent.execute("guest-ping") == {}
            assert (await agent.info()).version
            assert time.monotonic() - start < 8


# ---------------------------------------- the socket path (descriptor I/O)
# open_agent() on a real unix socket does its round trips on the socket's
# descriptor, not through SocketStream: the same contract, checked here.


async def test_socket_round_trip_cancelled_then_resynced(tmp_path: Any) -> None:
    fake = FakeAgent().on("guest-ping", Silence())
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                with trio.move_on_after(0.2) as scope:
                    await agent.execute("guest-ping")
                assert scope.cancelled_caught and not agent.in_sync
                assert await agent.execute("guest-ping") == {}
                assert agent.in_sync
    assert fake.commands == [SYNC, "guest-ping", SYNC, "guest-ping"]


async def test_socket_round_trip_checks_cancellation_before_sending(tmp_path: Any) -> None:
    fake = FakeAgent()
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                with trio.CancelScope() as scope:
                    scope.cancel()
                    await agent.execute("guest-info")
                assert scope.cancelled_caught
                assert await agent.execute("guest-ping") == {}
    assert "guest-info" not in fake.commands


async def test_socket_round_trip_large_reply_in_many_reads(tmp_path: Any) -> None:
    size = 3 * 1024 * 1024  # > the 256 KiB read size, written in 64 KiB pieces
    fake = FakeAgent().on("guest-file-read", Oversized(size))
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                assert await agent.execute("guest-file-read", {"handle": 1}) == "a" * size
                assert await agent.execute("guest-ping") == {}


async def test_socket_round_trip_peer_gone_mid_reply(tmp_path: Any) -> None:
    fake = FakeAgent().on("guest-ping", DisconnectMidReply())
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                with pytest.raises(ConnectionLost) as info:
                    await agent.execute("guest-ping")
                assert info.value.command == "guest-ping"


async def test_socket_round_trip_after_close_never_touches_the_old_descriptor(
    tmp_path: Any,
) -> None:
    fake = FakeAgent()
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, tmp_path / "agent.sock") as path:
            async with open_agent(path) as agent:
                pass
            # the number is free again: whatever takes it must not get our request
            reader, writer = os.pipe()
            try:
                with pytest.raises(ConnectionLost):
                    await agent.execute("guest-ping")
                os.set_blocking(reader, False)
                with pytest.raises(BlockingIOError):
                    os.read(reader, 100)
            finally:
                os.close(reader)
                os.close(writer)
