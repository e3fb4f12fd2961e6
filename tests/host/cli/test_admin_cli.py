"""``gagent agent passwd|fstrim|timezone|vcpus|shutdown|reboot|halt`` and ``call REQUEST``,
against the real qemu-ga on this host (fixture: every RPC that would change the host,
set-user-password, fstrim, set-vcpus and shutdown among them, is blocked, so those end
"disabled" here; tests/e2e/test_e2e_admin.py runs them in a real guest), and on a
terminal (a pseudo-terminal) for the password prompt and the confirmation."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gagent.errors import UsageError
from gagent.host.cli import main
from gagent.host.cli.admin import plan_vcpus
from gagent.hw_types import VCpu

GAGENT = Path(sys.executable).with_name("gagent")
TIMEOUT = 60  # for subprocesses
SECRET = "s3cret-Pa55 with spaces"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(err: str) -> str:
    [line] = err.splitlines()
    assert line.startswith("gagent: error: "), line
    return line


@pytest.fixture
def agent(qemu_ga) -> list[str]:
    return ["agent", "--socket", str(qemu_ga.socket_path)]


# ------------------------------------------------------------- read-only ones


def test_timezone_is_the_agents_answer(capsys, agent):
    code, out, err = run(capsys, *agent, "--json", "call", "guest-get-timezone")
    assert (code, err) == (0, "")
    raw = json.loads(out)
    code, out, err = run(capsys, *agent, "--json", "timezone")
    assert (code, err) == (0, "")
    assert json.loads(out) == raw
    code, out, err = run(capsys, *agent, "timezone")
    assert (code, err) == (0, "")
    hours, seconds = divmod(abs(raw["offset"]), 3600)
    sign = "-" if raw["offset"] < 0 else "+"
    assert out == f"{raw.get('zone', '(unnamed)')} (UTC{sign}{hours:02d}:{seconds // 60:02d})\n"


def _host_cpus() -> int:
    return len(glob.glob("/sys/devices/system/cpu/cpu[0-9]*"))


def test_vcpus_lists_each_cpu_once(capsys, agent):
    code, out, err = run(capsys, *agent, "--json", "vcpus")
    assert (code, err) == (0, "")
    cpus = json.loads(out)
    assert sorted(c["logical_id"] for c in cpus) == list(range(_host_cpus()))
    code, out, err = run(capsys, *agent, "vcpus")
    assert code == 0
    online = sum(c["online"] for c in cpus)
    assert out.splitlines()[0].split() == ["vcpu", "state", "can", "go", "offline"]
    assert out.splitlines()[-1] == f"{online} of {len(cpus)} online"


def test_vcpus_set_to_what_is_online_sends_no_change(capsys, agent):
    """guest-set-vcpus is blocked here: a change sent would end 'disabled' (exit 5)."""
    code, out, _ = run(capsys, *agent, "--json", "vcpus")
    online = sum(c["online"] for c in json.loads(out))
    code, out, err = run(capsys, *agent, "--json", "vcpus", "--set", str(online))
    assert (code, err) == (0, "")
    assert sum(c["online"] for c in json.loads(out)) == online


def test_vcpus_set_reaches_guest_set_vcpus(capsys, agent):
    if _host_cpus() < 2:
        pytest.skip("one CPU: nothing to take offline")
    code, out, err = run(capsys, *agent, "vcpus", "--set", "1")
    assert (code, out) == (5, "")
    assert "guest-set-vcpus: disabled" in one_error(err)


def test_vcpus_set_more_than_the_guest_has_names_virsh_setvcpus(capsys, qemu_ga):
    count = _host_cpus() + 1
    code, out, err = run(
        capsys, "agent", "--socket", str(qemu_ga.socket_path), "vcpus", "--set", str(count)
    )
    assert (code, out) == (2, "")
    assert f"virsh setvcpus DOMAIN {count} --live" in one_error(err)


def _cpu(logical_id: int, online: bool = True, can_offline: bool | None = True) -> VCpu:
    return VCpu(logical_id=logical_id, online=online, can_offline=can_offline)


@pytest.mark.parametrize(
    ("current", "online", "changes"),
    [
        # cpu0 cannot go offline: the others go first, highest ids first
        ([_cpu(0, can_offline=False), _cpu(1), _cpu(2), _cpu(3)], 2, [(2, False), (3, False)]),
        # those online stay online (fewest changes), even with higher ids
        ([_cpu(0, can_offline=False), _cpu(1, online=False), _cpu(2)], 2, []),
        (
            [_cpu(0, can_offline=False), _cpu(1, online=False), _cpu(2, online=False)],
            3,
            [(1, True), (2, True)],
        ),
        # qemu-ga lists them in any order; the changes come by id
        (
            [_cpu(3), _cpu(1), _cpu(0, can_offline=False), _cpu(2)],
            1,
            [(1, False), (2, False), (3, False)],
        ),
    ],
)
def test_plan_vcpus_makes_the_fewest_changes(current, online, changes):
    planned = plan_vcpus(current, online, grow="virsh setvcpus vm 9 --live")
    assert [(c.logical_id, c.online) for c in planned] == changes


def test_plan_vcpus_refuses_what_cannot_be():
    pinned = [_cpu(0, can_offline=False), _cpu(1, can_offline=False), _cpu(2)]
    with pytest.raises(UsageError, match="2 of the guest's vCPUs cannot go offline"):
        plan_vcpus(pinned, 1, grow="-")
    with pytest.raises(UsageError, match=r"has 3 vCPUs, fewer than 4.*\(virsh setvcpus vm 4\)"):
        plan_vcpus(pinned, 4, grow="virsh setvcpus vm 4")


# ----------------------------------------------- changes the fixture blocks


@pytest.mark.parametrize(
    ("argv", "rpc"),
    [
        (["fstrim"], "guest-fstrim"),
        (["fstrim", "--minimum", "4096"], "guest-fstrim"),
        (["shutdown", "--yes"], "guest-shutdown"),
        (["reboot", "-y"], "guest-shutdown"),
        (["halt"], "guest-shutdown"),  # no terminal: no question
    ],
)
def test_changes_reach_their_rpc(capsys, agent, argv, rpc):
    code, out, err = run(capsys, *agent, *argv)
    assert (code, out) == (5, "")
    assert f"{rpc}: disabled in qemu-ga's configuration" in one_error(err)


def test_passwd_from_stdin_reaches_set_user_password_and_is_never_shown(capsys, agent, monkeypatch):
    monkeypatch.setattr("sys.stdin", _StdinText(SECRET + "\n"))
    code, out, err = run(capsys, *agent, "passwd", "nobody", "--password-stdin")
    assert (code, out) == (5, "")
    assert "guest-set-user-password: disabled" in one_error(err)
    assert SECRET not in err


class _StdinText:
    """Standard input that is not a terminal, holding ``text``."""

    def __init__(self, text: str):
        import io

        self._io = io.StringIO(text)
        self.readline, self.read = self._io.readline, self._io.read

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "an empty password would let anyone log in as nobody: give one"),
        ("\n", "an empty password would let anyone log in as nobody: give one"),
        ("one\ntwo\n", "--password-stdin takes one line (the password), not more"),
    ],
)
def test_passwd_from_stdin_refuses_what_is_not_one_password(
    capsys, agent, monkeypatch, stdin, message
):
    monkeypatch.setattr("sys.stdin", _StdinText(stdin))
    code, out, err = run(capsys, *agent, "passwd", "nobody", "--password-stdin")
    assert (code, out) == (2, "")
    assert one_error(err) == f"gagent: error: {message}"


def test_passwd_without_a_terminal_names_password_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", _StdinText(SECRET))
    code, out, err = run(capsys, "agent", "vm 1", "-c", "test:///default", "passwd", "nobody")
    assert (code, out) == (2, "")
    assert one_error(err) == (
        "gagent: error: no terminal to ask nobody's password on: give it on standard input: "
        "gagent agent 'vm 1' -c test:///default passwd nobody --password-stdin < FILE"
    )


def test_passwd_and_vcpus_set_change_one_domain_at_a_time(capsys):
    for argv in (["passwd", "root", "--password-stdin"], ["vcpus", "--set", "1"]):
        code, out, err = run(capsys, "agent", "--all", "-c", "test:///default", *argv)
        assert (code, out) == (2, "")
        assert "changes one guest at a time: give DOMAIN" in one_error(err)


def test_passwd_has_no_option_for_the_password_itself(capsys, agent):
    code, _, err = run(capsys, *agent, "passwd", "nobody", "--password", SECRET)
    assert code == 2
    assert "No such option '--password'" in one_error(err)
    assert SECRET not in err


# ------------------------------------------------------------ on a terminal


def on_a_terminal(argv: list[str], exchanges: list[tuple[str, bytes]]) -> tuple[int, str, bytes]:
    """Run gagent with a pseudo-terminal as stdin (in a session of its own, so that
    /dev/tty is not the test runner's); for each (prompt, answer), wait until stderr
    shows the prompt, then type the answer.  Returns (exit code, stderr, everything
    echoed on the terminal)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(GAGENT), *argv],
        stdin=secondary,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(secondary)
    err, echoed = b"", b""
    deadline = time.monotonic() + TIMEOUT
    try:
        assert proc.stderr is not None
        seen = 0  # stderr up to here showed the prompts already answered
        for prompt, answer in exchanges:
            while (found := err.find(prompt.encode(), seen)) < 0:
                ready, _, _ = select.select([proc.stderr], [], [], deadline - time.monotonic())
                assert ready, f"no prompt {prompt!r} within {TIMEOUT}s; stderr: {err!r}"
                chunk = os.read(proc.stderr.fileno(), 4096)
                assert chunk, f"gagent ended before prompting {prompt!r}; stderr: {err!r}"
                err += chunk
            seen = found + len(prompt)
            os.write(primary, answer)
        _, rest = proc.communicate(timeout=TIMEOUT)
        err += rest
        with contextlib.suppress(OSError):  # EIO: the terminal's other side is gone
            while ready := select.select([primary], [], [], 0)[0]:
                chunk = os.read(primary, 4096)
                if not chunk:
                    break
                echoed += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    return proc.returncode, err.decode(), echoed


