"""packaging/sysvinit/gagent-qga (the init script for guests without systemd), run on the host
against pid files only: `stop` returns only once the agent is gone (or says it is not), since a
restart's new qemu-ga cannot open a port the old one still holds."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "sysvinit" / "gagent-qga"
PORT = "org.gagent.test.0"


def _agent(ignore_term: bool, reaped: bool = True) -> subprocess.Popen:
    """A stand-in qemu-ga; a wedged one ignores SIGTERM.  ``reaped``: waited for as
    soon as it dies (a zombie would still count as alive for kill -0)."""
    trap = "trap '' TERM; " if ignore_term else ""
    proc = subprocess.Popen(
        ["sh", "-c", f"{trap}echo ready; while :; do sleep 0.05; done"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    if reaped:
        threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def _run(action: str, rundir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GAGENT_PORTS": PORT,
        "GAGENT_RUNDIR": str(rundir),
        "GAGENT_STOP_WAIT": "1",
    }
    return subprocess.run(
        ["sh", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=60
    )


def _stop(proc: subprocess.Popen, rundir: Path) -> subprocess.CompletedProcess[str]:
    (rundir / f"{PORT}.pid").write_text(f"{proc.pid}\n")
    try:
        return _run("stop", rundir)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_stop_ends_an_agent_with_sigterm(tmp_path):
    proc = _agent(ignore_term=False)
    result = _stop(proc, tmp_path)
    assert result.returncode == 0, result
    assert f"{PORT}: stopped" in result.stdout
    assert proc.returncode == -15
    assert not (tmp_path / f"{PORT}.pid").exists()


def test_stop_kills_an_agent_that_ignores_sigterm_and_waits_for_it(tmp_path):
    proc = _agent(ignore_term=True)
    result = _stop(proc, tmp_path)
    assert result.returncode == 0, result
    assert proc.returncode == -9
    assert f"{PORT}: stopped" in result.stdout


def test_stop_reports_an_agent_that_outlives_sigkill(tmp_path):
    # Nobody reaps this one before the script is done: to kill -0 it stays alive,
    # like a process whose exit is slow to complete in a starved guest.
    proc = _agent(ignore_term=True, reaped=False)
    result = _stop(proc, tmp_path)
    assert result.returncode == 1, result
    assert f"{PORT}: pid {proc.pid} outlived SIGKILL" in result.stdout
    assert f"{PORT}: stopped" not in result.stdout


def test_stop_of_a_stopped_port_is_quiet_success(tmp_path):
    result = _run("stop", tmp_path)
    assert result.returncode == 0, result
    assert _run("status", tmp_path).returncode == 3
