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
     |    +-- GuestReplaceError  a copy's rename/chmod/mktemp step failed in the guest's shell
     +-- CommandUnavailable      refused locally before sending (guest-info says absent/disabled)
     |    +-- GuestIsFrozen      disabled because the guest is frozen (fsfreeze-status says so)
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
     +-- GroupAborted            a group member gave up its snapshot because another failed
     +-- GroupSnapshotFailed     a group snapshot failed member by member (keeps the record)
     +-- StoreError              the inventory database failed or refused
     |    +-- NoInventory        a reading command found no inventory there (nothing created)
     +-- ChannelEditConflict     another edit of the domain's channels held its lock or undid ours
     +-- LocalFileError          a copy could not read or write a file on this side (EACCES...)
     +-- CommandTimeout          a command's overall deadline (--timeout) passed (the CLI)
     +-- AgentTimeout            gagent.sync: no answer within a call's timeout
     +-- UsageError              bad input from the caller (arguments, JSON, paths)
          +-- SocketPathRefused  a channel's socket path is a file or another domain's socket
          +-- DomainXmlError     not a well-formed libvirt domain XML (gagent.host.domxml)
          +-- ManagedDomain      a manager (oVirt, nova, KubeVirt) owns the domain's definition

This module defines the classes down to HostError, UsageError and
LocalFileError.  The others live where they are raised (the core imports no
libvirt code): GuestReplaceError in gagent.guest_replace, HostError's
subclasses in gagent.host.virt, FreezeError's family in gagent.freeze,
SnapshotTimeout in gagent.host.snapshot, StoreError in gagent.host.inventory,
AgentTimeout in gagent.sync_agent, the group snapshot's in gagent.host.group_phases,
ManagedDomain in gagent.host.managed.

Errors keep their evidence: the command sent, its arguments (large payloads
abbreviated), the agent's error class and description, and the raw reply.
Advice names the guest as the operator would name it again
(:class:`AgentTarget`): the domain and its URI, or the agent's socket.

Cancellation (``trio.Cancelled``) and timeouts from the caller's own
``trio.fail_after`` (``trio.TooSlowError``) are never wrapped: they propagate as
they are, and the client marks itself out of sync so the next command
resynchronises first.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AgentError",
    "AgentTarget",
    "AgentUnavailable",
    "CommandDisabled",
    "CommandNotFound",
    "CommandUnavailable",
    "ConnectionLost",
    "FrozenStateViolation",
    "GagentError",
    "GuestFrozen",
    "GuestIsFrozen",
    "HostError",
    "LocalFileError",
    "ProtocolError",
    "ReplyTooLarge",
    "UsageError",
    "error_from_reply",
]


class GagentError(Exception):
    """Base of every error gagent raises on purpose."""


class UsageError(GagentError):
    """The caller asked for something malformed (bad JSON arguments, bad path...)."""


class LocalFileError(GagentError):
    """A file on this side could not be read or written (a copy's source or target).

    ``path`` is the file, ``errno`` the OS error number (None if not an OS error).
    """

    def __init__(self, message: str, *, path: str, errno: int | None = None):
        self.path = path
        self.errno = errno
        super().__init__(message)

    @classmethod
    def from_os_error(cls, doing: str, path: str, exc: OSError) -> LocalFileError:
        """``cannot {doing} {path}: {strerror}`` (e.g. "cannot write x: No space left...")."""
        return cls(f"cannot {doing} {path}: {exc.strerror or exc}", path=path, errno=exc.errno)


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


@dataclass(frozen=True)
class AgentTarget:
    """The guest behind an agent conversation, named as an operator names it again.

    Recovery advice is built from it.  Whoever opens the agent fills in what it
    knows: a domain session its domain and URI (and ``thaw``, the exact command
    when it renders its own; ``reach``, what gives gagent a way to the agent: the
    exact channel add, or a managed domain's own way), a socket client its path.
    """

    domain: str | None = None
    uri: str | None = None
    socket: str | None = None
    thaw: str | None = None
    reach: str | None = None

    @classmethod
    def for_socket(cls, path: str | os.PathLike[str]) -> AgentTarget:
        """A socket client's target: the absolute path, so the advice works from anywhere."""
        return cls(socket=os.path.abspath(path))

    def describe(self) -> str:
        if self.domain:
            return f"guest {self.domain}"
        if self.socket:
            return f"the guest behind {self.socket}"
        return "the guest"

    def thaw_command(self) -> str:
        """The command that thaws this guest (``gagent thaw`` reaches every agent of a domain)."""
        if self.thaw:
            return self.thaw
        if self.domain:
            connect = ["-c", self.uri] if self.uri else []
            return shlex.join(["gagent", "thaw", self.domain, *connect])
        if self.socket:
            return shlex.join(["gagent", "agent", "--socket", self.socket, "fsfreeze", "thaw"])
        return "gagent thaw DOMAIN"


class GuestIsFrozen(CommandUnavailable):
    """The guest's filesystems are frozen: every command but ping, info, sync,
    fsfreeze-status and fsfreeze-thaw fails until a thaw.

    GuestFrozen is the agent's refusal of one command; this is the command
    layer's finding about the guest, with its evidence: ``command`` (what could
    not run, or the ping that ran: ``answered``), ``status`` (what
    guest-fsfreeze-status said), ``refusal`` (the agent's GuestFrozen, when
    that is how the freeze showed) and ``frozen_since`` (time.time() of the
    freeze, when known).  ``target`` names the guest in the advice; the layer
    that knows the domain may set it before the error is reported.
    """

    def __init__(
        self,
        command: str,
        *,
        status: str = "frozen",
        target: AgentTarget | None = None,
        frozen_since: float | None = None,
        refusal: GuestFrozen | None = None,
        answered: bool = False,
        agent_version: str | None = None,
    ):
        self.status = status
        self.target = target
        self.frozen_since = frozen_since
        self.refusal = refusal
        self.answered = answered
        super().__init__(command, "the guest is frozen", agent_version=agent_version)

    @property
    def thaw_command(self) -> str:
        return (self.target or AgentTarget()).thaw_command()

    def __str__(self) -> str:
        evidence = []
        if self.frozen_since is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.frozen_since))
            evidence.append(f"its filesystems have been frozen since {since}")
        if self.refusal is not None:
            evidence.append(f"the agent said: {self.refusal.desc}")
        else:
            evidence.append(f"guest-fsfreeze-status: {self.status}")
        if self.answered:
            outcome = f"; its agent answers {self.command} but refuses other commands until thawed"
        elif self.refusal is not None:
            outcome = f", so {self.command} was refused"
        else:
            outcome = f", so {self.command} was not sent"
        who = (self.target or AgentTarget()).describe()
        return f"{who} is frozen ({'; '.join(evidence)}){outcome}: run '{self.thaw_command}'"


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


#: What an error keeps of a secret argument (guest-set-user-password's password).
REDACTED = "(redacted)"


def _abbreviate(arguments: dict[str, Any] | None, limit: int = 200) -> dict[str, Any] | None:
    """Keep evidence small and free of secrets: a ``password`` member is replaced (errors
    are printed, logged and kept by callers), long strings (base64 payloads) are cut."""
    if arguments is None:
        return None
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if "password" in str(key).lower():
            value = REDACTED
        elif isinstance(value, str) and len(value) > limit:
            value = f"{value[:limit]}... ({len(value)} chars)"
        out[key] = value
    return out
