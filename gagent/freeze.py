"""Freeze a guest's filesystems as briefly as possible, and never leave them frozen.

::

    async with frozen(agent, domain="vm1") as freeze:
        await take_the_snapshot()          # only ping/info/sync/status/thaw may be sent here
    print(f"{freeze.frozen} filesystems frozen for {freeze.window_ms:.1f} ms")

:func:`frozen` sends guest-fsfreeze-freeze (-freeze-list for ``mountpoints``) and,
whatever happens next, guest-fsfreeze-thaw then guest-fsfreeze-status:

* the thaw runs in a *shielded* cancel scope with its own deadline
  (``thaw_timeout``, split over up to three attempts): a cancellation, a
  caller's deadline or a Ctrl-C in the block cannot skip it, and the block's
  exception (``Cancelled``, ``KeyboardInterrupt``...) propagates unchanged *after* it;
* it also runs when the freeze failed or timed out (the guest may have frozen
  and only the reply was lost);
* on a lost connection, ``reconnect`` (a factory of fresh agent connections)
  serves the thaw: the freeze state belongs to the qemu-ga process (and
  survives its restart), not to the connection;
* it counts only once guest-fsfreeze-status says ``thawed``; otherwise
  :class:`ThawUnconfirmed` (replacing the block's exception, kept as its
  ``__context__``) names the domain and the command to run: ``gagent thaw DOMAIN``.

Nothing is sent between the freeze reply and the thaw request: guest-info is
fetched once before (a freeze is refused unless the agent can also thaw and
report its status).  trio raises ``KeyboardInterrupt`` into the *main* task
even inside a shielded scope: programs should run the freeze in a child task,
where Ctrl-C arrives as a cancellation that the shield holds off until the thaw
is done (as ``gagent snapshot`` does).

Two agents, two freeze states
-----------------------------
A guest may run two qemu-ga instances: ours on gagent's channel and libvirt's
on ``org.qemu.guest_agent.0``.  Each keeps its own freeze state, while the
filesystems are shared: after libvirt's freeze (``virsh domfsfreeze``, or a
snapshot with libvirt's ``--quiesce``) ours still reports ``thawed`` and its
own freeze returns **0** (the kernel says the filesystems are already frozen,
and qemu-ga skips them); and ours thawing thaws libvirt's freeze too (qemu-ga
thaws every mounted filesystem).  Hence:

* a freeze that froze 0 filesystems froze *nothing*: :class:`NothingFrozen`,
  unless ``allow_nothing_frozen=True`` (a guest without freezable
  filesystems).  Our agent is still in its frozen state then, so the thaw is
  sent anyway - and it may end the other agent's freeze early;
* never mix our freeze with libvirt's QUIESCE flag in one snapshot.

Windows guests freeze through VSS, which gives up after about 10 seconds; a
window longer than ``vss_warn_after`` (8 s) emits a :class:`FreezeWindowWarning`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import trio

from .commands import AgentCommands
from .errors import (
    AgentUnavailable,
    CommandUnavailable,
    ConnectionLost,
    FrozenStateViolation,
    GagentError,
    UsageError,
)
from .freeze_record import (
    AlreadyFrozen,
    FreezeError,
    FreezeRecord,
    FreezeTimeout,
    FreezeWindowWarning,
    Instant,
    NothingFrozen,
    ThawUnconfirmed,
    _mountpoint_list,
    _note_thaw,
    _nothing_frozen,
    retry_command,
    unconfirmed_thaws,
)
from .fs_types import FsfreezeStatus
from .types import expect_int

__all__ = [
    "DEFAULT_FREEZE_TIMEOUT", "DEFAULT_THAW_TIMEOUT", "AlreadyFrozen", "FreezeError",
    "FreezeRecord", "FreezeTimeout", "FreezeWindowWarning", "Instant", "NothingFrozen",
    "ThawUnconfirmed", "freeze", "frozen", "thaw", "thaw_if_frozen", "unconfirmed_thaws",
]  # fmt: skip

logger = logging.getLogger("gagent.freeze")

DEFAULT_FREEZE_TIMEOUT = 30.0
DEFAULT_THAW_TIMEOUT = 15.0
#: The thaw deadline is split over this many attempts.
THAW_ATTEMPTS = 3
#: Windows' VSS aborts a freeze held longer than about this (seconds).
VSS_LIMIT = 10.0
VSS_WARN_AFTER = 8.0

FREEZE = "guest-fsfreeze-freeze"
FREEZE_LIST = "guest-fsfreeze-freeze-list"
THAW = "guest-fsfreeze-thaw"
STATUS = "guest-fsfreeze-status"

Reconnect = Callable[[], AbstractAsyncContextManager[AgentCommands]]


# -------------------------------------------------------------------- steps


async def _freeze_step(
    agent: AgentCommands, record: FreezeRecord, freeze_timeout: float, retry: str
) -> None:
    command = FREEZE if record.mountpoints is None else FREEZE_LIST
    if agent.frozen:
        raise AlreadyFrozen(record.domain, retry)
    try:
        with trio.fail_after(freeze_timeout):
            try:
                # One guest-info, now: never freeze through an agent that cannot thaw.
                for needed in (command, THAW, STATUS):
                    await agent.require(needed)
            except CommandUnavailable as exc:
                if (
                    exc.command == command
                    and await agent.fsfreeze_status() is FsfreezeStatus.FROZEN
                ):
                    raise AlreadyFrozen(record.domain, retry) from None
                raise
            record._sent_at, record.freeze_sent = trio.current_time(), Instant.now()
            logger.info(
                "%s: %s sent (%s)", record.domain or "guest", command,
                "all filesystems" if record.mountpoints is None else " ".join(record.mountpoints),
            )  # fmt: skip
            try:
                record.frozen = await agent.fsfreeze_freeze(record.mountpoints)
            except (CommandUnavailable, FrozenStateViolation, UsageError):
                record._sent_at = record.freeze_sent = None  # refused before sending
                raise
            record._frozen_at, record.freeze_confirmed = trio.current_time(), Instant.now()
    except trio.TooSlowError:
        if not record.sent:
            raise FreezeTimeout(
                f"the guest agent of {record.domain or 'the guest'} did not answer within "
                f"{freeze_timeout:g}s before the freeze: nothing was frozen",
                record=record,
            ) from None
        raise FreezeTimeout(
            f"no reply to {command} within {freeze_timeout:g}s from "
            f"{record.domain or 'the guest'}: it may have frozen, so it was thawed",
            record=record,
        ) from None
    logger.info("%s: froze %s filesystem(s)", record.domain or "guest", record.frozen)


async def _thaw_once(agent: AgentCommands, record: FreezeRecord, seconds: float) -> bool:
    # agent.call(check=False): fsfreeze_thaw() would fetch guest-info first, inside the window.
    with trio.fail_after(seconds):
        sent_at = trio.current_time()
        if record.thaw_sent is None:
            record.thaw_sent = Instant.now()
        try:
            value = await agent.call(THAW, check=False)
        finally:
            agent.forget_info()
        thawed_at = trio.current_time()
    agent.frozen = False
    record.thawed = expect_int(value, THAW)
    record.thaw_ms = (thawed_at - sent_at) * 1000
    if record._frozen_at is not None:
        record.window_ms = (thawed_at - record._frozen_at) * 1000
    if record._sent_at is not None:
        record.max_window_ms = (thawed_at - record._sent_at) * 1000
    with trio.fail_after(seconds):
        status = FsfreezeStatus.from_json(await agent.call(STATUS, check=False))
    agent.frozen = status is FsfreezeStatus.FROZEN
    record.confirmed = status is FsfreezeStatus.THAWED
    if record.confirmed:
        record.thaw_confirmed = Instant.now()
    return record.confirmed


async def _thaw_step(
    agent: AgentCommands,
    record: FreezeRecord,
    *,
    thaw_timeout: float,
    reconnect: Reconnect | None,
    retry: str,
) -> None:
    """Thaw and confirm, shielded, within ``thaw_timeout``; else ThawUnconfirmed."""
    reasons: list[str] = []
    per_attempt = thaw_timeout / THAW_ATTEMPTS
    current: AgentCommands | None = agent
    try:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + thaw_timeout) as scope:
            async with AsyncExitStack() as stack:
                for attempt in range(1, THAW_ATTEMPTS + 1):
                    record.thaw_attempts = attempt
                    try:
                        if current is None:
                            assert reconnect is not None
                            with trio.fail_after(per_attempt):
                                current = await stack.enter_async_context(reconnect())
                            record.reconnected = True
                        if await _thaw_once(current, record, per_attempt):
                            break
                        reasons.append("guest-fsfreeze-status still said frozen after the thaw")
                    except trio.TooSlowError:
                        reasons.append(f"attempt {attempt}: no answer within {per_attempt:g}s")
                    except (ConnectionLost, AgentUnavailable) as exc:
                        reasons.append(f"attempt {attempt}: {exc}")
                        if reconnect is None:
                            break
                        current = None
                    except GagentError as exc:
                        reasons.append(f"attempt {attempt}: {exc}")
    except BaseException:  # e.g. KeyboardInterrupt in the main task: still say it, loudly
        if not record.confirmed:
            logger.critical("THE GUEST MAY STILL BE FROZEN: thaw interrupted; run '%s'", retry)
        raise
    if scope.cancelled_caught:
        reasons.append(f"the thaw deadline of {thaw_timeout:g}s passed")
    if not record.confirmed:
        error = ThawUnconfirmed(record.domain, retry, reasons, record)
        _note_thaw(record.domain, error)
        logger.critical("%s", error)
        raise error
    _note_thaw(record.domain, None)
    if current is not agent:
        agent.frozen = False
        agent.forget_info()
    logger.info("%s: thawed %s filesystem(s)", record.domain or "guest", record.thawed)


def _check_window(record: FreezeRecord, warn_after: float) -> None:
    exact = record.window_ms is not None
    window = record.window_ms if exact else record.max_window_ms
    if window is None or window <= warn_after * 1000:
        return
    # Without the freeze reply, when the guest froze is unknown: from the freeze request
    # to the thaw is only an upper bound (a freeze that took 50 ms is no 8 s freeze).
    held = (
        f"stayed frozen for {window / 1000:.1f}s"
        if exact
        else f"may have been frozen for up to {window / 1000:.1f}s (no freeze reply came, so "
        "the real window is unknown)"
    )
    message = (
        f"{record.domain or 'the guest'} {held}: Windows guests "
        f"(VSS) abort a freeze after about {VSS_LIMIT:g}s, so on Windows the snapshot may not "
        "be application-consistent; keep the frozen block shorter"
    )
    record.warnings.append(message)
    logger.warning("%s", message)
    warnings.warn(message, FreezeWindowWarning, stacklevel=2)


# --------------------------------------------------------------------- API


@asynccontextmanager
async def frozen(
    agent: AgentCommands,
    mountpoints: Iterable[str] | None = None,
    *,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    allow_nothing_frozen: bool = False,
    domain: str | None = None,
    reconnect: Reconnect | None = None,
    vss_warn_after: float = VSS_WARN_AFTER,
    retry: str | None = None,
) -> AsyncIterator[FreezeRecord]:
    """Freeze (all, or ``mountpoints``), run the block, always thaw and confirm.

    Yields a :class:`FreezeRecord`; its window and thaw fields are set on exit.
    Raises :class:`FreezeTimeout` (no freeze reply within ``freeze_timeout``),
    :class:`NothingFrozen` (0 filesystems frozen and not ``allow_nothing_frozen``),
    :class:`AlreadyFrozen`, the agent's own errors, and :class:`ThawUnconfirmed`
    - in every case after the thaw.  See the module doc.  ``retry`` is the
    command an operator runs to thaw by hand (the domain session builds it with
    the real URI); by default it is made from ``domain``.
    """
    record = FreezeRecord(domain=domain, mountpoints=_mountpoint_list(mountpoints))
    retry = retry or retry_command(domain, agent)
    nothing = False
    try:
        await _freeze_step(agent, record, freeze_timeout, retry)
        if record.frozen == 0 and not allow_nothing_frozen:
            nothing = True
        else:
            yield record
    finally:
        if record.sent:
            await _thaw_step(
                agent, record, thaw_timeout=thaw_timeout, reconnect=reconnect, retry=retry
            )
            _check_window(record, vss_warn_after)
    if nothing:
        raise _nothing_frozen(record)


async def freeze(
    agent: AgentCommands,
    mountpoints: Iterable[str] | None = None,
    *,
    freeze_timeout: float = DEFAULT_FREEZE_TIMEOUT,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    allow_nothing_frozen: bool = False,
    domain: str | None = None,
    retry: str | None = None,
) -> FreezeRecord:
    """Freeze and leave the guest frozen (``gagent fsfreeze freeze``).

    Only a freeze that worked is left in place: on any failure (timeout, lost
    reply, cancellation, 0 filesystems frozen) the guest is thawed before the
    error propagates, as in :func:`frozen`.
    """
    record = FreezeRecord(domain=domain, mountpoints=_mountpoint_list(mountpoints))
    retry = retry or retry_command(domain, agent)
    keep = False
    try:
        await _freeze_step(agent, record, freeze_timeout, retry)
        keep = record.frozen != 0 or allow_nothing_frozen
    finally:
        if not keep and record.sent:
            await _thaw_step(agent, record, thaw_timeout=thaw_timeout, reconnect=None, retry=retry)
    if not keep:
        raise _nothing_frozen(record)
    return record


async def thaw(
    agent: AgentCommands,
    *,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    domain: str | None = None,
    reconnect: Reconnect | None = None,
    retry: str | None = None,
) -> FreezeRecord:
    """Thaw unconditionally and confirm with guest-fsfreeze-status (``gagent thaw``).

    qemu-ga thaws every mounted filesystem, also one frozen by another agent.
    Raises :class:`ThawUnconfirmed` if the guest cannot be shown thawed.
    """
    record = FreezeRecord(domain=domain)
    retry = retry or retry_command(domain, agent)
    await _thaw_step(agent, record, thaw_timeout=thaw_timeout, reconnect=reconnect, retry=retry)
    return record


async def thaw_if_frozen(
    agent: AgentCommands,
    *,
    domain: str | None = None,
    thaw_timeout: float = DEFAULT_THAW_TIMEOUT,
    retry: str | None = None,
) -> bool:
    """The safety net on connect: thaw a guest our agent reports frozen.

    A channel serves one client at a time, so a frozen state found on connect
    was left by a previous run that crashed (or by a deliberate
    ``gagent fsfreeze freeze``).  Returns True, and logs a warning, when it
    thawed; False when the guest was not frozen.  Note that a freeze held by
    libvirt's own agent is invisible here (see the module doc).
    """
    if await agent.fsfreeze_status() is not FsfreezeStatus.FROZEN:
        return False
    record = await thaw(agent, thaw_timeout=thaw_timeout, domain=domain, retry=retry)
    logger.warning(
        "%s was found frozen (left by an earlier run?): thawed %s filesystem(s)",
        domain or "the guest",
        record.thawed,
    )
    return True
