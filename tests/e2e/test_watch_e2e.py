"""gagent's watch against a real guest: the distribution's agent stops, then starts again.

In the systemd guest, qemu-guest-agent.service serves libvirt's channel.
Stopping it (through our own agent, on the other channel) must show up twice
in watch(): as libvirt's agent-lifecycle event, and as the channel's live
state polled from the XML; starting it again, the same in reverse.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from gagent.client import open_agent
from gagent.host.channel import LIBVIRT_AGENT_CHANNEL
from gagent.host.virt import open_hypervisor
from gagent.host.watch import ChangeEvent, watch
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

STOCK_UNIT = "qemu-guest-agent.service"


async def _systemctl(agent, action: str) -> None:
    result = await run_program(agent, ["systemctl", action, STOCK_UNIT])
    assert result.succeeded, result


async def _until_seen(
    receive: trio.MemoryReceiveChannel[ChangeEvent],
    wanted: set[tuple[str, str]],
    log: list[ChangeEvent],
) -> None:
    """Read events until every (subject, new state) in ``wanted`` has come."""
    missing = set(wanted)
    async for event in receive:
        log.append(event)
        missing.discard((event.subject, event.new))
        if not missing:
            return


async def test_watch_sees_the_guest_agent_go_and_come_back(systemd_domain):
    name, uri = systemd_domain.name, systemd_domain.uri
    assert systemd_domain.channel_states()[LIBVIRT_AGENT_CHANNEL] == "connected"
    seen: list[ChangeEvent] = []
    hv = await open_hypervisor(uri, events=True)
    try:
        send, receive = trio.open_memory_channel[ChangeEvent](64)
        async with open_agent(systemd_domain.socket_path) as agent, trio.open_nursery() as nursery:
            # returns once libvirt's events are registered and the baseline is taken
            await nursery.start(partial(watch, hv, send, name, poll_interval=0.2))
            try:
                with trio.fail_after(30):
                    await _systemctl(agent, "stop")
                    await _until_seen(
                        receive,
                        {("agent", "agent disconnected"), (LIBVIRT_AGENT_CHANNEL, "disconnected")},
                        seen,
                    )
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(30):
                    await _systemctl(agent, "start")
            with trio.fail_after(30):
                await _until_seen(
                    receive,
                    {("agent", "agent connected"), (LIBVIRT_AGENT_CHANNEL, "connected")},
                    seen,
                )
            nursery.cancel_scope.cancel()
    finally:
        await hv.close()
    print("e2e: watch saw", [str(e) for e in seen])
    # gagent's own channel (its agent untouched) and the domain's lifecycle stay quiet
    assert {e.subject for e in seen} == {"agent", LIBVIRT_AGENT_CHANNEL}, seen


async def test_gagent_watch_command_prints_the_same_changes(systemd_domain):
    """``gagent watch DOMAIN`` as an operator runs it (it stops by itself: --for)."""
    name, uri = systemd_domain.name, systemd_domain.uri
    gagent = Path(sys.executable).with_name("gagent")
    argv = [str(gagent), "watch", name, "-c", uri, "--for", "20", "--interval", "0.2"]
    went = ["agent: agent disconnected", f"{LIBVIRT_AGENT_CHANNEL}: connected -> disconnected"]
    came = ["agent: agent connected", f"{LIBVIRT_AGENT_CHANNEL}: disconnected -> connected"]
    out = b""
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    async def printed(changes: list[str]) -> None:
        """Read the command's output until it has printed every one of ``changes``."""
        nonlocal out
        assert proc.stdout is not None
        while not all(f"{name} {change}" in out.decode() for change in changes):
            chunk = await proc.stdout.receive_some()
            assert chunk, f"gagent watch ended: {out!r}"
            out += chunk

    try:
        assert proc.stderr is not None
        async with open_agent(systemd_domain.socket_path) as agent:
            with trio.fail_after(30):
                banner = b""
                while b"watching" not in banner:  # events registered, baseline taken
                    chunk = await proc.stderr.receive_some()
                    assert chunk, f"gagent watch ended early: {banner!r}"
                    banner += chunk
            try:
                with trio.fail_after(30):
                    await _systemctl(agent, "stop")
                    await printed(went)
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(30):
                    await _systemctl(agent, "start")
            with trio.fail_after(30):
                await printed(came)
    finally:
        proc.terminate()  # by its PID; it would also stop by itself after --for
        with trio.CancelScope(shield=True):
            await proc.wait()
            await proc.stdout.aclose()
            await proc.stderr.aclose()
    lines = out.decode().splitlines()
    print("e2e: gagent watch printed", lines)
    for change in went + came:
        assert any(line.endswith(f"{name} {change}") for line in lines), (change, lines)
