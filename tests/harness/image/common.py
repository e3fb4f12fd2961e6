"""What every module of the guest-image builder shares: paths, the error, logging, subprocesses."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


class BuildError(RuntimeError):
    """The guest image could not be built."""


def _log(msg: str) -> None:
    print(f"guest-image: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.run(cmd, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise BuildError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout or ''}{proc.stderr or ''}"
        )
    return proc


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
