"""Restarting qemu-ga inside the guest, then reconnecting.

Each step waits for the thing it is about, on that thing's own route: gagent's
new agent through gagent's socket, libvirt's through libvirt, then libvirt's
view of both channels; only then does ``auto`` have to pick our socket again.
(Waiting on ``auto`` alone is not enough: between agents it may read our new
pid through libvirt's agent while libvirt still shows our channel
disconnected, and a check made then fails at once.)

Bounds: a restart under TCG took 2-8 s on a loaded 2-CPU host, 13 s when the
old agent ignored SIGTERM and the init script had to SIGKILL it after its 5 s
wait (measured, see RESTART_BOUND).  A request that reaches an agent as it
dies is never answered, hence the short bound on each attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
from e2e_guest import INIT_SCRIPT, agent_pid

from gagent.errors import AgentError, AgentUnavailable, ConnectionLost
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.libvirt_agent import LibvirtAgent
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

#: Seconds for the restart to show on a route: 4-5x the slowest restart measured
#: under load (13 s, with the SIGKILL escalation).
RESTART_BOUND = 60
#: Seconds for one attempt (a request lost with the old agent is never answered).
ATTEMPT_BOUND = 5
#: Seconds between attempts.
PAUSE = 0.3


async def _until(attempt: Callable[[], Awaitable[bool]], log: list[str]) -> None:
    """Run ``attempt`` until it returns True; a failed or hung try is logged and retried.

    Bound it with fail_after; the log says what every try met."""
    while True:
        try:
            with trio.move_on_after(ATTEMPT_BOUND) as one:
                if await attempt():
                    return
            log.append("timed out" if one.cancelled_caught else "not yet")
        except (AgentUnavailable, ConnectionLost, AgentError) as exc:
            # AgentError too: a file handle opened by the old agent is unknown
            # to the new one, and the pid file is missing between agents.
            log.append(f"{type(exc).__name__}: {exc}")
        await trio.sleep(PAUSE)


async def test_agent_restart_then_reconnect(main_domain):
    uri, name = main_domain.uri, main_domain.name
    with trio.fail_after(30):
        async with open_domain_agent(name, uri=uri, transport="socket") as agent:
            old_pid = await agent_pid(agent, GAGENT_CHANNEL)
            old_libvirt_pid = await agent_pid(agent, LIBVIRT_AGENT_CHANNEL)
            # Detached: the restart kills the very agent that runs this exec.
            # Its lines go to the console as well: a failure shows them in the
            # serial log's tail.
            result = await run_program(
                agent,
                [
                    "/bin/sh",
                    "-c",
                    f"(sleep 1; {INIT_SCRIPT} restart 2>&1 | tee /tmp/e2e-restart.log"
                    " >/dev/console) </dev/null >/dev/null 2>&1 &",
                ],
            )
            assert result.succeeded, result

    log: list[str] = []
    pids: dict[str, int] = {}

    async def ours_is_new() -> bool:
        async with open_domain_agent(name, uri=uri, transport="socket") as agent:
            pids[GAGENT_CHANNEL] = await agent_pid(agent, GAGENT_CHANNEL)
        log.append(f"socket: pid {pids[GAGENT_CHANNEL]}")
        return pids[GAGENT_CHANNEL] != old_pid

    async def libvirts_is_new() -> bool:
        async with open_domain_agent(name, uri=uri, transport="libvirt") as agent:
            pids[LIBVIRT_AGENT_CHANNEL] = await agent_pid(agent, LIBVIRT_AGENT_CHANNEL)
        log.append(f"libvirt: pid {pids[LIBVIRT_AGENT_CHANNEL]}")
        return pids[LIBVIRT_AGENT_CHANNEL] != old_libvirt_pid

    async def both_connected() -> bool:
        states = main_domain.channel_states()
        log.append(f"states {states}")
        return states[GAGENT_CHANNEL] == states[LIBVIRT_AGENT_CHANNEL] == "connected"

    try:
        for step in (ours_is_new, libvirts_is_new, both_connected):
            with trio.fail_after(RESTART_BOUND):
                await _until(step, log)
    except trio.TooSlowError:
        pytest.fail(f"after the restart: {log[-12:]}\n{main_domain.tails()}")

    with trio.fail_after(30):
        # auto picks our socket again, and the new agent answers there
        async with open_domain_agent(name, uri=uri) as agent:
            assert not isinstance(agent, LibvirtAgent), agent.name
            assert await agent_pid(agent, GAGENT_CHANNEL) == pids[GAGENT_CHANNEL]
            result = await run_program(agent, ["/bin/cat", "/tmp/e2e-restart.log"])
            assert result.stdout.count(b": started (pid") == 2, result
