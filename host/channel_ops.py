"""Applying channel changes to a domain: persistent definition, then live hot-plug.

The XML work is :mod:`gagent.host.channel` (pure); this module decides what
to send to libvirt.  libvirt's defineXML replaces a definition atomically, so
a refused change leaves the old definition standing: a domain is never left
half-edited.  A running domain also gets the device hot-plugged (or
unplugged); where QEMU or libvirt refuse, the persistent change stands and
the result says it takes effect at the next boot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from gagent.errors import HostError

from .channel import (
    Channel,
    ChannelSpec,
    add_channel,
    find_channel,
    list_channels,
    remove_channel,
    validate,
    xml_diff,
)
from .virt import Domain

__all__ = ["ChannelResult", "add_to_domain", "channels_of", "remove_from_domain", "uri_is_local"]


@dataclass(frozen=True)
class ChannelResult:
    """What a channel operation did (or, with dry_run, would do)."""

    domain: str
    changed: bool
    messages: list[str] = field(default_factory=list)
    diff: str = ""
    live: bool = False  # the running domain has the change now

    def __str__(self) -> str:
        return "\n".join(self.messages)


def uri_is_local(uri: str) -> bool:
    """True when libvirt runs on this machine (so socket directories can be checked here)."""
    return not urlparse(uri).hostname


async def channels_of(domain: Domain) -> list[Channel]:
    """Channels of the running domain (live XML, with states) or of its definition."""
    state = await domain.state()
    return list_channels(await domain.xml(inactive=not state.is_active))


async def add_to_domain(
    domain: Domain,
    spec: ChannelSpec,
    *,
    libvirt_managed: bool = False,
    live: bool = True,
    dry_run: bool = False,
) -> ChannelResult:
    """Add the channel to the definition and, if running and ``live``, hot-plug it."""
    validate(
        spec,
        libvirt_managed=libvirt_managed,
        check_dir=uri_is_local(domain.hypervisor.uri),
    )
    persistent = await domain.is_persistent()
    running = (await domain.state()).is_active
    messages: list[str] = []
    diff = ""
    changed = False
    if persistent:
        old = await domain.xml(inactive=True)
        change = add_channel(old, spec, libvirt_managed=libvirt_managed)
        messages.append(_say(change.message, change.changed, dry_run, "added", "would add"))
        diff = xml_diff(old, change.xml)
        if change.changed and not dry_run:
            await domain.hypervisor.define_xml(change.xml)
        changed = change.changed
    if libvirt_managed and spec.name.startswith("org.qemu.guest_agent"):
        messages.append("libvirt will own this socket: reach it with --transport libvirt")
    if not running or not live:
        if running:
            messages.append("not hot-plugged (--no-live): takes effect at the next boot")
        return ChannelResult(domain.name, changed, messages, diff)
    live_xml = await domain.xml()
    if find_channel(live_xml, spec.name) is not None:
        messages.append(f"the running domain already has channel {spec.name}")
        return ChannelResult(domain.name, changed, messages, diff, live=True)
    device = add_channel(live_xml, spec, libvirt_managed=libvirt_managed).device_xml
    assert device is not None
    if dry_run:
        messages.append(f"would hot-plug into the running domain:\n{device}")
        return ChannelResult(domain.name, True, messages, diff)
    try:
        await domain.attach_device(device, live=True, config=False)
    except HostError as exc:
        messages.append(
            f"hot-plug refused ({exc.libvirt_message or exc}): "
            + ("takes effect at the next boot" if persistent else "nothing was changed")
        )
        if not persistent:
            raise
        return ChannelResult(domain.name, changed, messages, diff)
    messages.append("hot-plugged into the running domain")
    return ChannelResult(domain.name, True, messages, diff, live=True)


async def remove_from_domain(
    domain: Domain, name: str, *, live: bool = True, dry_run: bool = False
) -> ChannelResult:
    """Remove the channel from the definition and, if running and ``live``, unplug it."""
    persistent = await domain.is_persistent()
    running = (await domain.state()).is_active
    messages: list[str] = []
    diff = ""
    changed = False
    if persistent:
        old = await domain.xml(inactive=True)
        change = remove_channel(old, name)
        messages.append(_say(change.message, change.changed, dry_run, "removed", "would remove"))
        diff = xml_diff(old, change.xml)
        if change.changed and not dry_run:
            await domain.hypervisor.define_xml(change.xml)
        changed = change.changed
    if not running or not live:
        return ChannelResult(domain.name, changed, messages, diff)
    live_change = remove_channel(await domain.xml(), name)
    if not live_change.changed:
        if not persistent:
            messages.append(live_change.message)
        return ChannelResult(domain.name, changed, messages, diff)
    assert live_change.device_xml is not None
    if dry_run:
        messages.append(f"would unplug from the running domain:\n{live_change.device_xml}")
        return ChannelResult(domain.name, True, messages, diff)
    try:
        await domain.detach_device(live_change.device_xml, live=True, config=False)
    except HostError as exc:
        if not persistent:
            raise HostError(
                f"unplugging channel {name} from {domain.name} was refused "
                f"({exc.libvirt_message or exc}); the domain is transient, so nothing was changed",
                code=exc.code,
                libvirt_message=exc.libvirt_message,
            ) from None
        messages.append(f"unplug refused ({exc.libvirt_message or exc}): gone at the next boot")
        return ChannelResult(domain.name, changed, messages, diff)
    messages.append("unplugged from the running domain")
    return ChannelResult(domain.name, True, messages, diff, live=True)


def _say(message: str, changed: bool, dry_run: bool, done: str, would: str) -> str:
    if not changed:
        return f"{message} in the definition"
    if dry_run:
        return f"dry run, nothing changed: {message.replace(done, would, 1)}"
    return message
