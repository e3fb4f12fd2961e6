"""Options before the command (``gagent -c URI --json -v COMMAND``) and ``--json`` after
it, against libvirt's test driver and the real qemu-ga on this host (fixture)."""

from __future__ import annotations

import json
import logging

import pytest

from gagent.host.cli import main
from gagent.host.cli.options import REDACTED, redacted

URI = "test:///default"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def agent(qemu_ga) -> list[str]:
    return ["agent", "--socket", str(qemu_ga.socket_path)]


# ------------------------------------------------------------------ -c/--connect


@pytest.mark.parametrize(
    "own",
    [
        ["status", "test", "-c", URI],
        ["agent", "test", "-c", URI, "ping"],
        ["agent", "-c", URI, "--all", "ping"],
        ["channel", "list", "test", "-c", URI],
    ],
)
def test_connect_before_the_command_is_the_commands_own(capsys, own):
    placed_after = run(capsys, *own)
    command = [word for word in own if word not in ("-c", URI)]
    assert run(capsys, "-c", URI, *command) == placed_after
    assert run(capsys, "--connect", URI, *command) == placed_after


def test_the_commands_own_connect_wins(capsys):
    code, _, err = run(capsys, "-c", "test:///no/such/node.xml", "channel", "list", "test")
    assert code == 8, err  # the global one is used...
    assert run(capsys, "-c", "test:///no/such/node.xml", "channel", "list", "test", "-c", URI) == (
        0, "(no channels)\n", "",
    )  # fmt: skip


def test_a_command_without_connect_refuses_it_in_one_line(capsys):
    code, out, err = run(capsys, "-c", URI, "demo")
    assert (code, out) == (2, "")
    assert err == "gagent: error: 'gagent demo' takes no -c/--connect: leave it out\n"


# ------------------------------------------------------------------------ --json


def test_json_before_gagent_after_the_group_or_after_the_command_are_one(capsys, agent):
    outputs = {
        run(capsys, "--json", *agent, "info"),
        run(capsys, *agent, "--json", "info"),
        run(capsys, *agent, "info", "--json"),
    }
    assert len(outputs) == 1
    [(code, out, err)] = outputs
    assert (code, err) == (0, "")
    assert json.loads(out)["commands"]["guest-ping"]["enabled"] is True


@pytest.mark.parametrize(
    "argv",
    [["ping"], ["fsfreeze", "status"], ["timezone"], ["vcpus"], ["call", "guest-ping"]],
)
def test_json_after_any_agent_command_and_never_null(capsys, agent, argv):
    code, out, err = run(capsys, *agent, *argv, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) is not None
    assert out.strip() != "null"


def test_json_after_exec_is_the_programs_word(capsys, agent):
    """exec's words after the program are the program's: --json is not taken from them."""
    code, _, err = run(capsys, *agent, "exec", "echo", "--json")
    assert code == 5, err  # guest-exec is blocked by the fixture: it was sent as argv
    assert "guest-exec" in err


def test_json_before_a_command_without_it_is_refused(capsys, monkeypatch):
    """Every gagent command has --json (tests/host/cli/test_json_everywhere.py): a
    command made here without it stands for one added later and forgotten."""
    import click

    from gagent.host.cli import cli

    monkeypatch.setitem(cli.commands, "plain", click.Command("plain", callback=lambda: None))
    code, out, err = run(capsys, "--json", "plain")
    assert (code, out) == (2, "")
    assert err == "gagent: error: 'gagent plain' takes no --json: leave it out\n"


def test_json_before_a_listing(capsys):
    assert run(capsys, "--json", "-c", URI, "channel", "list", "test") == (0, "[]\n", "")


# ----------------------------------------------------------------------- -v, -vv


def test_vv_logs_each_request_and_reply_and_plain_runs_do_not(capsys, agent):
    code, out, err = run(capsys, "-vv", *agent, "ping")
    assert (code, out) == (0, "ok\n")
    sock = agent[-1]
    assert f"gagent: DEBUG: gagent.traffic: {sock} -> guest-ping {{}}\n" in err
    assert f"gagent: DEBUG: gagent.traffic: {sock} <- guest-ping {{}}\n" in err
    assert run(capsys, *agent, "ping") == (0, "ok\n", "")  # the next run logs nothing
    assert logging.getLogger("gagent").level == logging.NOTSET


