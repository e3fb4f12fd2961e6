"""``gagent channel``, ``gagent status`` and ``gagent watch``: commands about domains."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, TypeVar

import click
import trio

from gagent.errors import UsageError

from .common import Output, run_command
from .completion import domain_argument
from .domain_options import DEFAULT_TIMEOUT, connect_option, json_option
from .fanout import fan_out_options, human_line, parse_domains, run_many
from .options import Seconds, channel_option
from .options import json_option as shared_json_option
from .probe import channel_probe
from .render import format_table, to_jsonable

T = TypeVar("T")

#: What status keeps of its deadline to report a silent agent itself (exit 3).
STATUS_RESERVE = 0.2
#: as in gagent.host.cli's table: the guest is frozen
EXIT_GUEST_FROZEN = 13
#: a dry run previews: it exits 0 also where the real run is refused, and says so
DRY_RUN_HELP = (
    "Print the XML diff, change nothing (exit 0; on a domain a manager owns, a warning "
    "line says the real run is refused without --force)."
)

force_option = click.option(
    "--force",
    is_flag=True,
    help="Edit the definition even where oVirt/VDSM, nova or KubeVirt owns it (and may drop it).",
)
timeout_option = click.option(
    "--timeout",
    type=Seconds(min=0),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Deadline for the whole command in seconds, libvirt included (0: none).",
)


def _with_domain(
    connect: str | None, ref: str, func: Callable[[Any], Awaitable[T]], *, timeout: float
) -> T:
    from gagent.host.session import open_domain

    async def run() -> T:
        async with open_domain(ref, uri=connect) as session:
            return await func(session.domain)

    return run_command(run, seconds=timeout, target=f"domain {ref}")


@click.group("channel")
def channel_group() -> None:
    """Add, remove or list a domain's agent channels."""


channel_group.add_command(channel_probe)  # defined in probe.py, on the options of domain_options.py


