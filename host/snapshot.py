"""Disk snapshots of running domains: freeze -> snapshotCreateXML -> thaw.

Three ways to make a snapshot of a running domain, chosen by :func:`take_snapshot`:

* ``gagent-freeze`` (our channel present): gagent freezes through its own agent
  (:func:`gagent.freeze.frozen`), libvirt makes an external disk-only snapshot
  (DISK_ONLY | ATOMIC, | NO_METADATA on request) *without* its QUIESCE flag,
  gagent thaws.  The freeze window (freeze reply -> thaw reply) is measured.
* ``libvirt-quiesce`` (only libvirt's ``org.qemu.guest_agent.0``): libvirt's own
  QUIESCE flag; libvirt freezes and thaws through its agent, none of ours is
  used.  Never both in one snapshot (see :mod:`gagent.freeze`, two agents).
* ``crash-consistent`` (``quiesce=False``): no freeze at all, like pulling the
  plug: journaled filesystems recover, applications may lose unflushed data.

A shut-off domain gets an ``offline`` snapshot (its disks are at rest).

Snapshots are external: each chosen disk gets a new qcow2 overlay (libvirt
names it after the snapshot next to the old image, unless ``vda=/path`` says
where) and the old image becomes its read-only backing file.  Deleting one
(:mod:`gagent.host.snapshot_list`) asks libvirt, which since 9.0 merges the overlay back
(blockcommit and pivot of the running domain) and removes it; older libvirt
refuses, and ``metadata_only`` then forgets the snapshot but leaves the chain
as it is (merge by hand: ``virsh blockcommit DOMAIN vda --active --pivot``).
NO_METADATA snapshots are invisible to list and delete (libvirt keeps no record).
Revert of external snapshots is not offered (libvirt 9.0 cannot revert them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

import trio

from gagent.commands import AgentCommands
from gagent.errors import AgentUnavailable, GagentError, HostError, UsageError
from gagent.freeze import (
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_THAW_TIMEOUT,
    FreezeRecord,
    Reconnect,
    ThawUnconfirmed,
    frozen,
    thaw_if_frozen,
)

from .channel import GAGENT_CHANNEL
from .reach import AgentRoute, Transport
from .session import DomainSession, open_domain
from .snapshot_types import (
    CONSISTENCY,
    Disk,
    SnapshotDisk,
    SnapshotMethod,
    SnapshotResult,
    domain_disks,
    external_targets,
    snapshot_xml,
)
from .virt import Domain, Hypervisor

__all__ = [
    "Disk", "SnapshotDisk", "SnapshotMethod", "SnapshotResult", "SnapshotTimeout",
    "domain_disks", "snapshot", "snapshot_session", "snapshot_xml", "take_snapshot",
]  # fmt: skip

logger = logging.getLogger("gagent.snapshot")

#: How long the guest may stay frozen waiting for libvirt's snapshot call.
DEFAULT_SNAPSHOT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
#: How long to ask libvirt whether a domain whose thaw failed is still running.
STOPPED_CHECK_TIMEOUT = 5.0


class SnapshotTimeout(GagentError):
    """libvirt's snapshot call outlived the freeze budget: the guest was thawed first."""


# ----------------------------------------------------------- snapshots


