"""Frozen dataclasses for what qemu-ga returns, each with ``from_json``.

Parsing is tolerant of what agents omit (optional members become None or
empty) and strict about shape: a reply of the wrong type raises
:class:`~gagent.errors.ProtocolError` naming the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

__all__ = ["AgentInfo", "CommandInfo"]


def expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def expect_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProtocolError(f"{what}: expected a JSON array, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class CommandInfo:
    name: str
    enabled: bool
    success_response: bool


@dataclass(frozen=True, slots=True)
class AgentInfo:
    version: str
    commands: dict[str, CommandInfo] = field(default_factory=dict)

    @classmethod
    def from_json(cls, value: Any) -> AgentInfo:
        value = expect_dict(value, "guest-info")
        commands = {}
        for entry in expect_list(value.get("supported_commands", []), "guest-info"):
            entry = expect_dict(entry, "guest-info supported_commands")
            name = str(entry.get("name"))
            commands[name] = CommandInfo(
                name=name,
                enabled=bool(entry.get("enabled", False)),
                success_response=bool(entry.get("success-response", True)),
            )
        return cls(version=str(value.get("version", "")), commands=commands)

    @property
    def enabled_commands(self) -> list[str]:
        return sorted(name for name, c in self.commands.items() if c.enabled)
