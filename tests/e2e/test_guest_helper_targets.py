"""gagent-guest's --serial and --port validation inside the real guest (through guest-exec).

In the guest, qemu-ga runs with /dev/null as its stdin and so do other
processes: ``check --serial /dev/null`` once called that line healthy and
served by all of them.  It must be refused (exit 2) from the guest's real
sysfs; the agent's own virtio port given as ``--serial`` is checked as that
port; a port name with a path in it is refused before anything is looked at.
"""

from __future__ import annotations

import json

import pytest
import trio

from gagent.client import open_agent
from gagent.host.channel import GAGENT_CHANNEL
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

PYTHON = "/usr/bin/python3"


async def _check(agent, *args: str) -> tuple[int | None, dict]:
    result = await run_program(agent, [PYTHON, "-m", "gagent.guest", "check", "--json", *args])
    assert result.stderr == b"", result.stderr.decode(errors="replace")
    return result.exit_code, json.loads(result.stdout)


async def test_serial_and_port_arguments_in_the_real_guest(main_domain):
    with trio.fail_after(120):
        async with open_agent(main_domain.socket_path) as agent:
            code, answer = await _check(agent, "--serial", "/dev/null")
            assert code == 2 and answer["ok"] is False, answer
            assert "/dev/null is not a serial line or a virtio port" in answer["error"]

            code, answer = await _check(agent, "--port", "../../etc/passwd")
            assert code == 2 and "invalid port name" in answer["error"], answer

            code, report = await _check(agent)
            node = next(p["node"] for p in report["ports"] if p["name"] == GAGENT_CHANNEL)
            code, report = await _check(agent, "--serial", node)
            assert code == 0 and report["target"] == GAGENT_CHANNEL, report
            assert report["findings"][0]["code"] == "serial-is-port"
            served = next(f for f in report["findings"] if f["code"] == "served")
            assert "qemu-ga" in served["message"]
