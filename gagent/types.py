"""Frozen dataclasses for what qemu-ga returns, each with ``from_json``.

Split by topic to keep modules small:

* here: the agent itself and the system (OS, host name, users, time zone,
  exec, shutdown), plus the parsing helpers the other two share;
* :mod:`gagent.hw_types`: network interfaces, vCPUs, memory blocks, CPU
  statistics, devices;
* :mod:`gagent.fs_types`: filesystems, disks, freeze, trim and file I/O.

Parsing is tolerant of what agents omit (optional members become None, empty
tuples or b"") and strict about shape: a member of the wrong JSON type, a
missing required member, bad base64 or an unknown enum value where the schema
fixes the set raises :class:`~gagent.errors.ProtocolError` naming the command.
Member names follow qga/qapi-schema.json with ``-`` spelled ``_``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ProtocolError

__all__ = [
    "AgentInfo",
    "CommandInfo",
    "ExecStatus",
    "GuestUser",
    "OSInfo",
    "ShutdownMode",
    "Timezone",
    "decode_base64",
    "enum_member",
    "expect_dict",
    "expect_int",
    "expect_list",
    "field_names",
    "int_members",
    "list_of",
    "member",
    "parse_authorized_keys",
    "parse_host_name",
    "shape_error",
]

# --------------------------------------------------------------------- helpers


def shape_error(what: str, message: str) -> ProtocolError:
    """A ProtocolError for a reply of the wrong shape; ``what`` starts with the command."""
    return ProtocolError(f"{what}: {message}", command=what.split(" ", 1)[0])


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise shape_error(what, f"expected a JSON object, got {_json_type(value)}")
    return value


def expect_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise shape_error(what, f"expected a JSON array, got {_json_type(value)}")
    return value


def expect_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise shape_error(what, f"expected an integer, got {_json_type(value)}")
    return value


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:  # QAPI 'number': int or float, never bool
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def member(obj: dict[str, Any], key: str, kind: type, what: str, *, optional: bool = False) -> Any:
    """``obj[key]`` checked against ``kind`` (str, int, bool, float, dict or list).

    An absent (or null) optional member is None; an absent required one, or a
    value of another JSON type, raises ProtocolError.
    """
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise shape_error(what, f"member '{key}' is missing")
    if not _is_kind(value, kind):
        raise shape_error(
            what, f"member '{key}' should be {kind.__name__}, got {_json_type(value)}"
        )
    return value


def decode_base64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise shape_error(what, f"invalid base64 ({exc})") from None


E = TypeVar("E", bound=enum.Enum)


def enum_member(enum_type: type[E], value: Any, what: str) -> E:
    """Strict: a value outside the schema's enum is a protocol error."""
    try:
        return enum_type(value)
    except (ValueError, TypeError):
        allowed = ", ".join(repr(m.value) for m in enum_type)
        raise shape_error(what, f"{value!r} is not one of {allowed}") from None


def int_members(
    obj: dict[str, Any], names: Iterable[str], what: str, *, optional: bool
) -> dict[str, int | None]:
    """Integer members named like dataclass fields (``rx_bytes`` reads ``rx-bytes``)."""
    return {
        name: member(obj, name.replace("_", "-"), int, what, optional=optional) for name in names
    }


def field_names(cls: Any, *, skip: tuple[str, ...] = ()) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def list_of(cls: Any, value: Any, what: str) -> list[Any]:
    return [cls.from_json(item) for item in expect_list(value, what)]


# ----------------------------------------------------------------- the agent