def test_passwd_asks_twice_on_the_terminal_without_echo(qemu_ga):
    argv = ["agent", "--socket", str(qemu_ga.socket_path), "passwd", "nobody"]
    prompts = [f"New password for nobody in {qemu_ga.socket_path}: ", "Retype it: "]
    code, err, echoed = on_a_terminal(argv, [(p, SECRET.encode() + b"\n") for p in prompts])
    assert code == 5, err  # both the same: sent, and the fixture refuses it
    assert "guest-set-user-password: disabled" in err
    assert SECRET.encode() not in echoed
    assert SECRET not in err


def test_passwd_differing_twice_changes_nothing(tmp_path):
    argv = ["agent", "--socket", str(tmp_path / "none.sock"), "passwd", "nobody"]
    prompts = [f"New password for nobody in {tmp_path / 'none.sock'}: ", "Retype it: "]
    code, err, _ = on_a_terminal(argv, list(zip(prompts, [b"first\n", b"second\n"], strict=True)))
    assert code == 2, err  # refused before connecting (no socket there: that would be 3)
    assert err.endswith(
        "Retype it: \ngagent: error: the two passwords differ: nothing was changed, "
        "run passwd again\n"
    )


def test_shutdown_asks_on_a_terminal(tmp_path):
    argv = ["agent", "--socket", str(tmp_path / "none.sock"), "shutdown"]
    question = f"Power down {tmp_path / 'none.sock'}? [y/N]: "
    code, err, _ = on_a_terminal(argv, [(question, b"n\n")])
    assert code == 1, err  # answered no: never tried the socket (that would be 3)
    assert err == question + "gagent: nothing sent (answer y, or pass --yes)\n"
    code, err, _ = on_a_terminal(argv, [(question, b"y\n")])
    assert code == 3, err  # answered yes: went on to the agent
    code, err, _ = on_a_terminal([*argv, "--yes"], [])
    assert (code, "[y/N]" in err) == (3, False)


