"""gagent.freeze under fault injection: every case ends thawed, or with ThawUnconfirmed.

The fake agent (tests/fakeagent.py) gets a freeze state here (:class:`FreezableFake`):
a freeze request freezes it as soon as it is processed, whether the reply then
goes out, is delayed or is lost; only a ``Fail`` (qemu-ga rolls back) or a
``Disconnect`` leaves it alone.  Each test asserts the exact command sequence
the fake received.  Waiting tests run on the autojump MockClock (exact
virtual times); tests over a real unix socket run on the real clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from fakeagent import (  # tests/ is on sys.path (rootdir conftest)
    Default,
    Delay,
    Disconnect,
    DisconnectMidReply,
    Fail,
    FakeAgent,
    Return,
    Silence,
    fake_over_memory,
    fake_unix_socket,
)

from gagent.client import Agent, open_agent, open_agent_over
from gagent.commands import ALLOWED_WHILE_FROZEN
from gagent.errors import AgentError, CommandUnavailable, ConnectionLost, FrozenStateViolation
from gagent.freeze import (
    AlreadyFrozen,
    FreezeTimeout,
    FreezeWindowWarning,
    NothingFrozen,
    ThawUnconfirmed,
    freeze,
    frozen,
    thaw,
    thaw_if_frozen,
)

DEADLINE = 300  # virtual seconds
REAL_DEADLINE = 20

SYNC = "guest-sync-delimited"
INFO = "guest-info"
FREEZE = "guest-fsfreeze-freeze"
FREEZE_LIST = "guest-fsfreeze-freeze-list"
THAW = "guest-fsfreeze-thaw"
STATUS = "guest-fsfreeze-status"
FSFREEZE = (STATUS, FREEZE, FREEZE_LIST, THAW)

#: The whole happy path: nothing but the thaw between freeze reply and thaw request.
HAPPY = [SYNC, INFO, FREEZE, THAW, STATUS]


def _line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


class FreezableFake(FakeAgent):
    """The scripted fake with qemu-ga's freeze state and its frozen-state refusals."""

    def __init__(self, *, filesystems: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.filesystems = filesystems
        self.state = "thawed"
        self._held = 0
        self._count = 0
        self._applied: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        info = super().info()
        names = [c["name"] for c in info["supported_commands"]] + list(FSFREEZE)
        info["supported_commands"] = [
            {
                "name": name,
                "enabled": name not in self.disabled
                and (self.state == "thawed" or name in ALLOWED_WHILE_FROZEN),
                "success-response": True,
            }
            for name in sorted(names)
        ]
        return info

    async def _perform(self, stream: trio.abc.Stream, request: dict[str, Any], how: Any) -> None:
        name = str(request.get("execute"))
        if self._applied is not request:
            if self.state == "frozen" and name not in ALLOWED_WHILE_FROZEN:
                if isinstance(how, Default):
                    desc = f"Command {name} has been disabled: the agent is in frozen state"
                    error = {"class": "CommandNotFound", "desc": desc}
                    await self._answer(stream, _line({"error": error}))
                    return
            if not isinstance(how, Fail | Disconnect | DisconnectMidReply):
                self._applied = request
                self._count = self._apply(name, request)
        await super()._perform(stream, request, how)

    def _apply(self, name: str, request: dict[str, Any]) -> int:
        if name in (FREEZE, FREEZE_LIST):
            listed = (request.get("arguments") or {}).get("mountpoints")
            self._held = self.filesystems if listed is None else min(len(listed), self.filesystems)
            self.state = "frozen"
            return self._held
        if name == THAW:
            count, self._held, self.state = (
                (self._held if self.state == "frozen" else 0),
                0,
                "thawed",
            )
            return count
        return 0

    def _default_answer(self, request: dict[str, Any]) -> bytes:
        name = str(request.get("execute"))
        if name in (FREEZE, FREEZE_LIST, THAW) and name not in self.disabled:
            return _line({"return": self._count})
        if name == STATUS and name not in self.disabled:
            return _line({"return": self.state})
        return super()._default_answer(request)


@asynccontextmanager
async def connected(fake: FakeAgent) -> AsyncIterator[Agent]:
    async with fake_over_memory(fake) as stream, open_agent_over(stream, name="vm1") as agent:
        yield agent


async def test_happy_path_sends_nothing_between_freeze_and_thaw(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            async with frozen(agent, domain="vm1") as record:
                assert fake.state == "frozen" and agent.frozen
                await agent.ping()  # allowed while frozen
                await trio.sleep(0.5)
            assert not agent.frozen
    assert fake.commands == [SYNC, INFO, FREEZE, "guest-ping", THAW, STATUS]
    assert fake.state == "thawed"
    assert (record.frozen, record.thawed, record.confirmed) == (2, 2, True)
    assert record.window_ms == pytest.approx(500, abs=1)
    assert record.max_window_ms >= record.window_ms
    assert record.thaw_attempts == 1 and not record.reconnected and not record.warnings


async def test_freeze_list(autojump_clock: Any) -> None:
    fake = FreezableFake(filesystems=3)
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent, frozen(agent, ["/data"]) as record:
            pass
    assert fake.commands == [SYNC, INFO, FREEZE_LIST, THAW, STATUS]
    assert fake.requests[2]["arguments"] == {"mountpoints": ["/data"]}
    assert (record.frozen, record.mountpoints) == (1, ["/data"])


async def test_other_commands_are_refused_inside_the_freeze(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(FrozenStateViolation, match="guest-get-osinfo"):
                async with frozen(agent):
                    await agent.osinfo()
    assert fake.commands == HAPPY
    assert fake.state == "thawed"


async def test_freeze_reply_lost(autojump_clock: Any) -> None:
    fake = FreezableFake().on(FREEZE, Silence())
    body_ran = False
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            start = trio.current_time()
            with pytest.raises(FreezeTimeout, match="may have frozen, so it was thawed") as caught:
                async with frozen(agent, freeze_timeout=5):
                    body_ran = True
            assert trio.current_time() - start == pytest.approx(5)
            assert not agent.frozen
    assert not body_ran
    assert fake.commands == [SYNC, INFO, FREEZE, SYNC, THAW, STATUS]
    assert fake.state == "thawed"
    record = caught.value.record
    assert record.frozen is None and record.window_ms is None
    assert record.max_window_ms == pytest.approx(5000, abs=1)
    assert record.thawed == 2 and record.confirmed


async def test_freeze_timeout_then_late_reply_is_discarded(autojump_clock: Any) -> None:
    fake = FreezableFake().on(FREEZE, Delay(8))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(FreezeTimeout) as caught:
                async with frozen(agent, freeze_timeout=5, thaw_timeout=30):
                    pass
    record = caught.value.record
    # the sync after the timeout waited behind the slow freeze, then drained its late reply
    assert fake.commands == [SYNC, INFO, FREEZE, SYNC, THAW, STATUS]
    assert fake.state == "thawed" and record.confirmed and record.thawed == 2


async def test_freeze_error_reply_still_thaws(autojump_clock: Any) -> None:
    fake = FreezableFake().on(FREEZE, Fail("GenericError", "failed to freeze /data: EIO"))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(AgentError, match="EIO"):
                async with frozen(agent):
                    raise AssertionError("the block must not run")
    # (an error reply makes the client resync before its next command)
    assert fake.commands == [SYNC, INFO, FREEZE, SYNC, THAW, STATUS]
    assert fake.state == "thawed"


async def test_the_record_keeps_when_each_step_happened() -> None:
    # on the real clocks (a group snapshot orders several guests' freezes by them)
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            async with frozen(agent, domain="vm1") as record:
                assert record.freeze_sent and record.freeze_confirmed and not record.thaw_sent
                await trio.sleep(0.05)
    steps = [record.freeze_sent, record.freeze_confirmed, record.thaw_sent, record.thaw_confirmed]
    assert [s.monotonic for s in steps] == sorted(s.monotonic for s in steps)
    assert steps[2].monotonic - steps[1].monotonic >= 0.05
    assert abs(steps[0].wall - time.time()) < 60


async def test_thaw_timeout_then_success(autojump_clock: Any) -> None:
    fake = FreezableFake().on(THAW, Silence())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            start = trio.current_time()
            async with frozen(agent, thaw_timeout=15) as record:
                pass
            assert trio.current_time() - start == pytest.approx(5)  # one attempt's share
    assert fake.commands == [SYNC, INFO, FREEZE, THAW, SYNC, THAW, STATUS]
    assert fake.state == "thawed"
    assert record.thaw_attempts == 2 and record.confirmed
    assert record.window_ms == pytest.approx(5000, abs=1)
    assert record.thaw_ms == pytest.approx(0, abs=1)


async def test_status_still_frozen_after_thaw_is_retried(autojump_clock: Any) -> None:
    fake = FreezableFake().on(STATUS, Return("frozen"))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent, frozen(agent) as record:
            pass
    assert fake.commands == [SYNC, INFO, FREEZE, THAW, STATUS, THAW, STATUS]
    assert record.thaw_attempts == 2 and record.confirmed


async def test_thaw_never_answered_is_a_loud_error(autojump_clock: Any) -> None:
    fake = FreezableFake().set_default(THAW, Silence())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            start = trio.current_time()
            with pytest.raises(ThawUnconfirmed) as caught:
                async with frozen(agent, domain="vm1", thaw_timeout=9):
                    pass
            assert trio.current_time() - start == pytest.approx(9)
            assert agent.frozen  # the client still believes the guest may be frozen
    message = str(caught.value)
    assert "THE GUEST MAY STILL BE FROZEN" in message and "run 'gagent thaw vm1' now" in message
    assert caught.value.domain == "vm1" and caught.value.retry == "gagent thaw vm1"
    assert len(caught.value.reasons) == 3
    assert fake.commands == [SYNC, INFO, FREEZE, THAW, SYNC, THAW, SYNC, THAW]


async def test_disconnect_inside_the_freeze_without_reconnect(autojump_clock: Any) -> None:
    fake = FreezableFake().on("guest-ping", Disconnect())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(ThawUnconfirmed, match="connection closed") as caught:
                async with frozen(agent, domain="vm1"):
                    await agent.ping()
    assert isinstance(caught.value.__context__, ConnectionLost)  # the block's own error
    assert fake.commands == [SYNC, INFO, FREEZE, "guest-ping"]
    assert fake.state == "frozen"  # what the loud error is about


async def test_disconnect_inside_the_freeze_reconnects_to_thaw(tmp_path: Any) -> None:
    fake = FreezableFake().on("guest-ping", Disconnect())
    path = str(tmp_path / "agent.sock")
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, path), open_agent(path) as agent:
            with pytest.raises(ConnectionLost):
                async with frozen(agent, reconnect=lambda: open_agent(path)) as record:
                    await agent.ping()
            assert not agent.frozen
    assert fake.commands == [SYNC, INFO, FREEZE, "guest-ping", SYNC, THAW, STATUS]
    assert fake.connections == 2 and fake.state == "thawed"
    assert record.reconnected and record.confirmed and record.thawed == 2


async def test_thaw_disconnect_reconnects(tmp_path: Any) -> None:
    fake = FreezableFake().on(THAW, Disconnect())
    path = str(tmp_path / "agent.sock")
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, path), open_agent(path) as agent:
            async with frozen(agent, reconnect=lambda: open_agent(path)) as record:
                pass
    assert fake.commands == [SYNC, INFO, FREEZE, THAW, SYNC, THAW, STATUS]
    assert record.reconnected and record.thaw_attempts == 2 and fake.state == "thawed"


async def test_cancellation_inside_the_block(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with trio.CancelScope() as scope:
                async with frozen(agent):
                    scope.cancel()
                    await trio.sleep(10)
            assert scope.cancelled_caught  # Cancelled came out unwrapped, after the thaw
    assert fake.commands == HAPPY and fake.state == "thawed"


async def test_caller_deadline_inside_the_block_does_not_skip_the_thaw(
    autojump_clock: Any,
) -> None:
    fake = FreezableFake().on(THAW, Delay(2))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(1):
                    async with frozen(agent) as record:
                        await trio.sleep(10)
    assert fake.commands == HAPPY and fake.state == "thawed"
    assert record.window_ms == pytest.approx(3000, abs=1)  # the slow thaw ran, shielded


async def test_cancellation_during_the_freeze_call(autojump_clock: Any) -> None:
    fake = FreezableFake().on(FREEZE, Delay(10))
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with trio.move_on_after(1) as scope, pytest.warns(FreezeWindowWarning, match="10.0s"):
                async with frozen(agent, thaw_timeout=60):
                    raise AssertionError("the block must not run")
            assert scope.cancelled_caught  # and the guest may have been frozen for 10 s
    assert fake.commands == [SYNC, INFO, FREEZE, SYNC, THAW, STATUS]
    assert fake.state == "thawed"


async def test_keyboard_interrupt_inside_the_block(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(KeyboardInterrupt):
                async with frozen(agent):
                    raise KeyboardInterrupt
    assert fake.commands == HAPPY and fake.state == "thawed"


async def test_keyboard_interrupt_and_unconfirmed_thaw(autojump_clock: Any) -> None:
    fake = FreezableFake().set_default(THAW, Silence())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(ThawUnconfirmed) as caught:
                async with frozen(agent, domain="vm1", thaw_timeout=3):
                    raise KeyboardInterrupt
    assert isinstance(caught.value.__context__, KeyboardInterrupt)


async def test_nothing_frozen_is_an_error(autojump_clock: Any) -> None:
    fake = FreezableFake(filesystems=0)
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(NothingFrozen, match="froze 0 filesystems"):
                async with frozen(agent):
                    raise AssertionError("the block must not run")
    assert fake.commands == HAPPY and fake.state == "thawed"


async def test_nothing_frozen_allowed(autojump_clock: Any) -> None:
    fake = FreezableFake(filesystems=0)
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            async with frozen(agent, allow_nothing_frozen=True) as record:
                ran = True
    assert ran and record.frozen == 0 and fake.commands == HAPPY


async def test_already_frozen_agent_is_not_thawed_behind_the_users_back(
    autojump_clock: Any,
) -> None:
    fake = FreezableFake()
    fake.state = "frozen"
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(AlreadyFrozen, match="gagent thaw vm1"):
                async with frozen(agent, domain="vm1"):
                    raise AssertionError("the block must not run")
            with pytest.raises(AlreadyFrozen):  # the client now knows
                async with frozen(agent, domain="vm1"):
                    raise AssertionError("the block must not run")
    # the command layer asks why the freeze is disabled (GuestIsFrozen), then frozen() asks
    assert fake.commands == [SYNC, INFO, STATUS, STATUS]
    assert fake.state == "frozen"


async def test_refuses_to_freeze_an_agent_that_cannot_thaw(autojump_clock: Any) -> None:
    fake = FreezableFake(disabled={THAW})
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(CommandUnavailable, match=THAW):
                async with frozen(agent):
                    raise AssertionError("the block must not run")
    assert fake.commands == [SYNC, INFO]
    assert fake.state == "thawed"


async def test_long_window_warns_about_vss(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.warns(FreezeWindowWarning, match="VSS"):
                async with frozen(agent) as record:
                    await trio.sleep(9)
    assert record.warnings and "9.0s" in record.warnings[0]
    assert fake.commands == HAPPY


async def test_freeze_and_leave_frozen(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            record = await freeze(agent, domain="vm1")
            assert record.frozen == 2 and agent.frozen
            assert fake.state == "frozen"
            thawed = await thaw(agent, domain="vm1")
    assert thawed.thawed == 2 and thawed.confirmed and thawed.window_ms is None
    assert fake.commands == HAPPY


async def test_freeze_and_leave_frozen_thaws_on_failure(autojump_clock: Any) -> None:
    fake = FreezableFake().on(FREEZE, Silence())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(FreezeTimeout):
                await freeze(agent, freeze_timeout=2)
            zero = FreezableFake(filesystems=0)
    assert fake.commands == [SYNC, INFO, FREEZE, SYNC, THAW, STATUS]
    assert fake.state == "thawed"
    with trio.fail_after(DEADLINE):
        async with connected(zero) as agent:
            with pytest.raises(NothingFrozen):
                await freeze(agent)
    assert zero.commands == HAPPY and zero.state == "thawed"


async def test_thaw_if_frozen(autojump_clock: Any) -> None:
    fake = FreezableFake()
    fake.state, fake._held = "frozen", 2  # left frozen by a crashed run
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            assert await thaw_if_frozen(agent, domain="vm1") is True
            assert await thaw_if_frozen(agent, domain="vm1") is False
            async with frozen(agent) as record:  # usable again
                pass
    # guest-info is cached again when frozen() needs it
    assert fake.commands == [SYNC, STATUS, THAW, STATUS, STATUS, INFO, FREEZE, THAW, STATUS]
    assert record.confirmed and fake.state == "thawed"


async def test_bad_mountpoints_are_refused_before_sending(autojump_clock: Any) -> None:
    fake = FreezableFake()
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            for bad in ("/", [], [""]):
                with pytest.raises(Exception, match="mountpoints"):
                    async with frozen(agent, bad):
                        pass
    assert fake.commands == [SYNC]


@pytest.mark.parametrize("left_frozen", [True, False])
async def test_thaw_on_connect_option_of_the_client(autojump_clock: Any, left_frozen: bool) -> None:
    fake = FreezableFake()
    if left_frozen:
        fake.state, fake._held = "frozen", 2  # left frozen by a crashed run
    with trio.fail_after(DEADLINE):
        async with (
            fake_over_memory(fake) as stream,
            open_agent_over(stream, name="vm1", thaw_on_connect=True) as agent,
        ):
            assert not agent.frozen
            await agent.ping()
    expected = [SYNC, STATUS, THAW, STATUS] if left_frozen else [SYNC, STATUS]
    assert fake.commands == [*expected, "guest-ping"]
    assert fake.state == "thawed"


async def test_freeze_list_of_nothing_freezable_names_the_paths(autojump_clock: Any) -> None:
    # qemu-ga's freeze-list skips paths that are not mounted, freezable filesystems: 0 frozen
    fake = FreezableFake(filesystems=0)
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with pytest.raises(NothingFrozen) as caught:
                async with frozen(agent, ["/nonexistent"], domain="vm1"):
                    pytest.fail("the block ran with nothing frozen")
    assert "none of /nonexistent is a mounted filesystem the guest can freeze" in str(caught.value)
    assert "another agent" not in str(caught.value).lower()
    assert fake.state == "thawed"


async def test_an_unknown_window_is_reported_as_an_upper_bound(autojump_clock: Any) -> None:
    # no freeze reply within --freeze-timeout: the guest may have frozen 50 ms or 8 s ago
    fake = FreezableFake().on(FREEZE, Silence())
    with trio.fail_after(DEADLINE):
        async with connected(fake) as agent:
            with (
                pytest.raises(FreezeTimeout) as caught,
                pytest.warns(FreezeWindowWarning, match="may have been frozen for up to 9.0s"),
            ):
                async with frozen(agent, freeze_timeout=9, domain="vm1"):
                    pass
    (warning,) = caught.value.record.warnings
    assert "the real window is unknown" in warning and "stayed frozen" not in warning
