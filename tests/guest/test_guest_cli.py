"""gagent-guest's command line, its imports, and the oldest python it promises (3.9)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gagent.guest
from gagent.guest.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_check_json_exit_codes(guest, capsys):
    guest.kernel()
    assert main(["check", "--root", str(guest.root), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["healthy"] is False and data["target"] == "org.gagent.agent.0"
    assert "port-missing" in [f["code"] for f in data["findings"]]


def test_check_text_with_the_real_port_io(guest, capsys):
    guest.healthy()
    # the real PortIO wants character devices: the fake tree's plain files are flagged
    code = main(["check", "--root", str(guest.root), "--port", "org.gagent.agent.0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "/dev/vport1p1 is not the port's character device 250:1" in out
    assert out.splitlines()[0] == "gagent-guest check: port org.gagent.agent.0"


def test_ports_listing(guest, capsys):
    guest.healthy()
    assert main(["ports", "--root", str(guest.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["org.gagent.agent.0", "/dev/vport1p1"]
    assert out[0].endswith("pid 300 (qemu-ga)") and out[1].endswith("free")
    assert main(["ports", "--root", str(guest.root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["holders"] == [{"pid": 300, "comm": "qemu-ga"}]


def test_probe_on_a_missing_or_held_port(guest, capsys):
    guest.healthy()
    assert main(["probe", "--root", str(guest.root), "--port", "org.nope"]) == 3
    assert "no virtio port named org.nope" in capsys.readouterr().err


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--port", "a", "--serial", "/dev/ttyS1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["probe", "--timeout", "-1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([])
    capsys.readouterr()


def _clean_env(pythonpath: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def test_module_entry_point_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "gagent.guest", "--version"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == f"gagent-guest {gagent.guest.__version__}"


def test_version_matches_the_project():
    text = (REPO / "pyproject.toml").read_text()
    assert f'version = "{gagent.guest.__version__}"' in text


def test_guest_imports_neither_trio_nor_host_code():
    code = (
        "import sys\n"
        "import gagent.guest.cli, gagent.guest.check, gagent.guest.probe, "
        "gagent.guest.serialcheck, gagent.guest.wire\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'libvirt', 'lxml', 'click', 'serial') or (m.startswith('gagent.') "
        "and not m.startswith('gagent.guest') and m != 'gagent.errors'))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


def _python39() -> str | None:
    candidates = [
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
        *filter(None, [shutil.which("python3.9")]),
    ]
    for candidate in candidates:  # a pyenv shim may exist and still not run
        ok = subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30)
        if ok.returncode == 0:
            return candidate
    return None


def test_runs_on_python39_as_packaged(guest, tmp_path):
    """The packages install gagent/__init__.py (a stub) and gagent/guest: python 3.9 works."""
    py39 = _python39()
    if py39 is None:
        pytest.skip("no python3.9 on this machine (the guest helper promises 3.9+)")
    site = tmp_path / "site"
    shutil.copytree(
        REPO / "guest", site / "gagent/guest", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "packaging/python/gagent/__init__.py", site / "gagent/__init__.py")
    guest.healthy()
    out = subprocess.run(
        [py39, "-m", "gagent.guest", "check", "--root", str(guest.root), "--json"],
        capture_output=True, text=True, timeout=60, env=_clean_env(str(site)), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr  # plain-file nodes are flagged, nothing crashes
    assert json.loads(out.stdout)["target"] == "org.gagent.agent.0"
    out = subprocess.run(
        [py39, "-c", "import gagent.guest.probe, gagent.guest.serialcheck, gagent.guest.wire"],
        capture_output=True, text=True, timeout=60, env=_clean_env(str(site)), cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
