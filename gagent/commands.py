"""Typed wrappers for qemu-ga's commands, shared by every transport.

A transport (the socket client, libvirt's qemuAgentCommand) subclasses
:class:`AgentCommands` and provides ``execute(command, arguments)``; the
wrappers here turn replies into frozen dataclasses from :mod:`gagent.types`.

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

Every wrapper goes through :meth:`AgentCommands.call`.  Arguments are checked
here (a bad one raises :class:`~gagent.errors.UsageError` before anything is
sent), and base64 is handled here: file data, exec input and output, passwords
are plain ``bytes``/``str`` for the caller.

The freeze state (:attr:`AgentCommands.frozen`) follows fsfreeze_freeze,
fsfreeze_thaw and fsfreeze_status; each of them also forgets the cached
guest-info, since a freeze changes which commands the agent reports enabled.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

from . import types as t
from .errors import (
    AgentError,
    AgentTarget,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    FrozenStateViolation,
    GuestFrozen,
    GuestIsFrozen,
    UsageError,
)
from .fs_types import (
    DiskInfo,
    DiskStatsInfo,
    FileRead,
    FileSeek,
    FilesystemInfo,
    FileWrite,
    FsfreezeStatus,
    FstrimResult,
    SeekWhence,
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


class AgentCommands:
    """Typed commands on top of an ``execute`` provided by the transport."""

    def __init__(self) -> None:
        self._info: t.AgentInfo | None = None
        self._info_raw: Any = None
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
        raise NotImplementedError

    # ----------------------------------------------------------------- plumbing

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, check: bool = True
    ) -> Any:
        """Run ``command`` after the availability and freeze guards (``check=False`` skips
        the availability guard, never the freeze guard)."""
        if self.frozen and command not in ALLOWED_WHILE_FROZEN:
            raise FrozenStateViolation(command)
        if check and command not in _ALWAYS_AVAILABLE:
            await self.require(command)
        try:
            return await self.execute(command, arguments)
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
        await self.call("guest-ping")

    async def info(self) -> t.AgentInfo:
        raw = await self.call("guest-info")
        # Parsing 40-odd command entries costs more than the round trip; the
        # reply rarely changes, and comparing it is cheap.
        if self._info is None or raw != self._info_raw:
            self._info = t.AgentInfo.from_json(raw)
            self._info_raw = raw
        return self._info

    # ------------------------------------------------------------------- system

    async def osinfo(self) -> t.OSInfo:
        return t.OSInfo.from_json(await self.call("guest-get-osinfo"))

    async def host_name(self) -> str:
        return t.parse_host_name(await self.call("guest-get-host-name"))

    async def users(self) -> list[t.GuestUser]:
        return t.list_of(t.GuestUser, await self.call("guest-get-users"), "guest-get-users")

    async def timezone(self) -> t.Timezone:
        return t.Timezone.from_json(await self.call("guest-get-timezone"))

    async def time(self) -> int:
        """The guest's clock, in nanoseconds since the epoch (UTC)."""
        return t.expect_int(await self.call("guest-get-time"), "guest-get-time")

    async def set_time(self, time_ns: int | None = None) -> None:
        """Set the guest's clock to ``time_ns`` (ns since the epoch), or, with None,
        from its hardware clock (RTC): useful after a pause or a restore."""
        arguments = None if time_ns is None else {"time": _int(time_ns, "time_ns")}
        await self.call("guest-set-time", arguments)

    # ----------------------------------------------------------------- hardware

    async def network_interfaces(self) -> list[NetworkInterface]:
        value = await self.call("guest-network-get-interfaces")
        return t.list_of(NetworkInterface, value, "guest-network-get-interfaces")

    async def vcpus(self) -> list[VCpu]:
        return t.list_of(VCpu, await self.call("guest-get-vcpus"), "guest-get-vcpus")

    async def set_vcpus(self, vcpus: Iterable[VCpu]) -> int:
        """Online/offline vCPUs; returns how many of the requests (in order) succeeded."""
        arguments = {"vcpus": [_of(VCpu, v, "vcpus").to_json() for v in vcpus]}
        return t.expect_int(await self.call("guest-set-vcpus", arguments), "guest-set-vcpus")

    async def memory_blocks(self) -> list[MemoryBlock]:
        value = await self.call("guest-get-memory-blocks")
        return t.list_of(MemoryBlock, value, "guest-get-memory-blocks")

    async def set_memory_blocks(self, blocks: Iterable[MemoryBlock]) -> list[MemoryBlockResult]:
        """Online/offline memory blocks; one result per request."""
        arguments = {"mem-blks": [_of(MemoryBlock, b, "blocks").to_json() for b in blocks]}
        value = await self.call("guest-set-memory-blocks", arguments)
        return t.list_of(MemoryBlockResult, value or [], "guest-set-memory-blocks")

    async def memory_block_info(self) -> MemoryBlockInfo:
        return MemoryBlockInfo.from_json(await self.call("guest-get-memory-block-info"))

    async def cpustats(self) -> list[CpuStats]:
        return t.list_of(CpuStats, await self.call("guest-get-cpustats"), "guest-get-cpustats")

    async def devices(self) -> list[DeviceInfo]:
        """Device drivers (qemu-ga implements this for Windows guests only)."""
        return t.list_of(DeviceInfo, await self.call("guest-get-devices"), "guest-get-devices")

    # -------------------------------------------------------------- filesystems

    async def fsinfo(self) -> list[FilesystemInfo]:
        return t.list_of(FilesystemInfo, await self.call("guest-get-fsinfo"), "guest-get-fsinfo")

    async def disks(self) -> list[DiskInfo]:
        return t.list_of(DiskInfo, await self.call("guest-get-disks"), "guest-get-disks")

    async def diskstats(self) -> list[DiskStatsInfo]:
        value = await self.call("guest-get-diskstats")
        return t.list_of(DiskStatsInfo, value, "guest-get-diskstats")

    async def fstrim(self, minimum: int | None = None) -> list[FstrimResult]:
        """Discard unused blocks; ``minimum`` is the smallest free range worth it (bytes)."""
        arguments = None if minimum is None else {"minimum": _int(minimum, "minimum")}
        return FstrimResult.list_from_json(await self.call("guest-fstrim", arguments))

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
            count = t.expect_int(await self.call(command, arguments), command)
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
            count = t.expect_int(await self.call("guest-fsfreeze-thaw"), "guest-fsfreeze-thaw")
        finally:
            self.forget_info()
        self.frozen = False
        return count

    # -------------------------------------------------------------------- files

    async def file_open(self, path: str, mode: str = "r") -> int:
        """Open ``path`` in the guest (``mode`` as for fopen); returns a handle."""
        arguments = {"path": _str(path, "path"), "mode": _str(mode, "mode")}
        return t.expect_int(await self.call("guest-file-open", arguments), "guest-file-open")

    async def file_read(self, handle: int, count: int | None = None) -> FileRead:
        """Read up to ``count`` bytes (the agent's default is 4 KiB, its maximum 48 MiB)."""
        arguments: dict[str, Any] = {"handle": _int(handle, "handle")}
        if count is not None:
            if _int(count, "count") <= 0:
                raise UsageError(f"count must be positive, not {count}")
            arguments["count"] = count
        return FileRead.from_json(await self.call("guest-file-read", arguments))

    async def file_write(self, handle: int, data: bytes) -> FileWrite:
        """Write ``data``; the reply's ``count`` says how much the agent wrote."""
        arguments = {"handle": _int(handle, "handle"), "buf-b64": _b64(data, "data")}
        return FileWrite.from_json(await self.call("guest-file-write", arguments))

    async def file_seek(
        self, handle: int, offset: int, whence: SeekWhence | str = SeekWhence.SET
    ) -> FileSeek:
        try:
            whence = SeekWhence(whence)
        except ValueError:
            raise UsageError(f"whence must be one of set, cur, end, not {whence!r}") from None
        arguments = {
            "handle": _int(handle, "handle"),
            "offset": _int(offset, "offset"),
            "whence": whence.value,
        }
        return FileSeek.from_json(await self.call("guest-file-seek", arguments))

    async def file_flush(self, handle: int) -> None:
        await self.call("guest-file-flush", {"handle": _int(handle, "handle")})

    async def file_close(self, handle: int) -> None:
        await self.call("guest-file-close", {"handle": _int(handle, "handle")})

    # --------------------------------------------------------------------- exec

    async def exec(
        self,
        path: str,
        args: Iterable[str] = (),
        *,
        env: Mapping[str, str] | Iterable[str] | None = None,
        input_data: bytes | None = None,
        capture_output: bool = False,
    ) -> int:
        """Start ``path`` in the guest; returns its pid for :meth:`exec_status`.

        ``env`` is a mapping or ``"NAME=value"`` strings (it replaces the
        environment); ``input_data`` is fed to stdin.
        """
        arguments: dict[str, Any] = {"path": _str(path, "path")}
        arg = _strings(args, "args")
        if arg:
            arguments["arg"] = arg
        if env is not None:
            if isinstance(env, Mapping):
                env = [f"{_str(k, 'env name')}={_str(v, 'env value')}" for k, v in env.items()]
            arguments["env"] = _strings(env, "env")
        if input_data is not None:
            arguments["input-data"] = _b64(input_data, "input_data")
        if capture_output:
            arguments["capture-output"] = True
        value = t.expect_dict(await self.call("guest-exec", arguments), "guest-exec")
        return t.member(value, "pid", int, "guest-exec")

    async def exec_status(self, pid: int) -> t.ExecStatus:
        """Status of a guest-exec process (reaped by the agent once reported exited)."""
        value = await self.call("guest-exec-status", {"pid": _int(pid, "pid")})
        return t.ExecStatus.from_json(value)

    # -------------------------------------------------------------- user access

    async def set_user_password(
        self, username: str, password: str | bytes, *, crypted: bool = False
    ) -> None:
        """Set a password; ``crypted=True`` means ``password`` is already a crypt() hash."""
        if isinstance(password, str):
            password = password.encode()
        arguments = {
            "username": _str(username, "username"),
            "password": _b64(password, "password"),
            "crypted": bool(crypted),
        }
        await self.call("guest-set-user-password", arguments)

    async def ssh_get_authorized_keys(self, username: str) -> list[str]:
        value = await self.call(
            "guest-ssh-get-authorized-keys", {"username": _str(username, "username")}
        )
        return t.parse_authorized_keys(value)

    async def ssh_add_authorized_keys(
        self, username: str, keys: Iterable[str], *, reset: bool = False
    ) -> None:
        """Add ``keys`` to the user's authorized_keys (``reset=True`` replaces the file)."""
        arguments: dict[str, Any] = {
            "username": _str(username, "username"),
            "keys": _strings(keys, "keys"),
        }
        if reset:
            arguments["reset"] = True
        await self.call("guest-ssh-add-authorized-keys", arguments)

    async def ssh_remove_authorized_keys(self, username: str, keys: Iterable[str]) -> None:
        arguments = {"username": _str(username, "username"), "keys": _strings(keys, "keys")}
        await self.call("guest-ssh-remove-authorized-keys", arguments)

    # ------------------------------------------------------------ power (no reply)

    async def shutdown(self, mode: t.ShutdownMode | str = t.ShutdownMode.POWERDOWN) -> None:
        """Ask the guest to power down, halt or reboot (success is silence)."""
        try:
            mode = t.ShutdownMode(mode)
        except ValueError:
            raise UsageError(f"mode must be powerdown, halt or reboot, not {mode!r}") from None
        await self.call("guest-shutdown", {"mode": mode.value})

    async def suspend_disk(self) -> None:
        await self.call("guest-suspend-disk")

    async def suspend_ram(self) -> None:
        await self.call("guest-suspend-ram")

    async def suspend_hybrid(self) -> None:
        await self.call("guest-suspend-hybrid")


def _freeze_would_explain(info: t.AgentInfo) -> bool:
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


# ---------------------------------------------------------- argument checking


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _strings(values: Iterable[str], name: str) -> list[str]:
    if isinstance(values, str | bytes):
        raise UsageError(f"{name} must be a list of strings, not a single string")
    return [_str(v, f"each of {name}") for v in values]


def _b64(data: Any, name: str) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError(f"{name} must be bytes, not {type(data).__name__}")
    return base64.b64encode(data).decode("ascii")


def _of(cls: type, value: Any, name: str) -> Any:
    if not isinstance(value, cls):
        raise UsageError(f"each of {name} must be a {cls.__name__}, not {type(value).__name__}")
    return value
