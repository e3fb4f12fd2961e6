"""``gagent exporter``: serve guest state to Prometheus (see gagent.host.exporter).

What it tells while serving (listening, each hypervisor connected or lost) is
lines on stderr; with ``--json``, one JSON object per line on stdout::

    {"event": "listening", "address": "0.0.0.0", "port": 9851, "url": "http://...", ...}
    {"event": "connected", "hypervisor": "kvm1", "uri": "qemu+ssh://kvm1/system"}
    {"event": "reconnecting", "hypervisor": "kvm1", "uri": "...", "error": "..."}
    {"event": "stopped", "signal": "SIGTERM"}
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import click

from gagent.errors import GagentError, UsageError

from .common import Interrupted, run_command, say
from .options import Seconds, channel_option, json_option

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
    type=Seconds(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Deadline of one guest's collection; past it only that guest goes stale.",
)
@click.option(
    "--host-timeout",
    type=Seconds(min=0, min_open=True),
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
@channel_option
@click.option(
    "--check",
    is_flag=True,
    help="Validate the options and connect to each hypervisor once, then exit "
    "(0: all reachable, 8: not).",
)
@json_option(
    "Events as JSON lines on stdout (listening, connected, reconnecting, stopped); "
    "with --check, one JSON object."
)
def exporter(
    listen: str,
    connects: tuple[str, ...],
    hosts_file: str | None,
    intervals: tuple[str, ...],
    agent_timeout: float,
    host_timeout: float,
    concurrency: int,
    channel: str,
    check: bool,
    as_json: bool,
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
        channel_name=channel,
    )
    if check:
        return run_command(
            lambda: _check(targets, host_timeout, as_json), seconds=None, target="the hypervisors"
        )
    try:
        run_command(
            lambda: _serve(targets, settings, address, port, as_json), seconds=None, target=""
        )
    except Interrupted as exc:
        if not as_json:
            raise  # gagent's usual line: "gagent: interrupted by SIGTERM"
        _emit({"event": "stopped", "signal": signal.Signals(exc.signum).name})
        return exc.exit_code
    return 0


def _emit(event: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (click.echo flushes): a log shipper reads it now."""
    try:
        click.echo(json.dumps(event))
    except OSError:
        pass  # stdout is gone (a closed pipe): the exporter goes on serving, as say() does


def _json_log(targets: list[tuple[str, str]]) -> Callable[[str], None]:
    """The pollers' log lines as JSON events.

    A poller writes ``gagent exporter: NAME (URI): connected`` or ``...: ERROR;
    reconnecting`` (gagent.host.exporter.poll); NAME and URI are known here, so
    the line is split at that prefix, never guessed at.  Any other line is kept
    whole as a ``log`` event.
    """
    prefixes = [(f"gagent exporter: {name} ({uri}): ", name, uri) for name, uri in targets]

    def log(line: str) -> None:
        for prefix, name, uri in prefixes:
            if not line.startswith(prefix):
                continue
            what = line.removeprefix(prefix)
            about = {"hypervisor": name, "uri": uri}
            if what == "connected":
                _emit({"event": "connected", **about})
            elif what.endswith("; reconnecting"):
                _emit({"event": "reconnecting", **about,
                       "error": what.removesuffix("; reconnecting")})  # fmt: skip
            else:
                _emit({"event": "log", **about, "message": what})
            return
        _emit({"event": "log", "message": line})

    return log


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address  # IPv6 in a URL
    return f"http://{host}:{port}/metrics"


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


async def _check(targets: list[tuple[str, str]], host_timeout: float, as_json: bool) -> int:
    import trio

    from gagent.host.virt import open_hypervisor

    results: list[dict[str, Any]] = []
    for name, uri in targets:
        try:
            with trio.fail_after(host_timeout):
                async with await open_hypervisor(uri) as hv:
                    count = len(await hv.domains())
            results.append({"hypervisor": name, "uri": uri, "ok": True, "domains": count})
            if not as_json:
                click.echo(f"{name}: {uri}: ok, {count} domains")
        except (GagentError, trio.TooSlowError) as exc:
            reason = str(exc) or f"no answer within {host_timeout:g}s (--host-timeout)"
            results.append({"hypervisor": name, "uri": uri, "ok": False, "error": reason})
            if not as_json:
                click.echo(f"{name}: {uri}: error: {reason}")
    reachable = all(result["ok"] for result in results)
    if as_json:
        click.echo(json.dumps({"ok": reachable, "hypervisors": results}, indent=2))
    return 0 if reachable else 8


async def _serve(targets, settings, address: str, port: int, as_json: bool) -> None:
    from gagent.host.exporter.cache import ExporterCache
    from gagent.host.exporter.poll import run_pollers
    from gagent.host.exporter.serve import start_server

    cache = ExporterCache(targets)
    server = start_server(cache, address, port)
    url = _url(address, server.port)
    log = _json_log(targets) if as_json else say
    if as_json:
        watched = [{"hypervisor": name, "uri": uri} for name, uri in targets]
        _emit({"event": "listening", "address": address, "port": server.port, "url": url,
               "hypervisors": watched})  # fmt: skip
    else:
        say(f"gagent exporter: serving {url} for {len(targets)} hypervisor(s)")
    try:
        await run_pollers(targets, cache, settings, log=log)
    finally:
        server.stop()
