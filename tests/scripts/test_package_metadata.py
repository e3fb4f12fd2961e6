"""scripts/package-metadata.py: the guest packages' version, maintainer and URLs come from
pyproject.toml alone, as shell assignments build-packages.sh evals; example.org placeholders
give one warning line, real addresses none; a missing field is one line and exit 1."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "package-metadata.py"
TIMEOUT = 60

PYPROJECT = """
[project]
name = "gagent"
version = "1.2.3"
maintainers = [{{ name = "The Maintainers & Co", email = "{email}" }}]

[project.urls]
Homepage = "{homepage}"
"""


def run(pyproject: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(pyproject)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def assignments(stdout: str) -> dict[str, str]:
    """What the shell's eval of the output assigns."""
    pairs = [shlex.split(line)[0].split("=", 1) for line in stdout.splitlines()]
    return dict(pairs)


def written(tmp_path: Path, email: str, homepage: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(PYPROJECT.format(email=email, homepage=homepage))
    return path


def test_the_repository_values():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    proc = run(REPO / "pyproject.toml")
    assert proc.returncode == 0, proc.stderr
    maintainer = project["maintainers"][0]
    assert assignments(proc.stdout) == {
        "VERSION": project["version"],
        "MAINTAINER": f"{maintainer['name']} <{maintainer['email']}>",
        "HOMEPAGE": project["urls"]["Homepage"],
        "SOURCE": project["urls"]["Source"],
    }


def test_placeholders_give_one_warning_line(tmp_path):
    proc = run(written(tmp_path, "dev@example.org", "https://www.example.org/gagent"))
    assert proc.returncode == 0
    [line] = proc.stderr.splitlines()
    assert line == (
        "package-metadata: warning: the maintainer address dev@example.org and the homepage "
        "https://www.example.org/gagent are placeholders: set [project] maintainers and "
        "[project.urls] in pyproject.toml before publishing"
    )
    proc = run(written(tmp_path, "dev@gagent.dev", "https://example.org/gagent"))
    assert "the homepage https://example.org/gagent is a placeholder" in proc.stderr


def test_real_addresses_give_no_warning(tmp_path):
    proc = run(written(tmp_path, "dev@gagent.dev", "https://gagent.dev/x?a=1&b=|"))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert assignments(proc.stdout) == {
        "VERSION": "1.2.3",
        "MAINTAINER": "The Maintainers & Co <dev@gagent.dev>",
        "HOMEPAGE": "https://gagent.dev/x?a=1&b=|",
        "SOURCE": "https://gagent.dev/x?a=1&b=|",  # no Source: the homepage
    }


def test_a_missing_field_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "gagent"\nversion = "1"\n')
    proc = run(path)
    assert (proc.returncode, proc.stdout) == (1, "")
    [line] = proc.stderr.splitlines()
    assert "[project] maintainers needs a first entry with a name and an email" in line
    path.write_text(PYPROJECT.format(email="a@b.c\\nX-Injected: 1", homepage="https://b.c"))
    proc = run(path)
    assert proc.returncode == 1 and "must be one line of text" in proc.stderr
