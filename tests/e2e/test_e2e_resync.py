"""A caller's timeout while the guest agent is stuck, then recovery on the same connection."""

from __future__ import annotations

import pytest
import trio
from e2e_guest import agent_pid, kill

from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("stuck_port", "helper_port"),
    [(GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL), (LIBVIRT_AGENT_CHANNEL, GAGENT_CHANNEL)],
    ids=["socket", "libvirt"],
)
async def test_timeout_on_stuck_agent_then_resync(main_domain, stuck_port, helper_port):
    name, uri = main_domain.name, main_domain.uri
    transport = {GAGENT_CHANNEL: "socket", LIBVIRT_AGENT_CHANNEL: "libvirt"}
    async with (
        open_domain_agent(name, uri=uri, transport=transport[stuck_port]) as stuck,
        open_domain_agent(name, uri=uri, transport=transport[helper_port]) as helper,
    ):
        with trio.fail_after(30):
            pid = await agent_pid(helper, stuck_port)
            await stuck.info()  # cached now: later calls need no guest-info round trip
            await kill(helper, "STOP", pid)
        try:
            with trio.move_on_after(1.5) as scope:
                await stuck.host_name()
            assert scope.cancelled_caught, "a SIGSTOPped agent answered"
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(30):
                await kill(helper, "CONT", pid)
        with trio.fail_after(30):
            # the late reply to the abandoned command is not taken for these
            assert await stuck.host_name() == main_domain.hostname
            assert (await stuck.osinfo()).id == "gagent-e2e"
            result = await run_program(stuck, ["/bin/echo", "in sync"])
            assert result.stdout == b"in sync\n"
