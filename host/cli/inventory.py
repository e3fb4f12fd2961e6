"""``gagent inventory scan|list|show|diff``: every guest on every hypervisor, kept in a database.

Registered by ``host/cli/__init__.py`` as ``cli.add_command(inventory_group)``.
Tables and JSON go to stdout; conflicts, the summary and the progress go to
stderr (a line on a terminal, JSON lines with ``--json``: :mod:`.progress`).
``scan`` exits 8 when a hypervisor could not be scanned (the others are still
scanned, printed and stored). ``scan -w/-u/-n`` create the database and bring its
schema up to date; ``list``, ``show`` and ``diff`` only read (creating and migrating
nothing) and exit 2 when there is no inventory to read. ``list`` finding no guest
(none stored, or none for ``--hypervisor``) says so on stderr and exits 0.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import trio

from gagent.errors import UsageError

from .options import Seconds, channel_option
from .options import json_option as shared_json_option
from .progress import Progress

EXIT_HOST = 8  # as gagent.host.cli.EXIT_HOST: some hypervisor could not be scanned

db_option = click.option(
    "--db",
    metavar="PATH|URL",
    default=None,
    help="SQLite file, or postgresql://... (default: $XDG_DATA_HOME/gagent/inventory.sqlite3).",
)
busy_option = click.option(
    "--busy-timeout",
    type=Seconds(min=0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for another scan's transaction to finish.",
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "wide", "json", "csv"]),
    default="table",
    show_default=True,
    help="table: rscan's columns; wide: plus state and agent data.",
)
json_option = shared_json_option("Same as --format json (indented on a terminal).")


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@click.group("inventory")
def inventory_group() -> None:
    """Every guest on every hypervisor (xCAT rscan semantics), stored in a database.

    scan -w/-u/-n create the database and bring its schema up to date; list, show and
    diff only read it (an older schema as it is): with no inventory there (no file, an
    empty or foreign one) they say so in one line and exit 2, creating nothing.
    """


@inventory_group.command("scan")
@click.argument("uris", nargs=-1, metavar="[NAME=]URI...")
@click.option("--hosts-file", type=click.Path(dir_okay=False), help="'NAME URI' per line.")
@click.option("-w", "--write", "write", is_flag=True, help="Store what was found (rscan -w).")
@click.option("-u", "--update", "update", is_flag=True, help="Update stored guests only (-u).")
@click.option("-n", "--new", "new", is_flag=True, help="Add guests not stored yet only (-n).")
@db_option
@busy_option
@click.option(
    "--agent/--no-agent", default=True, show_default=True, help="Ask running guests' agents."
)
@click.option(
    "--agent-timeout",
    type=Seconds(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds per guest agent.",
)
@click.option(
    "--host-timeout",
    type=Seconds(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds per hypervisor (connect and list).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Hypervisors (and agents) scanned at once.",
)
@channel_option
@format_option
@json_option
def scan_command(
    uris: tuple[str, ...],
    hosts_file: str | None,
    write: bool,
    update: bool,
    new: bool,
    db: str | None,
    busy_timeout: float,
    agent: bool,
    agent_timeout: float,
    host_timeout: float,
    concurrency: int,
    channel: str,
    fmt: str,
    as_json: bool,
) -> int:
    """Scan hypervisors for guests, running or shut off; with -w/-u/-n, store them.

    URIs are libvirt URIs (qemu+ssh://root@kvm1/system, qemu:///system,
    test:///path/node.xml); name a URI without a host part as NAME=URI.
    Progress goes to stderr: a line on a terminal; with --json (--format json),
    JSON lines ({"event": "progress", ...}) a few times a second.
    """
    from gagent.host.inventory import Mode, Store, parse_targets, scan_hypervisors
    from gagent.host.inventory.report import (
        format_guests,
        scan_json,
        summary_lines,
    )

    modes = [m for m, on in ((Mode.WRITE, write), (Mode.UPDATE, update), (Mode.NEW, new)) if on]
    if len(modes) > 1:
        raise UsageError("choose one of -w/--write, -u/--update, -n/--new")
    mode = modes[0] if modes else None
    fmt = "json" if as_json else fmt
    targets = parse_targets(list(uris), hosts_file)
    store = Store.open(db, busy_timeout=busy_timeout) if mode is not None else None
    progress = Progress("scanning hypervisors", unit="hypervisors", as_json=fmt == "json")
    started = time.monotonic()
    try:
        with progress:
            result = trio.run(
                lambda: scan_hypervisors(
                    targets,
                    agent=agent,
                    agent_timeout=agent_timeout,
                    concurrency=concurrency,
                    host_timeout=host_timeout,
                    channel_name=channel,
                    on_progress=_show_scan(progress),
                )
            )
        seconds = time.monotonic() - started
        applied = store.apply_scan(result, mode) if store is not None and mode else None
    finally:
        if store is not None:
            store.close()
    conflicts = applied.plan.conflicts if applied is not None else []
    where = None if store is None else _where(store)
    if fmt == "json":
        click.echo(scan_json(result, conflicts, applied, pretty=sys.stdout.isatty()))
    else:
        if result.guests:
            click.echo(format_guests(result.guests, fmt))
        for conflict in conflicts:
            _echo_err(conflict.message)
        for line in summary_lines(result, seconds, applied, where):
            _echo_err(line)
        if db is not None and mode is None:
            _echo_err("not stored: --db is used with -w/--write, -u/--update or -n/--new")
    return EXIT_HOST if result.failed else 0


def _show_scan(progress: Progress) -> Any:
    """A scan's progress: hypervisors done of all, then guests and agents."""
    if not progress.enabled:
        return None
    return lambda p: progress(
        p.hypervisors_done,
        p.hypervisors_total,
        f"{p.guests} guests, agents {p.agents_done}/{p.agents_total}",
        guests=p.guests,
        agents_done=p.agents_done,
        agents_total=p.agents_total,
    )


def _where(store: Any) -> str:
    backend = store.backend
    return str(getattr(backend, "path", None) or "PostgreSQL")


@inventory_group.command("list")
@db_option
@busy_option
@click.option("--hypervisor", default=None, help="Only the guests stored for this hypervisor.")
@format_option
@json_option
def list_command(
    db: str | None, busy_timeout: float, hypervisor: str | None, fmt: str, as_json: bool
) -> None:
    """The stored guests (the same columns, or JSON objects, as scan)."""
    from gagent.host.inventory.report import format_guests

    with _open_to_read(db, busy_timeout) as store:
        guests = store.guests(hypervisor=hypervisor)
        stored = store.hypervisors() if not guests and hypervisor is not None else []
    fmt = "json" if as_json else fmt
    if guests or fmt == "json":
        click.echo(format_guests(guests, fmt, pretty=sys.stdout.isatty()))
    elif stored:
        _echo_err(f"no guest of hypervisor {hypervisor!r} is stored; {_some(stored)}")
    else:
        _echo_err("the inventory is empty: store a scan with 'gagent inventory scan -w URI...'")


def _some(hypervisors: list[str], most: int = 5) -> str:
    """The stored hypervisors, briefly: the first ``most`` of them and how many more."""
    more = len(hypervisors) - most
    names = ", ".join(hypervisors[:most]) + (f" and {more} more" if more > 0 else "")
    return f"stored: {names} (gagent inventory list --hypervisor NAME)"


@inventory_group.command("show")
@click.argument("name")
@db_option
@busy_option
@json_option
def show_command(name: str, db: str | None, busy_timeout: float, as_json: bool) -> None:
    """Everything stored about guest NAME, agent data included."""
    import json

    from gagent.host.inventory.report import format_show

    with _open_to_read(db, busy_timeout) as store:
        info = store.show(name)
    if info is None:
        raise UsageError(f"no guest named {name!r} in the inventory (see 'gagent inventory list')")
    click.echo(json.dumps(info, indent=2) if as_json else format_show(info))


@inventory_group.command("diff")
@click.option("--scan", "scan_id", type=int, default=None, help="This scan (default: the latest).")
@db_option
@busy_option
@json_option
def diff_command(scan_id: int | None, db: str | None, busy_timeout: float, as_json: bool) -> None:
    """What the latest scan found changed since the previous scan of each hypervisor:
    new, gone, moved between hypervisors, changed cpu/memory."""
    import json

    with _open_to_read(db, busy_timeout) as store:
        diff = store.diff(scan_id)
    if as_json:
        click.echo(json.dumps(diff.to_json(), indent=2))
        return
    against = ", ".join(
        f"{hv}: scan {prior}" if prior is not None else f"{hv}: first scan"
        for hv, prior in diff.previous.items()
    )
    click.echo(f"scan {diff.scan_id} against the previous scan of each hypervisor ({against})")
    click.echo("\n".join(diff.lines()) if not diff.empty else "no change")


def _open_to_read(db: str | None, busy_timeout: float) -> Any:
    """The inventory as it is, for a reading command: nothing is created or migrated. None
    there (no file, an empty or foreign one) is one line and exit 2."""
    from gagent.host.inventory.store import NoInventory, Store

    try:
        return Store.open(db, busy_timeout=busy_timeout, read_only=True)
    except NoInventory as exc:
        raise UsageError(str(exc)) from None
