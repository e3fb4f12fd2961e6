"""gagent's watch against a real guest: the distribution's agent stops, then starts again.

In the systemd guest, qemu-guest-agent.service serves libvirt's channel.
Stopping it (through our own agent, on the other channel) must show up twice
in watch(): as libvirt's agent-lifecycle event, and as the channel's live
state polled from the XML; starting it again, the same in reverse.
"""

from __future__ import annotations

import pytest
import trio

from gagent.client import open_agent
from gagent.host.channel import LIBVIRT_AGENT_CHANNEL
from gagent.host.virt import open_hypervisor
from gagent.host.watch import ChangeEvent, watch
from gagent.transfer import run_program

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
            nursery.start_soon(lambda: watch(hv, send, name, poll_interval=0.2))
            await trio.sleep(1.0)  # watch() has taken its baseline and registered for events
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
