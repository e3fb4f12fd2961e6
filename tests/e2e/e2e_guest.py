"""Small guest-side helpers shared by the e2e tests (through any gagent transport).

In the guest, ``/etc/gagent/sysvinit/gagent-qga`` runs one qemu-ga per port
and keeps its pid in ``/run/gagent-qga/<port>.pid``.
"""

from __future__ import annotations

from gagent.commands import AgentCommands
from gagent.programs import run_program

INIT_SCRIPT = "/etc/gagent/sysvinit/gagent-qga"


async def agent_pid(agent: AgentCommands, port: str) -> int:
    """PID of the qemu-ga serving ``port`` (read with the guest-file API)."""
    handle = await agent.file_open(f"/run/gagent-qga/{port}.pid", "r")
    try:
        return int((await agent.file_read(handle, 64)).data)
    finally:
        await agent.file_close(handle)


async def gagent_qga(agent: AgentCommands, action: str, port: str) -> None:
    """Run the guest's init script (start/stop/...) for ``port`` only."""
    result = await run_program(
        agent, ["/bin/sh", "-c", f"GAGENT_PORTS={port} {INIT_SCRIPT} {action}"]
    )
    assert result.succeeded, result


async def kill(agent: AgentCommands, signal: str, pid: int) -> None:
    result = await run_program(agent, ["/bin/kill", f"-{signal}", str(pid)])
    assert result.succeeded, result
