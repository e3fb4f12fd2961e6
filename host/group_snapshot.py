"""One frozen instant across several domains: snapshots of a multi-VM application.

::

    record = await snapshot_group([Member("db"), Member("app", uri="qemu+ssh://h2/system")],
                                  "nightly", warn=print)

Each member runs in a task of its own; the group joins them between phases:

1. **prepare**: every member's domain session and agent (a guest found frozen by an
   earlier run is thawed) and the single snapshot's cheap preflight (freeze, thaw and
   status enabled; the dead-man's deadline).  ``require``: nothing freezes unless every
   member is ready; ``prefer``: the others are taken crash-consistent; ``crash``: no agent.
2. **freeze** all concurrently through the single path's :func:`gagent.host.snapshot.snapshot`
   (so :func:`gagent.freeze.frozen`: shielded, bounded, confirmed thaw); each member's
   libvirt call first waits, inside its freeze, until **every** freeze is confirmed
   (at most ``freeze_timeout``);
3. **snapshot** all concurrently; each member thaws as soon as its own call returns:
   the cut was fixed when the last freeze was confirmed, holding it longer only stalls.

Any member failing at any point: the others thaw (those waiting give up), the snapshots
already taken are removed (``require``; kept, labelled crash, under ``prefer``) and the
record says member by member what happened.  A cancellation (Ctrl-C, SIGTERM, a
deadline) thaws every frozen member at once, then removes what was taken within
``remove_timeout``.  The record (:mod:`gagent.host.group_record`) is stored and returned;
a group not consistent under ``require`` raises :class:`GroupSnapshotFailed` with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from gagent.commands import AgentCommands
from gagent.errors import AgentUnavailable, CommandUnavailable, GagentError, UsageError
from gagent.freeze import (
    DEFAULT_FREEZE_TIMEOUT,
    DEFAULT_THAW_TIMEOUT,
    FREEZE,
    STATUS,
    THAW,
    FreezeRecord,
    Instant,
    ThawUnconfirmed,
    thaw_if_frozen,
)  # fmt: skip

from .channel_names import GAGENT_CHANNEL
from .consistency import write_record
from .freeze_findings import deadman_warning
from .group_cleanup import DEFAULT_REMOVE_TIMEOUT, remove_member_snapshot
from .group_phases import (
    GroupAborted,
    GroupSnapshotFailed,
    Member,
    MemberTask,
    Phases,
    WaitForTheGroup,
)  # fmt: skip
from .group_record import FAILED, KEPT, GroupRecord, MemberRecord, conclude, write_group
from .reach import Transport
from .session import DomainSession, open_domain
from .snapshot import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SNAPSHOT_TIMEOUT,
    _if_domain_stopped,
    snapshot,
)  # fmt: skip
from .snapshot_policy import POLICIES, build_record, preflight

__all__ = ["GroupAborted", "GroupSnapshotFailed", "Member", "snapshot_group"]

logger = logging.getLogger("gagent.group_snapshot")


async def snapshot_group(
    members: Sequence[Member], name: str, *, policy: str = "require",
    warn: Callable[[str], None], freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    remove_timeout: float = DEFAULT_REMOVE_TIMEOUT,
    transport: Transport | str = Transport.AUTO, channel_name: str = GAGENT_CHANNEL,
    store: Path | None = None, on_frozen: Callable[[], Awaitable[None]] | None = None,
) -> GroupRecord:  # fmt: skip
    """Snapshot every member as ``name`` at one frozen instant (see the module doc).

    ``on_frozen`` is awaited once every freeze is confirmed, before the snapshots (in
    the common window: an application marker, a test's fault).  Returns the stored
    record; raises :class:`GroupSnapshotFailed` when the group is not consistent and
    ``policy`` is ``require`` (nothing of it is kept), UsageError for bad arguments.
    """
    if policy not in POLICIES:
        raise UsageError(f"--consistency must be one of {', '.join(POLICIES)}, not {policy!r}")
    if not members:
        raise UsageError("a group snapshot needs at least one domain")
    labels = [m.name for m in members]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise UsageError(f"a member is named twice in the group: {', '.join(twice)}")
    places = [(m.uri, m.ref) for m in members]
    again = sorted({ref for uri, ref in places if places.count((uri, ref)) > 1})
    if again:  # (its agent would serve the first session only)
        raise UsageError(f"a domain is in the group twice: {', '.join(again)}")
    if not name or "/" in name:
        raise UsageError(f"bad snapshot name {name!r}")
    run = Phases(policy)
    tasks = [MemberTask(m, MemberRecord(m.name, m.ref, m.uri)) for m in members]
    options = dict(
        freeze_timeout=freeze_timeout, thaw_timeout=thaw_timeout, connect_timeout=connect_timeout,
        snapshot_timeout=snapshot_timeout, remove_timeout=remove_timeout, transport=transport,
        channel_name=channel_name, warn=warn, store=store,
    )  # fmt: skip
    group = GroupRecord(name, policy, members=[t.record for t in tasks])
    try:
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(_member, task, run, name, options)
            await _coordinate(name, tasks, run, on_frozen)
    finally:  # (no checkpoint here: a cancellation cannot cut the record short)
        conclude(group)
        try:
            write_group(group, store)
        except OSError as exc:
            warn(f"the record of group {name} could not be stored ({exc}); "
                 "set GAGENT_STATE_DIR to a writable directory")  # fmt: skip
    if not group.consistent and policy == "require":
        failed = [t for t in tasks if t.exc is not None and not isinstance(t.exc, GroupAborted)]
        first = failed[0].exc if failed else None
        why = f"{failed[0].record.label}: {first}" if failed else (run.aborted or group.consistency)
        states = "; ".join(f"{t.record.label} {t.record.state}" for t in tasks)
        raise GroupSnapshotFailed(f"group snapshot {name} failed ({why}); {states}", group, first)
    return group


async def _coordinate(
    name: str,
    tasks: list[MemberTask],
    run: Phases,
    on_frozen: Callable[[], Awaitable[None]] | None,
) -> None:
    try:
        for task in tasks:
            await task.prepared.wait()
        unready = [t for t in tasks if not t.ok]
        if unready and run.policy == "require":
            run.abort("could not prepare " + ", ".join(t.record.label for t in unready))
        if not run.aborted:
            logger.info("group %s: %d member(s) prepared, freezing", name, len(tasks))
        run.freeze_go.set()
        for task in tasks:
            await task.frozen.wait()
        if not run.aborted:
            logger.info("group %s: every freeze confirmed, taking the snapshots", name)
        if not run.aborted and on_frozen is not None:
            await on_frozen()
    except BaseException:  # (cancelled, or on_frozen failed): no member may start its call
        run.abort("the group was interrupted")
        raise
    finally:
        run.freeze_go.set()
        run.snapshot_go.set()
    for task in tasks:
        await task.done.wait()
    failed = [t for t in tasks if t.exc is not None]
    run.remove = bool(failed) and run.policy == "require"
    run.decided.set()


async def _member(task: MemberTask, run: Phases, name: str, options: dict[str, Any]) -> None:
    """One member from open to thaw (and, if the group failed, removal); its error is kept
    in ``task.exc`` for the report, a cancellation propagates."""
    member = task.member
    try:
        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                open_domain(member.ref, uri=member.uri, hypervisor=member.hypervisor)
            )
            task.session = session
            task.record.domain, task.record.uri = session.name, session.uri
            task.record.domain_uuid = session.domain.uuid
            try:
                await _prepare_and_take(task, run, name, session, stack, options)
            except BaseException as exc:
                _failed(task, run, exc)
                raise
            finally:
                _release(task)
                await _settle(task, run, name, options)
    except Exception as exc:
        _failed(task, run, exc)
    finally:
        _release(task)


def _release(task: MemberTask) -> None:
    """Nothing waits on a member that is done, whatever happened to it."""
    task.prepared.set()
    task.frozen.set()
    task.done.set()


def _failed(task: MemberTask, run: Phases, exc: BaseException) -> None:
    if task.exc is not None:
        return
    task.exc = exc
    record = task.record
    if isinstance(exc, Exception) and not isinstance(exc, GroupAborted):
        record.error = record.error or str(exc) or type(exc).__name__
        record.state = FAILED
        run.abort(f"{record.label} failed")
    freeze = getattr(exc, "record", None)
    if freeze is not None and hasattr(freeze, "freeze_sent"):
        _note_freeze(record, freeze)


async def _prepare_and_take(task: MemberTask, run: Phases, name: str, session: DomainSession,
                            stack: AsyncExitStack, options: dict[str, Any]) -> None:  # fmt: skip
    agent = facts = None
    try:
        if run.policy != "crash" and session.state.is_active:
            agent, facts = await _prepare(stack, session, options)
        task.ok = True
    except GagentError as exc:
        if run.policy == "require":
            raise
        options["warn"](f"could not freeze {session.name} ({exc}): its snapshot will be "
                        "CRASH-CONSISTENT (--consistency prefer)")  # fmt: skip
        task.ok, task.record.error = True, str(exc)
    finally:
        task.prepared.set()
    await run.freeze_go.wait()
    if run.aborted:
        return
    await _take(task, run, name, session, agent, facts, options)


async def _prepare(
    stack: AsyncExitStack, session: DomainSession, options: dict[str, Any]
) -> tuple[AgentCommands, Any]:
    """The member's agent, thawed if found frozen, and its preflight facts."""
    route = session.route(options["transport"], options["channel_name"])
    retry = session.thaw_command(options["channel_name"])
    try:
        with trio.fail_after(options["connect_timeout"]):
            agent = await stack.enter_async_context(session.agent(route=route))
            await thaw_if_frozen(agent, domain=session.name, retry=retry,
                                 thaw_timeout=options["thaw_timeout"])  # fmt: skip
    except trio.TooSlowError:
        raise AgentUnavailable(
            f"the agent of {session.name} ({route.describe(session.name)}) did not answer "
            f"within {options['connect_timeout']:g}s", hint="is qemu-ga running in the guest?",
        ) from None  # fmt: skip
    facts = await preflight(agent, route.describe(session.name))
    off = [c for c in (FREEZE, THAW, STATUS) if not facts.enabled(c)]
    if off:
        raise CommandUnavailable(
            off[0], f"{session.name} cannot freeze: {', '.join(off)} disabled or unknown in its "
            "qemu-ga (remove them from its --block-rpcs)",
        )  # fmt: skip
    line = deadman_warning(facts, session.name, options["snapshot_timeout"])
    if line:
        options["warn"](line)
    return agent, facts


async def _take(
    task: MemberTask, run: Phases, name: str, session: DomainSession, agent: AgentCommands | None,
    facts: Any, options: dict[str, Any],
) -> None:  # fmt: skip
    record = task.record
    common: dict[str, Any] = dict(
        thaw_timeout=options["thaw_timeout"], snapshot_timeout=options["snapshot_timeout"],
        delete_command=session.command("snapshot", "delete", options=(name,)),
        notify=options["warn"],
    )  # fmt: skip
    if agent is None:  # crash (by policy, fallback or a domain not running): no freeze
        task.frozen.set()
        await run.snapshot_go.wait()
        if run.aborted:
            return
        record.snapshot_start = Instant.now()
        result = await snapshot(session.domain, None, name, quiesce=False, **common)
        task.created = True
        record.snapshot_end = Instant.now()
    else:
        route = session.route(options["transport"], options["channel_name"])
        socket = route.transport is Transport.SOCKET
        try:
            result = await snapshot(
                WaitForTheGroup(task, run, options["freeze_timeout"]),  # type: ignore[arg-type]
                agent, name, freeze_timeout=options["freeze_timeout"],
                reconnect=session.reconnect_for(route) if socket else None,
                retry=session.thaw_command(options["channel_name"]), **common,
            )  # fmt: skip
        except ThawUnconfirmed as exc:
            _note_freeze(record, exc.record)
            raise await _if_domain_stopped(session, exc) from exc.__context__
    task.result = result
    record.disks = [
        {"target": d.target, "overlay": d.overlay, "backing": d.backing} for d in result.disks
    ]
    if result.freeze is not None:
        _note_freeze(record, result.freeze)
    fallback = None if agent is not None or run.policy == "crash" else record.error
    consistency = build_record(session, result, run.policy, facts, None, fallback)
    try:
        write_record(consistency, options["store"])
    except OSError as exc:
        options["warn"](f"the consistency record of {session.name} could not be stored ({exc})")
    record.consistency, record.state = consistency.consistency, KEPT


def _note_freeze(record: MemberRecord, freeze: FreezeRecord | None) -> None:
    if freeze is None:
        return
    record.freeze_sent = freeze.freeze_sent or record.freeze_sent
    record.freeze_confirmed = freeze.freeze_confirmed or record.freeze_confirmed
    record.thaw_sent, record.thaw_confirmed = freeze.thaw_sent, freeze.thaw_confirmed
    record.frozen_ms, record.thawed = freeze.window_ms, freeze.confirmed


async def _settle(task: MemberTask, run: Phases, name: str, options: dict[str, Any]) -> None:
    """Once the group has decided: remove this member's snapshot if the group failed (or
    was interrupted, under ``require``), shielded and within ``remove_timeout``."""
    if not task.created or task.session is None:
        return
    try:
        await run.decided.wait()
    except trio.Cancelled:
        if run.policy == "require":
            await _remove(task, name, options)
        raise
    if run.remove:
        await _remove(task, name, options)


async def _remove(task: MemberTask, name: str, options: dict[str, Any]) -> None:
    assert task.session is not None
    await remove_member_snapshot(
        task.session, task.record, name, store=options["store"],
        remove_timeout=options["remove_timeout"], warn=options["warn"],
    )  # fmt: skip
