"""``gagent agent`` on a frozen guest: exit 13, one line naming the thaw, and the thaw
it names works.  The scripted fake agent (qemu-ga's freeze behaviour) is served on a
real unix socket from a thread of its own, since main() runs trio itself."""

from __future__ import annotations

import re
import shlex
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from fakeagent import FAKE_FILESYSTEMS, FakeAgent, fake_unix_socket

from gagent.host.cli import main

EXIT_GUEST_FROZEN = 13
EXIT_UNAVAILABLE = 5
EXTRA = {"guest-get-host-name": {"host-name": "fake-guest"}, "guest-get-time": 42,
         "guest-exec": {"pid": 7}}  # fmt: skip


@contextmanager
def serving(fake: FakeAgent, path: Path) -> Iterator[Path]:
    """``fake`` on a unix socket at ``path``, in its own thread and trio run."""
    started = threading.Event()
    running: dict[str, Any] = {}

    async def serve() -> None:
        with trio.CancelScope() as scope:
            running.update(scope=scope, token=trio.lowlevel.current_trio_token())
            async with fake_unix_socket(fake, path):
                started.set()
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert started.wait(10), "the fake agent did not start"
    try:
        yield path
    finally:
        trio.from_thread.run_sync(running["scope"].cancel, trio_token=running["token"])
        thread.join(10)


@pytest.fixture
def frozen_socket(tmp_path) -> Iterator[tuple[FakeAgent, Path]]:
    fake = FakeAgent(extra=EXTRA, frozen=True)
    with serving(fake, tmp_path / "frozen guest.sock") as path:
        yield fake, path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def frozen_line(err: str, path: Path) -> str:
    """The one error line, which must name the exact thaw for this socket."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gagent: error: the guest behind {path} is frozen ("), lines[0]
    thaw = shlex.join(["gagent", "agent", "--socket", str(path), "fsfreeze", "thaw"])
    assert lines[0].endswith(f": run '{thaw}'"), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "evidence"),
    [
        (["hostname"], "so guest-get-host-name was not sent"),
        (["time"], "so guest-get-time was not sent"),
        (["exec", "--", "/bin/true"], "so guest-exec was not sent"),
        (["call", "guest-get-time"], "so guest-get-time was not sent"),
        (["ping"], "its agent answers guest-ping but refuses other commands until thawed"),
        (["--json", "ping"], "its agent answers guest-ping"),
    ],
    ids=["hostname", "time", "exec", "call", "ping", "ping-json"],
)
def test_a_frozen_guest_exits_13_naming_the_thaw(capsys, frozen_socket, argv, evidence):
    fake, path = frozen_socket
    code, out, err = run(capsys, "agent", "--socket", str(path), *argv)
    line = frozen_line(err, path)
    assert (code, out) == (EXIT_GUEST_FROZEN, "")
    assert "guest-fsfreeze-status: frozen" in line and evidence in line
    assert fake.frozen  # nothing thawed behind the operator's back


def test_the_advised_thaw_works_and_the_guest_answers_again(capsys, frozen_socket):
    fake, path = frozen_socket
    code, _, err = run(capsys, "agent", "--socket", str(path), "hostname")
    assert code == EXIT_GUEST_FROZEN
    advised = re.fullmatch(r".*: run '(.*)'", frozen_line(err, path)).group(1)
    words = shlex.split(advised)
    assert words[0] == "gagent"
    assert run(capsys, *words[1:]) == (0, f"thawed {FAKE_FILESYSTEMS} filesystem(s)\n", "")
    assert not fake.frozen
    assert run(capsys, "agent", "--socket", str(path), "ping") == (0, "ok\n", "")
    assert run(capsys, "agent", "--socket", str(path), "hostname") == (0, "fake-guest\n", "")


def test_a_command_blocked_by_configuration_is_still_exit_5(capsys, tmp_path):
    fake = FakeAgent(extra=EXTRA, freezable=True, disabled={"guest-exec"})
    with serving(fake, tmp_path / "g.sock") as path:
        code, out, err = run(capsys, "agent", "--socket", str(path), "exec", "--", "/bin/true")
        assert run(capsys, "agent", "--socket", str(path), "ping") == (0, "ok\n", "")
    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert err.startswith("gagent: error: guest-exec: disabled in qemu-ga's configuration")
    assert "frozen" not in err and len(err.splitlines()) == 1
