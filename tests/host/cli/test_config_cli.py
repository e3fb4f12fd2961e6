"""gagent's configuration file (host/cli/config.py): which file is read, what it fills,
what wins over it, its errors, and ``gagent config show``; against libvirt's test driver."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gagent.host.cli import SUBCOMMANDS, load_subcommand, main
from gagent.host.cli import config as config_module

URI = "test:///default"
MISSING_URI = "test:///no/such/node.xml"


@pytest.fixture(autouse=True)
def no_outside_config(monkeypatch, tmp_path):
    """No file of this machine is read: $XDG_CONFIG_HOME and the system file are the test's."""
    monkeypatch.delenv("GAGENT_CONFIG", raising=False)
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(config_module, "SYSTEM_CONFIG", tmp_path / "etc" / "config.toml")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def config(monkeypatch, tmp_path):
    """Writes TEXT to a file and names it in $GAGENT_CONFIG."""

    def make(text: str) -> Path:
        path = write(tmp_path / "named.toml", text)
        monkeypatch.setenv("GAGENT_CONFIG", str(path))
        return path

    return make


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def help_default(capsys, *command: str, option: str) -> str:
    """The [default: ...] that ``--help`` of COMMAND shows for OPTION."""
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    flat = " ".join(out.split())
    found = re.search(re.escape(option) + r" [^\[]*\[default: ([^;\]]+)", flat)
    assert found, flat
    return found.group(1)


def shown(capsys, *before: str) -> dict:
    code, out, err = run(capsys, *before, "config", "show", "--json")
    assert code == 0, err
    return json.loads(out)["settings"]


# ------------------------------------------------------------------ what it fills


def test_the_files_uri_is_used_and_a_flag_wins(capsys, config):
    config(f'connect = "{URI}"\n')
    code, out, _ = run(capsys, "status", "test")
    assert code == 3  # the test domain, reached on the file's URI: running, no agent channel
    assert out.startswith("test: running")
    code, _, err = run(capsys, "status", "test", "-c", MISSING_URI)
    assert code == 8, err
    assert run(capsys, "-c", MISSING_URI, "status", "test")[0] == 8


def test_libvirt_default_uri_wins_over_the_file(capsys, config, monkeypatch):
    config(f'connect = "{URI}"\n')
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", MISSING_URI)
    assert run(capsys, "status", "test")[0] == 8
    assert shown(capsys)["connect"] == {"value": MISSING_URI, "source": "env LIBVIRT_DEFAULT_URI"}


def test_timeouts_group_over_default_flag_over_both(capsys, config):
    config("[timeout]\ndefault = 7\nsnapshot = 600\n")
    assert help_default(capsys, "status", option="--timeout") == "7.0"
    assert help_default(capsys, "snapshot", "create", option="--timeout") == "600.0"
    assert help_default(capsys, "snapshot", "group", "delete", option="--timeout") == "600.0"
    assert help_default(capsys, "fsfreeze", "thaw", option="--timeout") == "7.0"
    config("timeout = 0\n")  # a number alone is the default of every command
    assert help_default(capsys, "channel", "add", option="--timeout") == "0.0"


def test_channel_name_reaches_channel_add_and_thaw(capsys, config):
    config('channel = "org.example.agent.0"\n')
    code, out, err = run(capsys, "channel", "add", "test", "-c", URI, "--dry-run")
    assert code == 0, err
    assert "name='org.example.agent.0'" in out
    code, out, _ = run(capsys, "channel", "add", "test", "-c", URI, "--dry-run", "--name", "x.y.0")
    assert "name='x.y.0'" in out and "org.example.agent.0" not in out
    assert help_default(capsys, "thaw", option="--channel") == "org.example.agent.0"


#: Every command that reaches a domain's agent, with the arguments to reach 'test'.
AGENT_COMMANDS = [
    ("status", "test"), ("fsfreeze", "status", "test"), ("fsfreeze", "thaw", "test"),
    ("fsfreeze", "freeze", "test"), ("fsfreeze", "check", "test"),
    ("snapshot", "create", "test", "s1"), ("agent", "test", "ping"),
]  # fmt: skip


@pytest.mark.parametrize("argv", AGENT_COMMANDS, ids=" ".join)
def test_the_files_channel_reaches_every_command_that_finds_an_agent(capsys, config, argv):
    config(f'connect = "{URI}"\nchannel = "org.example.agent.0"\n')
    code, out, err = run(capsys, *argv)
    said = out + err
    assert code != 0
    # the test domain has no such channel: the line names it, and the fix adds that one
    assert "org.example.agent.0" in said, said
    assert f"gagent channel add test -c {URI} --name org.example.agent.0" in said, said
    flag = ["--channel", "org.other.agent.0"]
    # agent's options come before its command (ping), the others' anywhere
    given = [*argv[:2], *flag, *argv[2:]] if argv[0] == "agent" else [*argv, *flag]
    code, out, err = run(capsys, *given)
    assert "org.other.agent.0" in out + err and "org.example.agent.0" not in out + err


