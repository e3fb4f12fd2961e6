"""The libvirt route: org.qemu.guest_agent.0, owned by libvirt, through qemuAgentCommand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
from e2e_guest import gagent_qga

from gagent.client import Agent
from gagent.errors import AgentUnavailable, CommandNotFound, ReplyTooLarge
from gagent.host.channel import LIBVIRT_AGENT_CHANNEL
from gagent.host.libvirt_agent import LibvirtAgent
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e


async def test_libvirt_transport(main_domain, guest_kernel_release):
    with trio.fail_after(60):
        async with open_domain_agent(
            main_domain.name, uri=main_domain.uri, transport="libvirt"
        ) as agent:
            assert isinstance(agent, LibvirtAgent)
            await agent.ping()
            osinfo = await agent.osinfo()
            assert osinfo.kernel_release == guest_kernel_release
            assert await agent.host_name() == main_domain.hostname
            info = await agent.info()
            assert info.version.startswith("7.2.")
            result = await run_program(agent, ["/bin/sh", "-c", "echo via libvirt; exit 4"])
            assert (result.exit_code, result.stdout) == (4, b"via libvirt\n")
            # the agent's own refusal, relayed by libvirt, maps to the same error class
            with pytest.raises(CommandNotFound):
                await agent.call("guest-no-such-command", check=False)
            await agent.ping()


async def test_auto_prefers_gagent_socket_when_both_channels_exist(main_domain):
    states = main_domain.channel_states()
    assert states["org.gagent.agent.0"] == "connected"
    assert states["org.qemu.guest_agent.0"] == "connected"
    with trio.fail_after(30):
        async with open_domain_agent(main_domain.name, uri=main_domain.uri) as agent:
            assert isinstance(agent, Agent)
            assert str(main_domain.socket_path) in agent.name
            await agent.ping()
        async with open_domain_agent(
            main_domain.name, uri=main_domain.uri, transport="socket"
        ) as agent:
            assert isinstance(agent, Agent)
            await agent.ping()


async def test_libvirt_transport_with_no_agent_in_the_guest(main_domain):
    """libvirt's channel disconnected (its qemu-ga stopped): a clear AgentUnavailable."""
    name, uri = main_domain.name, main_domain.uri
    async with open_domain_agent(name, uri=uri) as ours:
        try:
            with trio.fail_after(60):
                await gagent_qga(ours, "stop", LIBVIRT_AGENT_CHANNEL)
                await main_domain.wait_channel_state(LIBVIRT_AGENT_CHANNEL, "disconnected")
            with trio.fail_after(30), pytest.raises(AgentUnavailable) as info:
                async with open_domain_agent(name, uri=uri, transport="libvirt"):
                    pass
            print(f"e2e: libvirt transport, no agent: {info.value}")
            assert name in str(info.value)
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(60):
                await gagent_qga(ours, "start", LIBVIRT_AGENT_CHANNEL)
                await main_domain.wait_channel_state(LIBVIRT_AGENT_CHANNEL, "connected")
    with trio.fail_after(30):
        async with open_domain_agent(name, uri=uri, transport="libvirt") as agent:
            await agent.ping()


BIG_OUTPUT = ["/bin/sh", "-c", "head -c 9000000 /dev/zero; echo done >&2"]


async def test_large_program_output_through_libvirt(main_domain):
    """9 MB of output would be a ~12 MB guest-exec-status reply, over libvirt's 10 MiB:
    run_program collects it through files in the guest, and libvirt keeps its agent."""
    name, uri = main_domain.name, main_domain.uri
    with trio.fail_after(180):
        async with open_domain_agent(name, uri=uri, transport="libvirt") as agent:
            result = await run_program(agent, BIG_OUTPUT)
            assert result.succeeded, result.stderr
            assert result.stdout == b"\0" * 9_000_000 and result.stderr == b"done\n"
            assert await agent.host_name() == main_domain.hostname  # libvirt still talks to it
            # (listed with the raw commands: run_program here would list its own files)
            pid = await agent.exec("/bin/ls", ["-a", "/tmp"], capture_output=True)
            while True:
                listing = await agent.exec_status(pid)
                if listing.exited:
                    break
                await trio.sleep(0.1)
            assert b".gagent-exec-" not in listing.stdout, listing.stdout


async def test_reply_over_libvirts_bound_and_the_way_back(main_domain):
    """The raw commands have no such way around: libvirt reads 10 MiB of a reply at most,
    then gives the agent up until qemu-ga reconnects; gagent names both states and the
    way out."""
    name, uri = main_domain.name, main_domain.uri
    with trio.fail_after(180):
        async with open_domain_agent(name, uri=uri, transport="libvirt") as agent:
            pid = await agent.exec(BIG_OUTPUT[0], BIG_OUTPUT[1:], capture_output=True)
            with pytest.raises(ReplyTooLarge) as too_large:
                while True:
                    if (await agent.exec_status(pid)).exited:
                        break
                    await trio.sleep(0.2)
            assert "systemctl restart qemu-guest-agent" in str(too_large.value)
            with pytest.raises(AgentUnavailable) as refused:
                await agent.host_name()
            assert "restart qemu-guest-agent" in (refused.value.hint or ""), refused.value
        try:
            # the same program through gagent's own channel has no such bound
            async with open_domain_agent(name, uri=uri, transport="socket") as ours:
                result = await run_program(ours, BIG_OUTPUT)
                assert len(result.stdout) == 9_000_000
        finally:
            async with open_domain_agent(name, uri=uri, transport="socket") as ours:
                await gagent_qga(ours, "restart", LIBVIRT_AGENT_CHANNEL)
            while True:  # libvirt takes the agent back once qemu-ga reconnects
                try:
                    async with open_domain_agent(name, uri=uri, transport="libvirt") as agent:
                        assert await agent.host_name() == main_domain.hostname
                        break
                except AgentUnavailable:
                    await trio.sleep(0.2)


async def test_gagent_agent_exec_through_libvirt_prints_large_output(main_domain):
    """``gagent agent DOMAIN --transport libvirt exec`` as an operator runs it."""
    gagent = Path(sys.executable).with_name("gagent")
    argv = [
        str(gagent), "agent", main_domain.name, "-c", main_domain.uri, "--transport", "libvirt",
        "exec", "--", "/bin/sh", "-c", "head -c 6000000 /dev/zero; echo fine >&2; exit 4",
    ]  # fmt: skip
    with trio.fail_after(180):
        proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert proc.returncode == 4, proc.stderr  # the program's own exit code
    assert proc.stdout == b"\0" * 6_000_000 and proc.stderr == b"fine\n"
