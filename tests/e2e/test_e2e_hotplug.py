"""Hot-plugging gagent's channel into the running shared guest, and unplugging it."""

from __future__ import annotations

import pytest
import trio
from e2e_guest import gagent_qga

from gagent.errors import AgentUnavailable
from gagent.host.channel import ChannelSpec
from gagent.host.channel_ops import add_to_domain, remove_from_domain
from gagent.host.session import open_domain_agent
from gagent.host.virt import open_hypervisor

pytestmark = pytest.mark.e2e

HOTPLUG_CHANNEL = "org.gagent.hotplug.0"


async def test_hotplug_channel_then_unplug(main_domain):
    name, uri = main_domain.name, main_domain.uri
    path = main_domain.socket_path.parent / "hotplug.sock"
    hv = await open_hypervisor(uri)
    try:
        domain = await hv.lookup(name)
        with trio.fail_after(30):
            added = await add_to_domain(domain, ChannelSpec(HOTPLUG_CHANNEL, str(path)))
        print(f"e2e: hot-plug: {added}")
        try:
            assert added.changed and added.live, added
            # libvirt reports a state only once the guest side has changed
            assert main_domain.channel_states()[HOTPLUG_CHANNEL] in (None, "disconnected")
            with trio.fail_after(60):
                async with open_domain_agent(name, uri=uri) as agent:
                    await gagent_qga(agent, "start", HOTPLUG_CHANNEL)
                await main_domain.wait_channel_state(HOTPLUG_CHANNEL, "connected")
                async with open_domain_agent(name, uri=uri, channel_name=HOTPLUG_CHANNEL) as agent:
                    assert str(path) in agent.name
                    assert await agent.host_name() == main_domain.hostname
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(30):
                async with open_domain_agent(name, uri=uri) as agent:
                    await gagent_qga(agent, "stop", HOTPLUG_CHANNEL)
                removed = await remove_from_domain(domain, HOTPLUG_CHANNEL)
        print(f"e2e: unplug: {removed}")
        assert removed.changed and removed.live, removed
        assert HOTPLUG_CHANNEL not in main_domain.channel_states()
        assert HOTPLUG_CHANNEL not in (await domain.xml(inactive=True))
    finally:
        await hv.close()


async def test_hotplugged_channel_with_nobody_in_the_guest(main_domain):
    name, uri = main_domain.name, main_domain.uri
    path = main_domain.socket_path.parent / "hotplug-idle.sock"
    channel = "org.gagent.hotplug.idle"
    hv = await open_hypervisor(uri)
    try:
        domain = await hv.lookup(name)
        with trio.fail_after(30):
            added = await add_to_domain(domain, ChannelSpec(channel, str(path)))
        assert added.live, added
        try:
            assert main_domain.channel_states()[channel] is None  # libvirt knows nothing yet
            # an unreachable agent must be reported as such, well before this deadline
            with trio.fail_after(3), pytest.raises(AgentUnavailable):
                async with open_domain_agent(name, uri=uri, channel_name=channel):
                    pass
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(30):
                await remove_from_domain(domain, channel)
    finally:
        await hv.close()
