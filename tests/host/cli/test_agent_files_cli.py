"""host/cli/agent_files.py's --json: a copy's progress as JSON lines on stderr while stdout
keeps the one result, and ``exec --json`` (before ARGV: the words after the program are
its own).  Against the real qemu-ga on this host (guest-exec blocked there, so exec's
program is a stand-in)."""

from __future__ import annotations

import json
import os

import pytest

from gagent.host.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def agent(qemu_ga) -> list[str]:
    return ["agent", "--socket", str(qemu_ga.socket_path)]


@pytest.mark.parametrize("where", ["before", "after"])
def test_copy_progress_is_json_lines_on_stderr_and_stdout_the_result(
    capsys, agent, tmp_path, where
):
    source = tmp_path / "guest.bin"  # the "guest" is this host
    source.write_bytes(os.urandom(300_000))
    target = tmp_path / "back.bin"
    copy = ["copy-from", str(source), str(target)]
    argv = [*agent, "--json", *copy] if where == "before" else [*agent, *copy, "--json"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert json.loads(out) == {"bytes": 300_000, "to": str(target)}
    events = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert events, "no progress event"
    assert {event["event"] for event in events} == {"progress"}
    assert events[-1] == {"event": "progress", "what": "copy-from", "done": 300_000,
                          "total": 300_000, "unit": "bytes"}  # fmt: skip


def test_copy_without_json_is_silent_off_a_terminal(capsys, agent, tmp_path):
    source = tmp_path / "guest.bin"
    source.write_bytes(b"x" * 1000)
    code, out, err = run(capsys, *agent, "copy-from", str(source), str(tmp_path / "back"))
    assert (code, out, err) == (0, "copied 1000 bytes\n", "")


def test_exec_json_before_argv(capsys, agent, monkeypatch):
    from gagent import programs

    ran = []

    async def stand_in(agent, argv, **kw):
        ran.append(argv)
        return programs.ProgramResult(
            argv=tuple(argv), pid=1, exit_code=3, signal=None, stdout=b"out",
            stderr=b"", stdout_truncated=False, stderr_truncated=False,
        )  # fmt: skip

    monkeypatch.setattr(programs, "run_program", stand_in)
    code, out, err = run(capsys, *agent, "exec", "--json", "ls", "--json", "-l")
    assert (code, err) == (3, "")  # the program's exit code, as without --json
    assert ran == [["ls", "--json", "-l"]]  # the words after the program are its own
    result = json.loads(out)
    assert result["exit_code"] == 3 and result["stdout"] == "b3V0"  # base64 of b"out"
