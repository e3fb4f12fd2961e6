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
    "ERROR_CODES",
    "CpuCompatibility",
    "Domain",
    "DomainEvent",
    "DomainNotFound",
    "DomainRecord",
    "DomainState",
    "Hypervisor",
    "JobProgress",
    "LibvirtAgentError",
    "NetworkInfo",
    "Unsupported",
    "migration_flags",
    "open_hypervisor",
    "resolve_uri",
    "watch_events",
]

T = TypeVar("T")

#: The embedded default for demos and tests: built into libvirt, no daemon.
DEFAULT_URI = "test:///default"


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
    if kind is HostError and code == libvirt.VIR_ERR_NO_DOMAIN:
        kind = DomainNotFound  # e.g. a domain that vanished while we looked at it
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

    async def describe_domains(self) -> list[DomainRecord]:
        """Every domain, running or not, with its state and live XML (for inventory scans).

        All the calls run in ONE worker thread (a thread hop per call would cost
        more than the answers of a local hypervisor).  Cancellable: on
        cancellation trio moves on and the thread ends by itself.  A domain that
        vanishes between the listing and its XML is left out.
        """

        def describe() -> list[DomainRecord]:
            records = []
            for dom in self.conn.listAllDomains(0):
                try:
                    code, _reason = dom.state()
                    xml = dom.XMLDesc(0)
                    records.append(
                        DomainRecord(Domain(self, dom), DomainState.from_libvirt(code), xml)
                    )
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
            return records

        def run() -> list[DomainRecord]:
            try:
                return describe()
            except libvirt.libvirtError as exc:
                raise _host_error(exc, f"listing the domains of {self.uri}") from None

        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)

    async def define_xml(self, xml: str) -> Domain:
        dom = await _call(self.conn.defineXML, xml, doing="defining the domain")
        return Domain(self, dom)

    # -- facts for pre-migration checks (gagent.host.migration) ------------
    # These calls raise Unsupported when the driver lacks them (the test://
    # driver has no compareHypervisorCPU, for instance) and are abandoned on
    # cancellation, so a per-check timeout always ends the check.

    async def libvirt_version(self) -> int:
        """libvirt's version on that host, encoded major*1e6 + minor*1e3 + micro."""
        return await _query(self.conn.getLibVersion, doing="getLibVersion")

    async def hypervisor_type(self) -> str:
        """The driver's name: 'QEMU', 'TEST', 'Xen'..."""
        return await _query(self.conn.getType, doing="getType")

    async def hypervisor_version(self) -> int:
        """The hypervisor's version, encoded as :meth:`libvirt_version`."""
        return await _query(self.conn.getVersion, doing="getVersion")

    async def capabilities(self) -> str:
        return await _query(self.conn.getCapabilities, doing="getCapabilities")

    async def free_memory(self) -> int:
        """Free memory on the host, in bytes."""
        return await _query(self.conn.getFreeMemory, doing="getFreeMemory")

    async def compare_cpu(
        self,
        cpu_xml: str,
        *,
        arch: str | None = None,
        machine: str | None = None,
        virttype: str | None = None,
        emulator: str | None = None,
    ) -> CpuCompatibility:
        """Can this hypervisor give a guest the CPU ``cpu_xml`` describes? (compareHypervisorCPU)"""
        code = await _query(
            self.conn.compareHypervisorCPU, emulator, arch, machine, virttype, cpu_xml, 0,
            doing="compareHypervisorCPU",
        )  # fmt: skip
        return CpuCompatibility.from_libvirt(code)

    async def networks(self) -> list[NetworkInfo]:
        def run() -> list[NetworkInfo]:
            return [
                NetworkInfo(net.name(), bool(net.isActive()), _bridge_name(net))
                for net in self.conn.listAllNetworks(0)
            ]

        return await _query(run, doing="listAllNetworks")

    async def interface_names(self) -> list[str]:
        """Host interfaces libvirt knows (bridges, NICs, bonds...): listAllInterfaces."""
        return await _query(
            lambda: [iface.name() for iface in self.conn.listAllInterfaces(0)],
            doing="listAllInterfaces",
        )

    async def volume_path_exists(self, path: str) -> bool:
        """Is ``path`` a volume of one of this host's storage pools?"""
        return await _exists(
            lambda: self.conn.storageVolLookupByPath(path), doing=f"looking up volume {path}"
        )

    async def pool_volume_exists(self, pool: str, volume: str) -> bool:
        return await _exists(
            lambda: self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume),
            doing=f"looking up volume {volume} in pool {pool}",
        )


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

    # -- pre-migration checks and migration (gagent.host.migration) --------

    async def snapshot_names(self) -> list[str]:
        """Snapshots libvirt keeps metadata for (listAllSnapshots)."""
        return await _query(
            lambda: [snap.getName() for snap in self.dom.listAllSnapshots(0)],
            doing=f"listing the snapshots of {self.name}",
        )

    async def job_progress(self) -> JobProgress:
        """The running job (a migration) as jobInfo reports it."""
        info = await _query(self.dom.jobInfo, doing=f"job info of {self.name}")
        return JobProgress.from_libvirt(info)

    async def abort_job(self) -> None:
        await _query(self.dom.abortJob, doing=f"aborting the job of {self.name}")

    async def migrate(
        self, destination: Hypervisor, *, flags: int, uri: str | None = None
    ) -> Domain:
        """migrate3 to ``destination`` (flags from :func:`migration_flags`); blocks until done.

        ``uri`` is the hypervisor's own migration URI (e.g. tcp://10.0.0.2:49152),
        when the destination's host name does not lead there.  On cancellation
        trio moves on but libvirt keeps migrating: :meth:`abort_job` stops it.
        """
        params = {libvirt.VIR_MIGRATE_PARAM_URI: uri} if uri else {}

        def run() -> libvirt.virDomain:
            try:
                return self.dom.migrate3(destination.conn, params, flags)
            except libvirt.libvirtError as exc:
                raise _host_error(
                    exc, f"migrating {self.name} to {destination.uri}", _error_kind(exc)
                ) from None

        return Domain(destination, await trio.to_thread.run_sync(run, abandon_on_cancel=True))

    # ------------------------------------------------------------ snapshots

    async def snapshot_create_xml(
        self,
        xml: str,
        *,
        disk_only: bool = True,
        atomic: bool = True,
        no_metadata: bool = False,
        quiesce: bool = False,
        abandon_on_cancel: bool = False,
    ) -> str:
        """virDomainSnapshotCreateXML with the flags named; returns the snapshot's name.

        libvirt cannot be interrupted: by default a cancelled caller waits for the
        call to finish; with ``abandon_on_cancel`` it moves on and the worker
        thread finishes the call by itself.
        """
        flags = 0
        for wanted, flag in (
            (disk_only, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY),
            (atomic, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC),
            (no_metadata, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA),
            (quiesce, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE),
        ):
            if wanted:
                flags |= flag

        def run() -> str:
            try:
                return self.dom.snapshotCreateXML(xml, flags).getName()
            except libvirt.libvirtError as exc:
                raise _host_error(exc, f"creating a snapshot of {self.name}") from None

        return await trio.to_thread.run_sync(run, abandon_on_cancel=abandon_on_cancel)

    async def list_snapshots(self) -> list[tuple[str, str, bool]]:
        """(name, XML, is current) of each snapshot libvirt keeps metadata for."""

        def run() -> list[tuple[str, str, bool]]:
            return [
                (snap.getName(), snap.getXMLDesc(0), bool(snap.isCurrent(0)))
                for snap in self.dom.listAllSnapshots(0)
            ]

        return await _call(run, doing=f"listing the snapshots of {self.name}")

    async def delete_snapshot(self, name: str, *, metadata_only: bool = False) -> None:
        """virDomainSnapshotDelete (``metadata_only``: forget it, leave the files alone)."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0

        def run() -> None:
            self.dom.snapshotLookupByName(name, 0).delete(flags)

        await _call(run, doing=f"deleting snapshot {name} of {self.name}")


@dataclass(frozen=True)
class DomainRecord:
    """One domain as :meth:`Hypervisor.describe_domains` read it: state and live XML."""

    domain: Domain
    state: DomainState
    xml: str


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


async def open_hypervisor(
    uri: str | None = None, *, events: bool = False, cancellable: bool = False
) -> Hypervisor:
    """Open a connection (see :func:`resolve_uri` for how the URI is chosen).

    ``events=True`` sets up libvirt's event loop first, for :func:`watch_events`.
    ``cancellable=True`` lets a cancellation (a per-host timeout) abandon a
    connect that hangs (an unanswering ssh host): the worker thread ends by
    itself, and a connection it opens late is closed when garbage-collected.
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

    conn = await trio.to_thread.run_sync(connect, abandon_on_cancel=cancellable)
    return Hypervisor(conn, conn.getURI())


