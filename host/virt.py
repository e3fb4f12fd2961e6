"""The libvirt boundary: the only module in gagent that imports libvirt.

Everything else in ``gagent.host`` talks to :class:`Hypervisor` and
:class:`Domain`, a small async interface of our own.  libvirt-python blocks,
so every call runs in a worker thread (``trio.to_thread.run_sync``); a
``libvirt.libvirtError`` becomes a :class:`~gagent.errors.HostError` (or a
subclass) that keeps libvirt's error code and message.

Connection URIs are chosen as virsh does: an explicit URI, else
``LIBVIRT_DEFAULT_URI``, else libvirt's own default.  ``test:///default`` is
built into libvirt and needs no daemon.
"""

from __future__ import annotations

import enum
import os
import threading
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from gagent.errors import HostError

try:
    import libvirt
    import libvirt_qemu
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "gagent.host needs libvirt-python: pip install 'gagent[host]' "
        "(Debian: apt-get install libvirt-dev pkg-config gcc python3-dev first)"
    ) from exc

__all__ = [
    "DEFAULT_URI",
    "Domain",
    "DomainEvent",
    "DomainNotFound",
    "DomainState",
    "Hypervisor",
    "LibvirtAgentError",
    "open_hypervisor",
    "resolve_uri",
    "watch_events",
]

T = TypeVar("T")

#: The embedded default for demos and tests: built into libvirt, no daemon.
DEFAULT_URI = "test:///default"


class DomainNotFound(HostError):
    """No domain with that name, UUID or ID on this hypervisor."""


class LibvirtAgentError(HostError):
    """libvirt's qemuAgentCommand failed (agent absent, unresponsive, or it refused)."""


# libvirt's own library prints every error to stderr unless a handler is set;
# we report errors ourselves, once, through the exception.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class DomainState(enum.Enum):
    NOSTATE = "no state"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutting down"
    SHUTOFF = "shut off"
    CRASHED = "crashed"
    PMSUSPENDED = "suspended"

    @classmethod
    def from_libvirt(cls, code: int) -> DomainState:
        order = [
            cls.NOSTATE,
            cls.RUNNING,
            cls.BLOCKED,
            cls.PAUSED,
            cls.SHUTDOWN,
            cls.SHUTOFF,
            cls.CRASHED,
            cls.PMSUSPENDED,
        ]
        return order[code] if 0 <= code < len(order) else cls.NOSTATE

    @property
    def is_active(self) -> bool:
        return self in (DomainState.RUNNING, DomainState.BLOCKED, DomainState.PAUSED)


def resolve_uri(uri: str | None) -> str | None:
    """An explicit URI wins, then LIBVIRT_DEFAULT_URI; None lets libvirt choose (as virsh)."""
    return uri or os.environ.get("LIBVIRT_DEFAULT_URI") or None


def _host_error(
    exc: libvirt.libvirtError, doing: str, kind: type[HostError] = HostError
) -> HostError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    return kind(f"{doing}: {message}", code=code, libvirt_message=message)


async def _call(func: Callable[..., T], *args: Any, doing: str) -> T:
    def run() -> T:
        try:
            return func(*args)
        except libvirt.libvirtError as exc:
            raise _host_error(exc, doing) from None

    return await trio.to_thread.run_sync(run)


@dataclass
class Hypervisor:
    """An open libvirt connection."""

    conn: libvirt.virConnect
    uri: str

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.conn.close)

    async def hostname(self) -> str:
        return await _call(self.conn.getHostname, doing="getHostname")

    async def lookup(self, ref: str) -> Domain:
        """A domain by name, UUID or numeric ID (tried in the order virsh does: ID, UUID, name)."""

        def find() -> libvirt.virDomain:
            if ref.isdigit():
                try:
                    return self.conn.lookupByID(int(ref))
                except libvirt.libvirtError:
                    pass
            if _looks_like_uuid(ref):
                try:
                    return self.conn.lookupByUUIDString(ref)
                except libvirt.libvirtError:
                    pass
            try:
                return self.conn.lookupByName(ref)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise DomainNotFound(
                        f"no domain {ref!r} on {self.uri} (by name, UUID or ID); "
                        "see 'virsh list --all'",
                        code=exc.get_error_code(),
                        libvirt_message=exc.get_error_message(),
                    ) from None
                raise _host_error(exc, f"looking up domain {ref!r}") from None

        return Domain(self, await trio.to_thread.run_sync(find))

    async def domains(self) -> list[Domain]:
        found = await _call(self.conn.listAllDomains, 0, doing="listAllDomains")
        return [Domain(self, dom) for dom in found]

    async def define_xml(self, xml: str) -> Domain:
        dom = await _call(self.conn.defineXML, xml, doing="defining the domain")
        return Domain(self, dom)


