"""``gagent fsfreeze``, ``gagent snapshot`` and ``gagent thaw``: freezes that end thawed.

Click objects for :mod:`gagent.host.cli` to register: :data:`fsfreeze_group`,
:data:`snapshot_group` and :data:`thaw_command`.

Every command runs under :func:`~gagent.host.cli.common.run_command`: its
``--timeout`` is the whole command's deadline, and Ctrl-C, SIGTERM and SIGHUP
cancel it like the deadline does, so the shielded thaw of :mod:`gagent.freeze`
always completes (bounded by ``--thaw-timeout``) before the command exits.
Domains are reached through one domain session (:mod:`gagent.host.session`),
which also builds the commands the errors advise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click

from gagent.commands import AgentCommands
from gagent.host.channel_names import channel_flag

from .common import Output, say
from .completion import domain_argument
from .freeze_options import (
    allow_nothing_option,
    connect_option,
    freeze_timeout_option,
    json_option,
    mountpoint_option,
    run_on_domain,
    thaw_timeout_option,
    timeout_option,
    transport_option,
)
from .group_snapshot import group_command
from .options import Seconds, channel_option
from .preflight import (
    before_freeze,
    delete_with_record,
    fsfreeze_check,
    snapshot_table,
    snapshots_with_records,
)

__all__ = ["fsfreeze_group", "snapshot_group", "thaw_command"]

T = TypeVar("T")


@asynccontextmanager
async def _domain_agent(
    connect: str | None, ref: str, transport: str, channel: str
) -> AsyncIterator[tuple[Any, AgentCommands, Any]]:
    """(domain session, agent, reconnect factory or None) for ``ref``."""
    from gagent.host.session import open_domain

    async with open_domain(ref, uri=connect) as session:
        route = session.route(transport, channel)
        async with session.agent(route=route) as agent:
            yield session, agent, session.reconnect_for(route)


# ---------------------------------------------------------------- fsfreeze


@click.group("fsfreeze")
def fsfreeze_group() -> None:
    """Freeze, thaw or query a domain's filesystems through its agent."""


fsfreeze_group.add_command(fsfreeze_check)  # 'fsfreeze check', defined in preflight.py


@fsfreeze_group.command("freeze")
@domain_argument()
@mountpoint_option
@allow_nothing_option
@freeze_timeout_option
@thaw_timeout_option
@connect_option
@transport_option
@channel_option
@timeout_option(60.0)
@json_option
def fsfreeze_freeze(domain: str, mountpoints: tuple[str, ...], allow_nothing_frozen: bool,
                    freeze_timeout: float, thaw_timeout: float, connect: str | None,
                    transport: str, channel: str, timeout: float,
                    as_json: bool) -> None:  # fmt: skip
    """Freeze DOMAIN's filesystems and LEAVE them frozen (thaw: 'gagent fsfreeze thaw').

    A freeze that fails or times out is thawed before the error is reported.
    """
    from gagent.freeze import freeze

    async def run() -> Any:
        async with _domain_agent(connect, domain, transport, channel) as (session, agent, _):
            await before_freeze(session, agent, transport, list(mountpoints), channel)
            record = await freeze(
                agent, list(mountpoints) or None, freeze_timeout=freeze_timeout,
                thaw_timeout=thaw_timeout, allow_nothing_frozen=allow_nothing_frozen,
                domain=session.name, retry=session.thaw_command(channel),
            )  # fmt: skip
            thaw_with = session.command("fsfreeze", "thaw", options=channel_flag(channel))
            return session.name, thaw_with, record

    name, thaw_with, record = run_on_domain(run, domain, timeout)
    Output(as_json).emit(
        {"domain": name, "frozen": record.frozen, "thaw": thaw_with},
        lambda v: (
            f"froze {v['frozen']} filesystem(s) of {name}; they stay frozen until '{thaw_with}'"
        ),
    )