# -- pre-migration checks and migration (gagent.host.migration) -------------


class Unsupported(HostError):
    """The connection's driver does not implement the call (VIR_ERR_NO_SUPPORT)."""


class CpuCompatibility(enum.Enum):
    """compareHypervisorCPU's answer."""

    INCOMPATIBLE = "incompatible"
    IDENTICAL = "identical"
    SUPERSET = "superset"

    @classmethod
    def from_libvirt(cls, code: int) -> CpuCompatibility:
        if code == libvirt.VIR_CPU_COMPARE_IDENTICAL:
            return cls.IDENTICAL
        if code == libvirt.VIR_CPU_COMPARE_SUPERSET:
            return cls.SUPERSET
        return cls.INCOMPATIBLE


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    active: bool
    bridge: str | None


@dataclass(frozen=True)
class JobProgress:
    """A domain job (jobInfo); sizes in bytes, times in milliseconds."""

    kind: str  # none, bounded, unbounded, completed, failed, cancelled
    elapsed_ms: int
    remaining_ms: int
    data_total: int
    data_processed: int
    data_remaining: int

    @classmethod
    def from_libvirt(cls, info: list[int]) -> JobProgress:
        kinds = ["none", "bounded", "unbounded", "completed", "failed", "cancelled"]
        kind = kinds[info[0]] if 0 <= info[0] < len(kinds) else f"type {info[0]}"
        return cls(kind, *(int(v) for v in info[1:6]))