@dataclass(frozen=True, slots=True)
class CommandInfo:
    name: str
    enabled: bool
    success_response: bool


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """``guest-info``: the agent's version and the commands it offers."""

    version: str
    commands: dict[str, CommandInfo] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> AgentInfo:
        what = "guest-info"
        value = expect_dict(value, what)
        commands = {}
        for entry in expect_list(value.get("supported_commands", []), what):
            # Fast path for the well-formed entry (guest-info is on every connect
            # that checks availability); anything else takes the checked path.
            if type(entry) is dict:
                name = entry.get("name")
                enabled = entry.get("enabled", False)
                success = entry.get("success-response", True)
                if type(name) is str and type(enabled) is bool and type(success) is bool:
                    commands[name] = CommandInfo(name, enabled, success)
                    continue
            entry = expect_dict(entry, f"{what} supported_commands")
            name = member(entry, "name", str, what)
            enabled = member(entry, "enabled", bool, what, optional=True)
            success = member(entry, "success-response", bool, what, optional=True)
            commands[name] = CommandInfo(
                name=name,
                enabled=bool(enabled),
                success_response=True if success is None else success,
            )
        return cls(version=member(value, "version", str, what), commands=commands)

    @property
    def enabled_commands(self) -> list[str]:
        return sorted(name for name, c in self.commands.items() if c.enabled)


# ------------------------------------------------------------------- system


@dataclass(frozen=True, slots=True)
class OSInfo:
    """``guest-get-osinfo``: uname(2) and os-release(5); every member may be absent."""

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

    @classmethod
    def from_json(cls, value: Any) -> OSInfo:
        what = "guest-get-osinfo"
        value = expect_dict(value, what)
        return cls(
            **{
                f.name: member(value, f.name.replace("_", "-"), str, what, optional=True)
                for f in dataclasses.fields(cls)
            }
        )


def parse_host_name(value: Any) -> str:
    """``guest-get-host-name`` returns ``{"host-name": str}``."""
    what = "guest-get-host-name"
    return member(expect_dict(value, what), "host-name", str, what)


def parse_authorized_keys(value: Any) -> list[str]:
    """``guest-ssh-get-authorized-keys`` returns ``{"keys": [str, ...]}``."""
    what = "guest-ssh-get-authorized-keys"
    keys = member(expect_dict(value, what), "keys", list, what)
    if not all(isinstance(key, str) for key in keys):
        raise shape_error(what, "keys must be strings")
    return keys


@dataclass(frozen=True, slots=True)
class GuestUser:
    """One ``guest-get-users`` entry; ``login_time`` is seconds since the epoch."""

    user: str
    login_time: float
    domain: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> GuestUser:
        what = "guest-get-users"
        value = expect_dict(value, what)
        return cls(
            user=member(value, "user", str, what),
            login_time=float(member(value, "login-time", float, what)),
            domain=member(value, "domain", str, what, optional=True),
        )


@dataclass(frozen=True, slots=True)
class Timezone:
    """``guest-get-timezone``: ``offset`` is seconds east of UTC."""

    offset: int
    zone: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> Timezone:
        what = "guest-get-timezone"
        value = expect_dict(value, what)
        return cls(
            offset=member(value, "offset", int, what),
            zone=member(value, "zone", str, what, optional=True),
        )


@dataclass(frozen=True, slots=True)
class ExecStatus:
    """``guest-exec-status``: ``stdout``/``stderr`` are decoded (b"" when absent:
    the agent omits them when nothing was captured)."""

    exited: bool
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @classmethod
    def from_json(cls, value: Any) -> ExecStatus:
        what = "guest-exec-status"
        value = expect_dict(value, what)
        out = member(value, "out-data", str, what, optional=True)
        err = member(value, "err-data", str, what, optional=True)
        return cls(
            exited=member(value, "exited", bool, what),
            exit_code=member(value, "exitcode", int, what, optional=True),
            signal=member(value, "signal", int, what, optional=True),
            stdout=b"" if out is None else decode_base64(out, f"{what} out-data"),
            stderr=b"" if err is None else decode_base64(err, f"{what} err-data"),
            stdout_truncated=bool(member(value, "out-truncated", bool, what, optional=True)),
            stderr_truncated=bool(member(value, "err-truncated", bool, what, optional=True)),
        )


class ShutdownMode(enum.StrEnum):
    """``guest-shutdown`` modes (the agent's default is powerdown)."""

    POWERDOWN = "powerdown"
    HALT = "halt"
    REBOOT = "reboot"
