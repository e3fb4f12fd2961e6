"""What qemu-ga returns, as frozen structs described once (:mod:`gagent.decoding`).

Split by topic to keep modules small:

* here: the agent itself and the system (OS, host name, users, time zone,
  exec, shutdown), plus the small helpers the other two share;
* :mod:`gagent.hw_types`: network interfaces, vCPUs, memory blocks, CPU
  statistics, devices;
* :mod:`gagent.fs_types`: filesystems, disks, freeze, trim and file I/O.

Each type's annotations are its description: decoding is tolerant of what
agents omit (optional members become None, empty tuples or b"") and strict
about shape: a member of the wrong JSON type, a missing required member, bad
base64 or an unknown enum value where the schema fixes the set raises
:class:`~gagent.errors.ProtocolError` naming the command.  Field names follow
qga/qapi-schema.json with ``-`` spelled ``_`` (others name their member).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from .decoding import Described, convert, shape_error

__all__ = [
    "AgentInfo",
    "CommandInfo",
    "ExecPid",
    "ExecStatus",
    "GuestUser",
    "HostName",
    "OSInfo",
    "ShutdownMode",
    "SshAuthorizedKeys",
    "Timezone",
    "expect_int",
    "list_of",
    "parse_authorized_keys",
    "parse_host_name",
    "shape_error",
]


def expect_int(value: Any, what: str) -> int:
    """A reply that is a bare integer (guest-get-time, guest-fsfreeze-thaw...)."""
    if type(value) is int:
        return value
    return convert(value, int, what)


def list_of(cls: Any, value: Any, what: str) -> list[Any]:
    """A reply that is a JSON array of ``cls``."""
    return convert(value, list[cls], what)


# ----------------------------------------------------------------- the agent


class CommandInfo(Described, frozen=True):
    """One command of guest-info (GuestAgentCommandInfo); null reads as absent."""

    command = "guest-info"

    name: str
    enabled: bool | None = False
    success_response: bool | None = True


class AgentInfo(Described, frozen=True):
    """``guest-info``: the agent's version and the commands it offers, by name.

    Decoded from ``supported_commands``; the decoder hands the same value out again
    for the same reply bytes, so treat ``commands`` as read-only."""

    command = "guest-info"

    version: str
    commands: dict[str, CommandInfo] = msgspec.field(default_factory=dict, name="gagent:commands")
    _supported_commands: tuple[CommandInfo, ...] = msgspec.field(
        default=(), name="supported_commands"
    )

    def __post_init__(self) -> None:
        if self.commands:
            if not self._supported_commands:
                msgspec.structs.force_setattr(
                    self, "_supported_commands", tuple(self.commands.values())
                )
            return
        commands = {}
        for entry in self._supported_commands:
            if entry.enabled is None or entry.success_response is None:
                entry = CommandInfo(
                    entry.name, bool(entry.enabled), entry.success_response is not False
                )
            commands[entry.name] = entry
        msgspec.structs.force_setattr(self, "commands", commands)

    @property
    def enabled_commands(self) -> list[str]:
        return sorted(name for name, c in self.commands.items() if c.enabled)


# ------------------------------------------------------------------- system


class OSInfo(Described, frozen=True):
    """``guest-get-osinfo``: uname(2) and os-release(5); every member may be absent."""

    command = "guest-get-osinfo"

    kernel_release: str | None = None
    kernel_version: str | None = None
    machine: str | None = None
    id: str | None = None
    name: str | None = None
    pretty_name: str | None = None
    version: str | None = None
    version_id: str | None = None
    variant: str | None = None
    variant_id: str | None = None


class HostName(Described, frozen=True):
    """``guest-get-host-name`` (the typed command returns the string)."""

    command = "guest-get-host-name"

    host_name: str


class SshAuthorizedKeys(Described, frozen=True):
    """``guest-ssh-get-authorized-keys`` (the typed command returns the list)."""

    command = "guest-ssh-get-authorized-keys"

    keys: list[str]


def parse_host_name(value: Any) -> str:
    """``guest-get-host-name`` returns ``{"host-name": str}``."""
    return HostName.from_json(value).host_name


def parse_authorized_keys(value: Any) -> list[str]:
    """``guest-ssh-get-authorized-keys`` returns ``{"keys": [str, ...]}``."""
    return SshAuthorizedKeys.from_json(value).keys


class GuestUser(Described, frozen=True):
    """One ``guest-get-users`` entry; ``login_time`` is seconds since the epoch."""

    command = "guest-get-users"

    user: str
    login_time: float
    domain: str | None = None


class Timezone(Described, frozen=True):
    """``guest-get-timezone``: ``offset`` is seconds east of UTC."""

    command = "guest-get-timezone"

    offset: int
    zone: str | None = None


class ExecPid(Described, frozen=True):
    """``guest-exec`` (the typed command returns the pid)."""

    command = "guest-exec"

    pid: int


class ExecStatus(Described, frozen=True):
    """``guest-exec-status``: ``stdout``/``stderr`` are decoded (b"" when absent:
    the agent omits them when nothing was captured)."""

    command = "guest-exec-status"

    exited: bool
    exit_code: int | None = msgspec.field(default=None, name="exitcode")
    signal: int | None = None
    stdout: bytes = msgspec.field(default=b"", name="out-data")
    stderr: bytes = msgspec.field(default=b"", name="err-data")
    stdout_truncated: bool = msgspec.field(default=False, name="out-truncated")
    stderr_truncated: bool = msgspec.field(default=False, name="err-truncated")


class ShutdownMode(enum.StrEnum):
    """``guest-shutdown`` modes (the agent's default is powerdown)."""

    POWERDOWN = "powerdown"
    HALT = "halt"
    REBOOT = "reboot"