async def snapshot(
    domain: Domain, agent: AgentCommands | None, name: str,
    disks: Iterable[str] | None = None, quiesce: bool = True, no_metadata: bool = False, *,
    libvirt_quiesce: bool = False, mountpoints: Iterable[str] | None = None,
    allow_nothing_frozen: bool = False, freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT, reconnect: Reconnect | None = None,
    description: str = "", retry: str | None = None, notify: Notify | None = None,
    delete_command: str | None = None,
) -> SnapshotResult:  # fmt: skip
    """One external disk-only snapshot (see the module doc for the methods).

    ``agent`` freezes (quiesce, without libvirt_quiesce); ``libvirt_quiesce``
    uses libvirt's QUIESCE flag and no agent of ours; ``quiesce=False`` is
    crash-consistent.  The guest's liveness comes before the snapshot's
    consistency: a call that outlives ``snapshot_timeout`` raises
    :class:`SnapshotTimeout` after the thaw, and a cancellation (Ctrl-C,
    SIGTERM, the caller's deadline) abandons libvirt's call and thaws at once;
    ``notify`` is then told, after the thaw, that libvirt may still finish a
    snapshot and how consistent it would be (``delete_command`` says how to
    remove it).  ``retry`` is the thaw command to advise if the thaw cannot be
    confirmed.
    """
    notify = notify or _log_notice
    state = await domain.state()
    xml = snapshot_xml(name, domain_disks(await domain.xml()), disks, description)
    if not state.is_active:
        method = SnapshotMethod.OFFLINE
    elif not quiesce:
        method = SnapshotMethod.CRASH_CONSISTENT
    elif libvirt_quiesce:
        if agent is not None:
            raise UsageError("never mix gagent's freeze with libvirt's QUIESCE in one snapshot")
        method = SnapshotMethod.LIBVIRT_QUIESCE
    elif agent is None:
        raise UsageError(
            "quiesce needs an agent: pass one, use libvirt_quiesce for libvirt's own "
            "channel, or quiesce=False for a crash-consistent snapshot"
        )
    else:
        method = SnapshotMethod.GAGENT_FREEZE
    logger.info("%s: snapshot %s, %s", domain.name, name, method.value)
    abandoned = False

    async def create() -> float:
        nonlocal abandoned
        start = trio.current_time()
        try:
            with trio.fail_after(snapshot_timeout):
                await domain.snapshot_create_xml(
                    xml, no_metadata=no_metadata, abandon_on_cancel=True,
                    quiesce=method is SnapshotMethod.LIBVIRT_QUIESCE,
                )  # fmt: skip
        except trio.TooSlowError:
            raise SnapshotTimeout(
                f"libvirt's snapshot of {domain.name} did not return within "
                f"{snapshot_timeout:g}s; the guest was thawed. If libvirt completes it, it is "
                f"NOT application-consistent: check 'virsh domblklist {domain.name}'"
            ) from None
        except trio.Cancelled:
            abandoned = True
            raise
        took_ms = (trio.current_time() - start) * 1000
        logger.info("%s: snapshot %s created (%.0f ms)", domain.name, name, took_ms)
        return took_ms

    record = None
    try:
        if method is SnapshotMethod.GAGENT_FREEZE:
            assert agent is not None
            async with frozen(
                agent, mountpoints, freeze_timeout=freeze_timeout, thaw_timeout=thaw_timeout,
                allow_nothing_frozen=allow_nothing_frozen, domain=domain.name,
                reconnect=reconnect, retry=retry,
            ) as record:  # fmt: skip
                snapshot_ms = await create()
        else:
            snapshot_ms = await create()
    finally:
        if abandoned:
            notice = _abandoned_notice(
                domain.name, name, method, record, no_metadata, delete_command
            )
            notify(notice)
    chosen = external_targets(xml)
    after = [d for d in domain_disks(await domain.xml()) if d.target in chosen]
    overlays = [SnapshotDisk(d.target, d.source, d.backing) for d in after]
    return SnapshotResult(domain.name, name, method, not no_metadata, overlays, snapshot_ms, record)


Notify = Callable[[str], None]
Prepare = Callable[[AgentCommands, AgentRoute], Awaitable[None]]


def _log_notice(message: str) -> None:
    logger.warning("%s", message)


def _abandoned_notice(
    domain: str, name: str, method: SnapshotMethod, record: FreezeRecord | None,
    no_metadata: bool, delete_command: str | None,
) -> str:  # fmt: skip
    """What an interrupted snapshot leaves behind, said after the thaw."""
    if method is SnapshotMethod.GAGENT_FREEZE:
        thawed = (
            "the guest was thawed at once (confirmed)"
            if record is not None and record.confirmed
            else "the thaw was sent at once"
        )
        quality = "CRASH-CONSISTENT (its disks caught after the thaw)"
    else:
        thawed = "no freeze of gagent's was held"
        quality = CONSISTENCY[method].split(":")[0]
    how = (
        f"look for new overlay files ('virsh domblklist {domain}')"
        if no_metadata
        else f"check 'virsh snapshot-list {domain}'"
        + (f" and remove it with '{delete_command}'" if delete_command else "")
    )
    return (
        f"interrupted while libvirt was creating snapshot {name} of {domain}: {thawed}. "
        f"libvirt may still finish that snapshot; it would be {quality}: {how}"
    )


