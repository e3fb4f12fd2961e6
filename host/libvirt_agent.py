"""The typed agent API over libvirt's qemuAgentCommand (a libvirt-owned channel).

When a domain has only ``org.qemu.guest_agent.0``, libvirt holds its socket
and nobody else can talk on it; libvirt relays our JSON instead.  The same
typed commands and the same error classes apply: libvirt's message for an
agent's error reply ("unable to execute QEMU agent command 'X': DESC") is
mapped back to the agent error it carries.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gagent.commands import AgentCommands
from gagent.errors import (
    AgentUnavailable,
    ConnectionLost,
    ProtocolError,
    ReplyTooLarge,
    error_from_reply,
)
from gagent.protocol import NO_REPLY_COMMANDS, encode_command

from .virt import ERROR_CODES, Domain, LibvirtAgentError

__all__ = [
    "LIBVIRT_AGENT_READ_LIMIT",
    "LIBVIRT_AGENT_REQUEST_MAX",
    "LIBVIRT_RPC_STRING_MAX",
    "LibvirtAgent",
]

#: libvirtd reads at most this much of one agent reply (QEMU_AGENT_MAX_RESPONSE in
#: its qemu_agent.c).  Past it, libvirt fails the command AND marks the domain's
#: agent as broken ("not available due to an error") until qemu-ga reconnects.
LIBVIRT_AGENT_READ_LIMIT = 10 * 1024 * 1024
#: ... and its RPC carries at most this much of it back to a client
#: (REMOTE_STRING_MAX): a larger reply fails with "Unable to encode message
#: payload" at once (the agent itself stays usable).  This is the route's bound
#: on a reply: measured on the e2e guest (see below), guest-file-read replies of
#: 2.8 MB come back in 0.5 s and one just over 4 MiB fails that way.
LIBVIRT_RPC_STRING_MAX = 4 * 1024 * 1024
#: The route's bound on one request, far below the RPC's: libvirt (9.0) writes a
#: request to the agent's socket with safewrite() on a non-blocking descriptor,
#: and when the socket's send buffer (net.core.wmem_default, 208 KiB) takes only
#: part of it, the count of what went out is lost and the rest is sent again from
#: the old offset: qemu-ga gets broken JSON ("JSON parse error, expecting value"
#: after ~20 s) or nothing it can answer, and libvirt's agent for the domain stays
#: stuck for minutes.  Measured on the e2e guest (TCG) with
#:   .venv/bin/python bench/libvirt_agent_bounds.py DOMAIN -c URI
#: (libvirt_qemu.qemuAgentCommand only, nothing of gagent's): guest-file-write
#: requests up to 218533 bytes passed in 0.03-0.14 s, 240377 and 262221 bytes
#: failed.  64 KiB keeps a margin of more than 3x below that cliff.
LIBVIRT_AGENT_REQUEST_MAX = 64 * 1024
_TOO_LARGE = re.compile(r"No complete agent response found in (\d+) bytes")
_RPC_TOO_LARGE = "Unable to encode message payload"
_BROKEN_BY_ERROR = "not available due to an error"

_AGENT_UNRESPONSIVE = ERROR_CODES.agent_unresponsive
_OPERATION_INVALID = ERROR_CODES.operation_invalid
_UNREACHABLE_CODES = ERROR_CODES.agent_unreachable
_NO_ROUTE_CODES = ERROR_CODES.no_agent_route

# "unable to execute QEMU agent command 'guest-foo': The command ... has not been found"
_AGENT_REFUSAL = re.compile(r"unable to execute QEMU agent command '([^']+)': (.*)$", re.S)

#: libvirt's qemuAgentCommand timeout meaning "libvirt's default".
_DEFAULT = -1


class LibvirtAgent(AgentCommands):
    """Typed agent commands relayed through libvirt for one domain."""

    max_reply_size = LIBVIRT_RPC_STRING_MAX
    max_request_size = LIBVIRT_AGENT_REQUEST_MAX

    def __init__(self, domain: Domain):
        super().__init__()
        self.domain = domain
        self.name = f"domain {domain.name} (through libvirt)"

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        # Pass the caller's deadline on, so libvirt's own call ends with it.
        import trio  # on use: gagent.sync's blocking relay (sync_domain) overrides this

        timeout = _libvirt_timeout(trio.current_effective_deadline() - trio.current_time())
        return await self.relay(command, arguments, timeout)

    async def relay(self, command: str, arguments: dict[str, Any] | None, wait_seconds: int) -> Any:
        """``command`` through ``self.domain.agent_command`` (libvirt waits ``wait_seconds``
        seconds, -1: its default), its reply or libvirt's error mapped to gagent's."""
        request = encode_command(command, arguments).decode()
        try:
            reply = await self.domain.agent_command(request, wait_seconds)
        except LibvirtAgentError as exc:
            if command in NO_REPLY_COMMANDS and exc.code == _AGENT_UNRESPONSIVE:
                return None  # the guest went down: what shutdown/suspend asked for
            reach = getattr(getattr(self, "target", None), "reach", None)
            raise _map_error(command, arguments, exc, self.domain.name, reach) from None
        if command in NO_REPLY_COMMANDS and not reply:
            return None
        try:
            value = json.loads(reply)
        except ValueError:
            raise ProtocolError(
                f"libvirt relayed a non-JSON reply to {command}", data=reply.encode()
            ) from None
        if isinstance(value, dict) and "return" in value:
            return value["return"]
        if isinstance(value, dict) and "error" in value:
            raise error_from_reply(command, value["error"], arguments=arguments)
        raise ProtocolError(
            f"libvirt relayed an unexpected reply to {command}", data=reply.encode()
        )


def _libvirt_timeout(remaining: float) -> int:
    if math.isinf(remaining):
        return _DEFAULT
    return max(1, math.ceil(remaining))


def _map_error(
    command: str,
    arguments: dict[str, Any] | None,
    exc: LibvirtAgentError,
    domain: str,
    reach: str | None = None,
) -> Exception:
    message = exc.libvirt_message or str(exc)
    refusal = _AGENT_REFUSAL.search(message)
    if refusal:
        desc = refusal.group(2).strip()
        error_class = "CommandNotFound" if "not been found" in desc else "GenericError"
        return error_from_reply(command, {"class": error_class, "desc": desc}, arguments=arguments)
    too_large = _TOO_LARGE.search(message)
    if too_large:
        return ReplyTooLarge(
            int(too_large.group(1)),
            command=command,
            advice=(
                f"that is libvirt's own bound, and libvirt now refuses {domain}'s agent until "
                "qemu-ga reconnects (restart it in the guest: systemctl restart "
                "qemu-guest-agent); for large replies use gagent's channel (--transport socket)"
            ),
        )
    if _RPC_TOO_LARGE in message:
        return ReplyTooLarge(
            LIBVIRT_RPC_STRING_MAX,
            command=command,
            advice=(
                "that is what libvirt's RPC carries of one agent reply (the agent itself is "
                "fine); ask for less, or use gagent's channel (--transport socket)"
            ),
        )
    if _BROKEN_BY_ERROR in message:
        return AgentUnavailable(
            f"libvirt refuses the guest agent of {domain} after an earlier error: {message}",
            hint=(
                "libvirt gives the agent up after e.g. a reply over its 10 MiB bound, until "
                "qemu-ga reconnects: restart qemu-guest-agent in the guest, or use gagent's "
                "channel (--transport socket)"
            ),
        )
    if exc.code in _UNREACHABLE_CODES:
        return AgentUnavailable(
            f"the guest agent of {domain} is not answering through libvirt: {message}",
            hint="is qemu-ga running in the guest on org.qemu.guest_agent.0?",
        )
    if exc.code in _NO_ROUTE_CODES:
        return AgentUnavailable(
            f"libvirt cannot reach the guest agent of {domain}: {message}",
            hint=reach or f"add a channel gagent can use: gagent channel add {domain}",
        )
    if exc.code == _OPERATION_INVALID:
        return AgentUnavailable(f"{domain}: {message}", hint="is the domain running?")
    if exc.code == ERROR_CODES.internal_error:
        # "Missing agent reply object" and the like: the conversation broke.
        return ConnectionLost(f"{domain}: {message}", command=command)
    return exc  # a libvirt failure, reported as such (with libvirt's code)
