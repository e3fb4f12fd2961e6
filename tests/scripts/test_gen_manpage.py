"""gagent(1) is generated from the CLI (scripts/gen-manpage.py): regenerating it gives
the committed packaging/man/gagent.1 byte for byte (so the page cannot drift from the
commands), and man(1)/groff render it without a warning."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen-manpage.py"
PAGE = REPO / "packaging" / "man" / "gagent.1"
TIMEOUT = 120  # for subprocesses (the script loads every command)


def generate(env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "-"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    return proc.stdout


def test_the_committed_page_is_what_the_cli_generates():
    assert generate() == PAGE.read_text(), (
        "packaging/man/gagent.1 is out of date: run .venv/bin/python scripts/gen-manpage.py"
    )


def test_the_page_depends_on_no_environment(tmp_path):
    env = {
        **os.environ,
        "COLUMNS": "20",
        "LIBVIRT_DEFAULT_URI": "qemu+ssh://elsewhere/system",
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "GAGENT_STATE_DIR": str(tmp_path / "gagent"),
    }
    assert generate(env) == PAGE.read_text()


def test_every_command_has_its_section():
    text = PAGE.read_text()
    for path in ("gagent agent", "gagent agent fsfreeze freeze", "gagent snapshot create",
                 "gagent inventory", "gagent migrate\\-check"):  # fmt: skip
        assert f'.SS "{path}"' in text


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_renders_it_without_warnings():
    env = {**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "gagent agent fsfreeze freeze" in proc.stdout


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_finds_nothing_to_warn_about():
    proc = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(PAGE)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert (proc.returncode, proc.stderr) == (0, "")
