"""host/cli/progress.py: one progress line (click's bar, human units, ETA, a final newline)
drawn only on a terminal, JSON lines instead with --json (rate-limited, the last state
always), and colour only on a terminal without NO_COLOR.  A pseudo-terminal stands for
the terminal; a pipe or a StringIO for everything else.
The CLI's copy is checked end to end in a subprocess whose stderr is a pty, against
the real qemu-ga on this host (fixture)."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gagent.host.cli.progress import JSON_PER_SECOND, Progress, colour_on, style

GAGENT = Path(sys.executable).with_name("gagent")
TIMEOUT = 60  # for subprocesses and reads


@pytest.fixture
def terminal():
    """(a text stream on a pty's terminal side, a function reading what reached it)."""
    leader, follower = pty.openpty()
    stream = os.fdopen(follower, "w", encoding="utf-8")

    def read() -> str:
        stream.flush()
        chunks = []
        while select.select([leader], [], [], 0.2)[0]:
            chunks.append(os.read(leader, 65536))
        return b"".join(chunks).decode()

    yield stream, read
    stream.close()
    os.close(leader)


def test_on_a_terminal_human_units_percent_eta_and_a_final_newline(terminal):
    stream, read = terminal
    with Progress("copy-to", stream=stream) as progress:
        assert progress.enabled
        progress(1 << 20, 4 << 20)
        time.sleep(1.1)  # click estimates the ETA from steps at least a second apart
        progress(2 << 20, 4 << 20)
    shown = read()
    assert "copy-to" in shown
    assert "1.0 MiB of 4.0 MiB" in shown and "2.0 MiB of 4.0 MiB" in shown
    assert "50%" in shown
    assert re.search(r"\d\d:\d\d:\d\d", shown), shown  # the ETA
    assert shown.endswith("\r\n")  # the pty's newline: the line is ended
    assert "3000000" not in shown


def test_an_unknown_total_shows_the_count_alone(terminal):
    stream, read = terminal
    with Progress("migrating", stream=stream) as progress:
        progress(3 << 30, None, "2.5s")
    shown = read()
    assert "3.0 GiB, 2.5s" in shown and " of " not in shown
    assert shown.endswith("\r\n")


def test_counts_in_other_units(terminal):
    stream, read = terminal
    with Progress("scan", unit="hypervisors", stream=stream) as progress:
        progress(1, 2, "5 guests, agents 3/4")
    assert "1 of 2, 5 guests, agents 3/4" in read()


def test_nothing_is_drawn_when_not_a_terminal():
    stream = io.StringIO()
    with Progress("copy-to", stream=stream) as progress:
        assert not progress.enabled
        progress(1, 2)
    assert stream.getvalue() == ""


def test_nothing_is_ended_when_nothing_was_drawn(terminal):
    stream, read = terminal
    Progress("copy-to", stream=stream).finish()
    assert read() == ""


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_whether_or_not_a_terminal(terminal):
    stream, read = terminal
    with Progress("copy-to", as_json=True, stream=stream) as progress:
        assert progress.enabled
        progress(1 << 20, 4 << 20, "note for people")
    shown = read()
    assert "\x1b" not in shown and "%" not in shown  # no bar on the terminal
    assert events(shown) == [{"event": "progress", "what": "copy-to", "done": 1 << 20,
                              "total": 4 << 20, "unit": "bytes"}]  # fmt: skip
    piped = io.StringIO()
    with Progress("scanning", unit="hypervisors", as_json=True, stream=piped) as progress:
        progress(1, None, "3 guests", guests=3)
    [event] = events(piped.getvalue())
    assert event == {"event": "progress", "what": "scanning", "done": 1, "total": None,
                     "unit": "hypervisors", "guests": 3}  # fmt: skip


def test_json_lines_are_rate_limited_and_the_last_state_is_always_written():
    clock, stream = FakeClock(), io.StringIO()
    with Progress("copy-from", as_json=True, stream=stream, clock=clock) as progress:
        for done in range(1, 101):  # 100 updates within one second
            progress(done, 100)
            clock.now += 0.01
    written = [event["done"] for event in events(stream.getvalue())]
    assert written[0] == 1 and written[-1] == 100  # the first, and the last on finish
    assert len(written) <= JSON_PER_SECOND + 2, written
    assert written == sorted(set(written))


def test_json_last_event_is_not_written_twice():
    clock, stream = FakeClock(), io.StringIO()
    with Progress("copy-to", as_json=True, stream=stream, clock=clock) as progress:
        progress(5, 5)
    assert [event["done"] for event in events(stream.getvalue())] == [5]


def test_colour_only_on_a_terminal_and_never_with_no_color(terminal, monkeypatch):
    stream, _ = terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_on(stream)
    assert style("PASS", stream, fg="green") == "\x1b[32mPASS\x1b[0m"
    assert style("PASS", io.StringIO(), fg="green") == "PASS"
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_on(stream)
    assert style("PASS", stream, fg="green") == "PASS"


def test_an_empty_no_color_leaves_colour_on(terminal, monkeypatch):
    """no-color.org: NO_COLOR counts when "present and not an empty string"."""
    stream, _ = terminal
    monkeypatch.setenv("NO_COLOR", "")
    assert colour_on(stream)
    assert style("PASS", stream, fg="green") == "\x1b[32mPASS\x1b[0m"


def copy_from(sock: Path, source: Path, target: Path, stderr) -> subprocess.Popen:
    return subprocess.Popen(
        [str(GAGENT), "agent", "--socket", str(sock), "copy-from", str(source), str(target)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
    )  # fmt: skip


def test_copy_progress_on_a_terminal_ends_its_line(qemu_ga, tmp_path):
    source = tmp_path / "guest.bin"  # the "guest" is this host
    source.write_bytes(os.urandom(3_000_000))
    leader, follower = pty.openpty()
    chunks = []
    try:
        proc = copy_from(qemu_ga.socket_path, source, tmp_path / "back.bin", follower)
        os.close(follower)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # read as it comes: a full pty would stall it
            if not select.select([leader], [], [], 1)[0]:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0, shown
    assert out == b"copied 3000000 bytes\n"  # on a line of its own
    assert "copy-from" in shown and "2.9 MiB of 2.9 MiB" in shown and "100%" in shown
    assert shown.endswith("\r\n")


def test_copy_progress_is_off_when_stderr_is_not_a_terminal(qemu_ga, tmp_path):
    source = tmp_path / "guest.bin"
    source.write_bytes(os.urandom(300_000))
    proc = copy_from(qemu_ga.socket_path, source, tmp_path / "back.bin", subprocess.PIPE)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, out, err) == (0, b"copied 300000 bytes\n", b"")