@pytest.mark.parametrize(
    "command",
    [("snapshot", "group", "create"), ("exporter",), ("migrate-check",), ("migrate",)],
    ids=" ".join,
)
def test_the_files_channel_is_the_default_of_every_channel_option(capsys, config, command):
    config(f'connect = "{URI}"\nchannel = "org.example.agent.0"\n')
    assert help_default(capsys, *command, option="--channel") == "org.example.agent.0"


def test_the_files_channel_reaches_the_inventory_scan(capsys, config):
    config('channel = "org.example.agent.0"\n')
    code, out, err = run(capsys, "inventory", "scan", URI, "--json")
    assert code == 0, err
    (guest,) = json.loads(out)["guests"]
    assert guest["agent_status"] == "unavailable"
    assert "org.example.agent.0" in guest["agent_error"]


def test_inventory_bounds_from_the_file_and_a_flag_over_them(capsys, config, tmp_path):
    config("[inventory]\nagent-timeout = 2.5\nhost-timeout = 7\nbusy-timeout = 0\n")
    assert help_default(capsys, "inventory", "scan", option="--agent-timeout") == "2.5"
    assert help_default(capsys, "inventory", "scan", option="--host-timeout") == "7.0"
    assert help_default(capsys, "inventory", "list", option="--busy-timeout") == "0.0"
    settings = shown(capsys)
    assert settings["inventory.agent-timeout"]["value"] == 2.5
    assert settings["inventory.host-timeout"]["source"] != "default"
    db = tmp_path / "inv.sqlite3"
    code, _, err = run(
        capsys, "inventory", "scan", URI, "-w", "--db", str(db), "--agent-timeout", "1"
    )
    assert code == 0, err


@pytest.mark.parametrize("help_flag", ["--help", "-h"])
def test_a_broken_file_does_not_stop_help(capsys, config, help_flag):
    path = config('bogus = "x"\n')
    for argv in (["status", help_flag], ["fsfreeze", "status", help_flag], [help_flag]):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        assert out.startswith("Usage: gagent"), out
        if argv != [help_flag]:  # gagent's own help reads no file
            known = "connect, channel, db, hosts-file, timeout, [inventory]"
            said = f"gagent: warning: {path}: unknown key 'bogus' (known: {known})"
            assert err == said + " (ignored for --help)\n"
    code, out, err = run(capsys, "status", "test", "--", help_flag)
    assert code == 2 and "unknown key 'bogus'" in err  # '--help' after '--' is a word, not help


def test_db_and_hosts_file_for_the_inventory(capsys, config, tmp_path):
    hosts = write(tmp_path / "hosts", f"node {URI}\n")
    db = tmp_path / "inventory.sqlite3"
    config(f'db = "{db}"\nhosts-file = "{hosts}"\n')
    code, _, err = run(capsys, "inventory", "scan", "-w")
    assert code == 0, err
    assert db.exists()
    code, out, _ = run(capsys, "inventory", "list", "--json")
    assert code == 0
    assert [guest["name"] for guest in json.loads(out)] == ["test"]


def test_the_users_file_overrides_the_systems_key_by_key(capsys, tmp_path):
    write(config_module.SYSTEM_CONFIG, f'connect = "{MISSING_URI}"\nchannel = "sys.agent.0"\n')
    user = write(tmp_path / "xdg" / "gagent" / "config.toml", f'connect = "{URI}"\n')
    settings = shown(capsys)
    assert settings["connect"] == {"value": URI, "source": str(user)}
    assert settings["channel"] == {
        "value": "sys.agent.0",
        "source": str(config_module.SYSTEM_CONFIG),
    }
    assert run(capsys, "status", "test")[0] == 3  # the user's URI


def test_gagent_config_names_the_only_file_read(capsys, config, tmp_path):
    write(tmp_path / "xdg" / "gagent" / "config.toml", 'channel = "user.agent.0"\n')
    named = config(f'connect = "{URI}"\n')
    settings = shown(capsys)
    assert settings["channel"]["source"] == "default"
    assert settings["connect"]["source"] == str(named)


# ------------------------------------------------------------------ config show


def test_config_show_names_each_source(capsys, config):
    named = config('db = "~/inv.sqlite3"\n')
    settings = shown(capsys, "-c", URI)
    assert settings["connect"] == {"value": URI, "source": "flag"}
    assert settings["db"] == {
        "value": str(Path("~/inv.sqlite3").expanduser()),
        "source": str(named),
    }
    assert settings["timeout.default"]["source"] == "default"
    assert shown(capsys)["connect"]["source"] == "default"
    code, out, _ = run(capsys, "config", "show")
    assert code == 0
    assert re.search(r"^db +\S+inv\.sqlite3 +" + re.escape(str(named)) + "$", out, re.M), out
    assert f"files: {named} (read)" in out


