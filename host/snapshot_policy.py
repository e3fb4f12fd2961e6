"""``snapshot create`` with a consistency policy, a preflight and a record of what it got.

:func:`create_snapshot` wraps :func:`gagent.host.snapshot.snapshot_session`:

* ``require`` (the default, like nova's ``os_require_quiesce``): a freeze or
  nothing; when the freeze fails no snapshot is taken (the freeze comes before
  libvirt's call, so no overlay file is made either);
* ``prefer``: when the freeze fails (no agent, a blocked or refused freeze,
  nothing frozen, a freeze that timed out and was thawed), a crash-consistent
  snapshot instead, said on stderr (``warn``) and in the record;
* ``crash``: no freeze, no agent asked.

A freeze is never given up for a thaw that could not be confirmed, a libvirt
error or a snapshot that outlived its timeout: those may have left a snapshot
or a frozen guest behind, and are reported as they are.

Before the freeze, on the agent connection the snapshot then uses, a cheap
preflight (:func:`gagent.host.preflight.gather`): every ``--mountpoint`` must be
a filesystem the guest has (a clear error naming it, before anything freezes),
and a dead-man's deadline shorter than ``snapshot_timeout`` is one warning
line.  The result's :class:`~gagent.host.consistency.ConsistencyRecord` is
stored (see :mod:`gagent.host.consistency`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from gagent.commands import AgentCommands
from gagent.errors import (
    AgentError,
    AgentUnavailable,
    CommandUnavailable,
    ConnectionLost,
    HostError,
    UsageError,
)
from gagent.freeze import AlreadyFrozen, FreezeTimeout, NothingFrozen

from .consistency import ConsistencyRecord, DiskConsistency, write_record
from .freeze_findings import deadman_warning, missing_mountpoints
from .preflight import GuestFacts, gather
from .reach import AgentRoute, Transport
from .session import DomainSession
from .snapshot import DEFAULT_SNAPSHOT_TIMEOUT, SnapshotMethod, SnapshotResult, snapshot_session

__all__ = ["POLICIES", "PREFLIGHT_TIMEOUT", "check_mountpoints", "create_snapshot"]

POLICIES = ("require", "prefer", "crash")
#: The cheap preflight before a freeze: a few round trips on a live agent.
PREFLIGHT_TIMEOUT = 15.0
#: Failures that happen before anything froze or after a confirmed thaw, with no snapshot made.
FREEZE_FAILURES = (
    AgentUnavailable, CommandUnavailable, AgentError, ConnectionLost,
    FreezeTimeout, NothingFrozen, AlreadyFrozen,
)  # fmt: skip
KIND = {
    SnapshotMethod.GAGENT_FREEZE: "filesystem",
    SnapshotMethod.LIBVIRT_QUIESCE: "libvirt-quiesce",
    SnapshotMethod.CRASH_CONSISTENT: "crash",
    SnapshotMethod.OFFLINE: "offline",
}


def check_mountpoints(facts: GuestFacts, domain: str, mountpoints: list[str] | None) -> None:
    """UsageError naming every requested mountpoint the guest does not have."""
    missing = missing_mountpoints(facts, mountpoints or [])
    if missing:
        have = ", ".join(fs.mountpoint for fs in facts.filesystems or []) or "none"
        raise UsageError(
            f"{domain} has no filesystem mounted on {', '.join(missing)} "
            f"(guest-get-fsinfo lists: {have}); nothing was frozen"
        )


async def preflight(agent: AgentCommands, route: str, **questions: bool) -> GuestFacts:
    """:func:`gather` within PREFLIGHT_TIMEOUT (``questions``: its keyword options)."""
    try:
        with trio.fail_after(PREFLIGHT_TIMEOUT):
            return await gather(agent, route, **questions)
    except trio.TooSlowError:
        raise AgentUnavailable(
            f"{route}: the agent did not answer the freeze preflight within {PREFLIGHT_TIMEOUT:g}s",
            hint="is qemu-ga running in the guest?",
        ) from None


async def create_snapshot(
    session: DomainSession, name: str, *, policy: str = "require",
    mountpoints: list[str] | None = None, libvirt_quiesce: bool = False,
    snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT, warn: Callable[[str], None],
    store: Path | None = None, **options: Any,
) -> tuple[SnapshotResult, ConsistencyRecord]:  # fmt: skip
    """Snapshot under ``policy`` (see the module doc); the record is stored, and a store
    that cannot be written is one warning (the snapshot exists by then)."""
    if policy not in POLICIES:
        raise UsageError(f"--consistency must be one of {', '.join(POLICIES)}, not {policy!r}")
    if policy == "crash" and (mountpoints or libvirt_quiesce):
        raise UsageError("--consistency crash takes no freeze: drop --mountpoint/--libvirt-quiesce")
    seen: dict[str, Any] = {}

    async def prepare(agent: AgentCommands, route: AgentRoute) -> None:
        seen["route"] = route
        if route.transport is Transport.LIBVIRT and mountpoints:
            manager = session.manager
            fix = (
                f"add gagent's channel with '{session.command('channel', 'add')}'"
                if manager is None
                else f"{manager.name} manages the domain, so gagent adds no channel to it: "
                "leave --mountpoint out"
            )
            raise UsageError(
                f"--mountpoint needs gagent's own freeze, and {session.name} is reached through "
                f"libvirt's channel only (libvirt's quiesce freezes every filesystem): {fix}"
            )
        facts = seen["facts"] = await preflight(agent, route.describe(session.name))
        check_mountpoints(facts, session.name, mountpoints)
        if route.transport is Transport.SOCKET:
            line = deadman_warning(facts, session.name, snapshot_timeout)
            if line:
                warn(line)

    common = dict(options, snapshot_timeout=snapshot_timeout)
    fallback = None
    if policy == "crash":
        result = await snapshot_session(session, name, quiesce=False, **common)
    else:
        try:
            result = await snapshot_session(
                session, name, libvirt_quiesce=libvirt_quiesce, mountpoints=mountpoints,
                prepare=prepare, **common,
            )  # fmt: skip
        except (*FREEZE_FAILURES, HostError) as exc:
            if policy != "prefer" or not _freeze_failed(exc, seen.get("route")):
                raise
            fallback = str(exc)
            warn(
                f"could not freeze {session.name} ({fallback}): taking a CRASH-CONSISTENT "
                "snapshot instead (--consistency prefer)"
            )
            result = await snapshot_session(session, name, quiesce=False, **common)
    record = build_record(session, result, policy, seen.get("facts"), mountpoints, fallback)
    if seen.get("route") is not None and fallback is None:
        record.route = seen["route"].describe(session.name)
    try:
        write_record(record, store)
    except OSError as exc:
        warn(
            f"snapshot {name} was taken, but its consistency record could not be stored "
            f"({exc}); set GAGENT_STATE_DIR to a writable directory"
        )
    return result, record


def _freeze_failed(exc: BaseException, route: AgentRoute | None) -> bool:
    """Whether ``exc`` is a failed freeze that left no snapshot (libvirt's error only when
    it was libvirt's quiesce that failed: its agent, not the snapshot)."""
    if isinstance(exc, HostError):
        quiescing = route is not None and route.transport is Transport.LIBVIRT
        text = str(exc).lower()
        return quiescing and ("agent" in text or "quiesce" in text or "freeze" in text)
    return True


def _on_disk(target: str, facts: GuestFacts | None, frozen: dict[str, str]) -> list[str]:
    """The frozen mountpoints whose guest-get-fsinfo disk names ``target`` (vda ~ /dev/vda)."""
    found = []
    for fs in (facts.filesystems or []) if facts else []:
        devices = {posixpath.basename(d.dev) for d in fs.disks if d.dev} | {fs.name}
        if fs.mountpoint in frozen and any(dev.startswith(target) for dev in devices):
            found.append(fs.mountpoint)
    return found


def build_record(
    session: DomainSession, result: SnapshotResult, policy: str, facts: GuestFacts | None,
    mountpoints: list[str] | None, fallback: str | None,
) -> ConsistencyRecord:  # fmt: skip
    kind = KIND[result.method]
    froze = kind in ("filesystem", "libvirt-quiesce")
    frozen: dict[str, str] = {}
    if froze and facts is not None:
        frozen = {
            fs.mountpoint: fs.type
            for fs in facts.filesystems or []
            if not mountpoints or fs.mountpoint in mountpoints
        }
    disks = []
    for disk in result.disks:
        on_it = _on_disk(disk.target, facts, frozen)
        # With --mountpoint, a disk none of whose filesystems froze is caught as it was.
        each = "crash" if froze and mountpoints and not on_it else kind
        disks.append(DiskConsistency(disk.target, disk.overlay, disk.backing, each, on_it))
    window = result.freeze.window_ms if result.freeze is not None else None
    deadman = facts.deadman if facts is not None else None
    return ConsistencyRecord(
        domain=session.name, domain_uuid=session.domain.uuid, snapshot=result.name,
        consistency=kind, policy=policy, metadata=result.metadata, fallback=fallback,
        qga_version=facts.version if facts else None, freeze_window_ms=window,
        filesystems=frozen, hooks=dict(facts.hooks) if facts and froze else {},
        deadman_deadline=deadman.deadline if deadman and deadman.state == "on" else None,
        disks=disks,
    )  # fmt: skip
