"""``gagent migrate-check`` and ``gagent migrate``: pre-migration checks, then libvirt's migration.

``migrate-check DOMAIN DEST_URI`` runs every check (built-ins, plugins of the
``gagent.migration_checks`` entry-point group, executables in ``--checks-dir``)
concurrently, each under ``--check-timeout``, and prints the report (``--json``:
the full report).  ``migrate`` runs the same checks, applies the policy, then
libvirt's migrate3 with ``--live`` / ``--persistent`` / ``--undefine-source`` /
``--copy-storage``, showing progress from the job info on a terminal (with
``--json``: as JSON lines on stderr, :mod:`.progress`).

Policy: any FAIL stops.  WARNINGs stop too unless ``--allow-warnings``; when
stdin and stderr are a terminal (and without ``--json``), ``migrate`` asks
once, listing the warnings (default: no).

Exit codes (besides gagent's usual ones: 2 bad usage, 8 libvirt error such as
an unreachable host or an unknown domain, 130 interrupted)::

    0   every check passed (warnings allowed or accepted); for migrate: migrated
    10  at least one check FAILed: nothing was migrated
    11  warnings, not allowed (no --allow-warnings, or the answer was no)
    12  migrate: the checks passed but libvirt's migration failed
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click
import trio

from gagent.inflight import collecting

from .common import CommandTimeout, run_command
from .completion import domain_argument
from .options import Seconds, channel_option, connect_option, json_option
from .progress import Progress, style
from .render import dumps

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_MIGRATION_FAILED",
    "EXIT_WARNINGS_REFUSED",
    "migrate",
    "migrate_check",
    "render_report",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 10
EXIT_WARNINGS_REFUSED = 11
EXIT_MIGRATION_FAILED = 12

_COLORS = {"SUCCESS": "green", "WARNING": "yellow", "FAIL": "red"}


def _interactive() -> bool:
    """May we ask the user? (a function, so tests can say yes)"""
    return sys.stdin.isatty() and sys.stderr.isatty()


def render_report(report: Any) -> str:
    """The report as lines for people: status, check name, message."""
    width = max((len(o.name) for o in report.outcomes), default=0)
    lines = [f"Pre-migration checks of {report.domain}: {report.source_uri} -> "
             f"{report.destination_uri}"]  # fmt: skip
    for o in report.outcomes:
        status = style(f"{o.status.value:<7}", fg=_COLORS[o.status.value])
        lines.append(f"  {status}  {o.name:<{width}}  {o.message}")
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"{len(report.outcomes)} checks: {summary or 'none ran'}")
    return "\n".join(lines)


def _checks_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        domain_argument(),
        click.argument("dest_uri", metavar="DEST_URI"),
        connect_option("libvirt URI of the source (as virsh -c; default: $LIBVIRT_DEFAULT_URI, "
                       "else libvirt's default)."),
        click.option(
            "--checks-dir", type=click.Path(file_okay=False, path_type=Path),
            help="Also run the executables in this directory (JSON context on stdin).",
        ),
        click.option("--no-plugins", is_flag=True, help="Skip checks from installed plugins."),
        click.option("--skip", multiple=True, metavar="CHECK", help="Do not run CHECK (repeat)."),
        click.option(
            "--check-timeout", type=Seconds(min=0), default=30.0, show_default=True,
            help="Seconds each check may take before it counts as FAIL (0: no limit).",
        ),
        click.option(
            "--agent-timeout", type=Seconds(min=0.1), default=5.0, show_default=True,
            help="Seconds to wait for the guest's agent.",
        ),
        channel_option,
        click.option(
            "--timeout", type=Seconds(min=0.1), default=30.0, show_default=True,
            help="Seconds to connect to both hypervisors and read the domain "
            "(a destination that never answers fails here).",
        ),
        click.option(
            "--copy-storage", is_flag=True,
            help="Block migration: copy the local disks (local disks then pass).",
        ),
        click.option("--allow-warnings", is_flag=True, help="WARNINGs do not stop."),
        json_option("Print the full report as JSON."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _decision_code(decision: Any) -> int:
    from gagent.host.migration import Decision

    return {
        Decision.PROCEED: EXIT_OK,
        Decision.REFUSE_FAIL: EXIT_CHECK_FAILED,
        Decision.REFUSE_WARNINGS: EXIT_WARNINGS_REFUSED,
    }[decision]


def _explain(decision: Any, report: Any, *, acting: bool) -> None:
    from gagent.host.migration import Decision

    if decision is Decision.REFUSE_FAIL:
        names = ", ".join(o.name for o in report.failures)
        verb = "not migrating" if acting else "migration would be refused"
        click.echo(f"gagent: {verb}: failed checks: {names}", err=True)
    elif decision is Decision.REFUSE_WARNINGS:
        names = ", ".join(o.name for o in report.warnings)
        verb = "not migrating" if acting else "migration would stop"
        click.echo(
            f"gagent: {verb}: warnings from {names} (pass --allow-warnings to go on)", err=True
        )


async def _open_context(
    connect: str | None, dest_uri: str, domain: str, options: Any, agent_timeout: float,
    channel: str, deadline_seconds: float,
) -> Any:  # fmt: skip
    """Connect to both hypervisors and gather the context, all within ``deadline_seconds``
    (the command's --timeout: a destination that never answers must not hang it)."""
    from gagent.host.migration import gather_context
    from gagent.host.virt import open_hypervisor

    step = f"the source hypervisor {connect or '(default URI)'}"
    async with AsyncExitStack() as stack:
        with collecting() as waits:
            try:
                with trio.fail_after(deadline_seconds):
                    source = await stack.enter_async_context(await open_hypervisor(connect))
                    step = f"the destination hypervisor {dest_uri}"
                    destination = await stack.enter_async_context(await open_hypervisor(dest_uri))
                    step = f"domain {domain} on {source.uri}"
                    ctx = await gather_context(
                        source, destination, domain, options, agent_timeout=agent_timeout,
                        channel_name=channel,
                    )  # fmt: skip
            except trio.TooSlowError:
                raise CommandTimeout(deadline_seconds, step, waits) from None
        stack.pop_all()  # the context owns both connections now (see _close)
        return ctx


async def _close(ctx: Any) -> None:
    await ctx.source.close()  # each bounded and shielded
    await ctx.destination.close()


@click.command("migrate-check")
@_checks_options
def migrate_check(
    domain: str,
    dest_uri: str,
    connect: str | None,
    checks_dir: Path | None,
    no_plugins: bool,
    skip: tuple[str, ...],
    check_timeout: float,
    agent_timeout: float,
    channel: str,
    timeout: float,
    copy_storage: bool,
    allow_warnings: bool,
    as_json: bool,
) -> int:
    """Check whether DOMAIN can migrate to DEST_URI (exit 0 yes, 10 a FAIL, 11 warnings)."""
    from gagent.host.migration import MigrationOptions, collect_checks, decide, run_checks

    checks = collect_checks(checks_dir=checks_dir, plugins=not no_plugins, skip=skip)
    options = MigrationOptions(copy_storage=copy_storage)

    async def run() -> Any:
        ctx = await _open_context(
            connect, dest_uri, domain, options, agent_timeout, channel, timeout
        )
        try:
            return await run_checks(ctx, checks, check_timeout=check_timeout)
        finally:
            await _close(ctx)

    report = run_command(run, seconds=None, target=dest_uri)
    decision = decide(report, allow_warnings=allow_warnings)
    if as_json:
        click.echo(dumps({**report.to_json(), "decision": decision.value}))
    else:
        click.echo(render_report(report))
    _explain(decision, report, acting=False)
    return _decision_code(decision)


def _show_migration(progress: Progress) -> Callable[[Any], None]:
    """The migration job's progress (bytes of the data, when libvirt knows it) on ``progress``."""

    def show(job: Any) -> None:
        seconds = job.elapsed_ms / 1000
        progress(job.data_processed, job.data_total or None, f"{seconds:.1f}s", seconds=seconds)

    return show


def _confirm(warnings: list[Any]) -> bool:
    click.echo(f"{len(warnings)} warning(s):", err=True)
    for o in warnings:
        click.echo(f"  - {o.name}: {o.message}", err=True)
    return click.confirm("Migrate anyway?", default=False, err=True)


@click.command("migrate")
@_checks_options
@click.option("--live", is_flag=True, help="Live migration: the guest keeps running.")
@click.option("--persistent", is_flag=True, help="Define the domain on the destination.")
@click.option("--undefine-source", is_flag=True, help="Undefine the domain on the source.")
@click.option(
    "--migrate-uri", metavar="URI", help="Hypervisor migration URI (e.g. tcp://10.0.0.2:49152)."
)
def migrate(
    domain: str,
    dest_uri: str,
    connect: str | None,
    checks_dir: Path | None,
    no_plugins: bool,
    skip: tuple[str, ...],
    check_timeout: float,
    agent_timeout: float,
    channel: str,
    timeout: float,
    copy_storage: bool,
    allow_warnings: bool,
    as_json: bool,
    live: bool,
    persistent: bool,
    undefine_source: bool,
    migrate_uri: str | None,
) -> int:
    """Run the checks, then migrate DOMAIN to DEST_URI if they allow it.

    Progress goes to stderr: a line on a terminal; with --json, JSON lines
    ({"event": "progress", ...}) a few times a second, the report on stdout.
    """
    from gagent.errors import HostError
    from gagent.host.migration import (
        Decision,
        MigrationOptions,
        collect_checks,
        decide,
        run_checks,
        run_migration,
    )

    checks = collect_checks(checks_dir=checks_dir, plugins=not no_plugins, skip=skip)
    options = MigrationOptions(live, persistent, undefine_source, copy_storage)
    ask = _interactive() and not as_json
    out: dict[str, Any] = {}

    async def run() -> int:
        ctx = await _open_context(
            connect, dest_uri, domain, options, agent_timeout, channel, timeout
        )
        try:
            report = await run_checks(ctx, checks, check_timeout=check_timeout)
            out["report"] = report
            if not as_json:
                click.echo(render_report(report))
            # decide() may ask on the terminal: a blocking prompt, so in a thread
            decision = await trio.to_thread.run_sync(
                lambda: decide(
                    report, allow_warnings=allow_warnings, confirm=_confirm if ask else None
                )
            )
            out["decision"] = decision
            if decision is not Decision.PROCEED:
                _explain(decision, report, acting=True)
                return _decision_code(decision)
            # a line on a terminal (always ended), JSON lines with --json, else nothing
            with Progress("migrating", as_json=as_json) as progress:
                try:
                    result = await run_migration(
                        ctx,
                        uri=migrate_uri,
                        on_progress=_show_migration(progress) if progress.enabled else None,
                    )
                except HostError as exc:
                    progress.finish()
                    out["error"] = str(exc)
                    click.echo(f"gagent: error: migration failed: {exc}", err=True)
                    return EXIT_MIGRATION_FAILED
            out["migration"] = result
            if not as_json:
                click.echo(
                    f"migrated {result.domain} to {result.destination} in {result.seconds:.1f}s"
                )
            return EXIT_OK
        finally:
            await _close(ctx)

    code = run_command(run, seconds=None, target=dest_uri)
    if as_json:
        report = out.get("report")
        click.echo(
            dumps(
                {
                    **(report.to_json() if report else {}),
                    "decision": out["decision"].value if "decision" in out else None,
                    "migration": out.get("migration"),
                    "error": out.get("error"),
                }
            )
        )
    return code
