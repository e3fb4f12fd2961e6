"""The only module in gagent that imports libvirt: how gagent.host.virt calls it.

libvirt-python blocks, so every call runs in a worker thread
(``trio.to_thread.run_sync``); a ``libvirt.libvirtError`` becomes a
:class:`~gagent.errors.HostError` (or a subclass) that keeps libvirt's error
code and message.  Everything that names libvirt lives here: the import, that
error translation, the error codes, connecting, the event loop and event
callbacks (the flags and parameters are plain values, in ``host/virt_flags.py``).
``host/virt.py`` builds its :class:`~gagent.host.virt.Hypervisor` and
:class:`~gagent.host.virt.Domain` on these; the rest of gagent.host talks to
gagent.host.virt, not to this module.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from gagent.errors import HostError

# The flags and parameters are libvirt's plain values; virt.py takes them from here.
from .virt_flags import affect_flags as affect_flags
from .virt_flags import migration_flags as migration_flags
from .virt_flags import migration_params as migration_params
from .virt_flags import snapshot_create_flags as snapshot_create_flags
from .virt_flags import snapshot_delete_flags as snapshot_delete_flags
from .virt_flags import xml_flags as xml_flags

# How a blocking call is waited for (no libvirt in it); sync_domain.py, completion.py
# and virt.py take these from here.
from .virt_threads import in_thread as in_thread
from .virt_threads import within as within
from .virt_types import (
    DomainEvent,
    DomainNotFound,
    LibvirtAgentError,
    Unsupported,
    looks_like_uuid,
)

try:
    import libvirt
    import libvirt_qemu
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "gagent.host needs libvirt-python: pip install 'gagent[host]' "
        "(Debian: apt-get install libvirt-dev pkg-config gcc python3-dev first)"
    ) from exc

if TYPE_CHECKING:
    import trio

T = TypeVar("T")

#: libvirt's handles, for annotations elsewhere (host/virt.py)
VirConnect: TypeAlias = libvirt.virConnect
VirDomain: TypeAlias = libvirt.virDomain


@dataclass(frozen=True)
class _ErrorCodes:
    """libvirt error codes others need, looked up by name (numbers differ between releases)."""

    agent_unresponsive: int
    operation_invalid: int
    no_domain: int
    internal_error: int
    #: no agent to talk to: not connected, not synced, timed out
    agent_unreachable: frozenset[int]
    #: no agent route at all: the driver cannot relay, or no agent channel is configured
    no_agent_route: frozenset[int]


ERROR_CODES = _ErrorCodes(
    agent_unresponsive=libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    operation_invalid=libvirt.VIR_ERR_OPERATION_INVALID,
    no_domain=libvirt.VIR_ERR_NO_DOMAIN,
    internal_error=libvirt.VIR_ERR_INTERNAL_ERROR,
    agent_unreachable=frozenset(
        code
        for code in (
            libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
            getattr(libvirt, "VIR_ERR_AGENT_UNSYNCED", None),
            getattr(libvirt, "VIR_ERR_AGENT_COMMAND_TIMEOUT", None),
        )
        if code is not None
    ),
    no_agent_route=frozenset({libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED}),
)

# libvirt's own library prints every error to stderr unless a handler is set;
# we report errors ourselves, once, through the exception.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# ------------------------------------------------- calls and their errors


def _host_error(
    exc: libvirt.libvirtError, doing: str, kind: type[HostError] = HostError
) -> HostError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if kind is HostError and code == libvirt.VIR_ERR_NO_DOMAIN:
        kind = DomainNotFound  # e.g. a domain that vanished while we looked at it
    return kind(f"{doing}: {message}", code=code, libvirt_message=message)


def _error_kind(exc: libvirt.libvirtError) -> type[HostError]:
    return Unsupported if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT else HostError


async def call(func: Callable[..., T], *args: Any, doing: str, abandon_on_cancel: bool = True) -> T:
    """``func(*args)`` in a worker thread; a libvirtError becomes a HostError.

    libvirt cannot be interrupted, and a hung libvirtd never answers: so a
    cancelled caller (its deadline passed, Ctrl-C, SIGTERM) moves on at once and
    the worker thread finishes the call by itself, whenever libvirt lets it.
    That is what keeps every ``--timeout`` true.  ``abandon_on_cancel=False``
    waits for the call instead (for a caller that must know how it ended).
    """

    def run() -> T:
        try:
            return func(*args)
        except libvirt.libvirtError as exc:
            raise _host_error(exc, doing) from None

    return await in_thread(run, doing=doing, abandon_on_cancel=abandon_on_cancel)


async def query(func: Callable[..., T], *args: Any, doing: str) -> T:
    """Like :func:`call`, but Unsupported for VIR_ERR_NO_SUPPORT, and abandoned on cancellation."""

    def run() -> T:
        try:
            return func(*args)
        except libvirt.libvirtError as exc:
            raise _host_error(exc, doing, _error_kind(exc)) from None

    return await in_thread(run, doing=doing, abandon_on_cancel=True)


_NOT_FOUND = {
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_INTERFACE,
}


async def exists(lookup: Callable[[], Any], *, doing: str) -> bool:
    """Does ``lookup()`` find its object? (False for libvirt's "no such volume/pool/...")"""

    def run() -> bool:
        try:
            lookup()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _NOT_FOUND:
                return False
            raise
        return True

    return await query(run, doing=doing)


async def agent_command(dom: VirDomain, request: str, wait_seconds: int, *, doing: str) -> str:
    """libvirt_qemu.qemuAgentCommand, failing with LibvirtAgentError; abandoned on cancellation."""

    def run() -> str:
        try:
            return libvirt_qemu.qemuAgentCommand(dom, request, wait_seconds, 0)
        except libvirt.libvirtError as exc:
            raise _host_error(exc, doing, LibvirtAgentError) from None

    return await in_thread(run, doing=doing, abandon_on_cancel=True)


# ------------------------------------------------ connections and domains


async def connect(uri: str | None, *, events: bool, cancellable: bool = True) -> VirConnect:
    """libvirt.open(uri) (None: libvirt's default); see gagent.host.virt.open_hypervisor."""
    if events:
        _start_event_loop()

    def run() -> VirConnect:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise _host_error(exc, f"cannot connect to {uri or 'the default hypervisor'}") from None

    where = uri or "the default hypervisor"
    return await in_thread(run, doing=f"connecting to {where}", abandon_on_cancel=cancellable)


async def lookup_domain(conn: VirConnect, ref: str, *, uri: str) -> VirDomain:
    """A domain by name, UUID or numeric ID (tried in the order virsh does: ID, UUID, name)."""
    return await in_thread(
        lambda: find_domain(conn, ref, uri=uri), doing=f"looking up {ref} on {uri}"
    )


def find_domain(conn: VirConnect, ref: str, *, uri: str) -> VirDomain:
    """:func:`lookup_domain`, blocking (DomainNotFound, or a HostError)."""
    if ref.isdigit():
        try:
            return conn.lookupByID(int(ref))
        except libvirt.libvirtError:
            pass
    if looks_like_uuid(ref):
        try:
            return conn.lookupByUUIDString(ref)
        except libvirt.libvirtError:
            pass
    try:
        return conn.lookupByName(ref)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise DomainNotFound(
                f"no domain {ref!r} on {uri} (by name, UUID or ID); see "
                + shlex.join(["virsh", "-c", uri, "list", "--all"]),
                code=exc.get_error_code(),
                libvirt_message=exc.get_error_message(),
            ) from None
        raise _host_error(exc, f"looking up domain {ref!r}") from None


# ------------------------------------------ blocking calls (gagent.sync)


def read_domain_blocking(uri: str | None, ref: str) -> tuple[VirConnect, VirDomain, str, int, str]:
    """(connection, domain, the connection's URI, state code, XML) in one go, blocking.

    The least libvirt work that finds a domain's agent: connect, look up, state,
    XML (live when running).  The caller runs it in a thread of its own to bound it.
    """
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise _host_error(exc, f"cannot connect to {uri or 'the default hypervisor'}") from None
    try:
        actual_uri = conn.getURI()
        dom = find_domain(conn, ref, uri=actual_uri)
        code, _reason = dom.state()
        active = code in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED,
                          libvirt.VIR_DOMAIN_PAUSED)  # fmt: skip
        xml = dom.XMLDesc(0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError as exc:
        conn.close()
        raise _host_error(exc, f"reading domain {ref!r}") from None
    except BaseException:
        conn.close()
        raise
    return conn, dom, actual_uri, code, xml


def domain_names_blocking(uri: str | None) -> list[str]:
    """The names of every domain of ``uri``, on a read-only connection, blocking
    (shell completion; the caller bounds it)."""
    try:
        conn = libvirt.openReadOnly(uri)
        try:
            return sorted(dom.name() for dom in conn.listAllDomains(0))
        finally:
            conn.close()
    except libvirt.libvirtError as exc:
        raise _host_error(exc, f"listing the domains of {uri or 'the default host'}") from None


def agent_command_blocking(dom: VirDomain, request: str, wait_seconds: int, *, doing: str) -> str:
    """libvirt_qemu.qemuAgentCommand, blocking, failing with LibvirtAgentError."""
    try:
        return libvirt_qemu.qemuAgentCommand(dom, request, wait_seconds, 0)
    except libvirt.libvirtError as exc:
        raise _host_error(exc, doing, LibvirtAgentError) from None


async def running_domains(conn: VirConnect) -> list[tuple[str, str]]:
    """(name, UUID) of the connection's running domains, in one call (abandoned on
    cancellation).  Look them up by UUID: a domain named "1" is not the one with ID 1."""

    def listed() -> list[tuple[str, str]]:
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        return [(dom.name(), dom.UUIDString()) for dom in conn.listAllDomains(flags)]

    return await call(listed, doing="listing the running domains", abandon_on_cancel=True)


async def domains_with_xml(conn: VirConnect, *, doing: str) -> list[tuple[VirDomain, int, str]]:
    """(domain, state code, live XML) of every domain, all read in ONE worker thread.

    Abandoned on cancellation; a domain that vanishes between the listing and
    its XML is left out.
    """

    def describe() -> list[tuple[VirDomain, int, str]]:
        found = []
        for dom in conn.listAllDomains(0):
            try:
                code, _reason = dom.state()
                found.append((dom, code, dom.XMLDesc(0)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return found

    return await call(describe, doing=doing, abandon_on_cancel=True)


def bridge_name(net: libvirt.virNetwork) -> str | None:
    try:
        return net.bridgeName() or None
    except libvirt.libvirtError:
        return None  # networks without a bridge (macvtap, hostdev pools)


# ------------------------------------------------------------------ events

_event_loop_lock = threading.Lock()
_event_loop_running = False


def _start_event_loop() -> None:
    """libvirt delivers events only through a registered loop, set up before connecting."""
    global _event_loop_running
    with _event_loop_lock:
        if _event_loop_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_running = True


class Connected(Protocol):
    """What :func:`watch_events` needs of a :class:`gagent.host.virt.Hypervisor`: its
    connection (named by this protocol, so that this module need not import virt.py,
    which builds on it)."""

    @property
    def conn(self) -> VirConnect: ...


async def watch_events(
    hypervisor: Connected,
    send: trio.MemorySendChannel[DomainEvent],
    *,
    task_status: trio.TaskStatus[None] | None = None,
) -> None:
    """Forward lifecycle and agent-lifecycle events to ``send`` until cancelled.

    The hypervisor must come from ``open_hypervisor(uri, events=True)``.  Under
    ``nursery.start()`` it returns once libvirt delivers the events to us.
    """
    import trio

    token = trio.lowlevel.current_trio_token()

    def deliver(event: DomainEvent) -> None:
        try:
            trio.from_thread.run_sync(send.send_nowait, event, trio_token=token)
        except (trio.RunFinishedError, trio.WouldBlock, trio.ClosedResourceError):
            pass

    def on_lifecycle(_conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        deliver(DomainEvent.lifecycle(dom.name(), event))

    def on_agent(_conn: Any, dom: Any, state: int, _reason: int, _opaque: Any) -> None:
        deliver(DomainEvent.agent(dom.name(), state))

    conn = hypervisor.conn
    ids = [
        await call(
            conn.domainEventRegisterAny, None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            on_lifecycle, None, doing="registering for lifecycle events",
        ),
    ]  # fmt: skip
    agent_event = getattr(libvirt, "VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE", None)
    if agent_event is not None:
        try:
            ids.append(
                await call(conn.domainEventRegisterAny, None, agent_event, on_agent, None,
                           doing="registering for agent events")
            )  # fmt: skip
        except HostError:
            pass  # drivers without agents (test://) do not offer it
    try:
        if task_status is not None:
            task_status.started()
        await trio.sleep_forever()
    finally:
        for callback_id in ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
