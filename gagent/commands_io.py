"""The typed commands that move data: guest files, exec, user access and power.

A part of :class:`gagent.commands.AgentCommands` (which inherits it), kept
apart to keep modules small; every method goes through ``call`` or
``call_typed`` there, under the same guards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .arguments import b64_argument as _b64
from .arguments import int_argument as _int
from .arguments import str_argument as _str
from .arguments import strings_argument as _strings
from .errors import UsageError

if TYPE_CHECKING:
    from .fs_types import FileRead, FileSeek, FileWrite, SeekWhence
    from .types import ExecStatus, ShutdownMode

__all__ = ["GuestIOCommands"]


class GuestIOCommands:
    """Files, exec, user access and power (mixed into AgentCommands)."""

    async def call(
        self, command: str, arguments: dict[str, Any] | None = None, *, check: bool = True
    ) -> Any:
        raise NotImplementedError

    async def call_typed(
        self, command: str, arguments: dict[str, Any] | None = None, *, check: bool = True
    ) -> Any:
        raise NotImplementedError

    # -------------------------------------------------------------------- files

    async def file_open(self, path: str, mode: str = "r") -> int:
        """Open ``path`` in the guest (``mode`` as for fopen); returns a handle."""
        arguments = {"path": _str(path, "path"), "mode": _str(mode, "mode")}
        return await self.call_typed("guest-file-open", arguments)

    async def file_read(self, handle: int, count: int | None = None) -> FileRead:
        """Read up to ``count`` bytes (the agent's default is 4 KiB, its maximum 48 MiB)."""
        arguments: dict[str, Any] = {"handle": _int(handle, "handle")}
        if count is not None:
            if _int(count, "count") <= 0:
                raise UsageError(f"count must be positive, not {count}")
            arguments["count"] = count
        return await self.call_typed("guest-file-read", arguments)

    async def file_write(self, handle: int, data: bytes | bytearray | memoryview) -> FileWrite:
        """Write ``data``; the reply's ``count`` says how much the agent wrote."""
        arguments = {"handle": _int(handle, "handle"), "buf-b64": _b64(data, "data")}
        return await self.call_typed("guest-file-write", arguments)

    async def file_seek(
        self, handle: int, offset: int, whence: SeekWhence | str = "set"
    ) -> FileSeek:
        """guest-file-seek: move ``handle``'s position (``whence``: set, cur or end)."""
        from .fs_types import SeekWhence

        try:
            whence = SeekWhence(whence)
        except ValueError:
            raise UsageError(f"whence must be one of set, cur, end, not {whence!r}") from None
        arguments = {
            "handle": _int(handle, "handle"),
            "offset": _int(offset, "offset"),
            "whence": whence.value,
        }
        return await self.call_typed("guest-file-seek", arguments)

    async def file_flush(self, handle: int) -> None:
        """guest-file-flush: flush what was written to ``handle``."""
        await self.call("guest-file-flush", {"handle": _int(handle, "handle")})

    async def file_close(self, handle: int) -> None:
        """guest-file-close: close ``handle`` in the guest."""
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
        return await self.call_typed("guest-exec", arguments)

    async def exec_status(self, pid: int) -> ExecStatus:
        """Status of a guest-exec process (reaped by the agent once reported exited)."""
        return await self.call_typed("guest-exec-status", {"pid": _int(pid, "pid")})

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
        """guest-ssh-get-authorized-keys: the user's authorized public keys."""
        arguments = {"username": _str(username, "username")}
        return await self.call_typed("guest-ssh-get-authorized-keys", arguments)

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
        """guest-ssh-remove-authorized-keys: remove ``keys`` from the user's authorized_keys."""
        arguments = {"username": _str(username, "username"), "keys": _strings(keys, "keys")}
        await self.call("guest-ssh-remove-authorized-keys", arguments)

    # ------------------------------------------------------------ power (no reply)

    async def shutdown(self, mode: ShutdownMode | str = "powerdown") -> None:
        """Ask the guest to power down, halt or reboot (success is silence)."""
        from .types import ShutdownMode

        try:
            mode = ShutdownMode(mode)
        except ValueError:
            raise UsageError(f"mode must be powerdown, halt or reboot, not {mode!r}") from None
        await self.call("guest-shutdown", {"mode": mode.value})

    async def suspend_disk(self) -> None:
        """guest-suspend-disk: hibernate the guest (success is silence)."""
        await self.call("guest-suspend-disk")

    async def suspend_ram(self) -> None:
        """guest-suspend-ram: suspend the guest to RAM (success is silence)."""
        await self.call("guest-suspend-ram")

    async def suspend_hybrid(self) -> None:
        """guest-suspend-hybrid: save to disk, then suspend to RAM (success is silence)."""
        await self.call("guest-suspend-hybrid")
