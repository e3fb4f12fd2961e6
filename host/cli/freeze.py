"""``gagent fsfreeze``, ``gagent snapshot`` and ``gagent thaw``: freezes that end thawed.

Click objects for :mod:`gagent.host.cli` to register: :data:`fsfreeze_group`,
:data:`snapshot_group` and :data:`thaw_command`.

The work runs in a child task: a Ctrl-C then cancels it (trio raises
KeyboardInterrupt into the main task only), so the shielded thaw of
:mod:`gagent.freeze` always completes before the command exits with 130.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import click
import trio

from gagent.freeze import DEFAULT_FREEZE_TIMEOUT, DEFAULT_THAW_TIMEOUT

from .common import Output, run_with_deadline
from .render import format_table

__all__ = ["fsfreeze_group", "snapshot_group", "thaw_command"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0

connect_option = click.option(
    "-c", "--connect", metavar="URI", help="libvirt URI (default: $LIBVIRT_DEFAULT_URI)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
transport_option = click.option(
    "--transport",
    type=click.Choice(["auto", "socket", "libvirt"]),
    default="auto",
    show_default=True,
    help="gagent's channel (socket) or libvirt's org.qemu.guest_agent.0.",
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to reach the agent and for each plain answer.",
)
freeze_timeout_option = click.option(
    "--freeze-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_FREEZE_TIMEOUT,
    show_default=True,
    help="Seconds for the freeze reply (the guest is thawed if it does not come).",
)
thaw_timeout_option = click.option(
    "--thaw-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_THAW_TIMEOUT,
    show_default=True,
    help="Seconds for the thaw and its confirmation (three attempts).",
)
mountpoint_option = click.option(
    "--mountpoint", "mountpoints", multiple=True, help="Freeze only these (repeat)."
)
allow_nothing_option = click.option(
    "--allow-nothing-frozen", is_flag=True, help="A freeze of 0 filesystems is not an error."
)


def _run(func: Callable[[], Awaitable[T]], target: str) -> T:
    """trio.run ``func`` in a child task (see the module doc)."""

    async def main() -> T:
        result: list[T] = []

        async def child() -> None:
            result.append(await func())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
        return result[0]

    return run_with_deadline(main, seconds=None, target=target)


@asynccontextmanager
async def _domain_agent(
    connect: str | None, ref: str, transport: str, seconds: float
) -> AsyncIterator[tuple[str, Any, Any]]:
    """(domain name, agent, reconnect factory or None), reached within ``seconds``."""
    from gagent.client import open_agent
    from gagent.errors import AgentUnavailable
    from gagent.host.libvirt_agent import LibvirtAgent
    from gagent.host.reach import Transport, resolve
    from gagent.host.virt import open_hypervisor

    hypervisor = await open_hypervisor(connect)
    try:
        async with AsyncExitStack() as stack:
            try:
                with trio.fail_after(seconds):
                    domain, route = await resolve(hypervisor, ref, transport=Transport(transport))
                    path = route.socket_path
                    if path:
                        agent = await stack.enter_async_context(open_agent(path))
                        agent.name = route.describe(domain.name)
                    else:
                        agent = LibvirtAgent(domain)
                        await agent.ping()
            except trio.TooSlowError:
                raise AgentUnavailable(
                    f"the agent of {ref} did not answer within {seconds:g}s",
                    hint="is qemu-ga running in the guest? raise --timeout if it is slow",
                ) from None
            yield domain.name, agent, ((lambda: open_agent(path)) if path else None)
    finally:
        await hypervisor.close()


# ---------------------------------------------------------------- fsfreeze


@click.group("fsfreeze")
def fsfreeze_group() -> None:
    """Freeze, thaw or query a domain's filesystems through its agent."""


