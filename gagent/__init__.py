"""gagent: guest-agent channel toolkit for KVM/libvirt hosts.

The core (this package) speaks the QEMU guest agent protocol; it imports
neither libvirt nor lxml.  ``gagent.host`` adds libvirt, ``gagent.guest`` is the
guest-side helper.
"""

from .client import Agent, connect_unix, open_agent, open_agent_over
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

__version__ = "0.1.0"

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
