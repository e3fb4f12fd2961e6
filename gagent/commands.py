"""Typed wrappers for qemu-ga's commands, shared by every transport.

A transport (the socket client, libvirt's qemuAgentCommand) subclasses
:class:`AgentCommands` and provides ``execute(command, arguments)``; the
wrappers here turn replies into the frozen structs of :mod:`gagent.types`,
:mod:`gagent.fs_types` and :mod:`gagent.hw_types`.

Two guards run before a command is sent:

* availability: the agent's own ``guest-info`` (fetched once, refreshed after
  a freeze or thaw, which change it) says whether the command exists and is
  enabled; an absent or disabled command raises
  :class:`~gagent.errors.CommandUnavailable` instead of reaching the agent.
  A freeze disables every command but a few, and so does a configuration that
  blocks them all: when guest-info shows that pattern (and only then, so the
  thawed path costs no extra round trip) guest-fsfreeze-status decides, and a
  frozen guest raises :class:`~gagent.errors.GuestIsFrozen`, naming the command
  that thaws it (:attr:`AgentCommands.target`).  So does the agent's own
  refusal of a command for a freeze that began after guest-info was read;
* freeze: while this client holds a freeze, only the commands qemu-ga still
  serves are sent; others raise :class:`~gagent.errors.FrozenStateViolation`.

Every wrapper goes through :meth:`AgentCommands.call`, or
:meth:`AgentCommands.call_typed` for a typed reply: the transport decodes the
reply's bytes straight into its type (:mod:`gagent.replies`, imported with the
first typed reply, per type group).  Arguments are checked here
(:mod:`gagent.arguments`: a bad one raises :class:`~gagent.errors.UsageError`
before anything is sent), and base64 is handled here: file data, exec input and
output, passwords are plain ``bytes``/``str`` for the caller.  Files, exec, user
access and power live in :mod:`gagent.commands_io`.

The freeze state (:attr:`AgentCommands.frozen`) follows fsfreeze_freeze,
fsfreeze_thaw and fsfreeze_status; each of them also forgets the cached
guest-info, since a freeze changes which commands the agent reports enabled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .arguments import instance_argument as _of
from .arguments import int_argument as _int
from .arguments import strings_argument as _strings
from .commands_io import GuestIOCommands
from .errors import (
    AgentError,
    AgentTarget,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    FrozenStateViolation,
    GuestFrozen,
    GuestIsFrozen,
)
from .fsfreeze_state import FsfreezeStatus
from .replies import decoder_for

if TYPE_CHECKING:
    from .decoding import ReplyDecoder
    from .fs_types import (
        DiskInfo,
        DiskStatsInfo,
        FilesystemInfo,
        FstrimResult,
    )
    from .hw_types import (
        CpuStats,
        DeviceInfo,
        MemoryBlock,
        MemoryBlockInfo,
        MemoryBlockResult,
        NetworkInterface,
        VCpu,
    )
    from .types import AgentInfo, GuestUser, OSInfo, Timezone

__all__ = ["ALLOWED_WHILE_FROZEN", "AgentCommands"]

#: What qemu-ga serves while frozen (qga/main.c ga_freeze_allowlist).
ALLOWED_WHILE_FROZEN = frozenset(
    {
        "guest-ping",
        "guest-info",
        "guest-sync",
        "guest-sync-delimited",
        "guest-fsfreeze-status",
        "guest-fsfreeze-thaw",
    }
)

#: Commands sent without consulting guest-info: exactly those the freeze allows.
#: Every agent has ping/info/sync, and status/thaw are sent inside a freeze
#: window, where a guest-info round trip would lengthen the freeze (an agent
#: lacking them refuses on its own).
_ALWAYS_AVAILABLE = ALLOWED_WHILE_FROZEN


class AgentCommands(GuestIOCommands):
    """Typed commands on top of an ``execute`` provided by the transport."""

    def __init__(self) -> None:
        self._info: AgentInfo | None = None
        #: True while a freeze made through this client is believed in force.
        self.frozen = False
        #: When the guest's freeze began (time.time()), for GuestIsFrozen's message:
        #: qemu-ga does not say, so only a caller that recorded it can set it.
        self.frozen_since: float | None = None
        #: Names the guest in advice (the command that thaws it); whoever opens the
        #: agent and knows its domain or socket sets it.
        self.target: AgentTarget | None = None

    #: The transport's bound on one reply in bytes (None: the transport has none).
    max_reply_size: int | None = None
    #: The transport's bound on one request in bytes (None: only qemu-ga's own).
    max_request_size: int | None = None

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Send one command and return its ``return`` value, unchecked (no availability
        or freeze guard: :meth:`call` adds them); error replies raise AgentError."""
        raise NotImplementedError

    async def execute_decoded(
        self, command: str, arguments: dict[str, Any] | None, decoder: ReplyDecoder
    ) -> Any:
        """``execute`` with the reply decoded by ``decoder``.  A transport that has
        the reply's bytes overrides this to decode them once; this default
        converts the value ``execute`` parsed."""
        return decoder.convert(await self.execute(command, arguments))

    # ----------------------------------------------------------------- plumbing

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, check: bool = True
    ) -> Any:
        """Run ``command`` after the availability and freeze guards (``check=False`` skips
        the availability guard, never the freeze guard); returns the parsed JSON."""
        return await self._guarded(command, arguments, check, None)

    async def call_typed(
        self, command: str, arguments: dict[str, Any] | None = None, *, check: bool = True
    ) -> Any:
        """:meth:`call`, the reply decoded to its type (:data:`gagent.replies.REPLY_TYPES`)."""
        return await self._guarded(command, arguments, check, decoder_for(command))

    async def _guarded(
        self,
        command: str,
        arguments: dict[str, Any] | None,
        check: bool,
        decoder: ReplyDecoder | None,
    ) -> Any:
        if self.frozen and command not in ALLOWED_WHILE_FROZEN:
            raise FrozenStateViolation(command)
        if check and command not in _ALWAYS_AVAILABLE:
            await self.require(command)
        try:
            if decoder is None:
                return await self.execute(command, arguments)
            return await self.execute_decoded(command, arguments, decoder)
        except GuestFrozen as refusal:
            # The agent's own word: frozen since guest-info was read (or unchecked).
            self.forget_info()
            raise self.frozen_error(command, refusal=refusal) from refusal

    async def require(self, command: str) -> None:
        """Raise CommandUnavailable unless guest-info lists ``command`` as enabled
        (GuestIsFrozen when the guest's freeze is what disabled it)."""
        cached = self._info is not None
        info = self._info or await self.info()
        entry = info.commands.get(command)
        if entry is None:
            raise CommandUnavailable(
                command,
                f"the guest agent (version {info.version}) does not implement this command",
                agent_version=info.version,
            )
        if entry.enabled:
            return
        if _freeze_would_explain(info):
            if await self.freeze_state() is FsfreezeStatus.FROZEN:
                raise self.frozen_error(command)
            if cached:  # thawed since guest-info was read: ask again
                self.forget_info()
                await self.require(command)
                return
        raise CommandUnavailable(
            command,
            "disabled in qemu-ga's configuration; enable it in the guest "
            "(qemu-ga --block-rpcs/--allow-rpcs or /etc/qemu/qemu-ga.conf)",
            agent_version=info.version,
        )

    async def freeze_state(self) -> FsfreezeStatus | None:
        """The agent's freeze state in one round trip, or None when it cannot tell
        (no guest-fsfreeze-status, or disabled).  Unlike :meth:`fsfreeze_status` it
        leaves :attr:`frozen` (the guard of this client's own freeze) alone."""
        try:
            return FsfreezeStatus.from_json(await self.call("guest-fsfreeze-status"))
        except (CommandNotFound, CommandDisabled):
            return None

    async def ensure_thawed(self, command: str = "guest-ping") -> None:
        """Raise GuestIsFrozen (``answered``: ``command`` ran) if the guest is frozen."""
        if await self.freeze_state() is FsfreezeStatus.FROZEN:
            raise self.frozen_error(command, answered=True)

    def frozen_error(
        self, command: str, *, refusal: GuestFrozen | None = None, answered: bool = False
    ) -> GuestIsFrozen:
        """GuestIsFrozen for ``command``, naming this agent's guest."""
        return GuestIsFrozen(
            command,
            target=self.target,
            frozen_since=self.frozen_since,
            refusal=refusal,
            answered=answered,
            agent_version=self._info.version if self._info else None,
        )

    def forget_info(self) -> None:
        """Drop the cached guest-info (the set of enabled commands changed)."""
        self._info = None

    # ------------------------------------------------------------------- basics

    async def ping(self) -> None:
        """guest-ping: the agent answers (a frozen guest's agent answers too)."""
        await self.call("guest-ping")

    async def info(self) -> AgentInfo:
        """guest-info: the agent's version and its commands, enabled or not (kept for the
        checks that refuse disabled commands locally)."""
        # The decoder keeps the last reply: the same bytes again cost no decoding.
        self._info = info = await self.call_typed("guest-info")
        return info

    # ------------------------------------------------------------------- system

    async def osinfo(self) -> OSInfo:
        """guest-get-osinfo: the guest's operating system (name, version, kernel, machine)."""
        return await self.call_typed("guest-get-osinfo")

    async def host_name(self) -> str:
        """guest-get-host-name: the host name the guest reports."""
        return await self.call_typed("guest-get-host-name")

    async def users(self) -> list[GuestUser]:
        """guest-get-users: users logged in to the guest, with their login times."""
        return await self.call_typed("guest-get-users")

    async def timezone(self) -> Timezone:
        """guest-get-timezone: the guest's time zone (name and offset from UTC, seconds)."""
        return await self.call_typed("guest-get-timezone")

    async def time(self) -> int:
        """The guest's clock, in nanoseconds since the epoch (UTC)."""
        return await self.call_typed("guest-get-time")

    async def set_time(self, time_ns: int | None = None) -> None:
        """Set the guest's clock to ``time_ns`` (ns since the epoch), or, with None,
        from its hardware clock (RTC): useful after a pause or a restore."""
        arguments = None if time_ns is None else {"time": _int(time_ns, "time_ns")}
        await self.call("guest-set-time", arguments)

    # ----------------------------------------------------------------- hardware

    async def network_interfaces(self) -> list[NetworkInterface]:
        """guest-network-get-interfaces: interfaces with their addresses and counters."""
        return await self.call_typed("guest-network-get-interfaces")

    async def vcpus(self) -> list[VCpu]:
        """guest-get-vcpus: the guest's logical CPUs, online or not."""
        return await self.call_typed("guest-get-vcpus")

    async def set_vcpus(self, vcpus: Iterable[VCpu]) -> int:
        """Online/offline vCPUs; returns how many of the requests (in order) succeeded."""
        from .hw_types import VCpu

        arguments = {"vcpus": [_of(VCpu, v, "vcpus").to_json() for v in vcpus]}
        return await self.call_typed("guest-set-vcpus", arguments)

    async def memory_blocks(self) -> list[MemoryBlock]:
        """guest-get-memory-blocks: the guest's memory blocks, online or not."""
        return await self.call_typed("guest-get-memory-blocks")

    async def set_memory_blocks(self, blocks: Iterable[MemoryBlock]) -> list[MemoryBlockResult]:
        """Online/offline memory blocks; one result per request."""
        from .hw_types import MemoryBlock

        arguments = {"mem-blks": [_of(MemoryBlock, b, "blocks").to_json() for b in blocks]}
        return await self.call_typed("guest-set-memory-blocks", arguments)

    async def memory_block_info(self) -> MemoryBlockInfo:
        """guest-get-memory-block-info: the size of one memory block."""
        return await self.call_typed("guest-get-memory-block-info")

    async def cpustats(self) -> list[CpuStats]:
        """guest-get-cpustats: per-CPU time counters (Linux guests)."""
        return await self.call_typed("guest-get-cpustats")

    async def devices(self) -> list[DeviceInfo]:
        """Device drivers (qemu-ga implements this for Windows guests only)."""
        return await self.call_typed("guest-get-devices")

    # -------------------------------------------------------------- filesystems

    async def fsinfo(self) -> list[FilesystemInfo]:
        """guest-get-fsinfo: mounted filesystems, their disks and usage."""
        return await self.call_typed("guest-get-fsinfo")

    async def disks(self) -> list[DiskInfo]:
        """guest-get-disks: block devices the guest sees (with SMART data where it has it)."""
        return await self.call_typed("guest-get-disks")

    async def diskstats(self) -> list[DiskStatsInfo]:
        """guest-get-diskstats: per-disk I/O counters (Linux guests)."""
        return await self.call_typed("guest-get-diskstats")

    async def fstrim(self, minimum: int | None = None) -> list[FstrimResult]:
        """Discard unused blocks; ``minimum`` is the smallest free range worth it (bytes)."""
        arguments = None if minimum is None else {"minimum": _int(minimum, "minimum")}
        return await self.call_typed("guest-fstrim", arguments)

    async def fsfreeze_status(self) -> FsfreezeStatus:
        """The agent's freeze state; :attr:`frozen` follows it."""
        status = FsfreezeStatus.from_json(await self.call("guest-fsfreeze-status"))
        frozen = status is FsfreezeStatus.FROZEN
        if frozen != self.frozen:
            self.frozen = frozen
            self.forget_info()
        return status

    async def fsfreeze_freeze(self, mountpoints: Iterable[str] | None = None) -> int:
        """Freeze every freezable filesystem, or only ``mountpoints`` (freeze-list).

        Returns how many filesystems are frozen.  Afterwards :attr:`frozen` is
        True (also when 0 were frozen: thawing then is harmless) and only ping,
        info, fsfreeze_status and fsfreeze_thaw are sent until a thaw.  If the
        agent never answered (timeout, cancellation, lost connection) the guest
        may be frozen all the same, so :attr:`frozen` is set too: thaw, or ask
        fsfreeze_status, to clear it.  An error reply leaves it alone (qemu-ga
        thaws whatever it froze before answering with an error).
        """
        if mountpoints is None:
            command, arguments = "guest-fsfreeze-freeze", None
        else:
            command = "guest-fsfreeze-freeze-list"
            arguments = {"mountpoints": _strings(mountpoints, "mountpoints")}
        try:
            count = await self.call_typed(command, arguments)
        except (AgentError, CommandUnavailable, FrozenStateViolation):
            raise  # answered, or never sent: nothing was frozen by this call
        except BaseException:
            self.frozen = True
            raise
        finally:
            self.forget_info()
        self.frozen = True
        return count

    async def fsfreeze_thaw(self) -> int:
        """Thaw; returns how many filesystems were thawed.  :attr:`frozen` becomes False."""
        try:
            count = await self.call_typed("guest-fsfreeze-thaw")
        finally:
            self.forget_info()
        self.frozen = False
        return count


def _freeze_would_explain(info: AgentInfo) -> bool:
    """Whether a freeze could be why guest-info shows commands disabled: qemu-ga
    disables every command outside its freeze allowlist, and keeps that list's
    guest-fsfreeze-status enabled.  A configuration that blocks only some
    commands (qemu-ga -b) never shows this pattern."""
    status = info.commands.get("guest-fsfreeze-status")
    if status is None or not status.enabled:
        return False
    return not any(
        entry.enabled for name, entry in info.commands.items() if name not in ALLOWED_WHILE_FROZEN
    )