@fsfreeze_group.command("freeze")
@click.argument("domain")
@mountpoint_option
@allow_nothing_option
@freeze_timeout_option
@thaw_timeout_option
@connect_option
@transport_option
@timeout_option
@json_option
def fsfreeze_freeze(domain: str, mountpoints: tuple[str, ...], allow_nothing_frozen: bool,
                    freeze_timeout: float, thaw_timeout: float, connect: str | None,
                    transport: str, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Freeze DOMAIN's filesystems and LEAVE them frozen (thaw: 'gagent fsfreeze thaw').

    A freeze that fails or times out is thawed before the error is reported.
    """
    from gagent.freeze import freeze

    async def run() -> Any:
        async with _domain_agent(connect, domain, transport, timeout) as (name, agent, _):
            return name, await freeze(
                agent, list(mountpoints) or None, freeze_timeout=freeze_timeout,
                thaw_timeout=thaw_timeout, allow_nothing_frozen=allow_nothing_frozen, domain=name,
            )  # fmt: skip

    name, record = _run(run, domain)
    Output(as_json).emit(
        {"domain": name, "frozen": record.frozen},
        lambda v: (
            f"froze {v['frozen']} filesystem(s) of {name}; they stay frozen until "
            f"'gagent fsfreeze thaw {name}'"
        ),
    )


@fsfreeze_group.command("thaw")
@click.argument("domain")
@thaw_timeout_option
@connect_option
@transport_option
@timeout_option
@json_option
def fsfreeze_thaw(domain: str, thaw_timeout: float, connect: str | None, transport: str,
                  timeout: float, as_json: bool) -> None:  # fmt: skip
    """Thaw DOMAIN's filesystems and confirm with guest-fsfreeze-status."""
    from gagent.freeze import thaw

    async def run() -> Any:
        async with _domain_agent(connect, domain, transport, timeout) as (name, agent, again):
            return name, await thaw(agent, thaw_timeout=thaw_timeout, domain=name, reconnect=again)

    name, record = _run(run, domain)
    Output(as_json).emit(
        {"domain": name, "thawed": record.thawed, "confirmed": record.confirmed},
        lambda v: f"thawed {v['thawed']} filesystem(s) of {name} (guest-fsfreeze-status: thawed)",
    )


@fsfreeze_group.command("status")
@click.argument("domain")
@connect_option
@transport_option
@timeout_option
@json_option
def fsfreeze_status(domain: str, connect: str | None, transport: str, timeout: float,
                    as_json: bool) -> None:  # fmt: skip
    """thawed or frozen (as DOMAIN's agent sees it: each agent has its own state)."""

    from gagent.errors import AgentUnavailable

    async def run() -> Any:
        async with _domain_agent(connect, domain, transport, timeout) as (name, agent, _):
            with trio.move_on_after(timeout):
                return name, await agent.fsfreeze_status()
            raise AgentUnavailable(f"the agent of {name} did not answer within {timeout:g}s")

    name, status = _run(run, domain)
    Output(as_json).emit({"domain": name, "status": status}, lambda v: f"{name}: {status}")


# ---------------------------------------------------------------- snapshot


@click.group("snapshot")
def snapshot_group() -> None:
    """External disk-only snapshots: consistent through a freeze that always ends."""


@snapshot_group.command("create")
@click.argument("domain")
@click.argument("name")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    metavar="TARGET[=OVERLAY]",
    help="Snapshot only this disk (repeat); default: every writable disk.",
)
@click.option("--no-quiesce", is_flag=True, help="No freeze: a CRASH-CONSISTENT snapshot.")
@click.option(
    "--libvirt-quiesce",
    is_flag=True,
    help="Let libvirt freeze through its own agent (org.qemu.guest_agent.0).",
)
@click.option("--no-metadata", is_flag=True, help="libvirt keeps no snapshot object.")
@click.option(
    "--no-thaw-on-connect", is_flag=True, help="Do not thaw a guest found frozen by an earlier run."
)
@click.option("--description", default="", help="Stored with the snapshot.")
@mountpoint_option
@allow_nothing_option
@freeze_timeout_option
@thaw_timeout_option
@click.option(
    "--snapshot-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds the guest may stay frozen for libvirt's call.",
)
@connect_option
@transport_option
@timeout_option
@json_option
def snapshot_create(domain: str, name: str, disks: tuple[str, ...], no_quiesce: bool,
                    libvirt_quiesce: bool, no_metadata: bool, no_thaw_on_connect: bool,
                    description: str, mountpoints: tuple[str, ...], allow_nothing_frozen: bool,
                    freeze_timeout: float, thaw_timeout: float, snapshot_timeout: float,
                    connect: str | None, transport: str, timeout: float,
                    as_json: bool) -> None:  # fmt: skip
    """Snapshot DOMAIN as NAME: freeze -> external disk-only snapshot -> thaw."""
    from gagent.host.snapshot import take_snapshot
    from gagent.host.virt import open_hypervisor

    async def run() -> Any:
        hypervisor = await open_hypervisor(connect)
        try:
            return await take_snapshot(
                hypervisor, domain, name, disks=list(disks) or None, quiesce=not no_quiesce,
                libvirt_quiesce=libvirt_quiesce, no_metadata=no_metadata,
                thaw_on_connect=not no_thaw_on_connect, transport=transport,
                connect_timeout=timeout, mountpoints=list(mountpoints) or None,
                allow_nothing_frozen=allow_nothing_frozen, freeze_timeout=freeze_timeout,
                thaw_timeout=thaw_timeout, snapshot_timeout=snapshot_timeout,
                description=description,
            )  # fmt: skip
        finally:
            await hypervisor.close()

    result = _run(run, domain)
    value = {
        "domain": result.domain, "name": result.name, "method": result.method,
        "consistency": result.consistency, "metadata": result.metadata, "disks": result.disks,
        "snapshot_ms": result.snapshot_ms, "overhead_ms": result.overhead_ms,
        "freeze": None if result.freeze is None else {
            "frozen": result.freeze.frozen, "thawed": result.freeze.thawed,
            "window_ms": result.freeze.window_ms, "thaw_ms": result.freeze.thaw_ms,
            "warnings": result.freeze.warnings,
        },
        "thawed_on_connect": result.thawed_on_connect,
    }  # fmt: skip
    Output(as_json).emit(value, lambda _: result.describe())


