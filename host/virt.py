"""The libvirt boundary: gagent's small async interface to libvirt.

Everything else in ``gagent.host`` talks to :class:`Hypervisor` and
:class:`Domain`, imported from here.  libvirt-python blocks, so every call
runs in a worker thread; a ``libvirt.libvirtError`` becomes a
:class:`~gagent.errors.HostError` (or a subclass) that keeps libvirt's error
code and message.  Only ``host/virt_calls.py`` imports libvirt (error
translation, connecting, events), on ``host/virt_threads.py`` (the threads) and
``host/virt_flags.py`` (the flags, plain values); the types this interface hands
out are libvirt-free, in ``host/virt_types.py``.  Both are re-exported here.

Connection URIs are chosen as virsh does: an explicit URI, else
``LIBVIRT_DEFAULT_URI``, else libvirt's own default.  ``test:///default`` is
built into libvirt and needs no daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gagent.errors import HostError

from .virt_calls import (
    ERROR_CODES,
    VirConnect,
    VirDomain,
    affect_flags,
    agent_command,
    bridge_name,
    call,
    connect,
    domains_with_xml,
    exists,
    in_thread,
    lookup_domain,
    migration_flags,
    migration_params,
    query,
    snapshot_create_flags,
    snapshot_delete_flags,
    watch_events,
    xml_flags,
)
from .virt_types import (
    DEFAULT_URI,
    CpuCompatibility,
    DomainEvent,
    DomainNotFound,
    DomainState,
    JobProgress,
    LibvirtAgentError,
    NetworkInfo,
    Unsupported,
    resolve_uri,
)

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


#: How long closing a connection may take (a hung libvirtd never acknowledges it).
CLOSE_TIMEOUT = 2.0

logger = logging.getLogger("gagent.virt")


@dataclass
class Hypervisor:
    """An open libvirt connection."""

    conn: VirConnect
    uri: str

    async def close(self) -> None:
        """Close the connection, giving a hung libvirtd :data:`CLOSE_TIMEOUT` at most.

        Shielded (a cancelled command still closes what it opened) and bounded
        (closing sends libvirtd a message; a daemon that never answers is left
        to the worker thread, which ends with the process).
        """
        import trio  # on use: gagent.sync's blocking domain route builds on this module

        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT):
            await in_thread(self.conn.close, doing=f"closing the connection to {self.uri}")

    async def __aenter__(self) -> Hypervisor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def hostname(self) -> str:
        """The host's name as libvirt reports it (getHostname)."""
        return await call(self.conn.getHostname, doing="getHostname")

    async def lookup(self, ref: str) -> Domain:
        """A domain by name, UUID or numeric ID (tried in the order virsh does: ID, UUID, name)."""
        domain = Domain(self, await lookup_domain(self.conn, ref, uri=self.uri))
        if logger.isEnabledFor(logging.INFO):  # (name and UUID: libvirt has them at hand)
            logger.info("found domain %s on %s (UUID %s)", domain.name, self.uri, domain.uuid)
        return domain

    async def domains(self) -> list[Domain]:
        """Every domain, running or not (listAllDomains)."""
        found = await call(self.conn.listAllDomains, 0, doing="listAllDomains")
        return [Domain(self, dom) for dom in found]

    async def describe_domains(self) -> list[DomainRecord]:
        """Every domain, running or not, with its state and live XML (for inventory scans).

        All the calls run in ONE worker thread (a thread hop per call would cost
        more than the answers of a local hypervisor).  Cancellable: on
        cancellation trio moves on and the thread ends by itself.  A domain that
        vanishes between the listing and its XML is left out.
        """
        found = await domains_with_xml(self.conn, doing=f"listing the domains of {self.uri}")
        return [
            DomainRecord(Domain(self, dom), DomainState.from_libvirt(code), xml)
            for dom, code, xml in found
        ]

    async def define_xml(self, xml: str) -> Domain:
        """Define (or redefine) a persistent domain from its XML (defineXML)."""
        dom = await call(self.conn.defineXML, xml, doing="defining the domain")
        return Domain(self, dom)

    # -- facts for pre-migration checks (gagent.host.migration) ------------
    # These calls raise Unsupported when the driver lacks them (the test://
    # driver has no compareHypervisorCPU, for instance) and are abandoned on
    # cancellation, so a per-check timeout always ends the check.

    async def libvirt_version(self) -> int:
        """libvirt's version on that host, encoded major*1e6 + minor*1e3 + micro."""
        return await query(self.conn.getLibVersion, doing="getLibVersion")

    async def hypervisor_type(self) -> str:
        """The driver's name: 'QEMU', 'TEST', 'Xen'..."""
        return await query(self.conn.getType, doing="getType")

    async def hypervisor_version(self) -> int:
        """The hypervisor's version, encoded as :meth:`libvirt_version`."""
        return await query(self.conn.getVersion, doing="getVersion")

    async def capabilities(self) -> str:
        """The host's capabilities XML (getCapabilities)."""
        return await query(self.conn.getCapabilities, doing="getCapabilities")

    async def free_memory(self) -> int:
        """Free memory on the host, in bytes."""
        return await query(self.conn.getFreeMemory, doing="getFreeMemory")

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
        code = await query(
            self.conn.compareHypervisorCPU, emulator, arch, machine, virttype, cpu_xml, 0,
            doing="compareHypervisorCPU",
        )  # fmt: skip
        return CpuCompatibility.from_libvirt(code)

    async def networks(self) -> list[NetworkInfo]:
        """Every libvirt network: name, whether it is active, its bridge."""

        def run() -> list[NetworkInfo]:
            return [
                NetworkInfo(net.name(), bool(net.isActive()), bridge_name(net))
                for net in self.conn.listAllNetworks(0)
            ]

        return await query(run, doing="listAllNetworks")

    async def interface_names(self) -> list[str]:
        """Host interfaces libvirt knows (bridges, NICs, bonds...): listAllInterfaces."""
        return await query(
            lambda: [iface.name() for iface in self.conn.listAllInterfaces(0)],
            doing="listAllInterfaces",
        )

    async def volume_path_exists(self, path: str) -> bool:
        """Is ``path`` a volume of one of this host's storage pools?"""
        return await exists(
            lambda: self.conn.storageVolLookupByPath(path), doing=f"looking up volume {path}"
        )

    async def pool_volume_exists(self, pool: str, volume: str) -> bool:
        """Does storage pool ``pool`` hold a volume named ``volume``?"""
        return await exists(
            lambda: self.conn.storagePoolLookupByName(pool).storageVolLookupByName(volume),
            doing=f"looking up volume {volume} in pool {pool}",
        )


