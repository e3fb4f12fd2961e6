"""The virtio-serial port names of the agent channels, free of lxml and libvirt.

:mod:`gagent.host.channel` re-exports them; the CLI reads them from here so a
one-shot ``gagent agent --socket PATH ...`` loads no XML library.
"""

from __future__ import annotations

__all__ = ["GAGENT_CHANNEL", "LIBVIRT_AGENT_CHANNEL", "channel_flag"]

GAGENT_CHANNEL = "org.gagent.agent.0"
LIBVIRT_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def channel_flag(channel: str, flag: str = "--channel") -> tuple[str, ...]:
    """The words that name gagent's channel ``channel`` in advice: ``(flag, channel)``, or
    none for the built-in name (which every command takes by default)."""
    return () if channel == GAGENT_CHANNEL else (flag, channel)
