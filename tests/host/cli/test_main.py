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
from gagent.host.cli.common import run_command
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
            return run_command(body, seconds=seconds, target=target)

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
    assert line.startswith("gagent: error: timed out after 0.05s waiting for /run/vm1.sock")
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

AGENT_COMMANDS = (
    "call, copy-from, copy-to, disks, exec, fsfreeze, fsinfo, fstrim, halt, hostname, info, "
    "interfaces, osinfo, passwd, ping, reboot, shutdown, time, timezone, users, vcpus"
)

# (argv, the whole stderr line): click's message, then the --help of the command typed.
USAGE_ERRORS = [
    pytest.param(
        ["freeze"],
        "No such command 'freeze'. Did you mean 'fsfreeze'? (see: gagent --help)",
        id="unknown-command",
    ),
    pytest.param(
        ["agent", "vm1", "pingx"],
        "No such command 'pingx'. Did you mean 'ping'? (see: gagent agent --help)",
        id="unknown-agent-command",
    ),
    pytest.param(
        ["agent", "--zzz", "ping"],
        "No such option '--zzz' (see: gagent agent --help)",
        id="unknown-option",
    ),
    pytest.param(
        ["status", "--zzz", "vm1"],
        "No such option '--zzz' (see: gagent status --help)",
        id="unknown-option-of-command",
    ),
    pytest.param(
        ["status"], "Missing argument 'DOMAIN' (see: gagent status --help)", id="missing-argument"
    ),
    pytest.param(
        ["agent", "vm1", "exec"],
        "Missing argument 'ARGV...' (see: gagent agent exec --help)",
        id="missing-argument-nested",
    ),
    pytest.param(
        ["agent", "--socket", "/x", "--timeout", "-1", "ping"],
        "Invalid value for '--timeout': -1.0 is not in the range x>=0 (see: gagent agent --help)",
        id="invalid-value",
    ),
    pytest.param(
        ["agent", "--socket", "/x", "--timeout", "soon", "ping"],
        "Invalid value for '--timeout': 'soon' is not a valid float range"
        " (see: gagent agent --help)",
        id="invalid-value-type",
    ),
    pytest.param(
        ["agent", "--timeout"],
        "Option '--timeout' requires an argument (see: gagent agent --help)",
        id="option-without-value",
    ),
    pytest.param(
        ["agent", "--socket", "/x", "exec", "--input"],
        "Option '--input' requires an argument (see: gagent agent exec --help)",
        id="option-without-value-nested",
    ),
    pytest.param(
        ["agent", "--socket", "/x", "ping", "extra"],
        "Got unexpected extra argument (extra) (see: gagent agent ping --help)",
        id="extra-argument",
    ),
    pytest.param(
        ["agent", "vm1"],
        f"missing COMMAND after 'gagent agent vm1' (one of: {AGENT_COMMANDS})"
        " (see: gagent agent --help)",
        id="group-without-command",
    ),
    pytest.param(
        ["agent", "--socket", "/x", "--json"],
        f"missing COMMAND after 'gagent agent --socket /x --json' (one of: {AGENT_COMMANDS})"
        " (see: gagent agent --help)",
        id="group-with-options-without-command",
    ),
    pytest.param(
        ["agent", "vm1", "fsfreeze"],
        "missing COMMAND after 'gagent agent vm1 fsfreeze' (one of: freeze, status, thaw)"
        " (see: gagent agent fsfreeze --help)",
        id="subgroup-without-command",
    ),
]


@pytest.mark.parametrize(("argv", "line"), USAGE_ERRORS)
def test_usage_errors_are_one_line_exit_2(capsys, argv, line):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert "Usage:" not in err
    assert error_line(err) == f"gagent: error: {line}"


