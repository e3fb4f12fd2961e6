"""Failures with a real libvirt: domains that die, are shut off, or have nobody on the channel."""

from __future__ import annotations

import re

import pytest
import trio
from e2e_guest import agent_pid

from gagent.errors import AgentUnavailable, ConnectionLost, GagentError
from gagent.host.session import open_domain_agent
from gagent.host.virt import DomainNotFound

pytestmark = pytest.mark.e2e

#: How soon after the destroy every in-flight call must have failed.
ERROR_WITHIN = 10.0


async def test_domain_destroyed_mid_command(doomed_domain):
    """Calls in flight when the domain dies fail at once with a gagent error.

    Both agents in the guest (on gagent's channel and on libvirt's) are
    SIGSTOPped first, so a ping through each is truly waiting for a reply
    that never comes when the domain is destroyed from another task."""
    doomed = doomed_domain
    name, uri = doomed.name, doomed.uri
    outcome: dict[str, tuple[BaseException | None, float]] = {}

    async def call(label: str, func) -> None:
        try:
            await func()
        except GagentError as exc:
            outcome[label] = (exc, trio.current_time())
        else:
            outcome[label] = (None, trio.current_time())

    async with (
        open_domain_agent(name, uri=uri) as ours,
        open_domain_agent(name, uri=uri, transport="libvirt") as theirs,
    ):
        with trio.fail_after(30):
            pids = [str(await agent_pid(ours, port)) for port in doomed.served]
            # detached, and no exec-status: the agent that runs it is stopped too
            await ours.exec("/bin/sh", ["-c", f"sleep 0.5; kill -STOP {' '.join(pids)}"])
            await trio.sleep(1.5)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "socket", ours.ping)
                nursery.start_soon(call, "libvirt", theirs.ping)
                await trio.sleep(2.0)
                assert not outcome, f"answered by stopped agents: {outcome}"
                destroyed_at = trio.current_time()
                await trio.to_thread.run_sync(doomed.dom.destroy)
        for label in ("socket", "libvirt"):
            exc, when = outcome[label]
            assert isinstance(exc, ConnectionLost | AgentUnavailable), (label, exc)
            assert when - destroyed_at < ERROR_WITHIN, (label, when - destroyed_at, exc)
            assert name in str(exc), exc  # says which domain was lost
            print(
                f"e2e: {label} call in flight at destroy: {type(exc).__name__}: {exc}"
                f" ({when - destroyed_at:.2f} s)"
            )
    # a new attempt says the domain is shut off
    with trio.fail_after(30), pytest.raises(AgentUnavailable, match="shut off"):
        async with open_domain_agent(name, uri=uri):
            pass


async def test_shut_off_domain(shut_off_domain):
    off = shut_off_domain
    for transport in ("auto", "socket", "libvirt"):
        with trio.fail_after(30), pytest.raises(AgentUnavailable) as info:
            async with open_domain_agent(off.name, uri=off.uri, transport=transport):
                pass
        assert "shut off" in str(info.value), (transport, info.value)
        # the advice names the connection the session used, whatever LIBVIRT_DEFAULT_URI says
        assert re.search(rf"virsh -c \S+ start {off.name}", str(info.value)), info.value


async def test_channel_with_nobody_in_the_guest(main_domain):
    idle = [ch for ch in main_domain.sockets if ch not in main_domain.served]
    assert idle, "the shared domain has no unserved channel"
    assert main_domain.channel_states()[idle[0]] == "disconnected"
    with trio.fail_after(30), pytest.raises(AgentUnavailable) as info:
        async with open_domain_agent(main_domain.name, uri=main_domain.uri, channel_name=idle[0]):
            pass
    assert "disconnected" in str(info.value)
    assert idle[0] in str(info.value)


async def test_unknown_domain(libvirt_daemon):
    with trio.fail_after(30), pytest.raises(DomainNotFound, match="no-such-domain"):
        async with open_domain_agent("no-such-domain", uri=libvirt_daemon.uri):
            pass