# --------------------------------------------------------------- call REQUEST


def test_call_takes_a_whole_request_as_virsh_does(capsys, agent):
    code, out, err = run(capsys, *agent, "--json", "call", "guest-get-vcpus", "{}")
    assert (code, err) == (0, "")
    expected = json.loads(out)
    request = '{"execute": "guest-get-vcpus", "arguments": {}}'
    code, out, err = run(capsys, *agent, "--json", "call", request)
    assert (code, err) == (0, "")
    assert json.loads(out) == expected
    code, out, err = run(capsys, *agent, "--json", "call", ' {"execute":"guest-get-vcpus"}')
    assert (code, json.loads(out)) == (0, expected)


PING = '{"execute": "guest-ping"'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([PING + ', "id": 1}'], 'a request has only "execute" and "arguments", not id'),
        ([PING + "}", "{}"], 'give the arguments inside the request\'s "arguments"'),
        (['{"arguments": {}}'], 'a request names its command: {"execute": "guest-ping"}'),
        ([PING + ', "arguments": [1]}'], '"arguments" must be a JSON object, not [1]'),
        (["{execute}"], "REQUEST is not valid JSON"),
    ],
)
def test_call_refuses_what_is_not_a_request(capsys, agent, argv, message):
    code, out, err = run(capsys, *agent, "call", *argv)
    assert (code, out) == (2, "")
    assert message in one_error(err)
