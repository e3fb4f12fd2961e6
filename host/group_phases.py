"""The parts of a group snapshot its members share: who they are, the group's phases, and
the wait each member's snapshot call makes inside its freeze (see
:mod:`gagent.host.group_snapshot`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from gagent.errors import GagentError
from gagent.freeze import Instant

from .group_record import GroupRecord, MemberRecord
from .session import DomainSession
from .snapshot import SnapshotResult
from .virt import Hypervisor

__all__ = [
    "GroupAborted",
    "GroupSnapshotFailed",
    "Member",
    "MemberTask",
    "Phases",
    "WaitForTheGroup",
]


@dataclass(frozen=True)
class Member:
    """A domain of the group: ``ref`` (name, UUID or ID) on ``uri``; ``hypervisor``
    reuses an open connection; ``label`` names it in the record (default: ``ref``)."""

    ref: str
    uri: str | None = None
    hypervisor: Hypervisor | None = None
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.ref


class GroupAborted(GagentError):
    """Another member failed: this one gave up its snapshot (and was thawed)."""


class GroupSnapshotFailed(GagentError):
    """The group is not consistent: ``record`` says member by member what happened,
    ``first`` is the first member's own error (None: the group was called off as a whole)."""

    def __init__(self, message: str, record: GroupRecord, first: BaseException | None):
        self.record = record
        self.first = first
        super().__init__(message)


@dataclass
class Phases:
    """The group's shared state: each phase's go, and whether it was called off."""

    policy: str
    freeze_go: trio.Event = field(default_factory=trio.Event)
    snapshot_go: trio.Event = field(default_factory=trio.Event)
    decided: trio.Event = field(default_factory=trio.Event)
    aborted: str | None = None
    remove: bool = False

    def abort(self, why: str) -> None:
        self.aborted = self.aborted or why


@dataclass
class MemberTask:
    member: Member
    record: MemberRecord
    prepared: trio.Event = field(default_factory=trio.Event)
    frozen: trio.Event = field(default_factory=trio.Event)  # frozen, or will not freeze
    done: trio.Event = field(default_factory=trio.Event)
    ok: bool = False
    exc: BaseException | None = None
    result: SnapshotResult | None = None
    #: libvirt made the snapshot (also when what followed failed: a thaw, a record)
    created: bool = False
    session: DomainSession | None = None


class WaitForTheGroup:
    """The member's Domain for :func:`snapshot`: its libvirt call first waits (inside
    the freeze) for every member's freeze, and the call's own times are recorded."""

    def __init__(self, task: MemberTask, run: Phases, wait: float):
        self._task, self._run, self._wait = task, run, wait
        self._domain = task.session.domain  # type: ignore[union-attr]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._domain, name)

    async def snapshot_create_xml(self, xml: str, **flags: Any) -> str:
        record = self._task.record
        record.freeze_confirmed = record.freeze_confirmed or Instant.now()
        self._task.frozen.set()
        try:
            with trio.move_on_after(self._wait):
                await self._run.snapshot_go.wait()
        except trio.Cancelled:  # (libvirt was not asked yet: nothing to say about a snapshot)
            raise GroupAborted(f"{self._domain.name}: interrupted before its snapshot") from None
        if not self._run.snapshot_go.is_set():
            self._run.abort(f"the group's freezes took longer than {self._wait:g}s")
        if self._run.aborted:
            raise GroupAborted(f"snapshot of {self._domain.name} given up: {self._run.aborted}")
        record.snapshot_start = Instant.now()
        try:
            created = await self._domain.snapshot_create_xml(xml, **flags)
            self._task.created = True
            return created
        finally:
            record.snapshot_end = Instant.now()