@snapshot_group.command("list")
@click.argument("domain")
@connect_option
@json_option
def snapshot_list(domain: str, connect: str | None, as_json: bool) -> None:
    """DOMAIN's snapshots that libvirt keeps (not those made with --no-metadata)."""
    from gagent.host.snapshot import list_snapshots

    found = _run(lambda: _with_domain(connect, domain, list_snapshots), domain)

    def human(value: Any) -> str:
        if not value:
            return "(no snapshots)"
        rows = (
            (s.name, _when(s.created), s.state, "*" if s.current else "",
             " ".join(f"{d.target}={d.overlay}" for d in s.disks) or "-")
            for s in value
        )  # fmt: skip
        return format_table(["name", "created", "state", "current", "overlays"], rows)

    Output(as_json).emit(found, human)


@snapshot_group.command("delete")
@click.argument("domain")
@click.argument("name")
@click.option(
    "--metadata-only",
    is_flag=True,
    help="Forget the snapshot, keep the overlays in use (no merge).",
)
@connect_option
def snapshot_delete(domain: str, name: str, metadata_only: bool, connect: str | None) -> None:
    """Delete snapshot NAME; libvirt >= 9.0 merges external overlays back (blockcommit)."""
    from gagent.host.snapshot import delete_snapshot

    message = _run(
        lambda: _with_domain(
            connect, domain, lambda dom: delete_snapshot(dom, name, metadata_only=metadata_only)
        ),
        domain,
    )
    click.echo(message)


async def _with_domain(connect: str | None, ref: str, func: Callable[[Any], Awaitable[T]]) -> T:
    from gagent.host.virt import open_hypervisor

    hypervisor = await open_hypervisor(connect)
    try:
        return await func(await hypervisor.lookup(ref))
    finally:
        await hypervisor.close()


def _when(created: int | None) -> str:
    if created is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))


# ------------------------------------------------------------------- thaw


@click.command("thaw")
@click.argument("domain")
@thaw_timeout_option
@connect_option
@timeout_option
@json_option
def thaw_command(domain: str, thaw_timeout: float, connect: str | None, timeout: float,
                 as_json: bool) -> int:  # fmt: skip
    """EMERGENCY: thaw DOMAIN through every agent it has (ours and libvirt's).

    Exits 0 when every agent reached confirmed the thaw, 1 otherwise.
    """
    from gagent.host.snapshot import emergency_thaw
    from gagent.host.virt import open_hypervisor

    async def run() -> Any:
        hypervisor = await open_hypervisor(connect)
        try:
            return await emergency_thaw(
                hypervisor, domain, thaw_timeout=thaw_timeout, connect_timeout=timeout
            )
        finally:
            await hypervisor.close()

    reports = _run(run, domain)
    Output(as_json).emit(
        reports,
        lambda value: "\n".join(
            f"{r.route}: thawed {r.thawed} filesystem(s), confirmed"
            if r.confirmed
            else f"{r.route}: FAILED: {r.error}"
            for r in value
        ),
    )
    failed = [r for r in reports if not r.confirmed]
    if failed:
        click.echo(
            f"gagent: error: the thaw of {domain} could not be confirmed through "
            f"{', '.join(r.route for r in failed)}: run 'gagent thaw {domain}' again",
            err=True,
        )
    return 1 if failed else 0