@dataclass
class Domain:
    """One domain on one hypervisor."""

    hypervisor: Hypervisor
    dom: VirDomain

    @property
    def name(self) -> str:
        return self.dom.name()

    @property
    def uuid(self) -> str:
        return self.dom.UUIDString()

    async def id(self) -> int | None:
        value = await call(self.dom.ID, doing=f"ID of {self.name}")
        return None if value < 0 else value

    async def is_persistent(self) -> bool:
        return bool(await call(self.dom.isPersistent, doing=f"isPersistent of {self.name}"))

    async def state(self) -> DomainState:
        code, _reason = await call(self.dom.state, doing=f"state of {self.name}")
        return DomainState.from_libvirt(code)

    async def xml(self, *, inactive: bool = False) -> str:
        flags = xml_flags(inactive=inactive)
        return await call(self.dom.XMLDesc, flags, doing=f"XML of {self.name}")

    async def attach_device(self, xml: str, *, live: bool, config: bool) -> None:
        await call(
            self.dom.attachDeviceFlags,
            xml,
            affect_flags(live=live, config=config),
            doing=f"attaching to {self.name}",
        )

    async def detach_device(self, xml: str, *, live: bool, config: bool) -> None:
        await call(
            self.dom.detachDeviceFlags,
            xml,
            affect_flags(live=live, config=config),
            doing=f"detaching from {self.name}",
        )

    async def agent_command(self, request: str, wait_seconds: int) -> str:
        """libvirt_qemu.qemuAgentCommand: ``request`` is the JSON of one QGA request.

        libvirt cannot be interrupted mid-call: on cancellation trio moves on
        and the worker thread ends by itself within ``wait_seconds``.
        """
        return await agent_command(
            self.dom, request, wait_seconds, doing=f"agent command through libvirt on {self.name}"
        )

    # -- pre-migration checks and migration (gagent.host.migration) --------

    async def snapshot_names(self) -> list[str]:
        """Snapshots libvirt keeps metadata for (listAllSnapshots)."""
        return await query(
            lambda: [snap.getName() for snap in self.dom.listAllSnapshots(0)],
            doing=f"listing the snapshots of {self.name}",
        )

    async def job_progress(self) -> JobProgress:
        """The running job (a migration) as jobInfo reports it."""
        info = await query(self.dom.jobInfo, doing=f"job info of {self.name}")
        return JobProgress.from_libvirt(info)

    async def abort_job(self) -> None:
        await query(self.dom.abortJob, doing=f"aborting the job of {self.name}")

    async def migrate(
        self, destination: Hypervisor, *, flags: int, uri: str | None = None
    ) -> Domain:
        """migrate3 to ``destination`` (flags from :func:`migration_flags`); blocks until done.

        ``uri`` is the hypervisor's own migration URI (e.g. tcp://10.0.0.2:49152),
        when the destination's host name does not lead there.  On cancellation
        trio moves on but libvirt keeps migrating: :meth:`abort_job` stops it.
        """
        dom = await query(
            self.dom.migrate3, destination.conn, migration_params(uri=uri), flags,
            doing=f"migrating {self.name} to {destination.uri}",
        )  # fmt: skip
        return Domain(destination, dom)

    # ------------------------------------------------------------ snapshots

    async def snapshot_create_xml(
        self,
        xml: str,
        *,
        disk_only: bool = True,
        atomic: bool = True,
        no_metadata: bool = False,
        quiesce: bool = False,
        abandon_on_cancel: bool = True,
    ) -> str:
        """virDomainSnapshotCreateXML with the flags named; returns the snapshot's name.

        libvirt cannot be interrupted: a cancelled caller moves on and the worker
        thread finishes the call by itself (libvirt may then still complete the
        snapshot); ``abandon_on_cancel=False`` waits for it instead.
        """
        flags = snapshot_create_flags(
            disk_only=disk_only, atomic=atomic, no_metadata=no_metadata, quiesce=quiesce
        )
        return await call(
            lambda: self.dom.snapshotCreateXML(xml, flags).getName(),
            doing=f"creating a snapshot of {self.name}",
            abandon_on_cancel=abandon_on_cancel,
        )

    async def list_snapshots(self) -> list[tuple[str, str, bool]]:
        """(name, XML, is current) of each snapshot libvirt keeps metadata for."""

        def run() -> list[tuple[str, str, bool]]:
            return [
                (snap.getName(), snap.getXMLDesc(0), bool(snap.isCurrent(0)))
                for snap in self.dom.listAllSnapshots(0)
            ]

        return await call(run, doing=f"listing the snapshots of {self.name}")

    async def delete_snapshot(self, name: str, *, metadata_only: bool = False) -> None:
        """virDomainSnapshotDelete (``metadata_only``: forget it, leave the files alone)."""
        flags = snapshot_delete_flags(metadata_only=metadata_only)

        def run() -> None:
            self.dom.snapshotLookupByName(name, 0).delete(flags)

        await call(run, doing=f"deleting snapshot {name} of {self.name}")