def test_config_show_with_no_file(capsys):
    code, out, err = run(capsys, "config", "show")
    assert (code, err) == (0, "")
    assert "(absent)" in out and "connect" in out


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('uri = "qemu:///system"\n', "unknown key 'uri'"),
        ("connect = 3\n", "connect must be a non-empty string, not 3"),
        ("[timeout]\nsnapshots = 5\n", "unknown key 'timeout.snapshots'"),
        ('[timeout]\ndefault = "ten"\n', "timeout.default must be a number of seconds"),
        ("timeout = -1\n", "timeout.default must be a number of seconds >= 0"),
        ("connect = \n", "not valid TOML"),
        (
            "[inventory]\nagent-timeout = 0\n",
            "inventory.agent-timeout must be a number of seconds > 0",
        ),
        ("[inventory]\nscan-timeout = 5\n", "unknown key 'inventory.scan-timeout'"),
        ("inventory = 5\n", "inventory must be a table"),
        ("timeout = nan\n", "timeout.default must be a number of seconds >= 0"),
        ("[timeout]\nagent = inf\n", "timeout.agent must be a number of seconds >= 0"),
        ("[inventory]\nhost-timeout = inf\n", "inventory.host-timeout must be a number of sec"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_key(capsys, config, text, says):
    path = config(text)
    for argv in (["status", "test"], ["config", "show"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "")
        assert err.startswith(f"gagent: error: {path}: ") and says in err, err
        assert err.count("\n") == 1


def test_a_file_that_is_not_utf8_is_one_line_and_help_still_works(capsys, monkeypatch, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"\xff\xfeconnect = 'x'\n")
    monkeypatch.setenv("GAGENT_CONFIG", str(path))
    code, out, err = run(capsys, "status", "test")
    assert (code, out) == (2, "")
    assert (
        err.startswith(f"gagent: error: {path}: not valid TOML: not UTF-8 text")
        and err.count("\n") == 1
    )
    code, out, err = run(capsys, "status", "--help")
    assert code == 0 and out.startswith("Usage: gagent status")
    assert "not UTF-8 text" in err and "(ignored for --help)" in err


def test_a_named_file_that_does_not_exist(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GAGENT_CONFIG", str(tmp_path / "nothing.toml"))
    code, _, err = run(capsys, "config", "show")
    assert code == 2
    assert "GAGENT_CONFIG names" in err and "nothing.toml" in err


def test_every_timeout_group_has_a_timeout_option():
    def has_timeout(command: click.Command) -> bool:
        own = any("--timeout" in getattr(p, "opts", ()) for p in command.params)
        return own or any(has_timeout(c) for c in getattr(command, "commands", {}).values())

    for name in config_module.TIMEOUT_GROUPS:
        assert name in SUBCOMMANDS
        assert has_timeout(load_subcommand(name)), name
    untimed = [n for n in SUBCOMMANDS if n not in config_module.TIMEOUT_GROUPS]
    assert not [n for n in untimed if has_timeout(load_subcommand(n))]


# ------------------------------------------------------------------ one-shot hygiene

#: gagent's main in a fresh interpreter, then which of these modules it imported.
WRAPPER = """
import sys
from gagent.host.cli import main
code = main(sys.argv[1:])
print("\\nIMPORTED " + " ".join(sorted({m for m in sys.modules} & {"tomllib", "trio", "lxml"})))
sys.exit(code)
"""


def imported_by(env: dict[str, str], *argv: str) -> tuple[int, str, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, timeout=60,
        env={**os.environ, **env},
    )  # fmt: skip
    output, _, imported = proc.stdout.rpartition("\nIMPORTED ")
    assert imported, proc.stderr
    return proc.returncode, output + proc.stderr, set(imported.split())


def test_a_one_shot_command_reads_a_config_file_only_when_there_is_one(qemu_ga, tmp_path):
    argv = ["agent", "--socket", str(qemu_ga.socket_path), "ping"]
    none = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "GAGENT_CONFIG": ""}
    if config_module.SYSTEM_CONFIG.exists():
        pytest.skip(f"{config_module.SYSTEM_CONFIG} exists on this machine")
    code, output, imported = imported_by(none, *argv)
    assert (code, imported) == (0, set()), output
    named = write(tmp_path / "c.toml", "[timeout]\nagent = 20\n")
    code, output, imported = imported_by({"GAGENT_CONFIG": str(named)}, *argv)
    assert (code, imported) == (0, {"tomllib"}), output  # read, and still no trio or lxml


def test_the_readmes_example_is_a_valid_file(capsys, config):
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    path = config(example)
    settings = shown(capsys)
    assert {key for key, s in settings.items() if s["source"] == str(path)} == {
        "connect", "channel", "db", "hosts-file", "timeout.default", "timeout.snapshot",
        "inventory.agent-timeout", "inventory.host-timeout", "inventory.busy-timeout",
    }  # fmt: skip
