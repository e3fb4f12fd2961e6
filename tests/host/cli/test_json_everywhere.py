"""Every gagent command has ``--json``, before it (``gagent --json CMD``) and after it
(``gagent CMD --json``), and what it prints with it is JSON (or JSON lines), never the
literal ``null``.

The click tree is walked whole, the lazy subcommands loaded: a command added without
--json fails here, unless :data:`NO_JSON` names it with the reason.  A representative
run of each top-level command, against libvirt's test:///default, the test-driver hosts
of the migration tests and the real qemu-ga on this host (fixture), checks the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from gagent.host.cli import SUBCOMMANDS, cli, main

URI = "test:///default"
HOSTS = Path(__file__).parents[1] / "migration" / "hosts"

#: Commands that cannot print JSON, with the reason.  None today: shell completion is
#: click's own environment variable (_GAGENT_COMPLETE), not a command.
NO_JSON: dict[str, str] = {}


def leaves(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command that runs (not a group), by its words after ``gagent``."""
    if not isinstance(command, click.Group):
        return [path]
    ctx = click.Context(command)
    found = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)  # loads a lazy subcommand
        assert sub is not None, name
        found += leaves(sub, (*path, name))
    return found


def json_option(command: click.Command) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and "--json" in param.opts:
            return param
    return None


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None, path
        command = found
    return command


ALL = leaves(cli)


def test_the_walk_reaches_every_lazy_subcommand():
    assert {path[0] for path in ALL} == set(SUBCOMMANDS)
    assert ("agent", "ping") in ALL and ("snapshot", "group", "create") in ALL


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_every_command_has_json(path):
    option = json_option(command_at(path))
    words = " ".join(path)
    if words in NO_JSON:
        assert option is None, f"'gagent {words}' has --json now: drop it from NO_JSON"
        return
    assert option is not None, f"'gagent {words}' has no --json (or list it in NO_JSON)"
    assert option.is_flag, words


def test_no_json_names_only_commands_that_exist():
    assert set(NO_JSON) <= {" ".join(path) for path in ALL}


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_json_before_every_command_is_taken(capsys, name):
    """``gagent --json CMD`` is refused for a command that has no --json anywhere."""
    assert main(["--json", name, "--help"]) == 0
    assert capsys.readouterr().err == ""


def parsed(out: str) -> list[object]:
    """stdout as JSON: one document, or JSON lines; never the literal null."""
    assert out.strip() != "null"
    try:
        return [json.loads(out)] if out.strip() else []
    except ValueError:
        values = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert None not in values, out
        return values


@pytest.fixture
def places(qemu_ga, tmp_path, monkeypatch, capsys) -> dict[str, str]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # no inventory there
    inventory = tmp_path / "inventory.sqlite3"  # one guest stored: what list reads
    assert main(["inventory", "scan", "-w", URI, "--no-agent", "--db", str(inventory)]) == 0
    capsys.readouterr()  # the scan's own output is not the test's
    return {
        "inventory": str(inventory),
        "socket": str(qemu_ga.socket_path),
        "source": f"test://{HOSTS / 'source.xml'}",
        "dest": f"test://{HOSTS / 'dest.xml'}",
    }


def case(code: int, *argv: str) -> object:
    return pytest.param(list(argv), code, id=" ".join(argv))


#: A representative run of each top-level command: its exit code, its words.
RUNS = [
    case(0, "agent", "--socket", "{socket}", "ping"),
    case(0, "agent", "--socket", "{socket}", "info"),
    case(0, "agent", "--socket", "{socket}", "fsfreeze", "status"),
    case(0, "channel", "list", "test", "-c", URI),
    case(0, "channel", "add", "test", "--dry-run", "-c", URI),
    case(0, "config", "show"),
    case(0, "demo"),
    case(0, "exporter", "--check", "-c", URI),
    case(10, "fsfreeze", "check", "test", "-c", URI),  # no agent channel: a finding says so
    case(0, "inventory", "scan", URI, "--no-agent"),
    case(0, "inventory", "list", "--db", "{inventory}"),
    case(10, "migrate-check", "-c", "{source}", "web", "{dest}", "--no-plugins"),
    case(0, "snapshot", "list", "test", "-c", URI),
    case(0, "snapshot", "group", "list"),
    case(3, "status", "test", "-c", URI),  # no agent channel: a JSON status all the same
    case(0, "watch", "--for", "0.5", "-c", URI),  # JSON lines: none while nothing happens
]


def test_the_runs_cover_every_top_level_command_that_can_run_here():
    # thaw needs a reachable agent in a domain, migrate a destination to migrate to:
    # their --json is tested in test_freeze_cli.py and test_migrate_cli.py
    assert {run.values[0][0] for run in RUNS} == set(SUBCOMMANDS) - {"thaw", "migrate"}


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(("argv", "code"), RUNS)
def test_json_output_parses_and_is_never_null(capsys, places, argv, code, where):
    words = [word.format(**places) for word in argv]
    words = ["--json", *words] if where == "before" else [*words, "--json"]
    assert main(words) == code, capsys.readouterr().err
    out, err = capsys.readouterr()
    values = parsed(out)
    if argv[0] != "watch":  # a stream: JSON lines
        assert len(values) == 1, out
    for line in err.splitlines():  # what goes to stderr: progress events, or messages
        if line.startswith("{"):
            assert json.loads(line)["event"] == "progress"
