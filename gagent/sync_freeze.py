"""``gagent.sync.frozen``: freeze, run the block, always thaw, for synchronous callers.

The same record and errors as :func:`gagent.freeze.frozen` (:class:`FreezeRecord`,
:class:`AlreadyFrozen`, :class:`FreezeTimeout`, :class:`NothingFrozen`,
:class:`ThawUnconfirmed`), without a cancel scope to shield the thaw: it runs in
a ``finally``, with SIGINT held back meanwhile (in the main thread), over a new
connection when the first one was lost.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from . import freeze as f
from .errors import (
    AgentError,
    AgentUnavailable,
    CommandUnavailable,
    ConnectionLost,
    FrozenStateViolation,
    GagentError,
)
from .freeze import FreezeRecord
from .sync_agent import AgentTimeout, SyncAgent

__all__ = ["frozen"]


@contextmanager
def frozen(
    agent: SyncAgent,
    mountpoints: Iterable[str] | None = None,
    *,
    freeze_timeout: float = 30.0,
    thaw_timeout: float = 15.0,
    allow_nothing_frozen: bool = False,
    domain: str | None = None,
) -> Iterator[FreezeRecord]:
    """Freeze, run the block, always thaw and confirm (as gagent.freeze.frozen).

    The thaw runs however the block ends: an exception, a timeout, a lost
    freeze reply (the guest may have frozen anyway), Ctrl-C. While it runs,
    SIGINT is held back (in the main thread) and re-raised afterwards, so a
    second Ctrl-C cannot skip it.  A thaw that cannot be confirmed raises
    :class:`~gagent.freeze.ThawUnconfirmed` naming the command to run.
    """
    record = f.FreezeRecord(domain=domain, mountpoints=f._mountpoint_list(mountpoints))
    commands = agent.commands
    retry = commands.target.thaw_command() if commands.target else f.retry_command(domain)
    if commands.frozen:
        raise f.AlreadyFrozen(domain, retry)
    command = f.FREEZE if record.mountpoints is None else f.FREEZE_LIST
    for needed in (command, f.THAW, f.STATUS):  # never freeze what cannot be thawed
        agent.run(commands.require(needed), freeze_timeout)
    nothing = False
    try:
        record._sent_at = time.monotonic()
        where = "all filesystems" if record.mountpoints is None else " ".join(record.mountpoints)
        f.logger.info("%s: %s sent (%s)", domain or "guest", command, where)
        try:
            record.frozen = agent.run(commands.fsfreeze_freeze(record.mountpoints), freeze_timeout)
        except (AgentError, CommandUnavailable, FrozenStateViolation):
            record._sent_at = None  # answered, or never sent: nothing was frozen
            raise
        except AgentTimeout:  # thawed below all the same: the guest may have frozen
            raise f.FreezeTimeout(
                f"no reply to {command} within {freeze_timeout:g}s from "
                f"{domain or 'the guest'}: it may have frozen, so it was thawed",
                record=record,
            ) from None
        record._frozen_at = time.monotonic()
        f.logger.info("%s: froze %s filesystem(s)", domain or "guest", record.frozen)
        if record.frozen == 0 and not allow_nothing_frozen:
            nothing = True
        else:
            yield record
    finally:
        if record.sent:
            with _sigint_held_back():
                _thaw(agent, record, thaw_timeout, retry)
    if nothing:
        raise f._nothing_frozen(record)


def _thaw(agent: SyncAgent, record: FreezeRecord, thaw_timeout: float, retry: str) -> None:
    commands = agent.commands
    reasons: list[str] = []
    end = time.monotonic() + thaw_timeout
    for attempt in range(1, f.THAW_ATTEMPTS + 1):
        left = end - time.monotonic()
        if left <= 0:
            break
        per_attempt = left / (f.THAW_ATTEMPTS - attempt + 1)
        try:
            sent_at = time.monotonic()
            try:
                record.thawed = agent.run(commands.call(f.THAW, check=False), per_attempt)
            finally:
                commands.forget_info()
            thawed_at = time.monotonic()
            commands.frozen = False
            record.thaw_attempts = attempt
            record.thaw_ms = (thawed_at - sent_at) * 1000
            if record._frozen_at is not None:
                record.window_ms = (thawed_at - record._frozen_at) * 1000
            if record._sent_at is not None:
                record.max_window_ms = (thawed_at - record._sent_at) * 1000
            status = agent.run(commands.call(f.STATUS, check=False), per_attempt)
            if status == "thawed":
                record.confirmed = True
                f.logger.info("%s: thawed %s filesystem(s)", record.domain or "guest",
                              record.thawed)  # fmt: skip
                return
            reasons.append("guest-fsfreeze-status still said frozen after the thaw")
        except AgentTimeout:
            reasons.append(f"attempt {attempt}: no answer within {per_attempt:.3g}s")
        except GagentError as exc:
            reasons.append(f"attempt {attempt}: {exc}")
            if isinstance(exc, ConnectionLost | AgentUnavailable):
                if not _reopened(agent):
                    break  # the connection is gone: 'retry' is the way out
    raise f.ThawUnconfirmed(record.domain, retry, reasons, record)


def _reopened(agent: SyncAgent) -> bool:
    """Connect again for the next thaw attempt, when the transport can."""
    reopen = getattr(agent.commands, "reopen", None)
    if reopen is None:
        return False
    try:
        agent.run(_call(reopen))
    except GagentError:
        return False
    return True


async def _call(func: Any) -> None:
    func()


@contextmanager
def _sigint_held_back() -> Iterator[None]:
    """Hold SIGINT until the block is done, then raise KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
