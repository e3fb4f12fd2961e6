"""Restarting qemu-ga inside the guest, then reconnecting."""

from __future__ import annotations

import pytest
import trio
from e2e_guest import INIT_SCRIPT, agent_pid

from gagent.errors import AgentError, AgentUnavailable, ConnectionLost
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e


async def test_agent_restart_then_reconnect(main_domain):
    uri, name = main_domain.uri, main_domain.name
    with trio.fail_after(30):
        async with open_domain_agent(name, uri=uri) as agent:
            old_pid = await agent_pid(agent, GAGENT_CHANNEL)
            old_libvirt_pid = await agent_pid(agent, LIBVIRT_AGENT_CHANNEL)
            # Detached: the restart kills the very agent that runs this exec.
            result = await run_program(
                agent,
                [
                    "/bin/sh",
                    "-c",
                    f"(sleep 1; {INIT_SCRIPT} restart) >/tmp/e2e-restart.log 2>&1 </dev/null &",
                ],
            )
            assert result.succeeded, result

    attempts: list[str] = []
    new_pid = old_pid
    with trio.fail_after(60):
        while new_pid == old_pid:
            try:
                with trio.move_on_after(5) as attempt:
                    async with open_domain_agent(name, uri=uri) as agent:
                        await agent.ping()
                        new_pid = await agent_pid(agent, GAGENT_CHANNEL)
                attempts.append("timed out" if attempt.cancelled_caught else f"pid {new_pid}")
            except (AgentUnavailable, ConnectionLost, AgentError) as exc:
                # AgentError: the restart is between agents (the pid file is not
                # there yet), and auto may have reached the other one meanwhile
                attempts.append(f"{type(exc).__name__}: {exc}")
            if new_pid == old_pid:
                await trio.sleep(0.3)
    assert new_pid != old_pid, attempts

    with trio.fail_after(30):
        async with open_domain_agent(name, uri=uri) as agent:
            await agent.ping()
            result = await run_program(agent, ["/bin/cat", "/tmp/e2e-restart.log"])
            assert b"started" in result.stdout, result
            assert await agent_pid(agent, LIBVIRT_AGENT_CHANNEL) != old_libvirt_pid
        # libvirt's agent came back too, and libvirt reaches it again
        while True:
            try:
                async with open_domain_agent(name, uri=uri, transport="libvirt") as agent:
                    await agent.ping()
                    break
            except AgentUnavailable:
                await trio.sleep(0.3)
    states = main_domain.channel_states()
    assert states[GAGENT_CHANNEL] == states[LIBVIRT_AGENT_CHANNEL] == "connected", states
