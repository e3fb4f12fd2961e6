"""gagent.sync.frozen: freeze, always thaw, confirm; against a scripted fake agent (qemu-ga on
the host must never freeze it)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from fakeagent import Disconnect, Fail, FakeAgent, Silence, fake_unix_socket

import gagent
import gagent.sync
import gagent.sync_freeze
from gagent.errors import AgentError
from gagent.freeze import FreezeTimeout, ThawUnconfirmed


def FreezableFake() -> FakeAgent:
    return FakeAgent(freezable=True)


async def _with_fake(fake: FakeAgent, path: Path, client: Any) -> Any:
    with trio.fail_after(30):
        async with fake_unix_socket(fake, path):
            return await trio.to_thread.run_sync(client)


async def test_frozen_thaws_when_the_block_raises(tmp_path: Path) -> None:
    fake = FreezableFake()
    path = tmp_path / "fake.sock"

    def client() -> Any:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with pytest.raises(ZeroDivisionError):
                with gagent.sync.frozen(agent) as record:
                    assert agent.frozen
                    1 / 0  # noqa: B018
            assert not agent.frozen
            return record

    record = await _with_fake(fake, path, client)
    assert record.confirmed and record.frozen == record.thawed and record.frozen > 0
    assert not fake.frozen
    assert fake.commands[-2:] == ["guest-fsfreeze-thaw", "guest-fsfreeze-status"]


async def test_frozen_thaws_on_keyboard_interrupt(tmp_path: Path) -> None:
    fake = FreezableFake()
    path = tmp_path / "fake.sock"

    def client() -> None:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with pytest.raises(KeyboardInterrupt):
                with gagent.sync.frozen(agent):
                    raise KeyboardInterrupt

    await _with_fake(fake, path, client)
    assert not fake.frozen


async def test_frozen_reconnects_to_thaw_after_a_lost_connection(tmp_path: Path) -> None:
    fake = FreezableFake().on("guest-fsfreeze-thaw", Disconnect())
    path = tmp_path / "fake.sock"

    def client() -> Any:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with gagent.sync.frozen(agent) as record:
                pass
            return record

    record = await _with_fake(fake, path, client)
    assert record.confirmed and record.thaw_attempts == 2 and not fake.frozen
    assert fake.connections == 2


async def test_a_thaw_that_cannot_be_confirmed_is_thaw_unconfirmed(tmp_path: Path) -> None:
    fake = FreezableFake().set_default("guest-fsfreeze-thaw", Disconnect())
    path = tmp_path / "fake.sock"

    def client() -> ThawUnconfirmed:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with pytest.raises(ThawUnconfirmed) as caught:
                with gagent.sync.frozen(agent):
                    pass
            return caught.value

    error = await _with_fake(fake, path, client)
    assert f"gagent agent --socket {path} fsfreeze thaw" in str(error)
    assert fake.frozen


async def test_a_refused_freeze_needs_no_thaw(tmp_path: Path) -> None:
    fake = FreezableFake().on("guest-fsfreeze-freeze", Fail())
    path = tmp_path / "fake.sock"

    def client() -> None:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with pytest.raises(AgentError):
                with gagent.sync.frozen(agent):
                    pytest.fail("the block must not run")

    await _with_fake(fake, path, client)
    assert "guest-fsfreeze-thaw" not in fake.commands


async def test_a_freeze_without_reply_is_freeze_timeout_and_thawed(tmp_path: Path) -> None:
    fake = FreezableFake().on("guest-fsfreeze-freeze", Silence())
    path = tmp_path / "fake.sock"

    def client() -> None:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with pytest.raises(FreezeTimeout, match="it may have frozen, so it was thawed"):
                with gagent.sync.frozen(agent, freeze_timeout=0.3):
                    pytest.fail("the block must not run")

    await _with_fake(fake, path, client)
    assert fake.commands[-2:] == ["guest-fsfreeze-thaw", "guest-fsfreeze-status"]


def test_a_sync_caller_in_a_thread_can_freeze_too(tmp_path: Path) -> None:
    """frozen() outside the main thread cannot hold SIGINT back, and must not try."""
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with gagent.sync_freeze._sigint_held_back():
                pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == []


async def test_the_blocking_freeze_logs_its_steps_as_the_trio_one(tmp_path: Path, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="gagent")
    path = tmp_path / "fake.sock"

    def client() -> Any:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with gagent.sync.frozen(agent, domain="vm1") as record:
                pass
            return record

    record = await _with_fake(FreezableFake(), path, client)
    lines = [r.getMessage() for r in caplog.records if r.name == "gagent.freeze"]
    assert lines == [
        "vm1: guest-fsfreeze-freeze sent (all filesystems)",
        f"vm1: froze {record.frozen} filesystem(s)",
        f"vm1: thawed {record.thawed} filesystem(s)",
    ]
