"""``gagent fsfreeze``, ``gagent snapshot`` and ``gagent thaw`` in-process through
gagent.host.cli.main, against libvirt's test driver (a domain whose channel is a
unix socket) and the freezable fake agent (tests/test_freeze.py) served on that
socket from a thread of its own.

The test driver cannot make disk-only snapshots: that is the "snapshot call
raising" case at the command line, with a real libvirt error.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from fakeagent import Default, Delay, Silence, fake_unix_socket
from test_freeze import FREEZE, HAPPY, INFO, STATUS, SYNC, THAW, FreezableFake

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.cli import cli, main
from gagent.host.cli.freeze import fsfreeze_group, snapshot_group, thaw_command


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The commands as the lead registers them in gagent.host.cli."""
    for command in (fsfreeze_group, snapshot_group, thaw_command):
        monkeypatch.setitem(cli.commands, command.name, command)


def node_xml(sock: Path, *, libvirt_channel: bool = False) -> str:
    theirs = (
        f"<channel type='unix'><source mode='bind'/>"
        f"<target type='virtio' name='{LIBVIRT_AGENT_CHANNEL}'/></channel>"
        if libvirt_channel
        else ""
    )
    return f"""<node><domain type='test'><name>vm1</name><memory>1048576</memory>
<os><type>hvm</type></os><devices>
<disk type='file' device='disk'><source file='/img/data.raw'/>
<target dev='vda' bus='virtio'/></disk>
<controller type='virtio-serial' index='0'/>
<channel type='unix'><source mode='bind' path='{sock}'/>
<target type='virtio' name='{GAGENT_CHANNEL}'/></channel>{theirs}
</devices></domain></node>"""


@contextlib.contextmanager
def served(fake: FreezableFake, tmp_path: Path, **kwargs) -> Iterator[str]:
    """Serve ``fake`` on a socket from another thread; yield a test-driver URI."""
    sock = tmp_path / "a.sock"
    node = tmp_path / "node.xml"
    node.write_text(node_xml(sock, **kwargs))
    with serving({sock: fake}):
        yield f"test://{node}"


@contextlib.contextmanager
def serving(fakes: dict[Path, FreezableFake]) -> Iterator[None]:
    """Serve each fake on its socket from a thread of their own, for the block."""
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for sock, fake in fakes.items():
                await stack.enter_async_context(fake_unix_socket(fake, sock))
            ready.set()
            await trio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


#: The fake agent serves no guest files: each freeze says once that the guest's
#: dead-man's deadline could not be read (tests/host/test_freeze_findings.py holds that line).
UNREAD_DEADLINE = "gagent: warning: could not read vm1's freeze dead-man's deadline"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = err.splitlines(keepends=True)
    return code, out, "".join(line for line in lines if not line.startswith(UNREAD_DEADLINE))


def test_fsfreeze_freeze_status_thaw(capsys, tmp_path):
    fake = FreezableFake()
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "fsfreeze", "freeze", "vm1", "-c", uri)
        assert (code, err) == (0, "")
        assert "froze 2 filesystem(s) of vm1; they stay frozen until" in out
        assert fake.state == "frozen"
        assert run(capsys, "fsfreeze", "status", "vm1", "-c", uri)[:2] == (0, "vm1: frozen\n")
        code, out, err = run(capsys, "fsfreeze", "thaw", "vm1", "-c", uri, "--json")
        assert (code, err) == (0, "")
        assert '"thawed": 2' in out and '"confirmed": true' in out
    assert fake.state == "thawed"
    assert fake.commands == [SYNC, INFO, FREEZE, SYNC, STATUS, SYNC, THAW, STATUS]


def test_fsfreeze_freeze_of_nothing_fails_thawed(capsys, tmp_path):
    fake = FreezableFake(filesystems=0)
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "fsfreeze", "freeze", "vm1", "-c", uri)
    assert code == 1 and out == ""
    assert err.startswith("gagent: error: the freeze of vm1 froze 0 filesystems")
    assert fake.commands == HAPPY and fake.state == "thawed"


