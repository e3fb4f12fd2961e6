"""Every error gagent raises, in one tree.

::

    GagentError
     +-- AgentUnavailable        the socket/channel cannot be reached at all
     +-- ConnectionLost          the peer closed or reset the connection mid-conversation
     +-- ProtocolError           bytes that are not QGA: garbage, bad JSON, wrong shape
     |    +-- ReplyTooLarge      a reply grew past the configured bound
     +-- AgentError             the agent answered {"error": {...}}
     |    +-- CommandNotFound    the agent does not know the command
     |    +-- CommandDisabled    the command exists but is disabled (qemu-ga -b, config)
     |    |    +-- GuestFrozen   disabled because the guest's filesystems are frozen
     +-- CommandUnavailable      refused locally before sending (guest-info says absent/disabled)
     +-- FrozenStateViolation    refused locally: command not allowed while we hold a freeze
     +-- HostError               libvirt-side failures (host package), keeping libvirt's code
     |    +-- DomainNotFound     no domain by that name, UUID or ID
     |    +-- LibvirtAgentError  qemuAgentCommand failed (libvirt's message and code)
     |    +-- Unsupported        the driver or libvirt version cannot do it
     +-- FreezeError             a freeze not made or not undone; keeps its FreezeRecord
     |    +-- FreezeTimeout      no freeze reply in time (thawed afterwards)
     |    +-- NothingFrozen      the freeze froze 0 filesystems (thawed afterwards)
     |    +-- AlreadyFrozen      our agent was frozen before we started
     |    +-- ThawUnconfirmed    THE GUEST MAY STILL BE FROZEN: names the command to run
     +-- SnapshotTimeout         libvirt's snapshot call outlived the freeze budget
     +-- StoreError              the inventory database failed or refused
     +-- ChannelEditConflict     another edit of the domain's channels held its lock or undid ours
     +-- UsageError              bad input from the caller (arguments, JSON, paths)
          +-- SocketPathRefused  a channel's socket path is a file or another domain's socket

This module defines the classes down to HostError and UsageError.  The others
live where they are raised (the core imports no libvirt code): HostError's
subclasses in gagent.host.virt, FreezeError's family in gagent.freeze,
SnapshotTimeout in gagent.host.snapshot, StoreError in gagent.host.inventory.

Errors keep their evidence: the command sent, its arguments (large payloads
abbreviated), the agent's error class and description, and the raw reply.

Cancellation (``trio.Cancelled``) and timeouts from the caller's own
``trio.fail_after`` (``trio.TooSlowError``) are never wrapped: they propagate as
they are, and the client marks itself out of sync so the next command
resynchronises first.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentError",
    "AgentUnavailable",
    "CommandDisabled",
    "CommandNotFound",
    "CommandUnavailable",
    "ConnectionLost",
    "FrozenStateViolation",
    "GagentError",
    "GuestFrozen",
    "HostError",
    "ProtocolError",
    "ReplyTooLarge",
    "UsageError",
    "error_from_reply",
]


class GagentError(Exception):
    """Base of every error gagent raises on purpose."""


class UsageError(GagentError):
    """The caller asked for something malformed (bad JSON arguments, bad path...)."""


class AgentUnavailable(GagentError):
    """The agent's socket or channel cannot be reached.

    ``path`` is what we tried to reach; ``hint`` says what to do about it.
    """

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.path = path
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class ConnectionLost(GagentError):
    """The peer closed or reset the connection; ``command`` is what was in flight."""

    def __init__(self, message: str, *, command: str | None = None):
        self.command = command
        super().__init__(message)


class ProtocolError(GagentError):
    """The peer sent something that is not a well-formed QGA reply.

    ``data`` holds (a prefix of) the offending bytes.
    """

    def __init__(self, message: str, *, data: bytes = b"", command: str | None = None):
        self.data = data[:512]
        self.command = command
        super().__init__(message)


class ReplyTooLarge(ProtocolError):
    """A reply exceeded ``limit`` bytes before its end of line arrived."""

    def __init__(self, limit: int, *, command: str | None = None, advice: str | None = None):
        self.limit = limit
        advice = advice or (
            "raise max_reply_size or ask for less (e.g. a smaller guest-file-read count)"
        )
        super().__init__(
            f"reply to {command or 'command'} exceeded {limit} bytes without ending; {advice}",
            command=command,
        )


class AgentError(GagentError):
    """The agent answered with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(
        self,
        command: str,
        error_class: str,
        desc: str,
        *,
        arguments: dict[str, Any] | None = None,
        reply: Any = None,
    ):
        self.command = command
        self.error_class = error_class
        self.desc = desc
        self.arguments = _abbreviate(arguments)
        self.reply = reply
        super().__init__(f"{command}: {error_class}: {desc}")


class CommandNotFound(AgentError):
    """The agent does not implement the command (older or different agent)."""


class CommandDisabled(AgentError):
    """The command exists but the agent has it disabled (``qemu-ga -b`` or its config)."""


class GuestFrozen(CommandDisabled):
    """The agent refused because the guest's filesystems are frozen; thaw first."""


class CommandUnavailable(GagentError):
    """Refused before sending: guest-info says the command is absent or disabled."""

    def __init__(self, command: str, reason: str, *, agent_version: str | None = None):
        self.command = command
        self.reason = reason
        self.agent_version = agent_version
        super().__init__(f"{command}: {reason}")


class FrozenStateViolation(GagentError):
    """Refused before sending: the command is not allowed while filesystems are frozen."""

    def __init__(self, command: str):
        self.command = command
        super().__init__(
            f"{command} is not allowed while the guest's filesystems are frozen: "
            "only ping, info, sync, fsfreeze-status and fsfreeze-thaw work until thawed"
        )


class HostError(GagentError):
    """A libvirt-side failure; ``code`` and ``libvirt_message`` keep libvirt's own words."""

    def __init__(
        self, message: str, *, code: int | None = None, libvirt_message: str | None = None
    ):
        self.code = code
        self.libvirt_message = libvirt_message
        super().__init__(message)


_FROZEN_MARKER = "frozen state"
_DISABLED_MARKER = "has been disabled"


def error_from_reply(
    command: str, error: Any, *, arguments: dict[str, Any] | None = None
) -> AgentError:
    """Map the ``error`` member of a QGA reply to the most specific AgentError.

    qemu-ga reports disabled commands with class CommandNotFound and a desc of
    "Command X has been disabled", adding ": the agent is in frozen state" when
    the freeze disabled it; newer agents may use the class CommandDisabled.
    """
    if not isinstance(error, dict):
        return AgentError(command, "InvalidError", repr(error), arguments=arguments, reply=error)
    error_class = str(error.get("class", "GenericError"))
    desc = str(error.get("desc", ""))
    kind: type[AgentError] = AgentError
    if _FROZEN_MARKER in desc:
        kind = GuestFrozen
    elif error_class == "CommandDisabled" or _DISABLED_MARKER in desc:
        kind = CommandDisabled
    elif error_class == "CommandNotFound":
        kind = CommandNotFound
    return kind(command, error_class, desc, arguments=arguments, reply=error)


def _abbreviate(arguments: dict[str, Any] | None, limit: int = 200) -> dict[str, Any] | None:
    """Keep evidence small: long strings (base64 payloads) are cut."""
    if arguments is None:
        return None
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if isinstance(value, str) and len(value) > limit:
            value = f"{value[:limit]}... ({len(value)} chars)"
        out[key] = value
    return out