@fsfreeze_group.command("thaw")
@domain_argument()
@thaw_timeout_option
@connect_option
@transport_option
@channel_option
@timeout_option(30.0)
@json_option
def fsfreeze_thaw(domain: str, thaw_timeout: float, connect: str | None, transport: str,
                  channel: str, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Thaw DOMAIN's filesystems and confirm with guest-fsfreeze-status."""
    from gagent.freeze import thaw

    async def run() -> Any:
        async with _domain_agent(connect, domain, transport, channel) as (session, agent, again):
            record = await thaw(
                agent, thaw_timeout=thaw_timeout, domain=session.name, reconnect=again,
                retry=session.thaw_command(channel),
            )  # fmt: skip
            return session.name, record

    name, record = run_on_domain(run, domain, timeout)
    Output(as_json).emit(
        {"domain": name, "thawed": record.thawed, "confirmed": record.confirmed},
        lambda v: f"thawed {v['thawed']} filesystem(s) of {name} (guest-fsfreeze-status: thawed)",
    )


@fsfreeze_group.command("status")
@domain_argument()
@connect_option
@transport_option
@channel_option
@timeout_option(10.0)
@json_option
def fsfreeze_status(domain: str, connect: str | None, transport: str, channel: str,
                    timeout: float, as_json: bool) -> None:  # fmt: skip
    """thawed or frozen (as DOMAIN's agent sees it: each agent has its own state)."""

    async def run() -> Any:
        async with _domain_agent(connect, domain, transport, channel) as (session, agent, _):
            return session.name, await agent.fsfreeze_status()

    name, status = run_on_domain(run, domain, timeout)
    Output(as_json).emit({"domain": name, "status": status}, lambda v: f"{name}: {status}")


# ---------------------------------------------------------------- snapshot


@click.group("snapshot")
def snapshot_group() -> None:
    """External disk-only snapshots: consistent through a freeze that always ends."""


snapshot_group.add_command(group_command)  # 'snapshot group create|list|delete'


@snapshot_group.command("create")
@domain_argument()
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
@click.option(
    "--consistency",
    "policy",
    type=click.Choice(["require", "prefer", "crash"]),
    default="require",
    show_default=True,
    help="require: a freeze or no snapshot; prefer: crash-consistent if the freeze fails; "
    "crash: no freeze (as --no-quiesce).",
)
@mountpoint_option
@allow_nothing_option
@freeze_timeout_option
@thaw_timeout_option
@click.option(
    "--snapshot-timeout",
    type=Seconds(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds the guest may stay frozen for libvirt's call.",
)
@connect_option
@transport_option
@channel_option
@timeout_option(180.0)
@json_option
def snapshot_create(domain: str, name: str, disks: tuple[str, ...], no_quiesce: bool,
                    libvirt_quiesce: bool, no_metadata: bool, no_thaw_on_connect: bool,
                    description: str, policy: str, mountpoints: tuple[str, ...],
                    allow_nothing_frozen: bool,
                    freeze_timeout: float, thaw_timeout: float, snapshot_timeout: float,
                    connect: str | None, transport: str, channel: str, timeout: float,
                    as_json: bool) -> None:  # fmt: skip
    """Snapshot DOMAIN as NAME: freeze -> external disk-only snapshot -> thaw.

    Interrupted (Ctrl-C, SIGTERM, SIGHUP, --timeout) while libvirt creates the
    snapshot, it thaws at once and says whether libvirt may still finish one.
    """
    from gagent.host.session import open_domain
    from gagent.host.snapshot_policy import create_snapshot

    def warn(line: str) -> None:
        say(f"gagent: warning: {line}")

    async def run() -> Any:
        async with open_domain(domain, uri=connect) as session:
            return await create_snapshot(
                session, name, policy="crash" if no_quiesce else policy, disks=list(disks) or None,
                libvirt_quiesce=libvirt_quiesce, no_metadata=no_metadata,
                thaw_on_connect=not no_thaw_on_connect, transport=transport,
                channel_name=channel, mountpoints=list(mountpoints) or None,
                allow_nothing_frozen=allow_nothing_frozen, freeze_timeout=freeze_timeout,
                thaw_timeout=thaw_timeout, snapshot_timeout=snapshot_timeout,
                description=description, notify=warn, warn=warn,
            )  # fmt: skip

    result, record = run_on_domain(run, domain, timeout)
    value = {
        "domain": result.domain, "name": result.name, "method": result.method,
        "consistency": result.consistency, "metadata": result.metadata, "disks": result.disks,
        "snapshot_ms": result.snapshot_ms, "overhead_ms": result.overhead_ms,
        "freeze": None if result.freeze is None else {
            "frozen": result.freeze.frozen, "thawed": result.freeze.thawed,
            "window_ms": result.freeze.window_ms, "thaw_ms": result.freeze.thaw_ms,
            "warnings": result.freeze.warnings,
        },
        "thawed_on_connect": result.thawed_on_connect, "record": record.to_json(),
    }  # fmt: skip
    Output(as_json).emit(value, lambda _: f"{result.describe()}\nrecorded: {record.summary()}")


@snapshot_group.command("list")
@domain_argument()
@connect_option
@timeout_option(30.0)
@json_option
def snapshot_list(domain: str, connect: str | None, timeout: float, as_json: bool) -> None:
    """DOMAIN's snapshots that libvirt keeps (not those made with --no-metadata)."""
    found = run_on_domain(
        lambda: _with_domain(connect, domain, snapshots_with_records), domain, timeout
    )
    Output(as_json).emit(found, snapshot_table)


@snapshot_group.command("delete")
@domain_argument()
@click.argument("name")
@click.option(
    "--metadata-only",
    is_flag=True,
    help="Forget the snapshot, keep the overlays in use (no merge).",
)
@connect_option
@timeout_option(300.0)
@json_option
def snapshot_delete(domain: str, name: str, metadata_only: bool, connect: str | None,
                    timeout: float, as_json: bool) -> None:  # fmt: skip
    """Delete snapshot NAME; libvirt >= 9.0 merges external overlays back (blockcommit)."""

    async def delete(dom: Any) -> tuple[str, str]:
        return dom.name, await delete_with_record(dom, name, metadata_only=metadata_only)

    found, message = run_on_domain(lambda: _with_domain(connect, domain, delete), domain, timeout)
    value = {"domain": found, "name": name, "metadata_only": metadata_only, "message": message}
    Output(as_json).emit(value, lambda v: v["message"])


async def _with_domain(connect: str | None, ref: str, func: Callable[[Any], Awaitable[T]]) -> T:
    from gagent.host.session import open_domain

    async with open_domain(ref, uri=connect) as session:
        return await func(session.domain)


# ------------------------------------------------------------------- thaw


@click.command("thaw")
@domain_argument()
@thaw_timeout_option
@connect_option
@channel_option
@timeout_option(30.0)
@json_option
def thaw_command(domain: str, thaw_timeout: float, connect: str | None, channel: str,
                 timeout: float, as_json: bool) -> None:  # fmt: skip
    """EMERGENCY: thaw DOMAIN through every agent it has (ours and libvirt's).

    When libvirt does not answer within half of --timeout, the thaw goes
    straight to the channel socket of DOMAIN's running QEMU process.

    \b
    Exit codes: 0 every agent reached confirmed the thaw; 9 a thaw could not be
    confirmed (the guest may still be frozen); 3 no agent could be reached;
    4 the deadline passed; 8 libvirt error (e.g. no such domain).
    """
    from gagent.freeze import FreezeRecord, ThawUnconfirmed
    from gagent.host.thaw import emergency_thaw

    async def run() -> Any:
        return await emergency_thaw(
            None, domain, uri=connect, thaw_timeout=thaw_timeout, channel_name=channel,
            connect_timeout=(timeout / 2) if timeout else 10.0,
        )  # fmt: skip

    reports = run_on_domain(run, domain, timeout)
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
        raise ThawUnconfirmed(
            domain, failed[0].retry, [f"{r.route}: {r.error}" for r in failed],
            FreezeRecord(domain=domain),
        )  # fmt: skip
