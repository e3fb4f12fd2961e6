"""Removing a group snapshot's member snapshots: after a failed group, and ``group delete``.

Each member's snapshot is deleted through libvirt (which merges its overlays back,
:func:`gagent.host.snapshot_list.delete_snapshot`) with its consistency record;
one that cannot be removed in time is left with the exact command that removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from gagent.errors import GagentError, UsageError

from .consistency import delete_record
from .group_record import KEPT, REMOVED, MemberRecord, delete_group, load_group, write_group
from .session import DomainSession, open_domain
from .snapshot_list import delete_snapshot

__all__ = ["delete_group_snapshot", "remove_member_snapshot"]

#: How long removing one member's snapshot may take (libvirt merges each overlay back).
DEFAULT_REMOVE_TIMEOUT = 120.0


async def remove_member_snapshot(
    session: DomainSession, record: MemberRecord, name: str, *, store: Path | None = None,
    remove_timeout: float = DEFAULT_REMOVE_TIMEOUT, warn: Callable[[str], None] | None = None,
) -> bool:  # fmt: skip
    """Delete snapshot ``name`` of the member, shielded and within ``remove_timeout`` (cleanup that
    must happen, also on cancellation); on failure ``record.advice`` says how, and False."""
    command = session.command("snapshot", "delete", options=(name,))
    with trio.CancelScope(shield=True, deadline=trio.current_time() + remove_timeout) as scope:
        try:
            await delete_snapshot(session.domain, name)
            delete_record(session.domain.uuid, name, store)
            record.state, record.advice = REMOVED, None
            return True
        except GagentError as exc:
            record.advice = f"{command} (it failed: {exc})"
    if scope.cancelled_caught:
        record.advice = f"{command} (removing it took longer than {remove_timeout:g}s)"
    if warn is not None:
        warn(f"snapshot {name} of {session.name} could not be removed: run {record.advice}")
    return False


async def delete_group_snapshot(
    name: str, *, store: Path | None = None, remove_timeout: float = DEFAULT_REMOVE_TIMEOUT
) -> tuple[list[MemberRecord], list[MemberRecord]]:
    """Delete every kept member snapshot of group ``name``, then its record; returns
    (removed, left).  A member left keeps the group's record (with its advice) stored."""
    group = load_group(name, store)
    if group is None:
        raise UsageError(f"no group snapshot named {name!r} (see 'gagent snapshot group list')")
    removed, left = [], []
    for member in group.members:
        if member.state != KEPT:
            continue
        try:
            ref = member.domain_uuid or member.domain
            async with open_domain(ref, uri=member.uri) as session:
                done = await remove_member_snapshot(
                    session, member, name, store=store, remove_timeout=remove_timeout
                )
        except GagentError as exc:
            member.advice, done = f"gagent snapshot delete {member.domain} {name} ({exc})", False
        (removed if done else left).append(member)
    if left:
        write_group(group, store)
    else:
        delete_group(name, store)
    return removed, left
