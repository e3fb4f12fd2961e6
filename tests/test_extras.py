"""gagent/extras.py: which extra brings each optional module, and saying so."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from gagent.extras import EXTRAS, extra_installed, missing_extra, needs_extra

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_missing_extra_follows_the_cause_chain():
    try:
        try:
            raise ModuleNotFoundError("No module named 'libvirt'", name="libvirt")
        except ImportError as exc:
            raise ImportError("gagent.host needs libvirt-python") from exc
    except ImportError as outer:
        assert missing_extra(outer) == ("libvirt", "host")
    assert missing_extra(ModuleNotFoundError("x", name="lxml.etree")) == ("lxml", "host")
    assert missing_extra(ModuleNotFoundError("x", name="yaml")) is None  # not a part of gagent


def test_every_extra_named_is_one_pip_knows():
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert set(EXTRAS.values()) <= set(extras) - {"dev"}


def test_the_message_names_the_install_command():
    assert needs_extra("gagent.host.open_domain", "lxml", "host") == (
        "gagent.host.open_domain needs lxml, which is not installed: pip install 'gagent[host]'"
    )


def test_extra_installed_finds_without_importing():
    code = (
        "import sys; from gagent.extras import extra_installed; "
        "print(extra_installed('host'), 'lxml' in sys.modules, 'libvirt' in sys.modules); "
        "sys.modules['libvirt'] = None; print(extra_installed('host'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "False", "False"]
    assert extra_installed("host")
