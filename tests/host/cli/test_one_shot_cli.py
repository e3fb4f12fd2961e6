"""A one-shot ``gagent agent --socket S COMMAND`` is cheap: it imports only what it uses.

The simple commands run on gagent.sync's blocking client (no trio), the
subcommands load lazily (``gagent --help`` imports no command module), and the
behaviour stays the trio path's: the deadline, the signals and their exit codes.
Against the real qemu-ga on this host (fixture) and sockets that never answer.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gagent.host.cli import SUBCOMMANDS, cli, load_subcommand, main

TIMEOUT = 60  # for subprocesses
HEAVY = ("trio", "lxml", "libvirt")

#: Runs gagent's main as the entry point does, then prints which heavy packages
#: got imported (as JSON, on a line of its own after the command's output).
WRAPPER = """
import sys
from gagent.host.cli import main
sys.argv = ["gagent", *sys.argv[1:]]
try:
    code = main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"trio", "lxml", "libvirt"})
print("\\nIMPORTED " + __import__("json").dumps(heavy))
sys.exit(code)
"""


def imported_by(*argv: str) -> tuple[int, str, list[str]]:
    """(exit code, output, heavy packages imported) of ``gagent ARGV`` in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, timeout=TIMEOUT
    )
    output, _, imported = proc.stdout.rpartition("\nIMPORTED ")
    assert imported, f"no report from the wrapper; stderr: {proc.stderr}"
    return proc.returncode, output + proc.stderr, json.loads(imported)


@pytest.mark.parametrize(
    "argv",
    [
        ["ping"],
        ["--json", "ping"],
        ["info"],
        ["osinfo"],
        ["call", "guest-get-time"],
        ["call", '{"execute": "guest-get-time"}'],
        ["fsfreeze", "status"],
        ["timezone"],
        ["vcpus"],
    ],
)
def test_simple_commands_on_a_socket_import_no_trio_lxml_libvirt(qemu_ga, argv):
    code, output, imported = imported_by("agent", "--socket", str(qemu_ga.socket_path), *argv)
    assert code == 0, output
    assert imported == []


@pytest.mark.parametrize("before", [["-vv"], ["--json"], ["-c", "test:///default"]])
def test_options_before_the_command_import_no_trio_lxml_libvirt(qemu_ga, before):
    code, output, imported = imported_by(*before, "agent", "--socket", str(qemu_ga.socket_path),
                                         "ping", "--json")  # fmt: skip
    assert code == 0, output
    assert imported == []


@pytest.fixture
def node_uri(qemu_ga, tmp_path: Path) -> str:
    """A test-driver node file (one process's hypervisor) with domain ``one``, whose
    gagent channel is the real qemu-ga's socket."""
    node = tmp_path / "node.xml"
    node.write_text(
        "<node><domain type='test'><name>one</name><memory unit='KiB'>65536</memory>"
        "<os><type>hvm</type></os><devices><channel type='unix'>"
        f"<source mode='bind' path='{qemu_ga.socket_path}'/>"
        "<target type='virtio' name='org.gagent.agent.0'/></channel></devices></domain></node>"
    )
    return f"test://{node}"


@pytest.mark.parametrize(
    "argv", [["ping"], ["--json", "info"], ["fsfreeze", "status"], ["timezone"]]
)
def test_simple_commands_on_a_domain_import_no_trio(node_uri, argv):
    """DOMAIN's route is the blocking one too: libvirt and the XML parser, never trio."""
    code, output, imported = imported_by("agent", "one", "-c", node_uri, *argv)
    assert code == 0, output
    assert imported == ["libvirt", "lxml"]


def test_a_missing_domain_on_the_blocking_route_names_it_and_the_uri(node_uri):
    code, output, imported = imported_by("agent", "nosuch", "-c", node_uri, "ping")
    assert code == 8, output  # a libvirt/host error, as on the trio route
    [line] = output.strip().splitlines()
    assert "nosuch" in line and node_uri in line, line
    assert "trio" not in imported


@pytest.mark.parametrize("argv", [["--help"], ["agent", "--help"], []])
def test_help_imports_no_trio_lxml_libvirt(argv):
    code, output, imported = imported_by(*argv)
    assert code == (2 if not argv else 0), output
    assert "Commands:" in output
    assert imported == []


def test_the_import_check_sees_trio_where_a_command_needs_it():
    """The control: a command whose module runs trio shows up as importing it."""
    code, output, imported = imported_by("status", "--help")
    assert code == 0, output
    assert "trio" in imported


def test_listed_short_help_is_each_commands_own():
    """``gagent --help`` lists SUBCOMMANDS' texts without importing: they must not drift."""
    ctx = click.Context(cli)
    assert sorted(SUBCOMMANDS) == cli.list_commands(ctx)
    for name, (_, short) in SUBCOMMANDS.items():
        command = load_subcommand(name)
        assert command.name == name
        assert command.get_short_help_str(10**6) == short, name


def test_copy_to_help_names_the_default_mode_of_transfer():
    from gagent.transfer import DEFAULT_MODE

    ctx = click.Context(cli)
    copy_to = cli.get_command(ctx, "agent").commands["copy-to"]  # type: ignore[union-attr]
    mode = next(p for p in copy_to.params if p.name == "mode_text")
    assert f"(default {DEFAULT_MODE:04o})" in mode.help


@pytest.fixture
def silent(tmp_path) -> socket.socket:
    """A unix socket that takes connections (in its backlog) and never answers."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "silent.sock"))
    server.listen(4)
    yield server
    server.close()


def test_timeout_is_the_commands_deadline(capsys, silent):
    path = silent.getsockname()
    code = main(["agent", "--socket", path, "--timeout", "0.3", "ping"])
    out, err = capsys.readouterr()
    assert (code, out) == (4, "")
    assert err.splitlines() == [
        f"gagent: error: timed out after 0.3s waiting for {path}: still waiting for the reply "
        f"of {path} to guest-sync-delimited (is the agent in the guest answering? raise "
        "--timeout if it is only slow)"
    ]


def test_unreachable_socket_is_exit_3(capsys, tmp_path):
    code = main(["agent", "--socket", str(tmp_path / "none.sock"), "ping"])
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    assert err.startswith(f"gagent: error: no agent socket at {tmp_path / 'none.sock'}")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
)
def test_a_stop_signal_ends_a_waiting_command_with_its_code(silent, signum, code):
    """Waiting for an agent that never answers (no deadline), a signal ends it as on the trio
    path: one line naming the signal, exit 128 + its number."""
    gagent = Path(sys.executable).with_name("gagent")
    path = silent.getsockname()
    proc = subprocess.Popen(
        [str(gagent), "agent", "--socket", path, "--timeout", "0", "ping"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        silent.settimeout(TIMEOUT)
        peer, _ = silent.accept()
        with peer:
            peer.settimeout(TIMEOUT)
            assert b"guest-sync-delimited" in peer.recv(4096)  # it now waits for the reply
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (code, "")
    assert err.splitlines() == [f"gagent: interrupted by {signal.Signals(signum).name}"]


def test_a_timeout_of_the_blocking_client_is_exit_4():
    """Should gagent.sync's own AgentTimeout ever reach main, it is a timeout (4), not 1."""
    from gagent.host.cli import exit_code_for
    from gagent.sync import AgentTimeout

    assert exit_code_for(AgentTimeout("no answer")) == 4
