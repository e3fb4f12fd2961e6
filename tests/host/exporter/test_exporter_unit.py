"""packaging/host: the exporter's systemd unit and example hosts file are what the CLI takes."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gagent.host.inventory.testnode import NodeDomain

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "packaging/host/gagent-exporter.service"
GAGENT = Path(sys.executable).with_name("gagent")


def exec_start() -> list[str]:
    [line] = [x for x in UNIT.read_text().splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_unit_runs_gagent_exporter_on_the_hosts_file():
    argv = exec_start()
    assert argv[:4] == ["gagent", "exporter", "--hosts-file", "/etc/gagent/exporter.hosts"]
    assert argv[4:] == ["$GAGENT_EXPORTER_ARGS"]


def test_the_units_command_line_with_the_example_hosts_file_passes_check(make_node, tmp_path):
    _, uri = make_node("kvm1", [NodeDomain("vm1")])
    hosts = tmp_path / "exporter.hosts"
    example = (REPO / "packaging/host/exporter.hosts").read_text()
    hosts.write_text(example.replace("qemu:///system", uri))
    argv = [str(GAGENT), *exec_start()[1:4]]
    argv[3] = str(hosts)
    done = subprocess.run([*argv, "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"local: {uri}: ok, 1 domains\n"


def test_check_exits_8_when_a_hypervisor_is_unreachable(tmp_path):
    missing = f"test://{tmp_path}/no-such-node.xml"
    done = subprocess.run(
        [str(GAGENT), "exporter", "-c", f"gone={missing}", "--check", "--host-timeout", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 8, (done.stdout, done.stderr)
    assert done.stdout.startswith(f"gone: {missing}: error: ")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path):
    # systemd looks gagent up in its own PATH; point it at this install's for the check
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("ExecStart=gagent ", f"ExecStart={GAGENT} "))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
