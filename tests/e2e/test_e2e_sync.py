"""gagent.sync and the many-domain CLI in the real guest: by domain name, on gagent's channel
and through libvirt, the same results as the async API."""

from __future__ import annotations

import json
import shlex

import pytest
import trio

import gagent.sync
from gagent.errors import CommandNotFound
from gagent.host.cli import main
from gagent.host.session import open_domain_agent

pytestmark = pytest.mark.e2e


async def _async_view(name: str, uri: str, transport: str) -> tuple:
    with trio.fail_after(60):
        async with open_domain_agent(name, uri=uri, transport=transport) as agent:
            return await agent.osinfo(), await agent.host_name(), await agent.users()


@pytest.mark.parametrize("transport", ["socket", "libvirt"])
def test_sync_by_domain_name_matches_async(main_domain, guest_kernel_release, transport):
    name, uri = main_domain.name, main_domain.uri
    with gagent.sync.open_domain_agent(name, uri=uri, transport=transport, timeout=60) as agent:
        agent.ping()
        osinfo, host_name, users = agent.osinfo(), agent.host_name(), agent.users()
        assert agent.info().version.startswith("7.2.")
        with pytest.raises(CommandNotFound):  # the agent's refusal, the same error class
            agent.call("guest-no-such-command", check=False)
        agent.ping()  # and the conversation goes on
        assert agent.commands.target.thaw == shlex.join(["gagent", "thaw", name, "-c", uri])
    assert osinfo.kernel_release == guest_kernel_release
    assert host_name == main_domain.hostname
    assert (osinfo, host_name, users) == trio.run(_async_view, name, uri, transport)


@pytest.mark.parametrize("transport", ["socket", "libvirt"])
def test_domains_option_on_the_real_guest(capsys, main_domain, transport):
    code = main(
        ["agent", "-c", main_domain.uri, "--domains", main_domain.name, "--transport",
         transport, "--json", "--timeout", "60", "hostname"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    line = json.loads(out)
    assert (line["domain"], line["ok"], line["result"]) == (
        main_domain.name,
        True,
        main_domain.hostname,
    )
