"""gagent-guest inside the real guest (through guest-exec), and the probe of a channel.

The shared guest serves org.gagent.agent.0 and org.qemu.guest_agent.0 with
qemu-ga; org.gagent.idle.0 has a socket on the host that nobody connects to
and nothing in the guest opens: ``check`` must call the first two healthy and
report the idle one's host side as not connected; ``probe`` must carry
probes both ways through it.  The idle channel is left closed at the end
(other tests expect it 'disconnected').
"""

from __future__ import annotations

import json
import socket

import pytest
import trio

from gagent.client import open_agent
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.probe import probe_domain
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

PYTHON = "/usr/bin/python3"


def _idle(main_domain) -> str:
    idle = [ch for ch in main_domain.sockets if ch not in main_domain.served]
    assert idle, "the shared domain has no unserved channel"
    return idle[0]


async def _check(agent, *args: str) -> tuple[int | None, dict]:
    result = await run_program(agent, [PYTHON, "-m", "gagent.guest", "check", "--json", *args])
    assert result.stderr == b"", result.stderr.decode(errors="replace")
    return result.exit_code, json.loads(result.stdout)


def _codes(report: dict, severity: str | None = None) -> list[str]:
    return [f["code"] for f in report["findings"] if severity in (None, f["severity"])]


async def test_check_reports_the_served_ports_healthy(main_domain):
    with trio.fail_after(120):
        async with open_agent(main_domain.socket_path) as agent:
            code, report = await _check(agent)
            assert code == 0 and report["healthy"], report
            assert report["target"] == GAGENT_CHANNEL
            assert report["kernel"]["driver"] and report["kernel"]["serial_devices"]
            assert {"driver", "device", "port", "served"} <= set(_codes(report, "ok"))
            served = next(f for f in report["findings"] if f["code"] == "served")
            assert "qemu-ga" in served["message"]
            names = {p["name"] for p in report["ports"]}
            assert {GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL, _idle(main_domain)} <= names
            assert len(report["agents"]) >= 2

            code, report = await _check(agent, "--port", LIBVIRT_AGENT_CHANNEL)
            assert code == 0 and report["healthy"], report
            assert "libvirt-port" in _codes(report, "info")


async def test_check_reports_a_closed_host_side(main_domain):
    idle = _idle(main_domain)
    assert main_domain.channel_states()[idle] == "disconnected"
    with trio.fail_after(120):
        async with open_agent(main_domain.socket_path) as agent:
            code, report = await _check(agent, "--port", idle)
            assert code == 1 and not report["healthy"]
            assert {"host-disconnected", "not-served"} <= set(_codes(report, "error")), report
            hint = next(f["hint"] for f in report["findings"] if f["code"] == "host-disconnected")
            assert f"gagent channel probe DOMAIN --name {idle}" in hint

            # the host end connected: the same port now says so
            with socket.socket(socket.AF_UNIX) as host_end:
                host_end.connect(str(main_domain.sockets[idle]))
                await trio.sleep(0.3)
                code, report = await _check(agent, "--port", idle)
            assert "host-connected" in _codes(report, "ok"), report
            assert "host-disconnected" not in _codes(report)
        await main_domain.wait_channel_state(idle, "disconnected")


async def test_probe_through_the_idle_channel(main_domain):
    idle = _idle(main_domain)
    events: list[str] = []
    with trio.fail_after(180):
        async with open_agent(main_domain.socket_path) as agent:
            pid = await agent.exec(
                PYTHON,
                ["-m", "gagent.guest", "probe", "--port", idle, "--timeout", "90"],
                capture_output=True,
            )
            result = await probe_domain(
                main_domain.name, name=idle, uri=main_domain.uri, count=3, wait=90,
                on_event=events.append,
            )  # fmt: skip
            assert len(result.rounds) == 3 and result.guest == main_domain.hostname
            assert all(r.rtt < 5 for r in result.rounds), result.as_dict()
            status = await agent.exec_status(pid)
            while not status.exited:
                await trio.sleep(0.2)
                status = await agent.exec_status(pid)
        assert status.exit_code == 0, status
        out = status.stdout.decode()
        assert "3 probe(s) answered" in out, out
        assert out.count("round trip") >= 3
        await main_domain.wait_channel_state(idle, "disconnected")
