"""Typed wrappers for qemu-ga's commands, shared by every transport.

A transport (the socket client, libvirt's qemuAgentCommand) subclasses
:class:`AgentCommands` and provides ``execute(command, arguments)``; the
wrappers here turn replies into frozen dataclasses from :mod:`gagent.types`.

Two guards run before a command is sent:

* availability: the agent's own ``guest-info`` (fetched once, refreshed after
  a freeze or thaw, which change it) says whether the command exists and is
  enabled; an absent or disabled command raises
  :class:`~gagent.errors.CommandUnavailable` instead of reaching the agent;
* freeze: while this client holds a freeze, only the commands qemu-ga still
  serves are sent; others raise :class:`~gagent.errors.FrozenStateViolation`.
"""

from __future__ import annotations

from typing import Any

from . import types as t
from .errors import CommandUnavailable, FrozenStateViolation

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

#: Commands sent without consulting guest-info (it would cost a round trip for
#: nothing: every agent has them).
_ALWAYS_AVAILABLE = frozenset({"guest-ping", "guest-info", "guest-sync", "guest-sync-delimited"})


class AgentCommands:
    """Typed commands on top of an ``execute`` provided by the transport."""

    def __init__(self) -> None:
        self._info: t.AgentInfo | None = None
        #: True while a freeze made through this client is believed in force.
        self.frozen = False

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
        return await self.execute(command, arguments)

    async def require(self, command: str) -> None:
        """Raise CommandUnavailable unless guest-info lists ``command`` as enabled."""
        info = self._info or await self.info()
        entry = info.commands.get(command)
        if entry is None:
            raise CommandUnavailable(
                command,
                f"the guest agent (version {info.version}) does not implement this command",
                agent_version=info.version,
            )
        if not entry.enabled:
            raise CommandUnavailable(
                command,
                "the guest agent has this command disabled; enable it in the guest "
                "(qemu-ga --block-rpcs/--allow-rpcs or /etc/qemu/qemu-ga.conf)",
                agent_version=info.version,
            )

    def forget_info(self) -> None:
        """Drop the cached guest-info (the set of enabled commands changed)."""
        self._info = None

    # ------------------------------------------------------------------- basics

    async def ping(self) -> None:
        await self.call("guest-ping")

    async def info(self) -> t.AgentInfo:
        self._info = t.AgentInfo.from_json(await self.call("guest-info"))
        return self._info
