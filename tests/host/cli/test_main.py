"""gagent.host.cli.main: every error becomes one line on stderr and an exit code.

Errors are raised from a throw-away command added to the real ``cli`` group for
one test (monkeypatch), through the same trio runner the real commands use.
"""

from __future__ import annotations

import click
import pytest
import trio
import trio.lowlevel
import trio.testing

from gagent.errors import (
    AgentError,
    AgentUnavailable,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    ConnectionLost,
    FrozenStateViolation,
    GagentError,
    GuestFrozen,
    HostError,
    ProtocolError,
    ReplyTooLarge,
    UsageError,
)
from gagent.host.cli import _single, cli, exit_code_for, main
from gagent.host.cli.common import run_with_deadline
from gagent.host.virt import DomainNotFound, LibvirtAgentError

ERRORS = [
    (UsageError("bad"), 2),
    (AgentUnavailable("gone", hint="start it"), 3),
    (CommandUnavailable("guest-exec", "disabled"), 5),
    (FrozenStateViolation("guest-get-time"), 5),
    (CommandDisabled("guest-exec", "CommandNotFound", "Command guest-exec has been disabled"), 5),
    (GuestFrozen("guest-get-time", "CommandNotFound", "frozen state"), 5),
    (CommandNotFound("guest-foo", "CommandNotFound", "not found"), 5),
    (AgentError("guest-file-open", "GenericError", "No such file"), 6),
    (ConnectionLost("closed", command="guest-ping"), 7),
    (ProtocolError("garbage"), 7),
    (ReplyTooLarge(1024, command="guest-file-read"), 7),
    (HostError("libvirt said no", code=1), 8),
    (DomainNotFound("no domain 'x'", code=42), 8),
    (LibvirtAgentError("through libvirt", code=86), 8),
    (GagentError("something else"), 1),
]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("gagent: error: "), lines[0]
    return lines[0]


@pytest.fixture
def command(monkeypatch):
    """Install ``gagent boom`` running ``body`` under trio (as the real commands do)."""

    def install(body, *, seconds: float | None = 5, target: str = "the target"):
        def callback():
            return run_with_deadline(body, seconds=seconds, target=target)

        monkeypatch.setitem(cli.commands, "boom", click.Command("boom", callback=callback))

    return install


# ----------------------------------------------------------------- exit_code_for


@pytest.mark.parametrize(("error", "code"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_exit_code_for_every_error_class(error, code):
    assert exit_code_for(error) == code


def test_exit_code_for_foreign_errors():
    assert exit_code_for(RuntimeError("x")) == 1
    assert exit_code_for(KeyError("x")) == 1


# ------------------------------------------------------------------------- main


@pytest.mark.parametrize(("error", "code"), ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_main_maps_errors_to_one_line_and_code(capsys, command, error, code):
    async def body():
        await trio.lowlevel.checkpoint()
        raise error

    command(body)
    assert run(capsys, "boom")[:2] == (code, "")
    main(["boom"])
    assert error_line(capsys.readouterr().err) == f"gagent: error: {error}"


def test_main_unwraps_a_single_error_from_nurseries(capsys, command):
    async def fail():
        raise ConnectionLost("peer closed")

    async def body():
        async with trio.open_nursery() as outer:
            outer.start_soon(trio.sleep_forever)
            async with trio.open_nursery() as inner:
                inner.start_soon(fail)

    command(body)
    code, _, err = run(capsys, "boom")
    assert code == 7
    assert error_line(err) == "gagent: error: peer closed"


def test_main_reports_several_errors_from_a_nursery(capsys, command):
    both = trio.Event()

    async def fail():
        await both.wait()
        raise HostError("libvirt connection lost", code=38)  # no checkpoint: both raise

    async def body():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
            nursery.start_soon(fail)
            await trio.testing.wait_all_tasks_blocked()  # both are waiting
            both.set()

    command(body)
    code, _, err = run(capsys, "boom")
    assert code == 8
    assert "libvirt connection lost" in error_line(err)


def test_main_timeout_message_names_deadline_and_target(capsys, command):
    command(trio.sleep_forever, seconds=0.05, target="/run/vm1.sock")
    code, out, err = run(capsys, "boom")
    assert (code, out) == (4, "")
    line = error_line(err)
    assert line.startswith(
        "gagent: error: timed out after 0.05s waiting for the agent at /run/vm1.sock"
    )
    assert "--timeout" in line


def test_main_interrupted(capsys, command):
    async def body():
        raise KeyboardInterrupt

    command(body)
    code, _, err = run(capsys, "boom")
    assert code == 130
    assert err.strip() == "gagent: interrupted"  # after click's newline ending the ^C line


def test_main_returns_the_commands_exit_code(capsys, command):
    async def body():
        return 42

    command(body)
    assert run(capsys, "boom")[0] == 42

    async def nothing():
        return None

    command(nothing)
    assert run(capsys, "boom") == (0, "", "")


def test_main_lets_bugs_through(command):
    async def body():
        raise RuntimeError("a bug")

    command(body)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["boom"])


# ------------------------------------------------------------------- click usage


def test_help(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert out.startswith("Usage: gagent [OPTIONS] COMMAND [ARGS]...")
    for name in ("agent", "channel", "demo", "status", "watch"):
        assert f"\n  {name} " in out


def test_short_help_option(capsys):
    code, out, _ = run(capsys, "agent", "-h")
    assert code == 0
    assert "Usage: gagent agent [OPTIONS] [DOMAIN] COMMAND [ARGS]..." in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-command"], "No such command 'no-such-command'"),
        (["agent", "--bogus", "ping"], "No such option '--bogus'"),
        (["agent", "--socket", "/x", "--timeout", "-1", "ping"], "Invalid value for '--timeout'"),
        (["agent", "--socket", "/x"], "Missing command"),
        (["status"], "Missing argument 'DOMAIN'"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert f"Error: {message}" in err


# ----------------------------------------------------------------------- _single


def test_single():
    error = HostError("x")
    assert _single(ExceptionGroup("g", [error])) is error
    assert _single(ExceptionGroup("g", [ExceptionGroup("h", [error])])) is error
    # several gagent errors: the first speaks for them; anything else keeps its traceback
    assert _single(ExceptionGroup("g", [error, HostError("y")])) is error
    assert _single(ExceptionGroup("g", [error, ValueError("bug")])) is None
    assert _single(BaseExceptionGroup("g", [KeyboardInterrupt()])).__class__ is KeyboardInterrupt
