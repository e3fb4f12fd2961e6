"""gagent.sync: the typed commands without an event loop, against the real qemu-ga on this
host (every typed command compared with the async API) and a scripted fake agent for faults.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from fakeagent import Fail, FakeAgent, Silence, fake_unix_socket

import gagent
import gagent.sync
import gagent.sync_freeze
from gagent.commands import AgentCommands
from gagent.errors import AgentError, AgentUnavailable, GagentError
from gagent.localagent import BLOCKED_RPCS, local_qemu_ga
from gagent.replies import decoder_for

EXTRA_BLOCKED = ("guest-fsfreeze-thaw",)


HANDLE = object()  # stands for the handle this side's file_open returned


def plan(path: Path) -> list[tuple[str, tuple[Any, ...]]]:
    """Every typed command once, with arguments that are harmless on the host."""
    return [
        ("execute", ("guest-get-host-name",)),
        ("call", ("guest-get-timezone",)),
        ("call_typed", ("guest-get-timezone",)),
        ("execute_decoded", ("guest-get-osinfo", None, decoder_for("guest-get-osinfo"))),
        ("require", ("guest-get-osinfo",)),
        ("freeze_state", ()),
        ("ensure_thawed", ()),
        ("ping", ()),
        ("info", ()),
        ("osinfo", ()),
        ("host_name", ()),
        ("users", ()),
        ("timezone", ()),
        ("time", ()),
        ("set_time", ()),
        ("network_interfaces", ()),
        ("vcpus", ()),
        ("set_vcpus", ([],)),
        ("memory_blocks", ()),
        ("set_memory_blocks", ([],)),
        ("memory_block_info", ()),
        ("cpustats", ()),
        ("devices", ()),
        ("fsinfo", ()),
        ("disks", ()),
        ("diskstats", ()),
        ("fstrim", ()),
        ("fsfreeze_status", ()),
        ("fsfreeze_freeze", ()),
        ("fsfreeze_thaw", ()),
        ("file_open", (str(path), "r")),
        ("file_read", (HANDLE, 5)),
        ("file_seek", (HANDLE, 1, "set")),
        ("file_write", (HANDLE, b"x")),  # a read-only handle: the agent's error
        ("file_flush", (HANDLE,)),
        ("file_close", (HANDLE,)),
        ("exec", ("/bin/true",)),
        ("exec_status", (1,)),
        ("set_user_password", ("nobody", "x")),
        ("ssh_get_authorized_keys", ("gagent-no-such-user",)),
        ("ssh_add_authorized_keys", ("gagent-no-such-user", ["ssh-ed25519 AAAA x"])),
        ("ssh_remove_authorized_keys", ("gagent-no-such-user", ["ssh-ed25519 AAAA x"])),
        ("shutdown", ()),
        ("suspend_disk", ()),
        ("suspend_ram", ()),
        ("suspend_hybrid", ()),
    ]


def comparable(name: str, outcome: tuple[str, Any]) -> Any:
    """What must be equal on both sides: values that change by themselves are reduced."""
    kind, value = outcome
    if kind == "error":
        return kind, type(value), str(value)
    if name in ("time", "file_open"):
        return kind, type(value)  # a clock, a fresh handle
    if name == "cpustats" or name == "diskstats":
        return kind, [type(v) for v in value]  # counters
    if name == "fsinfo":
        return kind, [msgspec.structs.replace(v, used_bytes=None) for v in value]
    if name == "network_interfaces":
        return kind, [msgspec.structs.replace(v, statistics=None) for v in value]
    return outcome


def typed_commands() -> set[str]:
    return {
        name
        for cls in AgentCommands.__mro__
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }


def test_the_plan_covers_every_typed_command(tmp_path: Path) -> None:
    assert {name for name, _ in plan(tmp_path)} == typed_commands()


@pytest.mark.qemu_ga
async def test_every_typed_command_gives_the_same_result_sync_and_async(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("0123456789")
    steps = plan(data)

    async def run_async(path: Path) -> list[tuple[str, Any]]:
        outcomes = []
        async with gagent.open_agent(path) as agent:
            handle = None
            for name, args in steps:
                args = tuple(handle if a is HANDLE else a for a in args)
                try:
                    with trio.fail_after(10):
                        value = await getattr(agent, name)(*args)
                    outcomes.append(("ok", value))
                except GagentError as exc:
                    outcomes.append(("error", exc))
                    value = None
                if name == "file_open":
                    handle = value
        return outcomes

    def run_sync(path: Path) -> list[tuple[str, Any]]:
        outcomes = []
        with gagent.sync.open_agent(path, timeout=10) as agent:
            handle = None
            for name, args in steps:
                args = tuple(handle if a is HANDLE else a for a in args)
                try:
                    value = getattr(agent, name)(*args)
                    outcomes.append(("ok", value))
                except GagentError as exc:
                    outcomes.append(("error", exc))
                    value = None
                if name == "file_open":
                    handle = value
        return outcomes

    with local_qemu_ga(tmp_path, blocked=BLOCKED_RPCS + EXTRA_BLOCKED) as qga:
        async_outcomes = await run_async(qga.socket_path)
        sync_outcomes = run_sync(qga.socket_path)
    for (name, _), a, s in zip(steps, async_outcomes, sync_outcomes, strict=True):
        assert comparable(name, s) == comparable(name, a), name
    # the comparison compared something: real answers, and refusals, on both sides
    kinds = {name: kind for (name, _), (kind, _) in zip(steps, sync_outcomes, strict=True)}
    assert kinds["osinfo"] == kinds["file_read"] == "ok"
    assert kinds["exec"] == kinds["fsfreeze_freeze"] == "error"


@pytest.mark.qemu_ga
def test_typed_results_are_the_dataclasses(qemu_ga) -> None:
    with gagent.sync.open_agent(qemu_ga.socket_path, timeout=10) as agent:
        assert agent.host_name() == socket.gethostname()
        info = agent.info()
        assert type(info).__name__ == "AgentInfo" and "guest-ping" in info.commands
        assert agent.name == str(qemu_ga.socket_path)


HEAVY = ("trio", "outcome", "sniffio", "libvirt", "lxml", "click")


_SCRIPT = """
import json, sys
import gagent.sync
with gagent.sync.open_agent(sys.argv[1], timeout=10) as agent:
    agent.osinfo()
    agent.fsfreeze_status()
{extra}
heavy = json.loads(sys.argv[2])
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
"""


@pytest.mark.qemu_ga
@pytest.mark.parametrize(
    ("extra", "expected"),
    [("", []), ("import gagent.client", ["outcome", "sniffio", "trio"])],  # the control
    ids=["sync-socket", "control-with-the-trio-client"],
)
def test_a_socket_agent_imports_no_trio(qemu_ga, extra: str, expected: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(extra=extra), str(qemu_ga.socket_path),
         json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_no_socket_is_the_same_error_as_async(tmp_path: Path) -> None:
    path = tmp_path / "none.sock"

    async def async_error() -> str:
        with pytest.raises(AgentUnavailable) as caught:
            async with gagent.open_agent(path):
                pass
        return str(caught.value)

    with pytest.raises(AgentUnavailable) as caught:
        with gagent.sync.open_agent(path):
            pass
    assert str(caught.value) == trio.run(async_error)


@pytest.fixture
def hung_listener(tmp_path: Path):
    """A unix socket that accepts and never answers."""
    path = tmp_path / "hung.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    yield path
    listener.close()


def test_a_silent_agent_ends_in_agent_timeout(hung_listener: Path) -> None:
    with pytest.raises(gagent.sync.AgentTimeout) as caught:
        with gagent.sync.open_agent(hung_listener, timeout=0.2):
            pass
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, GagentError)


async def test_after_a_timeout_the_next_call_resynchronises(tmp_path: Path) -> None:
    fake = FakeAgent(extra={"guest-get-host-name": {"host-name": "vm1"}}).on(
        "guest-get-host-name", Silence()
    )
    path = tmp_path / "fake.sock"

    def client() -> str:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            agent.timeout = 0.2
            with pytest.raises(gagent.sync.AgentTimeout):
                agent.host_name()
            assert not agent.commands.in_sync
            agent.timeout = 5
            return agent.host_name()

    with trio.fail_after(30):
        async with fake_unix_socket(fake, path):
            assert await trio.to_thread.run_sync(client) == "vm1"
    assert fake.commands.count("guest-sync-delimited") == 2


def test_run_blocking_refuses_a_coroutine_that_suspends() -> None:
    async def needs_a_loop() -> None:
        await asyncio.sleep(0)

    with pytest.raises(gagent.sync.StillSuspended, match="needs an event loop"):
        gagent.sync.run_blocking(needs_a_loop())


async def _with_fake(fake: FakeAgent, path: Path, client: Any) -> Any:
    with trio.fail_after(30):
        async with fake_unix_socket(fake, path):
            return await trio.to_thread.run_sync(client)


async def test_no_reply_commands_succeed_in_silence_and_fail_on_an_error(tmp_path: Path) -> None:
    fake = FakeAgent().on("guest-suspend-ram", Fail())
    path = tmp_path / "fake.sock"

    def client() -> None:
        with gagent.sync.open_agent(path, timeout=5) as agent:
            with pytest.raises(AgentError):
                agent.suspend_ram()
            assert agent.shutdown() is None  # silence is success
            agent.ping()  # the conversation goes on after both

    await _with_fake(fake, path, client)
    assert fake.commands.count("guest-shutdown") == 1


def test_the_command_layer_awaits_only_its_own_methods() -> None:
    """What lets run_blocking drive it: every await in AgentCommands is of ``self.X(...)``,
    X one of its own coroutine methods (which end in the transport's ``execute``)."""
    import ast

    own = {
        name
        for cls in AgentCommands.__mro__
        for name, member in vars(cls).items()
        if inspect.iscoroutinefunction(member)
    }
    classes = []
    for cls in AgentCommands.__mro__[:-1]:  # it and the parts it inherits, not object
        tree = ast.parse(Path(inspect.getsourcefile(cls) or "").read_text())
        classes += [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    assert len(classes) >= 2
    awaited = []
    for node in (node for commands in classes for node in ast.walk(commands)):
        if isinstance(node, ast.Await):
            call = node.value
            assert isinstance(call, ast.Call), ast.unparse(node)
            func = call.func
            assert isinstance(func, ast.Attribute), ast.unparse(node)
            assert isinstance(func.value, ast.Name) and func.value.id == "self", ast.unparse(node)
            assert func.attr in own, ast.unparse(node)
            awaited.append(func.attr)
    assert "execute" in awaited and "call" in awaited  # the scan saw the real awaits


@pytest.mark.qemu_ga
def test_threads_sharing_an_agent_take_turns(qemu_ga) -> None:
    """Each call is one exchange at a time: replies never go to another thread's call."""
    results: list[Any] = []

    def caller(agent: gagent.sync.SyncAgent, method: str) -> None:
        try:
            for _ in range(30):
                results.append((method, getattr(agent, method)()))
        except BaseException as exc:  # reported below
            results.append(("error", exc))

    with gagent.sync.open_agent(qemu_ga.socket_path, timeout=30) as agent:
        threads = [
            threading.Thread(target=caller, args=(agent, method))
            for method in ("host_name", "timezone", "host_name", "timezone")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        zone = agent.timezone()
    assert len(results) == 120
    for method, value in results:
        assert value == (socket.gethostname() if method == "host_name" else zone), method
