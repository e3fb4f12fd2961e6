"""gagent.sync_commands is generated from AgentCommands (scripts/gen-sync.py): regenerating
it gives the committed file byte for byte, every typed command has its blocking twin on
SyncAgent with the same parameters, passing each argument on as given, and a type checker
sees the real reply types of a blocking user's script."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gagent.sync
from gagent.commands import AgentCommands
from gagent.sync import SyncAgent
from gagent.sync_commands import SyncCommands

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gen-sync.py"
MODULE = REPO / "gagent" / "sync_commands.py"
TIMEOUT = 300  # for subprocesses (mypy reads the whole package on a busy machine)

#: A user's script with the blocking API, type-checked against this checkout.
USER_SCRIPT = """
import gagent.sync

with gagent.sync.open_agent("/run/agent.sock", timeout=5) as agent:
    reveal_type(agent.osinfo())
    reveal_type(agent.host_name())
    reveal_type(agent.fsinfo())
    reveal_type(agent.info())
    reveal_type(agent.freeze_state())
    reveal_type(agent.file_read(agent.file_open("/etc/hostname"), 5))
    reveal_type(agent.exec("/bin/true", ["x"], capture_output=True))
    reveal_type(agent.ping())
    agent.osinfo("surplus")
    agent.exec("/bin/true", captured=True)
"""


def typed_commands() -> dict[str, Any]:
    """Every public coroutine method of AgentCommands and of what it inherits, as the MRO
    resolves it (the set gagent.sync has always offered)."""
    return {
        name: getattr(AgentCommands, name)
        for cls in AgentCommands.__mro__
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }


def test_the_committed_module_is_what_the_script_generates():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "-"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == MODULE.read_text(), (
        "gagent/sync_commands.py is out of date: run .venv/bin/python scripts/gen-sync.py"
    )


def test_every_typed_command_has_a_blocking_twin_with_the_same_parameters():
    commands = typed_commands()
    assert {"osinfo", "host_name", "exec", "call", "suspend_hybrid"} <= set(commands)
    own = {name for name in vars(SyncCommands) if not name.startswith("_")}
    assert own - {"run", "commands"} == set(commands)  # nothing more, nothing less
    for name, coroutine in commands.items():
        blocking = inspect.getattr_static(SyncAgent, name)
        assert blocking is vars(SyncCommands)[name], f"SyncAgent's own {name} hides the command"
        assert not inspect.iscoroutinefunction(blocking), name
        expected = inspect.signature(coroutine)
        found = inspect.signature(blocking)
        assert list(found.parameters.values()) == list(expected.parameters.values()), name
        assert found.return_annotation == expected.return_annotation, name
        assert inspect.getdoc(blocking) == inspect.getdoc(coroutine), name


class Recorder(SyncCommands):
    """The generated methods over commands that record how they were called."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.runs: list[Any] = []
        recorder = self

        class Commands:
            def __getattr__(self, name: str) -> Any:
                def record(*args: Any, **kwargs: Any) -> Any:
                    recorder.calls.append((name, args, kwargs))
                    return ("coroutine of", name)

                return record

        self.commands = Commands()  # type: ignore[assignment]

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        self.runs.append(coro)
        return ("result of", coro)


@pytest.mark.parametrize("name", sorted(typed_commands()))
def test_a_blocking_call_passes_every_argument_on_and_runs_the_coroutine(name: str):
    signature = inspect.signature(typed_commands()[name])
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for parameter in list(signature.parameters.values())[1:]:  # not self
        value = given[parameter.name] = object()
        if parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = value
        else:
            args.append(value)
    agent = Recorder()
    assert getattr(agent, name)(*args, **kwargs) == ("result of", ("coroutine of", name))
    assert agent.runs == [("coroutine of", name)]
    [(called, passed_args, passed_kwargs)] = agent.calls
    bound = signature.bind(None, *passed_args, **passed_kwargs)
    assert called == name
    assert {k: v for k, v in bound.arguments.items() if k != "self"} == given


def test_defaults_are_passed_on_as_the_coroutine_declares_them():
    agent = Recorder()
    agent.exec("/bin/true")
    agent.shutdown()
    assert agent.calls == [
        ("exec", ("/bin/true", ()), {"env": None, "input_data": None, "capture_output": False}),
        ("shutdown", ("powerdown",), {}),
    ]


def test_a_type_checker_sees_the_reply_types(tmp_path: Path):
    """Also: the generated module and gagent.sync type-check clean themselves."""
    user = tmp_path / "user_script.py"
    user.write_text(USER_SCRIPT)
    env = {**os.environ, "MYPYPATH": str(REPO)}  # an editable install's finder is no path
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-error-summary",
         "--cache-dir", os.devnull, "--hide-error-context", str(user), str(MODULE),
         str(REPO / "gagent" / "sync.py")],
        capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    lines = checked.stdout.splitlines()
    revealed = [line.split("Revealed type is ")[1].replace("builtins.", "")
                for line in lines if "Revealed type is" in line]  # fmt: skip
    assert revealed == [
        '"gagent.types.OSInfo"',
        '"str"',
        '"list[gagent.fs_types.FilesystemInfo]"',
        '"gagent.types.AgentInfo"',
        '"gagent.fsfreeze_state.FsfreezeStatus | None"',
        '"gagent.fs_types.FileRead"',
        '"int"',
        '"None"',
    ], checked.stdout + checked.stderr
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 2, checked.stdout + checked.stderr
    assert all(line.startswith("user_script.py:") for line in errors), errors
    assert '"osinfo" of "SyncCommands"' in errors[0]
    assert '"captured"' in errors[1] and '"exec" of "SyncCommands"' in errors[1]


def test_the_module_imports_nothing_for_its_annotations():
    """The reply types' modules (msgspec) load with the first typed reply, as with the
    async API: the generated module's package imports are for type checkers only."""
    code = (
        "import sys, gagent.sync; "
        "print(sorted(m for m in ('gagent.types', 'gagent.fs_types', 'gagent.hw_types') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=TIMEOUT)  # fmt: skip
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr
    assert gagent.sync.SyncAgent.__mro__[1] is SyncCommands