async def take_snapshot(
    hypervisor: Hypervisor, ref: str, name: str, *, quiesce: bool = True,
    libvirt_quiesce: bool = False, thaw_on_connect: bool = True,
    transport: Transport | str = Transport.AUTO, channel_name: str = GAGENT_CHANNEL,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, **options: Any,
) -> SnapshotResult:  # fmt: skip
    """Open a domain session for ``ref`` and snapshot (``options`` as for :func:`snapshot`).

    Our channel -> gagent's freeze; only libvirt's -> libvirt's QUIESCE;
    ``thaw_on_connect`` first thaws a guest found frozen (a crashed run).
    """
    async with open_domain(ref, hypervisor=hypervisor) as session:
        return await snapshot_session(
            session, name, quiesce=quiesce, libvirt_quiesce=libvirt_quiesce,
            thaw_on_connect=thaw_on_connect, transport=transport, channel_name=channel_name,
            connect_timeout=connect_timeout, **options,
        )  # fmt: skip


async def snapshot_session(
    session: DomainSession, name: str, *, quiesce: bool = True,
    libvirt_quiesce: bool = False, thaw_on_connect: bool = True,
    transport: Transport | str = Transport.AUTO, channel_name: str = GAGENT_CHANNEL,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, prepare: Prepare | None = None,
    **options: Any,
) -> SnapshotResult:  # fmt: skip
    """:func:`take_snapshot` on an open session (its advice names the session's URI);
    ``prepare(agent, route)`` runs on the agent before the freeze (a preflight)."""
    domain = session.domain
    options.setdefault("delete_command", session.command("snapshot", "delete", options=(name,)))
    if not quiesce or not session.state.is_active:
        return await snapshot(domain, None, name, quiesce=False, **options)
    transport = Transport.LIBVIRT if libvirt_quiesce else Transport(transport)
    try:
        route = session.route(transport, channel_name)
    except AgentUnavailable as exc:
        raise AgentUnavailable(
            f"cannot quiesce {domain.name}: {exc}",
            hint="or take a crash-consistent snapshot with --no-quiesce",
        ) from None
    retry = session.thaw_command(channel_name)
    options.setdefault("retry", retry)
    async with AsyncExitStack() as stack:
        try:
            with trio.fail_after(connect_timeout):
                agent = await stack.enter_async_context(session.agent(route=route))
                thawed = thaw_on_connect and await thaw_if_frozen(
                    agent, domain=domain.name, retry=retry,
                    thaw_timeout=options.get("thaw_timeout", DEFAULT_THAW_TIMEOUT),
                )  # fmt: skip
        except trio.TooSlowError:
            raise AgentUnavailable(
                f"the agent of {domain.name} ({route.describe(domain.name)}) did not answer "
                f"within {connect_timeout:g}s",
                hint="is qemu-ga running in the guest?",
            ) from None
        if prepare is not None:
            await prepare(agent, route)
        try:
            if route.transport is Transport.SOCKET:
                options.setdefault("reconnect", session.reconnect_for(route))
                result = await snapshot(domain, agent, name, **options)
            else:
                result = await snapshot(domain, None, name, libvirt_quiesce=True, **options)
        except ThawUnconfirmed as exc:
            raise await _if_domain_stopped(session, exc) from exc.__context__
        result.thawed_on_connect = thawed
        return result


async def _if_domain_stopped(session: DomainSession, error: ThawUnconfirmed) -> GagentError:
    """A thaw that failed because the domain stopped (destroyed mid-snapshot) left nothing
    frozen: say so with the error that came first, instead of a false alarm."""
    with trio.move_on_after(STOPPED_CHECK_TIMEOUT):
        state = await session.domain.state()
        if not state.is_active:
            cause = error.__context__
            first = f"{cause}; " if isinstance(cause, GagentError) else ""
            return HostError(
                f"{first}domain {session.name} is {state.value} now: it stopped during the "
                "snapshot, so no freeze is left behind (check the disks with "
                f"'virsh -c {session.uri} domblklist {session.name}')",
                code=getattr(cause, "code", None),
            )
    return error