@contextlib.contextmanager
def signal_when(fake: FreezableFake, command: str, *signums: signal.Signals) -> Iterator[None]:
    """Raise each signal once ``fake`` has received ``command`` (0.2 s apart): tied to what the
    command is doing, not to a clock, so a busy machine cannot move the signal elsewhere."""
    stop = threading.Event()

    def watch() -> None:
        while command not in fake.commands:
            if stop.wait(0.01):
                return
        for signum in signums:
            if stop.wait(0.2):
                return
            signal.raise_signal(signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
@pytest.mark.parametrize("command", [("fsfreeze", "freeze"), ("snapshot", "create")])
def test_a_stop_signal_during_the_freeze_still_thaws(capsys, tmp_path, signum, code, command):
    # Ctrl-C, systemd's SIGTERM, a dropped ssh session's SIGHUP, timeout(1): all the same
    fake = FreezableFake().on(FREEZE, Delay(1.5))
    words = [*command, "vm1", *(["s1"] if command[0] == "snapshot" else [])]
    with served(fake, tmp_path) as uri, signal_when(fake, FREEZE, signum):
        got, _out, err = run(capsys, *words, "-c", uri)
    assert (got, err) == (code, f"gagent: interrupted by {signal.Signals(signum).name}\n")
    # the thaw waited (shielded) behind the slow freeze, then confirmed
    assert fake.commands[-4:] == [FREEZE, SYNC, THAW, STATUS]
    assert fake.state == "thawed"


def test_a_second_signal_does_not_skip_the_thaw(capsys, tmp_path):
    fake = FreezableFake().on(FREEZE, Delay(1.5))
    with (
        served(fake, tmp_path) as uri,
        signal_when(fake, FREEZE, signal.SIGTERM, signal.SIGINT),
    ):
        code, _out, err = run(capsys, "fsfreeze", "freeze", "vm1", "-c", uri)
    assert code == 143
    assert err.splitlines()[-1] == "gagent: interrupted by SIGTERM"
    assert "still finishing" in err
    assert fake.commands[-4:] == [FREEZE, SYNC, THAW, STATUS] and fake.state == "thawed"


def test_unconfirmed_thaw_is_loud(capsys, tmp_path):
    fake = FreezableFake().set_default(THAW, Silence())
    with served(fake, tmp_path) as uri:
        code, out, err = run(
            capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--thaw-timeout", "0.6"
        )
        assert code == 9 and out == ""  # exit 9: the guest may still be frozen
        assert err.startswith("gagent: error: THE GUEST MAY STILL BE FROZEN")
        assert len(err.splitlines()) == 1
        # the advice names this domain on this connection, and it works
        advice = re.search(r"run '([^']+)' now", err)
        assert advice is not None, err
        argv = shlex.split(advice.group(1))
        assert argv[:3] == ["gagent", "thaw", "vm1"] and argv[3:5] == ["-c", uri]
        fake.set_default(THAW, Default())
        assert run(capsys, *argv[1:])[0] == 0
        assert fake.state == "thawed"


def test_snapshot_create_refused_by_libvirt_ends_thawed(capsys, tmp_path):
    fake = FreezableFake()
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "snapshot", "create", "vm1", "s1", "-c", uri)
        assert code == 8 and out == ""
        assert err.startswith("gagent: error: creating a snapshot of vm1: ")
        assert "unsupported flags" in err
        assert fake.commands == [SYNC, STATUS, INFO, FREEZE, THAW, STATUS]  # thaw-on-connect
        assert fake.state == "thawed"
        fake.requests.clear()
        code, _, _ = run(
            capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--no-thaw-on-connect"
        )
        assert code == 8 and fake.commands == HAPPY
        fake.requests.clear()
        code, _, err = run(capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--no-quiesce")
        assert code == 8 and fake.commands == []  # crash-consistent: no agent involved


def test_snapshot_list_and_delete(capsys, tmp_path):
    with served(FreezableFake(), tmp_path) as uri:
        assert run(capsys, "snapshot", "list", "vm1", "-c", uri) == (0, "(no snapshots)\n", "")
        assert run(capsys, "snapshot", "list", "vm1", "-c", uri, "--json")[1] == "[]\n"
        code, _out, err = run(capsys, "snapshot", "delete", "vm1", "nope", "-c", uri)
    assert code == 8 and "deleting snapshot nope of vm1" in err


def test_emergency_thaw(capsys, tmp_path):
    fake = FreezableFake()
    fake.state, fake._held = "frozen", 2
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "thaw", "vm1", "-c", uri)
    assert (code, err) == (0, "")
    assert out.startswith("domain vm1 via ") and out.endswith("thawed 2 filesystem(s), confirmed\n")
    assert fake.commands == [SYNC, THAW, STATUS] and fake.state == "thawed"


