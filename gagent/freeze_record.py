"""What a freeze did and how it failed: :class:`FreezeRecord` and the freeze errors.

Its own module so that both freeze procedures, the trio one (:mod:`gagent.freeze`)
and the blocking one (:mod:`gagent.sync_freeze`), build on one record and one
error family, and a reader of either finds the procedure apart from its
bookkeeping.  Import the names from :mod:`gagent.freeze`, which re-exports them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from trio.lowlevel import RunVar

from .commands import AgentCommands
from .errors import GagentError, UsageError

__all__ = [
    "AlreadyFrozen", "FreezeError", "FreezeRecord", "FreezeTimeout", "FreezeWindowWarning",
    "Instant", "NothingFrozen", "ThawUnconfirmed", "retry_command", "unconfirmed_thaws",
]  # fmt: skip


# ------------------------------------------------------------------- errors


def retry_command(domain: str | None, agent: AgentCommands | None = None) -> str:
    """The command an operator runs to thaw by hand."""
    if domain:
        return f"gagent thaw {domain}"
    name = getattr(agent, "name", None)
    if isinstance(name, str) and name.startswith("/"):
        return f"gagent agent --socket {name} fsfreeze thaw"
    return "gagent thaw DOMAIN"


class FreezeError(GagentError):
    """A freeze could not be made, or not be undone; ``record`` says what happened."""

    def __init__(self, message: str, *, record: FreezeRecord | None = None):
        self.record = record
        super().__init__(message)


class FreezeTimeout(FreezeError):
    """The agent did not answer the freeze in time (the guest was thawed afterwards)."""


class NothingFrozen(FreezeError):
    """The freeze froze 0 filesystems: nothing would be consistent (see the module doc)."""


class AlreadyFrozen(FreezeError):
    """Our agent is frozen already (a previous run crashed, or someone froze it on purpose)."""

    def __init__(self, domain: str | None, retry: str):
        self.domain = domain
        self.retry = retry
        super().__init__(
            f"the guest agent of {domain or 'this guest'} is already in its frozen state "
            f"(a previous run crashed, or someone froze it): thaw it first with '{retry}'"
        )


class ThawUnconfirmed(FreezeError):
    """THE GUEST MAY STILL BE FROZEN: the thaw could not be confirmed.

    ``domain`` and ``retry`` (the exact command to run) say what to do;
    ``reasons`` lists what went wrong in each attempt; ``record`` is the
    freeze's :class:`FreezeRecord`.
    """

    def __init__(self, domain: str | None, retry: str, reasons: list[str], record: FreezeRecord):
        self.domain = domain
        self.retry = retry
        self.reasons = reasons
        super().__init__(
            f"THE GUEST MAY STILL BE FROZEN: could not confirm the thaw of "
            f"{domain or 'the guest'} ({'; '.join(reasons) or 'no answer'}). "
            f"Its filesystems stay frozen until thawed: run '{retry}' now",
            record=record,
        )


#: The thaws of the current trio run that could not be confirmed.  A command whose
#: deadline passes or that a signal stops while such an alarm stands must report the
#: alarm, not the timeout (gagent.host.cli.common reads it through unconfirmed_thaws()).
_UNCONFIRMED: RunVar[list[ThawUnconfirmed]] = RunVar("gagent.unconfirmed_thaws")


def unconfirmed_thaws() -> list[ThawUnconfirmed]:
    """The thaws of this trio run that could not be confirmed and were not made good by a
    later confirmed thaw of the same guest; [] outside a trio run."""
    try:
        return list(_UNCONFIRMED.get())
    except (LookupError, RuntimeError):  # none yet / not in a trio run (gagent.sync)
        return []


def _note_thaw(domain: str | None, error: ThawUnconfirmed | None) -> None:
    try:
        try:
            found = _UNCONFIRMED.get()
        except LookupError:
            found = []
            _UNCONFIRMED.set(found)
    except RuntimeError:
        return  # not in a trio run
    if error is None:  # confirmed: an earlier alarm about this guest is over
        found[:] = [e for e in found if e.domain != domain]
    else:
        found.append(error)


class FreezeWindowWarning(UserWarning):
    """The freeze lasted long enough to matter (Windows' VSS gives up after ~10 s)."""


# ------------------------------------------------------------------- record


@dataclass(frozen=True)
class Instant:
    """One moment on two clocks: ``monotonic`` orders events on this host (several guests'
    freezes), ``wall`` (seconds since the epoch) is for people and other hosts."""

    monotonic: float
    wall: float

    @classmethod
    def now(cls) -> Instant:
        return cls(time.monotonic(), time.time())


@dataclass
class FreezeRecord:
    """What one freeze did; times are in ms, set once known."""

    domain: str | None = None
    mountpoints: list[str] | None = None
    #: Filesystems the freeze reply counted (None: no reply).
    frozen: int | None = None
    #: Filesystems the thaw reply counted (None: no thaw reply).
    thawed: int | None = None
    #: Freeze reply -> thaw reply: how long the guest was known to be frozen.
    window_ms: float | None = None
    #: Freeze request -> thaw reply: the longest the guest may have been frozen.
    max_window_ms: float | None = None
    #: The thaw's own round trip (request -> reply) in the attempt that worked.
    thaw_ms: float | None = None
    thaw_attempts: int = 0
    #: guest-fsfreeze-status said "thawed" after the thaw.
    confirmed: bool = False
    #: The thaw went over a new connection (the first one was lost).
    reconnected: bool = False
    warnings: list[str] = field(default_factory=list)
    #: When the freeze request went out, its reply came, the first thaw request went out
    #: (the earliest the guest may have thawed) and guest-fsfreeze-status said thawed.
    freeze_sent: Instant | None = None
    freeze_confirmed: Instant | None = None
    thaw_sent: Instant | None = None
    thaw_confirmed: Instant | None = None
    _sent_at: float | None = field(default=None, repr=False)
    _frozen_at: float | None = field(default=None, repr=False)

    @property
    def sent(self) -> bool:
        """The freeze request may have reached the agent (so a thaw is owed)."""
        return self._sent_at is not None


# ------------------------------------------ shared by both procedures


def _mountpoint_list(mountpoints: Iterable[str] | None) -> list[str] | None:
    if mountpoints is None:
        return None
    if isinstance(mountpoints, str | bytes):
        raise UsageError("mountpoints must be a list of paths, not a single string")
    listed = list(mountpoints)
    if not listed or not all(isinstance(m, str) and m for m in listed):
        raise UsageError("mountpoints must be a non-empty list of paths (None: all)")
    return listed


def _nothing_frozen(record: FreezeRecord) -> NothingFrozen:
    if record.mountpoints:
        # qemu-ga skips what is not a mounted, freezable filesystem: that is the likely cause
        return NothingFrozen(
            f"the freeze of {record.domain or 'the guest'} froze 0 filesystems: none of "
            f"{', '.join(record.mountpoints)} is a mounted filesystem the guest can freeze "
            "(check the paths with 'gagent agent DOMAIN fsinfo'; tmpfs and the root of an "
            "initramfs cannot be frozen)",
            record=record,
        )
    return NothingFrozen(
        f"the freeze of {record.domain or 'the guest'} froze 0 filesystems: nothing would be "
        "consistent. Another agent (libvirt's on org.qemu.guest_agent.0, or fsfreeze in the "
        f"guest) may hold a freeze - our thaw ended it ({record.thawed} filesystem(s) thawed) "
        "- or the guest has no freezable filesystem (then allow it explicitly)",
        record=record,
    )