def test_usage_errors_read_the_command_line_without_argv(capsys, monkeypatch):
    """The installed entry point calls main() without argv: the words come from sys.argv."""
    monkeypatch.setattr("sys.argv", ["gagent", "agent", "vm1"])
    code = main()
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert error_line(err).startswith("gagent: error: missing COMMAND after 'gagent agent vm1' ")


def test_usage_error_raised_by_a_command(capsys, monkeypatch):
    def callback():
        raise click.UsageError("give DOMAIN, or --socket PATH")

    monkeypatch.setitem(cli.commands, "boom", click.Command("boom", callback=callback))
    code, out, err = run(capsys, "boom")
    assert (code, out) == (2, "")
    assert (
        error_line(err) == "gagent: error: give DOMAIN, or --socket PATH (see: gagent boom --help)"
    )


def test_other_click_errors_are_one_line(capsys, monkeypatch):
    def callback():
        raise click.FileError("/nope", hint="it is not there")

    monkeypatch.setitem(cli.commands, "boom", click.Command("boom", callback=callback))
    code, out, err = run(capsys, "boom")
    assert (code, out) == (2, "")
    assert error_line(err) == "gagent: error: Could not open file '/nope': it is not there"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        ([], "Usage: gagent [OPTIONS] COMMAND [ARGS]..."),
        (["agent"], "Usage: gagent agent [OPTIONS] [DOMAIN] COMMAND [ARGS]..."),
        (["agent", "fsfreeze"], "Usage: gagent agent fsfreeze [OPTIONS] COMMAND [ARGS]..."),
        (["channel"], "Usage: gagent channel [OPTIONS] COMMAND [ARGS]..."),
    ],
)
def test_bare_group_prints_its_help(capsys, argv, usage):
    """Nothing typed but command names: the help, on stderr, with the usage exit code."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.startswith(usage)
    assert "\nCommands:\n" in err
    assert "gagent: error:" not in err


def test_help(capsys):
    code, out, err = run(capsys, "--help")
    assert (code, err) == (0, "")
    assert out.startswith("Usage: gagent [OPTIONS] COMMAND [ARGS]...")
    for name in ("agent", "channel", "demo", "status", "watch"):
        assert f"\n  {name} " in out


def test_short_help_option(capsys):
    code, out, err = run(capsys, "agent", "-h")
    assert (code, err) == (0, "")
    assert "Usage: gagent agent [OPTIONS] [DOMAIN] COMMAND [ARGS]..." in out


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["agent", "--help"], "Usage: gagent agent [OPTIONS] [DOMAIN] COMMAND [ARGS]..."),
        (["agent", "vm1", "--help"], "Usage: gagent agent [OPTIONS] [DOMAIN] COMMAND [ARGS]..."),
        (["agent", "vm1", "exec", "--help"], "Usage: gagent agent exec [OPTIONS] ARGV..."),
        (["agent", "fsfreeze", "-h"], "Usage: gagent agent fsfreeze [OPTIONS] COMMAND [ARGS]..."),
        (["status", "--help"], "Usage: gagent status [OPTIONS] DOMAIN"),
        (["snapshot", "create", "--help"], "Usage: gagent snapshot create [OPTIONS] DOMAIN NAME"),
    ],
)
def test_help_of_subcommands(capsys, argv, usage):
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith(usage)
    assert "\nOptions:\n" in out


def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert (code, err) == (0, "")
    assert out.startswith("gagent, version ")


# ----------------------------------------------------------------------- _single


def test_single():
    error = HostError("x")
    assert _single(ExceptionGroup("g", [error])) is error
    assert _single(ExceptionGroup("g", [ExceptionGroup("h", [error])])) is error
    # several gagent errors: the first speaks for them; anything else keeps its traceback
    assert _single(ExceptionGroup("g", [error, HostError("y")])) is error
    assert _single(ExceptionGroup("g", [error, ValueError("bug")])) is None
    assert _single(BaseExceptionGroup("g", [KeyboardInterrupt()])).__class__ is KeyboardInterrupt
