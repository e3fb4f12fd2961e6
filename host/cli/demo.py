"""``gagent demo``: the main job on an embedded default, with no VM needed.

It starts the real qemu-ga on this host in unix-listen mode (every RPC that
could change the host blocked), talks to it through the same client the other
commands use, and prints what the agent reports.
"""

from __future__ import annotations

import tempfile
import time

import click
import trio

from gagent.client import open_agent
from gagent.localagent import BLOCKED_RPCS, local_qemu_ga

from .render import format_table, human_bytes

DEMO_TIMEOUT = 30.0


async def _agent_report(socket_path: str) -> list[str]:
    lines: list[str] = []
    with trio.fail_after(DEMO_TIMEOUT):
        async with open_agent(socket_path) as agent:
            start = time.perf_counter()
            await agent.ping()
            rtt_ms = (time.perf_counter() - start) * 1000
            info = await agent.info()
            osinfo = await agent.osinfo()
            hostname = await agent.host_name()
            filesystems = await agent.fsinfo()
            interfaces = await agent.network_interfaces()
            lines.append(f"agent:      qemu-ga {info.version}, ping {rtt_ms:.2f} ms")
            lines.append(
                f"commands:   {len(info.enabled_commands)} enabled, "
                f"{len(info.commands) - len(info.enabled_commands)} disabled"
            )
            lines.append(
                f"os:         {osinfo.pretty_name or osinfo.name} ({osinfo.kernel_release})"
            )
            lines.append(f"hostname:   {hostname}")
            lines.append("")
            lines.append(
                format_table(
                    ["mountpoint", "type", "used", "total"],
                    (
                        (
                            fs.mountpoint,
                            fs.type,
                            human_bytes(fs.used_bytes),
                            human_bytes(fs.total_bytes),
                        )
                        for fs in filesystems
                    ),
                )
            )
            lines.append("")
            lines.append(
                format_table(
                    ["interface", "mac", "addresses"],
                    (
                        (
                            nic.name,
                            nic.hardware_address,
                            [f"{a.address}/{a.prefix}" for a in nic.ip_addresses],
                        )
                        for nic in interfaces
                    ),
                )
            )
    return lines


async def _libvirt_report() -> list[str]:
    from gagent.host.channel import ChannelSpec
    from gagent.host.channel_ops import add_to_domain
    from gagent.host.virt import DEFAULT_URI, open_hypervisor

    lines: list[str] = []
    with trio.fail_after(DEMO_TIMEOUT):
        async with await open_hypervisor(DEFAULT_URI) as hypervisor:
            rows = []
            for domain in await hypervisor.domains():
                rows.append((domain.name, (await domain.state()).value, domain.uuid))
            lines.append(f"libvirt {hypervisor.uri} (built in, no daemon):")
            lines.append(format_table(["domain", "state", "uuid"], rows))
            if rows:
                first = await hypervisor.lookup(rows[0][0])
                result = await add_to_domain(first, ChannelSpec(), dry_run=True)
                lines.append("")
                lines.append(f"gagent channel add {first.name} --dry-run:")
                lines.append(result.diff.rstrip())
                lines.append(str(result))
    return lines


@click.command("demo")
def demo() -> None:
    """Show gagent on embedded defaults: a local qemu-ga (dangerous RPCs blocked) and libvirt's
    built-in test:///default."""
    with tempfile.TemporaryDirectory(prefix="gagent-demo-") as workdir:
        with local_qemu_ga(workdir) as agent:
            click.echo(
                f"started qemu-ga pid {agent.pid} on {agent.socket_path} "
                f"({len(BLOCKED_RPCS)} RPCs blocked: no freeze, exec, shutdown on this host)"
            )
            for line in trio.run(_agent_report, str(agent.socket_path)):
                click.echo(line)
    click.echo("")
    for line in trio.run(_libvirt_report):
        click.echo(line)