def test_v_says_which_agent_and_logs_no_traffic(capsys, agent):
    code, out, err = run(capsys, "-v", *agent, "ping")
    assert (code, out) == (0, "ok\n")
    assert err.splitlines() == [f"gagent: INFO: gagent.agent: talking to the agent of {agent[-1]}"]


@pytest.mark.parametrize("where", ["after", "split"])
def test_v_after_the_command_counts_as_before(capsys, agent, where):
    argv = [*agent, "ping", "-vv"] if where == "after" else ["-v", *agent, "ping", "-v"]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (0, "ok\n")
    assert "-> guest-ping {}" in err  # -vv: the traffic
    assert run(capsys, *agent, "ping") == (0, "ok\n", "")


def test_every_command_takes_v_after_its_name():
    import click

    from gagent.host.cli import SUBCOMMANDS, load_subcommand

    def leaves(command, path):
        subs = getattr(command, "commands", {})
        if not subs:
            yield path, command
        for name, sub in subs.items():
            yield from leaves(sub, [*path, name])

    lacking = [
        " ".join(path)
        for name in SUBCOMMANDS
        for path, command in leaves(load_subcommand(name), [name])
        if not any("--verbose" in p.opts for p in command.params if isinstance(p, click.Option))
    ]
    assert lacking == []


def test_connect_and_timeout_after_an_agent_command(capsys, agent):
    code, _, err = run(capsys, "agent", "test", "ping", "-c", URI)
    assert code == 3 and "domain test has no agent channel" in err  # test:///default's domain
    assert run(capsys, *agent, "ping", "--timeout", "5", "--json") == (0, "{}\n", "")
    code, _, err = run(capsys, *agent, "ping", "--timeout", "-1")
    assert code == 2 and "--timeout" in err


def test_vv_logs_a_refusal_before_sending(capsys, agent):
    """guest-fstrim is blocked: guest-info was asked (logged), fstrim never sent."""
    code, _, err = run(capsys, "-vv", *agent, "fstrim")
    assert code == 5
    assert "-> guest-info {}" in err
    assert "-> guest-fstrim" not in err


def test_passwords_are_redacted_and_long_strings_cut():
    arguments = {
        "username": "root",
        "password": "c2VjcmV0",
        "crypted": False,
        "nested": [{"new-password": "x"}],
        "buf-b64": "A" * 1000,
    }
    shown = redacted(arguments)
    assert shown["password"] == shown["nested"][0]["new-password"] == REDACTED
    assert (shown["username"], shown["crypted"]) == ("root", False)
    assert shown["buf-b64"] == "A" * 200 + "... (1000 chars)"
    assert "c2VjcmV0" not in repr(shown)


def test_connect_before_fills_a_repeatable_connect_as_one_value():
    """exporter's -c is repeatable (its parameter is ``connects``): -c before it is one URI."""
    from gagent.host.cli import load_subcommand
    from gagent.host.cli.options import _defaults_for

    defaults, taken = _defaults_for(load_subcommand("exporter"), {"connect": URI})
    assert (defaults, taken) == ({"connects": (URI,)}, {"connect"})
    defaults, taken = _defaults_for(load_subcommand("agent"), {"as_json": True})
    assert defaults["as_json"] is True and defaults["fsfreeze"]["status"] == {"as_json": True}


# ------------------------------------------------------------------ seconds


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize(
    "argv",
    [
        ["status", "test", "-c", URI, "--timeout"],
        ["agent", "--socket", "/nonexistent.sock", "ping", "--timeout"],
        ["fsfreeze", "status", "test", "-c", URI, "--timeout"],
        ["inventory", "list", "--busy-timeout"],
        ["exporter", "--check", "-c", URI, "--agent-timeout"],
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else a,
)
def test_a_number_of_seconds_must_be_finite(capsys, argv, value):
    if argv[0] == "agent":  # the agent's --timeout goes before its command
        argv = [*argv[:3], "--timeout", value, "ping"]
    else:
        argv = [*argv, value]
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{value!r} is not a finite number of seconds" in err or "not in the range" in err, err


def test_v_on_the_blocking_domain_route_says_what_it_reads(capsys):
    code, _, err = run(capsys, "-v", "agent", "test", "-c", URI, "ping")
    assert code == 3  # test:///default's domain has no agent channel
    assert f"gagent: INFO: gagent.sync_domain: reading domain test on {URI}\n" in err
    code, _, err = run(capsys, "agent", "test", "-c", URI, "ping")
    assert "INFO" not in err
