"""gagent: guest-agent channel toolkit for KVM/libvirt hosts.

The core (this package) speaks the QEMU guest agent protocol; it imports
neither libvirt nor lxml.  ``gagent.host`` adds libvirt, ``gagent.guest`` is the
guest-side helper.

The trio client is imported lazily: ``gagent.guest`` lives inside this package
and runs on guests that have no trio, and ``gagent.protocol``/``gagent.errors``
are sans-IO.
"""

import logging
from typing import TYPE_CHECKING, Any

from .errors import (
    AgentError,
    AgentUnavailable,
    CommandDisabled,
    CommandNotFound,
    CommandUnavailable,
    ConnectionLost,
    FrozenStateViolation,
    GagentError,
    GuestFrozen,
    ProtocolError,
    ReplyTooLarge,
)

# A library's logs are its user's to show: without this, Python's last-resort handler
# prints gagent's warnings on stderr next to the one-line error that says the same.
logging.getLogger("gagent").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .client import Agent, connect_unix, open_agent, open_agent_over

__version__ = "0.1.0"

_CLIENT_NAMES = frozenset({"Agent", "connect_unix", "open_agent", "open_agent_over"})

__all__ = [
    "Agent",
    "AgentError",
    "AgentUnavailable",
    "CommandDisabled",
    "CommandNotFound",
    "CommandUnavailable",
    "ConnectionLost",
    "FrozenStateViolation",
    "GagentError",
    "GuestFrozen",
    "ProtocolError",
    "ReplyTooLarge",
    "connect_unix",
    "open_agent",
    "open_agent_over",
]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'gagent' has no attribute {name!r}")