def test_emergency_thaw_reports_each_agent(capsys, tmp_path):
    fake = FreezableFake()
    with served(fake, tmp_path, libvirt_channel=True) as uri:
        code, out, err = run(capsys, "thaw", "vm1", "-c", uri)
    # the test driver has no qemuAgentCommand: libvirt's agent cannot be reached
    assert code == 9  # as documented in 'gagent thaw --help'
    lines = out.splitlines()
    assert lines[0].endswith("thawed 0 filesystem(s), confirmed")
    assert "via libvirt" in lines[1] and "FAILED" in lines[1]
    assert err.startswith("gagent: error: THE GUEST MAY STILL BE FROZEN: could not confirm")
    assert f"run 'gagent thaw vm1 -c {uri}' now" in err


def test_agent_that_does_not_answer(capsys, tmp_path):
    fake = FreezableFake().set_default(SYNC, Silence())
    with served(fake, tmp_path) as uri:
        code, _out, err = run(capsys, "fsfreeze", "status", "vm1", "-c", uri, "--timeout", "0.5")
    assert code == 4  # --timeout is the command's deadline, as for 'gagent agent'
    assert err.startswith("gagent: error: timed out after 0.5s waiting for domain vm1")
    assert fake.commands == [SYNC]


def test_transport_libvirt_is_honoured(capsys, tmp_path):
    fake = FreezableFake()
    with served(fake, tmp_path, libvirt_channel=True) as uri:
        code, _, err = run(capsys, "fsfreeze", "status", "vm1", "-c", uri, "--transport", "libvirt")
    # the test driver has no qemuAgentCommand: the error proves the libvirt route was taken
    assert code != 0 and "virDomainQemuAgentCommand" in err
    assert fake.commands == []


@pytest.mark.parametrize("ending", ["deadline", "SIGTERM"])
@pytest.mark.parametrize("command", [("fsfreeze", "thaw"), ("thaw",)])
def test_an_unconfirmed_thaw_outranks_the_deadline_or_signal_that_ends_it(
    capsys, tmp_path, ending, command
):
    fake = FreezableFake().set_default(THAW, Silence())
    fake.state, fake._held = "frozen", 1
    # the deadline passes while the (shielded) thaw waits for its answer
    extra = ("--timeout", "2") if ending == "deadline" else ()
    signals = (signal.SIGTERM,) if ending == "SIGTERM" else ()
    with served(fake, tmp_path) as uri, signal_when(fake, THAW, *signals):
        code, out, err = run(capsys, *command, "vm1", "-c", uri, "--thaw-timeout", "4", *extra)
    assert (code, out) == (9, ""), err  # not 4 or 143: the guest may still be frozen
    (line,) = err.splitlines()
    assert line.startswith("gagent: error: THE GUEST MAY STILL BE FROZEN"), line
    assert f"run 'gagent thaw vm1 -c {uri}' now" in line
    assert THAW in fake.commands  # sent, never answered: nothing confirmed it


def test_thaw_never_falls_back_to_local_qemu_for_a_remote_uri(capsys):
    # nothing listens on port 1: libvirt cannot be reached, and it is another host's domain
    code, out, err = run(capsys, "thaw", "vm1", "-c", "qemu+tcp://127.0.0.2:1/system")
    assert (code, out) == (3, "")
    (line,) = err.splitlines()
    assert "a domain on another host can only be thawed through it or from that host" in line
    assert "QEMU pid" not in line


def test_thaw_with_no_local_daemon_looks_for_the_qemu_process(capsys, tmp_path):
    uri = f"qemu+unix:///system?socket={tmp_path}/no-libvirtd.sock"
    code, out, err = run(capsys, "thaw", "gagent-test-no-such-vm", "-c", uri)
    assert (code, out) == (3, "")
    (line,) = err.splitlines()
    assert line.startswith("gagent: error: libvirt cannot be reached (")
    assert "no running QEMU process of gagent-test-no-such-vm has a socket for channel" in line


def test_a_guest_found_frozen_is_exit_13_with_the_thaw(capsys, tmp_path):
    fake = FreezableFake()
    fake.state, fake._held = "frozen", 1  # left so by someone else
    with served(fake, tmp_path) as uri:
        code, out, err = run(capsys, "fsfreeze", "freeze", "vm1", "-c", uri)
    assert (code, out) == (13, ""), err  # as 'gagent --help' documents for a frozen guest
    assert f"'gagent thaw vm1 -c {uri}'" in err and len(err.splitlines()) == 1


def test_thaw_on_connect_keeps_to_thaw_timeout(capsys, tmp_path):
    fake = FreezableFake().set_default(THAW, Silence())
    fake.state, fake._held = "frozen", 1
    with served(fake, tmp_path) as uri:
        code, _out, err = run(
            capsys, "snapshot", "create", "vm1", "s1", "-c", uri, "--thaw-timeout", "0.6"
        )
    assert code == 9, err
    assert "the thaw deadline of 0.6s passed" in err