@dataclass
class Domain:
    """One domain on one hypervisor."""

    hypervisor: Hypervisor
    dom: libvirt.virDomain

    @property
    def name(self) -> str:
        return self.dom.name()

    @property
    def uuid(self) -> str:
        return self.dom.UUIDString()

    async def id(self) -> int | None:
        value = await _call(self.dom.ID, doing=f"ID of {self.name}")
        return None if value < 0 else value

    async def is_persistent(self) -> bool:
        return bool(await _call(self.dom.isPersistent, doing=f"isPersistent of {self.name}"))

    async def state(self) -> DomainState:
        code, _reason = await _call(self.dom.state, doing=f"state of {self.name}")
        return DomainState.from_libvirt(code)

    async def xml(self, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return await _call(self.dom.XMLDesc, flags, doing=f"XML of {self.name}")

    async def attach_device(self, xml: str, *, live: bool, config: bool) -> None:
        await _call(
            self.dom.attachDeviceFlags,
            xml,
            _affect(live, config),
            doing=f"attaching to {self.name}",
        )

    async def detach_device(self, xml: str, *, live: bool, config: bool) -> None:
        await _call(
            self.dom.detachDeviceFlags,
            xml,
            _affect(live, config),
            doing=f"detaching from {self.name}",
        )

    async def agent_command(self, request: str, wait_seconds: int) -> str:
        """libvirt_qemu.qemuAgentCommand: ``request`` is the JSON of one QGA request.

        libvirt cannot be interrupted mid-call: on cancellation trio moves on
        and the worker thread ends by itself within ``wait_seconds``.
        """

        def run() -> str:
            try:
                return libvirt_qemu.qemuAgentCommand(self.dom, request, wait_seconds, 0)
            except libvirt.libvirtError as exc:
                raise _host_error(
                    exc, f"agent command through libvirt on {self.name}", LibvirtAgentError
                ) from None

        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)


def _affect(live: bool, config: bool) -> int:
    flags = 0
    if live:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    if config:
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    return flags


def _looks_like_uuid(text: str) -> bool:
    try:
        uuid_module.UUID(text)
    except ValueError:
        return False
    return True


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


@dataclass(frozen=True)
class DomainEvent:
    """A lifecycle or agent-lifecycle event of one domain."""

    domain: str
    kind: str  # "lifecycle" or "agent"
    detail: str


_LIFECYCLE = {
    0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed",
    5: "stopped", 6: "shutdown", 7: "pmsuspended", 8: "crashed",
}  # fmt: skip
_AGENT_STATE = {1: "agent connected", 2: "agent disconnected"}


async def watch_events(hypervisor: Hypervisor, send: trio.MemorySendChannel[DomainEvent]) -> None:
    """Forward lifecycle and agent-lifecycle events to ``send`` until cancelled.

    The hypervisor must come from ``open_hypervisor(uri, events=True)``.
    """
    token = trio.lowlevel.current_trio_token()

    def deliver(event: DomainEvent) -> None:
        try:
            trio.from_thread.run_sync(send.send_nowait, event, trio_token=token)
        except (trio.RunFinishedError, trio.WouldBlock, trio.ClosedResourceError):
            pass

    def on_lifecycle(_conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
        deliver(DomainEvent(dom.name(), "lifecycle", _LIFECYCLE.get(event, f"event {event}")))

    def on_agent(_conn: Any, dom: Any, state: int, _reason: int, _opaque: Any) -> None:
        deliver(DomainEvent(dom.name(), "agent", _AGENT_STATE.get(state, f"state {state}")))

    conn = hypervisor.conn
    ids = [
        await _call(
            conn.domainEventRegisterAny, None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
            on_lifecycle, None, doing="registering for lifecycle events",
        ),
    ]  # fmt: skip
    agent_event = getattr(libvirt, "VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE", None)
    if agent_event is not None:
        try:
            ids.append(
                await _call(conn.domainEventRegisterAny, None, agent_event, on_agent, None,
                            doing="registering for agent events")
            )  # fmt: skip
        except HostError:
            pass  # drivers without agents (test://) do not offer it
    try:
        await trio.sleep_forever()
    finally:
        for callback_id in ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass


async def open_hypervisor(uri: str | None = None, *, events: bool = False) -> Hypervisor:
    """Open a connection (see :func:`resolve_uri` for how the URI is chosen).

    ``events=True`` sets up libvirt's event loop first, for :func:`watch_events`.
    """
    chosen = resolve_uri(uri)
    if events:
        _start_event_loop()

    def connect() -> libvirt.virConnect:
        try:
            return libvirt.open(chosen)
        except libvirt.libvirtError as exc:
            raise _host_error(
                exc, f"cannot connect to {chosen or 'the default hypervisor'}"
            ) from None

    conn = await trio.to_thread.run_sync(connect)
    return Hypervisor(conn, conn.getURI())
