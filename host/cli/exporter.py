"""``gagent exporter``: serve guest state to Prometheus (see gagent.host.exporter)."""

from __future__ import annotations

import click

from gagent.errors import GagentError, UsageError

from .common import run_command, say

__all__ = ["exporter"]


@click.command("exporter")
@click.option(
    "--listen",
    "listen",
    metavar="ADDR:PORT",
    default=":9851",
    show_default=True,
    help="Where to serve /metrics (':PORT' for every address).",
)
@click.option(
    "-c",
    "--connect",
    "connects",
    multiple=True,
    metavar="[NAME=]URI",
    help="A hypervisor to watch (repeatable); NAME is its 'hypervisor' label.",
)
@click.option(
    "--hosts-file",
    type=click.Path(dir_okay=False),
    help="More hypervisors: 'NAME URI' or 'URI' per line (as 'gagent inventory scan').",
)
@click.option(
    "--interval",
    "intervals",
    multiple=True,
    metavar="SECONDS|GROUP=SECONDS",
    help="Collection interval: every agent group (default 60), or one group: "
    "libvirt (default 15), agent, fs, os.  Repeatable.",
)
@click.option(
    "--agent-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Deadline of one guest's collection; past it only that guest goes stale.",
)
@click.option(
    "--host-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Deadline of one libvirt call or connect; past it the exporter reconnects.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Guests collected at a time, per hypervisor.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate the options and connect to each hypervisor once, then exit "
    "(0: all reachable, 8: not).",
)
def exporter(
    listen: str,
    connects: tuple[str, ...],
    hosts_file: str | None,
    intervals: tuple[str, ...],
    agent_timeout: float,
    host_timeout: float,
    concurrency: int,
    check: bool,
) -> int:
    """Serve guest state to Prometheus, collected from the agents in the background.

    A scrape reads a cache and never waits on a guest; liveness comes from
    libvirt's events and channel states, guest data from read-only agent
    commands at each group's interval.  Metrics: see README.md, "Exporter".
    """
    from gagent.host.exporter.poll import ExporterSettings, parse_intervals
    from gagent.host.exporter.serve import parse_listen

    targets = _targets(connects, hosts_file)
    address, port = parse_listen(listen)
    settings = ExporterSettings(
        intervals=parse_intervals(None, intervals),
        agent_timeout=agent_timeout,
        host_timeout=host_timeout,
        concurrency=concurrency,
    )
    if check:
        return run_command(
            lambda: _check(targets, host_timeout), seconds=None, target="the hypervisors"
        )
    run_command(lambda: _serve(targets, settings, address, port), seconds=None, target="")
    return 0


def _targets(connects: tuple[str, ...], hosts_file: str | None) -> list[tuple[str, str]]:
    """(hypervisor label, URI) per hypervisor; none given: the default URI, as virsh."""
    from gagent.host.exporter.poll import hypervisor_name
    from gagent.host.inventory.targets import parse_targets
    from gagent.host.virt_types import resolve_uri

    if not connects and hosts_file is None:
        uri = resolve_uri(None) or "qemu:///system"
        return [(hypervisor_name(None, uri), uri)]
    targets = parse_targets(list(connects), hosts_file)
    named = [(hypervisor_name(t.name, t.uri), t.uri) for t in targets]
    labels = [name for name, _ in named]
    for name in labels:
        if labels.count(name) > 1:
            raise UsageError(
                f"two hypervisors would both be labelled {name!r}: name each one (-c NAME=URI)"
            )
    return named


async def _check(targets: list[tuple[str, str]], host_timeout: float) -> int:
    import trio

    from gagent.host.virt import open_hypervisor

    failed = 0
    for name, uri in targets:
        try:
            with trio.fail_after(host_timeout):
                async with await open_hypervisor(uri) as hv:
                    count = len(await hv.domains())
            click.echo(f"{name}: {uri}: ok, {count} domains")
        except (GagentError, trio.TooSlowError) as exc:
            failed += 1
            reason = str(exc) or f"no answer within {host_timeout:g}s (--host-timeout)"
            click.echo(f"{name}: {uri}: error: {reason}")
    return 8 if failed else 0


async def _serve(targets, settings, address: str, port: int) -> None:
    from gagent.host.exporter.cache import ExporterCache
    from gagent.host.exporter.poll import run_pollers
    from gagent.host.exporter.serve import start_server

    cache = ExporterCache(targets)
    server = start_server(cache, address, port)
    say(f"gagent exporter: serving http://{address}:{server.port}/metrics for {len(targets)} "
        "hypervisor(s)")  # fmt: skip
    try:
        await run_pollers(targets, cache, settings, log=say)
    finally:
        server.stop()
