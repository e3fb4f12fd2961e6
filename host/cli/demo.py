"""``gagent demo``: the main job on an embedded default, with no VM needed.

It starts the real qemu-ga on this host in unix-listen mode (every RPC that
could change the host blocked), talks to it through the same client the other
commands use, and prints what the agent reports, then what libvirt's built-in
test:///default holds (``--json``: all of it as one JSON object).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import click
import trio

from gagent.client import open_agent
from gagent.localagent import BLOCKED_RPCS, local_qemu_ga

from .options import json_option
from .render import dumps, format_table, human_bytes

DEMO_TIMEOUT = 30.0


async def _agent_report(socket_path: str) -> dict[str, Any]:
    """What the local agent reports: each step's result, as the client decodes it."""
    with trio.fail_after(DEMO_TIMEOUT):
        async with open_agent(socket_path) as agent:
            start = time.perf_counter()
            await agent.ping()
            rtt_ms = (time.perf_counter() - start) * 1000
            info = await agent.info()
            return {
                "version": info.version,
                "ping_ms": round(rtt_ms, 3),
                "commands_enabled": len(info.enabled_commands),
                "commands_disabled": len(info.commands) - len(info.enabled_commands),
                "osinfo": await agent.osinfo(),
                "hostname": await agent.host_name(),
                "filesystems": await agent.fsinfo(),
                "interfaces": await agent.network_interfaces(),
            }


def _agent_lines(report: dict[str, Any]) -> list[str]:
    osinfo = report["osinfo"]
    filesystems = format_table(
        ["mountpoint", "type", "used", "total"],
        (
            (fs.mountpoint, fs.type, human_bytes(fs.used_bytes), human_bytes(fs.total_bytes))
            for fs in report["filesystems"]
        ),
    )
    interfaces = format_table(
        ["interface", "mac", "addresses"],
        (
            (nic.name, nic.hardware_address, [f"{a.address}/{a.prefix}" for a in nic.ip_addresses])
            for nic in report["interfaces"]
        ),
    )
    return [
        f"agent:      qemu-ga {report['version']}, ping {report['ping_ms']:.2f} ms",
        f"commands:   {report['commands_enabled']} enabled, {report['commands_disabled']} disabled",
        f"os:         {osinfo.pretty_name or osinfo.name} ({osinfo.kernel_release})",
        f"hostname:   {report['hostname']}",
        "",
        filesystems,
        "",
        interfaces,
    ]


async def _libvirt_report() -> dict[str, Any]:
    """test:///default's domains, and what adding gagent's channel to the first would do."""
    from gagent.host.channel import ChannelSpec
    from gagent.host.channel_ops import add_to_domain
    from gagent.host.virt import DEFAULT_URI, open_hypervisor

    with trio.fail_after(DEMO_TIMEOUT):
        async with await open_hypervisor(DEFAULT_URI) as hypervisor:
            domains = [
                {"name": domain.name, "state": (await domain.state()).value, "uuid": domain.uuid}
                for domain in await hypervisor.domains()
            ]
            report: dict[str, Any] = {"uri": hypervisor.uri, "domains": domains}
            if domains:
                first = await hypervisor.lookup(domains[0]["name"])
                report["channel_add_dry_run"] = await add_to_domain(
                    first, ChannelSpec(), dry_run=True
                )
    return report


def _libvirt_lines(report: dict[str, Any]) -> list[str]:
    lines = [
        f"libvirt {report['uri']} (built in, no daemon):",
        format_table(["domain", "state", "uuid"], (d.values() for d in report["domains"])),
    ]
    result = report.get("channel_add_dry_run")
    if result is not None:
        lines += ["", f"gagent channel add {result.domain} --dry-run:", result.diff.rstrip()]
        lines.append(str(result))
    return lines


@click.command("demo")
@json_option("Print what the demo found as one JSON object.")
def demo(as_json: bool) -> None:
    """Show gagent on embedded defaults: a local qemu-ga (dangerous RPCs blocked) and libvirt's
    built-in test:///default."""
    with tempfile.TemporaryDirectory(prefix="gagent-demo-") as workdir:
        with local_qemu_ga(workdir) as agent:
            started = {
                "pid": agent.pid,
                "socket": str(agent.socket_path),
                "blocked_rpcs": sorted(BLOCKED_RPCS),
            }
            if not as_json:  # said before the agent is asked: where the demo is
                click.echo(
                    f"started qemu-ga pid {agent.pid} on {agent.socket_path} "
                    f"({len(BLOCKED_RPCS)} RPCs blocked: no freeze, exec, shutdown on this host)"
                )
            agent_report = trio.run(_agent_report, str(agent.socket_path))
            if not as_json:
                click.echo("\n".join(_agent_lines(agent_report)))
    libvirt_report = trio.run(_libvirt_report)
    if as_json:
        click.echo(dumps({"qemu_ga": started, "agent": agent_report, "libvirt": libvirt_report}))
        return
    click.echo("")
    click.echo("\n".join(_libvirt_lines(libvirt_report)))
