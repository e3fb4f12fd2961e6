"""Applying channel changes to a domain: persistent definition, then live hot-plug.

The XML work is :mod:`gagent.host.channel` (pure); this module decides what
to send to libvirt.  libvirt's defineXML replaces a definition atomically, so
a refused change leaves the old definition standing: a domain is never left
half-edited.  A running domain also gets the device hot-plugged (or
unplugged); where QEMU or libvirt refuse, the persistent change stands and
the result says it takes effect at the next boot.

Edits keep their promises under concurrency: each holds the domain's edit lock
(and, with a socket path, that path's: :mod:`gagent.host.channel_lock`) from
the first read to the hot-plug, checks the path first
(:mod:`gagent.host.channel_guard`), and re-reads the definition after
defineXML.  Another tool (virsh edit) may rewrite the definition in between
without taking our lock: a change found missing is made once more, then the
edit fails loudly (ChannelEditConflict) instead of reporting success.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from gagent.errors import HostError, UsageError

from .channel import (
    GAGENT_CHANNEL,
    Channel,
    ChannelSpec,
    XmlChange,
    add_channel,
    find_channel,
    list_channels,
    remove_channel,
    validate,
    xml_diff,
)
from .channel_guard import check_socket_path
from .channel_lock import (
    DEFAULT_LOCK_WAIT,
    ChannelEditConflict,
    domain_lock_path,
    edit_lock,
    path_lock_path,
)
from .managed import check_edit_allowed, uri_is_local
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
    lock_wait: float = DEFAULT_LOCK_WAIT,
    force: bool = False,
) -> ChannelResult:
    """Add the channel to the definition and, if running and ``live``, hot-plug it.

    Refuses (SocketPathRefused) a ``spec.path`` that is not free for this
    channel; see :mod:`gagent.host.channel_guard`.  Refuses (ManagedDomain) to
    edit the definition of a domain a manager owns, unless ``force``: see
    :mod:`gagent.host.managed`.
    """
    local = uri_is_local(domain.hypervisor.uri)
    # the name and the path's form; the file system after the domains (the guard):
    # "another domain's socket" says more than "no such directory here"
    validate(spec, libvirt_managed=libvirt_managed, check_dir=False)
    redo = _command(domain, "add", spec.name, spec.path, libvirt_managed=libvirt_managed)
    warning = await check_edit_allowed(
        domain, redo, doing=f"channel {spec.name}", force=force, local=local, dry_run=dry_run
    )
    async with _editing(domain, spec.path, dry_run=dry_run, wait=lock_wait):
        notes = await check_socket_path(domain, spec, local=local)
        result = await _add(domain, spec, libvirt_managed, live, dry_run)
    result.messages.extend([*notes, *([warning] if warning else [])])
    return result


async def _add(
    domain: Domain, spec: ChannelSpec, libvirt_managed: bool, live: bool, dry_run: bool
) -> ChannelResult:
    persistent = await domain.is_persistent()
    running = (await domain.state()).is_active
    messages: list[str] = []
    diff = ""
    changed = False
    if persistent:

        def has_it(xml: str) -> bool:
            ch = find_channel(xml, spec.name)
            return ch is not None and ch.kind == "unix" and spec.path in (None, ch.path)

        old, change, retried = await _define_verified(
            domain,
            lambda xml: add_channel(xml, spec, libvirt_managed=libvirt_managed),
            has_it,
            dry_run=dry_run,
            doing=f"adding channel {spec.name}",
            redo=_command(domain, "add", spec.name, spec.path, libvirt_managed=libvirt_managed),
        )
        messages.append(_say(change.message, change.changed, dry_run, "added", "would add"))
        messages += [_RETRIED] if retried else []
        diff = xml_diff(old, change.xml)
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
    domain: Domain,
    name: str,
    *,
    live: bool = True,
    dry_run: bool = False,
    lock_wait: float = DEFAULT_LOCK_WAIT,
    force: bool = False,
) -> ChannelResult:
    """Remove the channel from the definition and, if running and ``live``, unplug it.

    Any existing channel name may be removed (other tools may have added names
    gagent would not), but not the empty one.  A domain a manager owns is
    refused as by :func:`add_to_domain`, unless ``force``.
    """
    if not name:
        raise UsageError(
            f"the channel name is empty: give the name of the channel to remove with --name "
            f"(or leave --name out for {GAGENT_CHANNEL}); 'gagent channel list DOMAIN' lists them"
        )
    warning = await check_edit_allowed(
        domain,
        _command(domain, "remove", name),
        doing=f"the removal of channel {name}",
        force=force,
        local=uri_is_local(domain.hypervisor.uri),
        dry_run=dry_run,
    )
    async with _editing(domain, None, dry_run=dry_run, wait=lock_wait):
        result = await _remove(domain, name, live, dry_run)
    result.messages.extend([warning] if warning else [])
    return result


async def _remove(domain: Domain, name: str, live: bool, dry_run: bool) -> ChannelResult:
    persistent = await domain.is_persistent()
    running = (await domain.state()).is_active
    messages: list[str] = []
    diff = ""
    changed = False
    if persistent:
        old, change, retried = await _define_verified(
            domain,
            lambda xml: remove_channel(xml, name),
            lambda xml: find_channel(xml, name) is None,
            dry_run=dry_run,
            doing=f"removing channel {name}",
            redo=_command(domain, "remove", name),
        )
        messages.append(_say(change.message, change.changed, dry_run, "removed", "would remove"))
        messages += [_RETRIED] if retried else []
        diff = xml_diff(old, change.xml)
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


_RETRIED = (
    "(the definition lost the first attempt to a concurrent change by another tool: "
    "made again and verified)"
)


@asynccontextmanager
async def _editing(
    domain: Domain, socket_path: str | None, *, dry_run: bool, wait: float
) -> AsyncIterator[None]:
    """Hold the domain's edit lock, then the socket path's (a dry run changes nothing: none)."""
    async with AsyncExitStack() as stack:
        if not dry_run:
            uri = domain.hypervisor.uri
            what = f"the channels of {domain.name} on {uri}"
            await stack.enter_async_context(
                edit_lock(domain_lock_path(uri, domain.uuid), what=what, wait=wait)
            )
            if socket_path is not None:
                what = f"a channel at socket path {socket_path}"
                await stack.enter_async_context(
                    edit_lock(path_lock_path(socket_path), what=what, wait=wait)
                )
        yield


async def _define_verified(
    domain: Domain,
    edit: Callable[[str], XmlChange],
    done: Callable[[str], bool],
    *,
    dry_run: bool,
    doing: str,
    redo: str,
) -> tuple[str, XmlChange, bool]:
    """Edit the persistent definition and check the change is there afterwards.

    Another tool's defineXML between our read and our write, or just after
    it, can put back a definition without our change: it is made once more
    on a fresh read, and if it is lost again ChannelEditConflict says so.
    Returns the definition we edited, the change, and whether it was retried.
    """
    for attempt in (1, 2):
        old = await domain.xml(inactive=True)
        change = edit(old)
        if not change.changed or dry_run:
            return old, change, attempt > 1
        await domain.hypervisor.define_xml(change.xml)
        if done(await domain.xml(inactive=True)):
            return old, change, attempt > 1
    raise ChannelEditConflict(
        f"{doing} did not stay in the definition of {domain.name}: another tool rewrote the "
        f"definition at the same time, twice (virsh edit?); once it is done, run again: {redo}"
    )


def _command(
    domain: Domain, verb: str, name: str, path: str | None = None, *, libvirt_managed: bool = False
) -> str:
    """The gagent command that makes this edit, for advice."""
    words = ["gagent", "channel", verb, domain.name, "-c", domain.hypervisor.uri, "--name", name]
    words += ["--path", path] if path else []
    words += ["--libvirt-managed"] if libvirt_managed else []
    return shlex.join(words)


def _say(message: str, changed: bool, dry_run: bool, done: str, would: str) -> str:
    if not changed:
        return f"{message} in the definition"
    if dry_run:
        return f"dry run, nothing changed: {message.replace(done, would, 1)}"
    return message