@dataclass(frozen=True)
class DomainRecord:
    """One domain as :meth:`Hypervisor.describe_domains` read it: state and live XML."""

    domain: Domain
    state: DomainState
    xml: str


async def open_hypervisor(
    uri: str | None = None, *, events: bool = False, cancellable: bool = True
) -> Hypervisor:
    """Open a connection (see :func:`resolve_uri` for how the URI is chosen).

    Use it as ``async with await open_hypervisor(uri) as hypervisor:`` (or call
    :meth:`Hypervisor.close`).  ``events=True`` sets up libvirt's event loop
    first, for :func:`watch_events`.  A cancellation (the caller's deadline)
    abandons a connect that hangs (an unanswering host or daemon): the worker
    thread ends by itself, and a connection it opens late is closed when
    garbage-collected.
    """
    chosen = resolve_uri(uri)
    logger.info("connecting to libvirt at %s", chosen or "libvirt's default URI")
    conn = await connect(chosen, events=events, cancellable=cancellable)
    hypervisor = Hypervisor(conn, conn.getURI())
    if logger.isEnabledFor(logging.INFO):  # the version costs a call: only when it is shown
        await _log_connected(hypervisor)
    return hypervisor


async def _log_connected(hypervisor: Hypervisor) -> None:
    """Log the connection and the host's libvirt version (left out if it will not say)."""
    try:
        version = await hypervisor.libvirt_version()
    except HostError:  # (Unsupported, or refused): the line goes without it
        logger.info("connected to %s", hypervisor.uri)
        return
    except BaseException:  # cancelled: what was opened is closed, not left to the collector
        await hypervisor.close()
        raise
    logger.info("connected to %s (libvirt %s)", hypervisor.uri, dotted_version(version))


def dotted_version(encoded: int) -> str:
    """libvirt's major*1e6 + minor*1e3 + micro as ``major.minor.micro``."""
    return f"{encoded // 1_000_000}.{encoded // 1000 % 1000}.{encoded % 1000}"
