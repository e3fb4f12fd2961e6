"""AgentCommands on a frozen guest: frozen is a state, not a disabled command.

A freeze left behind makes qemu-ga show every command outside its allowlist
disabled in guest-info, as a configuration blocking them would.  These tests
tell the two apart: the scripted fake agent for the protocol cases (frozen,
blocked by configuration, both, a freeze that begins after guest-info was
read), the real qemu-ga on this host for configurations that block commands.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from fakeagent import (
    FAKE_FILESYSTEMS,
    FREEZE_ALLOWLIST,
    FakeAgent,
    fake_over_memory,
    fake_unix_socket,
)

import gagent
from gagent.client import Agent, open_agent_over
from gagent.commands import ALLOWED_WHILE_FROZEN
from gagent.errors import AgentTarget, CommandUnavailable, GuestFrozen, GuestIsFrozen
from gagent.fs_types import FsfreezeStatus
from gagent.localagent import BLOCKED_RPCS, local_qemu_ga

TIMEOUT = 15
SYNC = "guest-sync-delimited"
STATUS = "guest-fsfreeze-status"
HOST_NAME = "guest-get-host-name"
TIME = "guest-get-time"
EXEC = "guest-exec"
#: Read-only commands the fake answers, as a guest's agent would.
EXTRA = {HOST_NAME: {"host-name": "fake-guest"}, TIME: 1_700_000_000_000_000_000, EXEC: {"pid": 7}}


def fake_guest(**kwargs: Any) -> FakeAgent:
    return FakeAgent(extra=EXTRA, freezable=True, **kwargs)


@asynccontextmanager
async def connected(fake: FakeAgent) -> AsyncIterator[Agent]:
    async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
        yield agent


# -------------------------------------------------------------------- frozen


@pytest.mark.parametrize(
    ("command", "invoke"),
    [
        (HOST_NAME, lambda agent: agent.host_name()),
        (TIME, lambda agent: agent.time()),
        (EXEC, lambda agent: agent.exec("/bin/true")),
        (HOST_NAME, lambda agent: agent.call(HOST_NAME)),
    ],
    ids=["hostname", "time", "exec", "call"],
)
async def test_a_frozen_guest_refuses_every_command_as_frozen(command: str, invoke: Any) -> None:
    fake = fake_guest(frozen=True)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            with pytest.raises(GuestIsFrozen) as caught:
                await invoke(agent)
    error = caught.value
    assert (error.command, error.status, error.refusal, error.answered) == (
        command,
        "frozen",
        None,
        False,
    )
    assert error.agent_version == fake.version
    assert str(error) == (
        f"the guest is frozen (guest-fsfreeze-status: frozen), so {command} was not sent: "
        "run 'gagent thaw DOMAIN'"
    )
    # asked, never sent; and still the CommandUnavailable it always was
    assert fake.commands == [SYNC, "guest-info", STATUS]
    assert isinstance(error, CommandUnavailable)
    assert fake.frozen


async def test_the_advice_names_the_target_the_agent_was_opened_for() -> None:
    fake = fake_guest(frozen=True)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            agent.target = AgentTarget(domain="vm 1", uri="qemu+ssh://h/system")
            with pytest.raises(GuestIsFrozen) as caught:
                await agent.host_name()
    assert caught.value.target == agent.target
    assert caught.value.thaw_command == "gagent thaw 'vm 1' -c qemu+ssh://h/system"
    assert str(caught.value).startswith("guest vm 1 is frozen (")
    assert str(caught.value).endswith(": run 'gagent thaw 'vm 1' -c qemu+ssh://h/system'")


async def test_a_socket_client_names_its_socket_in_the_advice(tmp_path, monkeypatch) -> None:
    fake = fake_guest(frozen=True)
    monkeypatch.chdir(tmp_path)
    with trio.fail_after(TIMEOUT):
        async with fake_unix_socket(fake, tmp_path / "g 1.sock"):
            async with gagent.open_agent("g 1.sock") as agent:  # relative: advice absolute
                with pytest.raises(GuestIsFrozen) as caught:
                    await agent.host_name()
    path = tmp_path / "g 1.sock"
    assert caught.value.thaw_command == f"gagent agent --socket '{path}' fsfreeze thaw"
    assert str(caught.value) == (
        f"the guest behind {path} is frozen (guest-fsfreeze-status: frozen), so "
        f"guest-get-host-name was not sent: run 'gagent agent --socket '{path}' fsfreeze thaw'"
    )


async def test_the_error_says_since_when_if_known() -> None:
    fake = fake_guest(frozen=True)
    since = time.time() - 3600
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            agent.frozen_since = since  # e.g. a session that recorded the freeze
            with pytest.raises(GuestIsFrozen) as caught:
                await agent.host_name()
    clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    assert caught.value.frozen_since == since
    assert f"(its filesystems have been frozen since {clock}; guest-fsfreeze-status" in str(
        caught.value
    )


async def test_every_frozen_command_asks_again_and_a_thaw_elsewhere_is_noticed() -> None:
    fake = fake_guest(frozen=True)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            for _ in range(2):
                with pytest.raises(GuestIsFrozen):
                    await agent.host_name()
            fake.frozen = False  # thawed through another connection
            assert await agent.host_name() == "fake-guest"
            assert await agent.host_name() == "fake-guest"
    # guest-info cached (all disabled) -> status thawed -> guest-info again -> sent
    assert fake.commands == [SYNC, "guest-info", STATUS, STATUS, STATUS, "guest-info",
                             HOST_NAME, HOST_NAME]  # fmt: skip


async def test_a_freeze_after_guest_info_was_read_shows_in_the_agents_refusal() -> None:
    fake = fake_guest()
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            assert await agent.host_name() == "fake-guest"
            fake.frozen = True  # another client froze it; our guest-info is cached
            with pytest.raises(GuestIsFrozen) as refused:
                await agent.host_name()
            with pytest.raises(GuestIsFrozen) as diagnosed:
                await agent.host_name()
    assert isinstance(refused.value.refusal, GuestFrozen)
    assert refused.value.refusal.command == HOST_NAME
    assert isinstance(refused.value.__cause__, GuestFrozen)
    assert str(refused.value) == (
        "the guest is frozen (the agent said: Command guest-get-host-name has been disabled: "
        "the agent is in frozen state), so guest-get-host-name was refused: "
        "run 'gagent thaw DOMAIN'"
    )
    # the refusal dropped guest-info: the next command reads it afresh, then asks
    assert diagnosed.value.refusal is None
    assert fake.commands == [SYNC, "guest-info", HOST_NAME, HOST_NAME, SYNC, "guest-info",
                             STATUS]  # fmt: skip


async def test_the_thawed_path_costs_no_extra_round_trip() -> None:
    fake = fake_guest()
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            assert await agent.host_name() == "fake-guest"
            assert await agent.time() == EXTRA[TIME]
    assert fake.commands == [SYNC, "guest-info", HOST_NAME, TIME]


# ------------------------------------------------------ blocked by configuration


async def test_a_blocked_command_on_a_thawed_guest_is_configuration() -> None:
    fake = fake_guest(disabled={EXEC})
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            with pytest.raises(CommandUnavailable) as caught:
                await agent.exec("/bin/true")
            assert await agent.host_name() == "fake-guest"
    assert type(caught.value) is CommandUnavailable
    assert "disabled in qemu-ga's configuration" in str(caught.value)
    # one command blocked cannot be a freeze: nothing more was asked
    assert fake.commands == [SYNC, "guest-info", HOST_NAME]


async def test_blocked_and_frozen_is_frozen_until_thawed_then_configuration() -> None:
    fake = fake_guest(disabled={EXEC}, frozen=True)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            with pytest.raises(GuestIsFrozen):
                await agent.exec("/bin/true")
            with pytest.raises(GuestIsFrozen):
                await agent.host_name()
            assert await agent.fsfreeze_thaw() == FAKE_FILESYSTEMS
            with pytest.raises(CommandUnavailable) as blocked:
                await agent.exec("/bin/true")
            assert await agent.host_name() == "fake-guest"
    assert type(blocked.value) is CommandUnavailable
    assert "configuration" in blocked.value.reason


async def test_everything_blocked_but_the_allowlist_is_configuration_once_asked() -> None:
    blocked = (set(EXTRA) | {"guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list"}) | {
        "guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"
    }  # fmt: skip
    fake = fake_guest(disabled=blocked)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            with pytest.raises(CommandUnavailable) as caught:
                await agent.host_name()
    assert type(caught.value) is CommandUnavailable
    # guest-info looked like a freeze: asked once, believed, and no loop
    assert fake.commands == [SYNC, "guest-info", STATUS]


async def test_an_agent_that_cannot_report_its_freeze_state_is_configuration() -> None:
    blocked = {*EXTRA, STATUS}
    fake = fake_guest(disabled=blocked)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            with pytest.raises(CommandUnavailable) as caught:
                await agent.host_name()
            assert await agent.freeze_state() is None
    assert type(caught.value) is CommandUnavailable


# --------------------------------------------------------- ping reports frozen


async def test_freeze_state_and_ensure_thawed() -> None:
    fake = fake_guest(frozen=True)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            await agent.ping()  # a ping stays a ping
            assert await agent.freeze_state() is FsfreezeStatus.FROZEN
            assert agent.frozen is False  # the guard of our own freeze is left alone
            with pytest.raises(GuestIsFrozen) as caught:
                await agent.ensure_thawed()
            fake.frozen = False
            assert await agent.freeze_state() is FsfreezeStatus.THAWED
            await agent.ensure_thawed()
    assert caught.value.answered and caught.value.command == "guest-ping"
    assert str(caught.value) == (
        "the guest is frozen (guest-fsfreeze-status: frozen); its agent answers guest-ping "
        "but refuses other commands until thawed: run 'gagent thaw DOMAIN'"
    )


async def test_freeze_state_of_an_agent_without_fsfreeze_is_unknown() -> None:
    fake = FakeAgent()  # no guest-fsfreeze-status at all (CommandNotFound)
    with trio.fail_after(TIMEOUT):
        async with connected(fake) as agent:
            assert await agent.freeze_state() is None
            await agent.ensure_thawed()


def test_the_fakes_allowlist_is_qemu_gas() -> None:
    assert FREEZE_ALLOWLIST == ALLOWED_WHILE_FROZEN


# ------------------------------------------------------------ the real qemu-ga


def recording(agent: Agent) -> list[str]:
    """The names of the commands ``agent`` sends from now on (the real ones go out)."""
    sent: list[str] = []
    execute = agent.execute
    execute_decoded = agent.execute_decoded

    async def execute_and_record(command: str, arguments: Any = None) -> Any:
        sent.append(command)
        return await execute(command, arguments)

    async def execute_decoded_and_record(command: str, arguments: Any, decoder: Any) -> Any:
        sent.append(command)
        return await execute_decoded(command, arguments, decoder)

    agent.execute = execute_and_record  # type: ignore[method-assign]
    agent.execute_decoded = execute_decoded_and_record  # type: ignore[method-assign]
    return sent


@pytest.mark.qemu_ga
async def test_real_qemu_ga_blocked_commands_are_configuration(qemu_ga) -> None:
    with trio.fail_after(TIMEOUT):
        async with gagent.open_agent(qemu_ga.socket_path) as agent:
            sent = recording(agent)
            with pytest.raises(CommandUnavailable) as caught:
                await agent.exec("/bin/true")
            assert await agent.freeze_state() is FsfreezeStatus.THAWED
    assert type(caught.value) is CommandUnavailable
    assert "disabled in qemu-ga's configuration" in caught.value.reason
    assert sent == ["guest-info", STATUS]  # the status only from freeze_state()


@pytest.mark.qemu_ga
async def test_real_qemu_ga_blocking_all_but_the_allowlist_is_configuration(
    qemu_ga, tmp_path
) -> None:
    with trio.fail_after(TIMEOUT):
        async with gagent.open_agent(qemu_ga.socket_path) as agent:
            everything = set((await agent.info()).commands)
    blocked = tuple(sorted(everything - ALLOWED_WHILE_FROZEN))
    assert set(BLOCKED_RPCS) <= set(blocked)
    # qemu-ga itself then looks frozen in guest-info, but says thawed when asked
    with local_qemu_ga(tmp_path, name="locked", blocked=blocked) as locked:
        with trio.fail_after(TIMEOUT):
            async with gagent.open_agent(locked.socket_path) as agent:
                sent = recording(agent)
                with pytest.raises(CommandUnavailable) as caught:
                    await agent.osinfo()
                info = await agent.info()
    assert type(caught.value) is CommandUnavailable
    assert "disabled in qemu-ga's configuration" in caught.value.reason
    assert sent[:2] == ["guest-info", STATUS]
    assert {name for name, c in info.commands.items() if c.enabled} <= ALLOWED_WHILE_FROZEN
