"""gagent installs in parts: with no extras, ``--help``, the ``--socket`` commands and the
stored inventory work, and a command that needs a missing part says, in one line, which extra
installs it (exit 14), never a traceback.

Two ways: in this venv with the optional packages hidden from the import system (fast, every
command), and the published wheel installed with no extras into a fresh venv (the real thing:
the ``published`` fixture of conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gagent.host.cli import EXIT_MISSING_PART

GAGENT = str(Path(sys.executable).with_name("gagent"))
TIMEOUT = 60

#: gagent's main with every optional package hidden, as in an install without extras.
WITHOUT_EXTRAS = """
import importlib.abc, sys
HIDDEN = {"lxml", "libvirt", "libvirt_qemu", "libvirtmod", "libvirtmod_qemu", "psycopg",
          "prometheus_client", "serial"}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
from gagent.host.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: A user's script, type-checked against the installed wheel.
USER_SCRIPT = """
from gagent import open_agent


async def main() -> None:
    async with open_agent("/run/agent.sock") as agent:
        reveal_type(await agent.osinfo())
        reveal_type(await agent.fsinfo())
        reveal_type(await agent.info())
"""


def without_extras(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, *argv],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def stored_inventory(tmp_path: Path) -> Path:
    """An inventory database written by a full install (a scan of test:///default)."""
    db = tmp_path / "inventory.sqlite3"
    scan = subprocess.run(
        [GAGENT, "inventory", "scan", "test:///default",
         "-w", "--db", str(db)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    return db


@pytest.mark.parametrize(
    "argv, module, extra",
    [
        (["status", "vm1", "-c", "test:///default"], "lxml", "host"),
        (["agent", "vm1", "ping"], "lxml", "host"),
        (["channel", "list", "vm1"], "lxml", "host"),
        (["inventory", "scan", "test:///default"], "libvirt", "host"),
        (["inventory", "list", "--db", "postgresql://nobody@localhost/none"], "psycopg",
         "postgresql"),
    ],
)  # fmt: skip
def test_a_command_needing_a_missing_part_names_its_extra(argv, module, extra):
    code, out, err = without_extras(*argv)
    assert code == EXIT_MISSING_PART, (out, err)
    [line] = err.strip().splitlines()
    assert module in line and f"pip install 'gagent[{extra}]'" in line, line


def test_help_and_socket_commands_need_no_extra(qemu_ga):
    code, out, err = without_extras("--help")
    assert code == 0 and "Commands:" in out, err
    code, out, err = without_extras("agent", "--socket", str(qemu_ga.socket_path), "ping")
    assert code == 0, err


@pytest.mark.parametrize("argv", [["list"], ["show", "test"], ["diff"]])
def test_the_stored_inventory_needs_no_extra(stored_inventory, argv):
    code, out, err = without_extras("inventory", *argv, "--db", str(stored_inventory))
    assert code == 0, err
    assert "test" in out


def test_the_wheel_without_extras_in_a_fresh_venv(
    tmp_path: Path, published, qemu_ga, stored_inventory
):
    """The published wheel, ``pip install``ed with no extras (its core dependencies from the
    package index pip uses), in a venv that sees nothing of this one."""
    fresh, env = published.prefix, published.env
    # typed, licensed: what a publishable wheel carries
    with zipfile.ZipFile(published.wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode()
    assert {"gagent/py.typed", "gagent/host/py.typed", "gagent/guest/py.typed"} <= names
    assert "License-Expression: MIT" in headers and any(n.endswith("/LICENSE") for n in names)

    def gagent(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [fresh / "bin/gagent", *argv], capture_output=True, text=True, timeout=TIMEOUT,
            env=env, cwd=tmp_path,
        )  # fmt: skip

    found = subprocess.run(
        [fresh / "bin/python", "-c", "import importlib.util as u; "
         "print([m for m in ('lxml', 'libvirt') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip
    assert found.stdout.strip() == "[]", found  # really without the host extra
    assert gagent("--help").returncode == 0
    ping = gagent("agent", "--socket", str(qemu_ga.socket_path), "ping")
    assert ping.returncode == 0, ping.stderr
    listed = gagent("inventory", "list", "--db", str(stored_inventory))
    assert listed.returncode == 0 and "test" in listed.stdout, listed.stderr
    status = gagent("status", "vm1", "-c", "test:///default")
    assert status.returncode == EXIT_MISSING_PART, status.stderr
    assert status.stderr.strip() == (
        "gagent: error: this command needs lxml, which is not installed: pip install 'gagent[host]'"
    )
    # py.typed: a type checker sees the real reply types of the installed package
    user = tmp_path / "user_script.py"
    user.write_text(USER_SCRIPT)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(fresh / "bin/python"),
         "--follow-imports=silent", "--no-error-summary", "--no-incremental", str(user)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    revealed = [line.split("Revealed type is ")[1].replace("builtins.", "")
                for line in checked.stdout.splitlines() if "Revealed type is" in line]  # fmt: skip
    assert revealed == [
        '"gagent.types.OSInfo"',
        '"list[gagent.fs_types.FilesystemInfo]"',
        '"gagent.types.AgentInfo"',
    ], checked.stdout + checked.stderr
