"""External checks: executables with the JSON context on stdin, JSON on stdout, exit code status."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from migration_fakes import make_context

from gagent.errors import UsageError
from gagent.host.migration import MigrationOptions, Status, collect_checks, run_checks
from gagent.host.migration.external import discover


def script(directory: Path, name: str, body: str, *, executable: bool = True) -> Path:
    path = directory / name
    path.write_text(body)
    path.chmod(0o755 if executable else 0o644)
    return path


def sh(code: int, out: str = "", err: str = "") -> str:
    return f"#!/bin/sh\ncat >/dev/null\nprintf '%s' '{out}'\nprintf '%s' '{err}' >&2\nexit {code}\n"


PY_ECHO = f"""#!{sys.executable}
import json, sys
ctx = json.load(sys.stdin)
print(json.dumps({{
    "message": "saw " + ctx["domain"]["name"] + " going to " + ctx["destination"]["uri"],
    "details": {{"state": ctx["domain"]["state"], "copy": ctx["options"]["copy_storage"],
                "has_xml": ctx["domain"]["xml"].startswith("<domain")}},
}}))
"""


def test_discovery_takes_executable_visible_files_in_name_order(tmp_path):
    script(tmp_path, "b-check.sh", sh(0))
    script(tmp_path, "a-check", sh(0))
    script(tmp_path, "README", "not a check", executable=False)
    script(tmp_path, ".hidden", sh(0))
    (tmp_path / "subdir").mkdir()
    checks = discover(tmp_path)
    assert [c.name for c in checks] == ["a-check", "b-check"]
    assert checks[1].origin == f"external {tmp_path / 'b-check.sh'}"


def test_a_checks_dir_that_is_not_a_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        collect_checks(checks_dir=tmp_path / "nope", plugins=False)


async def test_the_context_arrives_on_stdin_and_json_comes_back(tmp_path):
    script(tmp_path, "echo.py", PY_ECHO)
    ctx = make_context(options=MigrationOptions(copy_storage=True))
    (outcome,) = (await run_checks(ctx, discover(tmp_path))).outcomes
    assert outcome.status is Status.SUCCESS
    assert outcome.message == "saw vm1 going to fake:///destination"
    assert outcome.details == {"state": "running", "copy": True, "has_xml": True}


async def test_exit_codes_map_to_statuses(tmp_path):
    script(tmp_path, "c0", sh(0, '{"message": "fine"}'))
    script(tmp_path, "c1", sh(1, '{"message": "meh", "details": {"x": 1}}', "a note"))
    script(tmp_path, "c2", sh(2, '{"message": "no way"}'))
    script(tmp_path, "c3", sh(3, "", "Traceback: something broke"))
    script(tmp_path, "c4", sh(0, "this is not json"))
    script(tmp_path, "c5", sh(0))
    script(tmp_path, "c6", "#!/bin/sh\nkill -9 $$\n")
    report = await run_checks(make_context(), discover(tmp_path))
    got = {o.name: (o.status, o.message) for o in report.outcomes}
    assert got == {
        "c0": (Status.SUCCESS, "fine"),
        "c1": (Status.WARNING, "meh"),
        "c2": (Status.FAIL, "no way"),
        "c3": (Status.FAIL, "c3 exited with code 3: Traceback: something broke"),
        "c4": (
            Status.FAIL,
            "c4 answered something that is not a JSON object on stdout: 'this is not json'",
        ),
        "c5": (Status.SUCCESS, "c5 exited with code 0"),
        "c6": (Status.FAIL, "c6 was killed by signal 9"),
    }
    assert report.outcomes[1].details == {"x": 1, "stderr": "a note"}


async def test_a_check_that_hangs_is_killed_at_the_timeout(tmp_path):
    script(tmp_path, "hang", "#!/bin/sh\nsleep 60\n")
    start = time.monotonic()
    (outcome,) = (await run_checks(make_context(), discover(tmp_path), check_timeout=0.5)).outcomes
    assert time.monotonic() - start < 10
    assert (outcome.status, outcome.message) == (Status.FAIL, "the check timed out after 0.5s")


async def test_a_check_that_cannot_be_executed_is_a_fail(tmp_path):
    script(tmp_path, "bad-interpreter", "#!/nonexistent/interpreter\n")
    (outcome,) = (await run_checks(make_context(), discover(tmp_path))).outcomes
    assert outcome.status is Status.FAIL
    assert outcome.message.startswith(f"cannot run {tmp_path / 'bad-interpreter'}: ")