def migration_flags(
    *,
    live: bool = False,
    persist_dest: bool = False,
    undefine_source: bool = False,
    copy_storage: bool = False,
) -> int:
    """libvirt's VIR_MIGRATE_* flags for these options."""
    flags = 0
    for wanted, flag in (
        (live, libvirt.VIR_MIGRATE_LIVE),
        (persist_dest, libvirt.VIR_MIGRATE_PERSIST_DEST),
        (undefine_source, libvirt.VIR_MIGRATE_UNDEFINE_SOURCE),
        (copy_storage, libvirt.VIR_MIGRATE_NON_SHARED_DISK),
    ):
        if wanted:
            flags |= flag
    return flags


def _bridge_name(net: libvirt.virNetwork) -> str | None:
    try:
        return net.bridgeName() or None
    except libvirt.libvirtError:
        return None  # networks without a bridge (macvtap, hostdev pools)


def _error_kind(exc: libvirt.libvirtError) -> type[HostError]:
    return Unsupported if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT else HostError


async def _query(func: Callable[..., T], *args: Any, doing: str) -> T:
    """Like _call, but Unsupported for VIR_ERR_NO_SUPPORT, and abandoned on cancellation."""

    def run() -> T:
        try:
            return func(*args)
        except libvirt.libvirtError as exc:
            raise _host_error(exc, doing, _error_kind(exc)) from None

    return await trio.to_thread.run_sync(run, abandon_on_cancel=True)


_NOT_FOUND = {
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_INTERFACE,
}


async def _exists(lookup: Callable[[], Any], *, doing: str) -> bool:
    def run() -> bool:
        try:
            lookup()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _NOT_FOUND:
                return False
            raise
        return True

    return await _query(run, doing=doing)
