"""The public API is where a user looks: ``help(gagent)``, ``dir()``, ``gagent.host``, a
docstring on every public command, and types a checker sees (py.typed, checked with mypy
against the built wheel in tests/host/cli/test_install_parts.py)."""

from __future__ import annotations

import inspect
import json
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest

import gagent
import gagent.host


@pytest.mark.parametrize("package", [gagent, gagent.host], ids=["gagent", "gagent.host"])
def test_every_public_name_resolves_and_is_listed(package):
    assert package.__all__, package
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package), name
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_help_names_the_api():
    text = pydoc.render_doc(gagent, renderer=pydoc.plaintext)
    for name in ("open_agent", "frozen", "run_program", "gagent.sync", "gagent.host"):
        assert name in text, name
    host_text = pydoc.render_doc(gagent.host, renderer=pydoc.plaintext)
    for name in ("open_domain_agent", "open_domain", "snapshot_group", "emergency_thaw"):
        assert name in host_text, name


def test_importing_the_packages_loads_no_trio_or_libvirt():
    code = (
        "import json, sys, gagent, gagent.host; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'trio', 'libvirt', 'lxml', 'msgspec'})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_every_public_agent_method_is_documented():
    from gagent.client import Agent

    undocumented = [
        name
        for name, member in inspect.getmembers(Agent)
        if not name.startswith("_") and callable(member) and not (member.__doc__ or "").strip()
    ]
    assert undocumented == []


def test_the_core_package_type_checks(tmp_path):
    """What py.typed promises: mypy finds no error in gagent's own annotations (a wrong
    one shows up in a user's script as a false error, or hides a real one)."""
    root = Path(gagent.__file__).resolve().parent
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), str(root)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
