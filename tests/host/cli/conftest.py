"""The distribution as it is published, built once a run: the sdist and the wheel built from it
(``python -m build``: what a release uploads), the wheel installed with no extras into a fresh
venv. tests/host/cli/test_install_parts.py and test_wheel_contents.py look at them."""

from __future__ import annotations

import os
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
#: pip and the builds fetch packages (setuptools, gagent's dependencies) from the index
BUILD_TIMEOUT = 600


@dataclass(frozen=True)
class Published:
    sdist: Path
    wheel: Path  # built from the sdist, as a release's is
    prefix: Path  # the fresh venv the wheel is installed in, with no extras
    env: dict[str, str]  # this environment, less what would let the venv see this one

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"


def _run(argv: list[str | Path], env: dict[str, str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=env)
    assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])


@pytest.fixture(scope="session")
def published(tmp_path_factory) -> Published:
    """The sdist and the wheel of this checkout, the wheel ``pip install``ed (its core
    dependencies from the package index pip uses) into a venv that sees nothing of this one."""
    base = tmp_path_factory.mktemp("published")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    builder = base / "builder"  # python-build in a venv of its own: this one has no need of it
    venv.create(builder, with_pip=True)
    _run([builder / "bin/python", "-m", "pip", "install", "-q", "build"], env)
    dist = base / "dist"
    _run([builder / "bin/python", "-m", "build", "--outdir", dist, REPO], env)
    [sdist] = dist.glob("gagent-*.tar.gz")
    [wheel] = dist.glob("gagent-*.whl")
    prefix = base / "fresh"
    venv.create(prefix, with_pip=True)
    _run([prefix / "bin/python", "-m", "pip", "install", "-q", wheel], env)
    return Published(sdist=sdist, wheel=wheel, prefix=prefix, env=env)