@channel_group.command("add")
@domain_argument()
@click.option("--name", default=None, help="Virtio port name (default org.gagent.agent.0).")
@click.option("--path", default=None, help="Socket path (default: libvirt chooses one).")
@click.option(
    "--libvirt-managed",
    is_flag=True,
    help="Allow org.qemu.guest_agent.0: libvirt then owns the socket.",
)
@click.option("--no-live", is_flag=True, help="Change the definition only, no hot-plug.")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@force_option
@connect_option
@timeout_option
@json_option
def channel_add(
    domain: str,
    name: str | None,
    path: str | None,
    libvirt_managed: bool,
    no_live: bool,
    dry_run: bool,
    force: bool,
    connect: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Add gagent's agent channel to DOMAIN (definition, and live if running).

    A domain whose definition oVirt/VDSM, OpenStack nova or KubeVirt owns is
    refused (the manager would drop the channel), unless --force.
    """
    from gagent.host.channel import GAGENT_CHANNEL, ChannelSpec
    from gagent.host.channel_ops import add_to_domain

    spec = ChannelSpec(name=GAGENT_CHANNEL if name is None else name, path=path)
    result = _with_domain(
        connect,
        domain,
        lambda dom: add_to_domain(
            dom,
            spec,
            libvirt_managed=libvirt_managed,
            live=not no_live,
            dry_run=dry_run,
            force=force,
        ),
        timeout=timeout,
    )
    _show_result(result, dry_run=dry_run, as_json=as_json)


@channel_group.command("remove")
@domain_argument()
@click.option("--name", default=None, help="Virtio port name (default org.gagent.agent.0).")
@click.option("--no-live", is_flag=True, help="Change the definition only, no hot-unplug.")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@force_option
@connect_option
@timeout_option
@json_option
def channel_remove(
    domain: str, name: str | None, no_live: bool, dry_run: bool, force: bool,
    connect: str | None, timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Remove an agent channel from DOMAIN (refused where a manager owns it, unless --force)."""
    from gagent.host.channel import GAGENT_CHANNEL
    from gagent.host.channel_ops import remove_from_domain

    result = _with_domain(
        connect,
        domain,
        lambda dom: remove_from_domain(
            dom,
            GAGENT_CHANNEL if name is None else name,
            live=not no_live,
            dry_run=dry_run,
            force=force,
        ),
        timeout=timeout,
    )
    _show_result(result, dry_run=dry_run, as_json=as_json)


def _show_result(result: Any, *, dry_run: bool, as_json: bool) -> None:
    """What channel add/remove did: its lines (and a dry run's diff), or one JSON object."""
    if as_json:
        Output(True).emit(result)
        return
    if dry_run and result.diff:
        click.echo(result.diff, nl=False)
    click.echo(str(result))


@channel_group.command("list")
@domain_argument()
@connect_option
@timeout_option
@json_option
def channel_list(domain: str, connect: str | None, timeout: float, as_json: bool) -> None:
    """List DOMAIN's channels: name, socket path, live state."""
    from gagent.host.channel_ops import channels_of

    channels = _with_domain(connect, domain, channels_of, timeout=timeout)
    Output(as_json).emit(
        channels,
        lambda value: (
            format_table(
                ["name", "type", "target", "path", "state"],
                ((c.name, c.kind, c.target_type, c.path, c.state) for c in value),
            )
            if value
            else "(no channels)"
        ),
    )


@click.command("status")
@domain_argument(required=False, metavar="DOMAIN")  # unless --domains/--all
@connect_option
@json_option
@click.option(
    "--timeout",
    type=Seconds(min=0),
    default=5.0,
    show_default=True,
    help="Deadline for the whole command, libvirt included (0: none); per domain with "
    "--domains/--all.",
)
@channel_option
@fan_out_options
def status(
    domain: str | None,
    connect: str | None,
    as_json: bool,
    timeout: float,
    channel: str,
    domains: str | None,
    all_running: bool,
    concurrency: int,
) -> int:
    """One line: DOMAIN's power state and whether its agent answers.

    Exit codes: 0 answering; 3 not answering (the line says why); 13 answering
    but the guest is frozen (the line names the thaw); 4 the deadline passed.
    With --domains/--all, one line per domain and the highest of their codes.
    """
    from gagent.host.session import open_domain

    many = parse_domains(domains)
    given = (domain is not None) + (many is not None) + all_running
    if given == 0:  # as click says it for a required DOMAIN
        ctx = click.get_current_context()
        param = next(p for p in ctx.command.params if p.name == "domain")
        raise click.MissingParameter(ctx=ctx, param=param)
    if given > 1:
        raise UsageError("give one of DOMAIN, --domains A,B or --all")
    if domain is None:

        async def work(session: Any) -> tuple[dict[str, Any], int]:
            report = await _status_report(session, timeout, channel)
            return report, _status_exit(report)

        return run_many(
            connect,
            many,
            concurrency=concurrency,
            seconds=timeout or None,
            work=work,
            as_json=as_json,
            human=lambda o: _status_line(o.result) if o.error is None else human_line(o),
        )

    async def probe() -> dict[str, Any]:
        async with open_domain(domain, uri=connect) as session:
            return await _status_report(session, timeout, channel)

    report = run_command(probe, seconds=timeout, target=f"domain {domain}")
    Output(as_json).emit(report, _status_line)
    return _status_exit(report)


async def _status_report(session: Any, seconds: float, channel: str) -> dict[str, Any]:
    """State, and whether the agent answers (and the guest is not frozen), as a report."""
    from gagent.errors import GagentError
    from gagent.fs_types import FsfreezeStatus

    report: dict[str, Any] = {"domain": session.name, "state": session.state.value}
    try:
        # the agent's answer must come a little before the command's deadline,
        # so that a silent agent is reported as such, not as a timeout
        with trio.fail_at(trio.current_effective_deadline() - STATUS_RESERVE):
            async with session.agent(channel_name=channel) as agent:
                start = time.perf_counter()
                await agent.ping()
                report["ping_ms"] = round((time.perf_counter() - start) * 1000, 3)
                report["agent"] = getattr(agent, "name", "agent")
                # a frozen guest answers ping but refuses nearly everything else
                frozen = await agent.freeze_state() is FsfreezeStatus.FROZEN
                report["frozen"] = frozen
                if frozen:
                    report["thaw"] = session.thaw_command(channel)
    except (GagentError, trio.TooSlowError) as exc:
        report["agent"] = None
        report["reason"] = str(exc) or f"no answer within {seconds:g}s"
    return report


def _status_line(r: dict[str, Any]) -> str:
    if r.get("frozen"):
        return (
            f"{r['domain']}: {r['state']}, agent answering ({r['agent']}, {r['ping_ms']} ms) "
            f"but the guest is FROZEN: run '{r['thaw']}'"
        )
    if r["agent"]:
        return f"{r['domain']}: {r['state']}, agent answering ({r['agent']}, {r['ping_ms']} ms)"
    return f"{r['domain']}: {r['state']}, agent unreachable: {r['reason']}"


def _status_exit(report: dict[str, Any]) -> int:
    if report.get("frozen"):
        return EXIT_GUEST_FROZEN
    return 0 if report["agent"] else 3


@click.command("watch")
@domain_argument(required=False)
@connect_option
@click.option(
    "--for",
    "duration",
    type=Seconds(min=0),
    default=0,
    help="Stop after this many seconds (default: until Ctrl-C).",
)
@click.option("--interval", type=Seconds(min=0.05), default=0.5, show_default=True)
@click.option(
    "--timeout",
    type=Seconds(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds libvirt may take to connect, to start the watch and for each poll.",
)
@shared_json_option("One JSON object per line, per change.")
def watch(
    domain: str | None, connect: str | None, duration: float, interval: float, timeout: float,
    as_json: bool,
) -> None:  # fmt: skip
    """Stream channel state changes and lifecycle/agent events (all domains or DOMAIN)."""
    from gagent.host.virt import open_hypervisor
    from gagent.host.watch import ChangeEvent
    from gagent.host.watch import watch as watch_changes

    from .common import deadline_of

    async def run() -> None:
        where = f"libvirt at {connect or 'the default URI'}"
        send, receive = trio.open_memory_channel[ChangeEvent](256)
        async with AsyncExitStack() as stack:
            with deadline_of(timeout, where):
                hypervisor = await open_hypervisor(connect, events=True)
            await stack.enter_async_context(hypervisor)
            nursery = await stack.enter_async_context(trio.open_nursery())
            with deadline_of(timeout, where):
                # the banner means it: events registered and the baseline taken
                await nursery.start(
                    partial(watch_changes, hypervisor, send, domain, poll_interval=interval,
                            poll_timeout=timeout)
                )  # fmt: skip
            click.echo(f"watching {domain or 'all domains'} on {hypervisor.uri}", err=True)
            with trio.move_on_after(duration or float("inf")):
                async for change in receive:
                    click.echo(json.dumps(to_jsonable(change)) if as_json else str(change))
            nursery.cancel_scope.cancel()

    run_command(run, seconds=None, target="libvirt")
