"""External checks: executables in a directory, written in any language.

Every executable regular file in the directory (not hidden) is a check named
after the file (without its extension).  It receives the context as JSON on
stdin::

    {"version": 1,
     "domain": {"name": ..., "uuid": ..., "state": "running", "xml": "<domain ..."},
     "source": {"uri": ...}, "destination": {"uri": ...},
     "options": {"live": ..., "persistent": ..., "undefine_source": ..., "copy_storage": ...}}

and answers on stdout with a JSON object (``{"message": "...", "details":
{...}}``, both optional; empty output is fine).  The exit code is the status:
0 SUCCESS, 1 WARNING, 2 FAIL; any other code (or death by a signal) is a
FAIL carrying the end of its stderr, and so is output that is not a JSON
object.  A check that outlives the per-check timeout is killed: FAIL.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import trio

from gagent.errors import UsageError

from .context import MigrationContext
from .framework import Check, CheckResult, Status

__all__ = ["discover", "run_external"]

_STATUS = {0: Status.SUCCESS, 1: Status.WARNING, 2: Status.FAIL}
_STDERR_TAIL = 2000


def discover(directory: str | os.PathLike[str]) -> list[Check]:
    """The checks in ``directory``, sorted by file name."""
    path = Path(directory)
    if not path.is_dir():
        raise UsageError(f"--checks-dir {path}: not a directory")
    checks = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or not os.access(entry, os.X_OK):
            continue
        name = entry.stem if entry.suffix else entry.name
        checks.append(
            Check(
                name=name,
                description=f"external check {entry.name}",
                run=partial(run_external, entry),
                origin=f"external {entry}",
            )
        )
    return checks


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text if len(text) <= _STDERR_TAIL else "..." + text[-_STDERR_TAIL:]


async def run_external(path: Path, ctx: MigrationContext) -> CheckResult:
    payload = json.dumps(ctx.to_json()).encode()
    try:
        proc = await trio.run_process(
            [str(path)], stdin=payload, capture_stdout=True, capture_stderr=True, check=False
        )
    except OSError as exc:
        return CheckResult.fail(f"cannot run {path}: {exc}", error=type(exc).__name__)
    stderr = _tail(proc.stderr)
    status = _STATUS.get(proc.returncode)
    if status is None:
        how = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with code {proc.returncode}"
        )
        return CheckResult.fail(
            f"{path.name} {how}" + (f": {stderr}" if stderr else ""),
            exit_code=proc.returncode,
            stderr=stderr,
        )
    answer: Any = {}
    out = proc.stdout.decode(errors="replace").strip()
    if out:
        try:
            answer = json.loads(out)
        except ValueError:
            answer = None
    if not isinstance(answer, dict):
        return CheckResult.fail(
            f"{path.name} answered something that is not a JSON object on stdout: {out[:200]!r}",
            exit_code=proc.returncode,
            stderr=stderr,
        )
    details = answer.get("details")
    details = dict(details) if isinstance(details, dict) else {}
    if stderr:
        details.setdefault("stderr", stderr)
    message = str(answer.get("message") or f"{path.name} exited with code {proc.returncode}")
    return CheckResult(status, message, details)
