"""Frozen dataclasses for qemu-ga's filesystem, disk and file replies.

The companion of :mod:`gagent.types` (which holds the agent and system
replies and the shared parsing helpers); split by topic to keep each module
small.  Same rules: tolerant of omitted optional members, strict on shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .types import (
    decode_base64,
    enum_member,
    expect_dict,
    expect_list,
    field_names,
    int_members,
    member,
    shape_error,
)

__all__ = [
    "CcwAddress",
    "DiskAddress",
    "DiskBusType",
    "DiskInfo",
    "DiskSmart",
    "DiskStats",
    "DiskStatsInfo",
    "FileRead",
    "FileSeek",
    "FileWrite",
    "FilesystemInfo",
    "FsfreezeStatus",
    "FstrimResult",
    "PciAddress",
    "SeekWhence",
]


class FsfreezeStatus(enum.StrEnum):
    THAWED = "thawed"
    FROZEN = "frozen"

    @classmethod
    def from_json(cls, value: Any) -> FsfreezeStatus:
        return enum_member(cls, value, "guest-fsfreeze-status")


class SeekWhence(enum.StrEnum):
    """``guest-file-seek`` origins (QGASeek)."""

    SET = "set"
    CUR = "cur"
    END = "end"


class DiskBusType(enum.StrEnum):
    """GuestDiskBusType as of qemu-ga 7.2.  Parsing keeps unknown names as plain
    strings: newer agents add bus types, and a disk list should not fail over one."""

    IDE = "ide"
    FDC = "fdc"
    SCSI = "scsi"
    VIRTIO = "virtio"
    XEN = "xen"
    USB = "usb"
    UML = "uml"
    SATA = "sata"
    SD = "sd"
    UNKNOWN = "unknown"
    IEEE1394 = "ieee1394"
    SSA = "ssa"
    FIBRE = "fibre"
    RAID = "raid"
    ISCSI = "iscsi"
    SAS = "sas"
    MMC = "mmc"
    VIRTUAL = "virtual"
    FILE_BACKED_VIRTUAL = "file-backed-virtual"
    NVME = "nvme"


def _bus_type(value: str) -> DiskBusType | str:
    try:
        return DiskBusType(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class PciAddress:
    """A controller's PCI address (members are -1 when the agent could not tell)."""

    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def from_json(cls, value: Any, what: str = "pci-controller") -> PciAddress:
        return cls(**int_members(expect_dict(value, what), field_names(cls), what, optional=False))


@dataclass(frozen=True, slots=True)
class CcwAddress:
    """A CCW address (s390x guests)."""

    cssid: int
    ssid: int
    subchno: int
    devno: int

    @classmethod
    def from_json(cls, value: Any, what: str = "ccw-address") -> CcwAddress:
        return cls(**int_members(expect_dict(value, what), field_names(cls), what, optional=False))


@dataclass(frozen=True, slots=True)
class DiskAddress:
    """Where a disk sits (GuestDiskAddress): ``dev`` is the device node, e.g. /dev/vda."""

    pci_controller: PciAddress
    bus_type: DiskBusType | str
    bus: int
    target: int
    unit: int
    serial: str | None = None
    dev: str | None = None
    ccw_address: CcwAddress | None = None

    @classmethod
    def from_json(cls, value: Any, what: str = "disk address") -> DiskAddress:
        value = expect_dict(value, what)
        ccw = member(value, "ccw-address", dict, what, optional=True)
        return cls(
            pci_controller=PciAddress.from_json(
                member(value, "pci-controller", dict, what), f"{what} pci-controller"
            ),
            bus_type=_bus_type(member(value, "bus-type", str, what)),
            **int_members(value, ("bus", "target", "unit"), what, optional=False),
            serial=member(value, "serial", str, what, optional=True),
            dev=member(value, "dev", str, what, optional=True),
            ccw_address=None if ccw is None else CcwAddress.from_json(ccw, f"{what} ccw-address"),
        )


@dataclass(frozen=True, slots=True)
class FilesystemInfo:
    """One ``guest-get-fsinfo`` entry (mounted, non-network filesystems)."""

    name: str
    mountpoint: str
    type: str
    disks: tuple[DiskAddress, ...] = ()
    used_bytes: int | None = None
    total_bytes: int | None = None

    @classmethod
    def from_json(cls, value: Any) -> FilesystemInfo:
        what = "guest-get-fsinfo"
        value = expect_dict(value, what)
        disks = member(value, "disk", list, what)
        return cls(
            name=member(value, "name", str, what),
            mountpoint=member(value, "mountpoint", str, what),
            type=member(value, "type", str, what),
            disks=tuple(DiskAddress.from_json(d, f"{what} disk") for d in disks),
            **int_members(value, ("used_bytes", "total_bytes"), what, optional=True),
        )


@dataclass(frozen=True, slots=True)
class DiskSmart:
    """SMART data of a disk (GuestDiskSmart; qemu-ga 7.2 fills it for NVMe only).

    ``values`` keeps the members as sent (``critical-warning``, ``temperature``,
    ``data-units-read-lo``...); :meth:`counter` joins a 128-bit ``-lo``/``-hi`` pair.
    """

    type: DiskBusType | str
    values: dict[str, int]

    @classmethod
    def from_json(cls, value: Any, what: str = "guest-get-disks smart") -> DiskSmart:
        value = expect_dict(value, what)
        kind = _bus_type(member(value, "type", str, what))
        names = [key for key in value if key != "type"]
        return cls(type=kind, values=int_members(value, names, what, optional=False))  # type: ignore[arg-type]

    def counter(self, name: str) -> int | None:
        """``counter("data-units-read")`` = hi << 64 | lo, or None if absent."""
        low = self.values.get(f"{name}-lo")
        if low is None:
            return None
        return self.values.get(f"{name}-hi", 0) << 64 | low


@dataclass(frozen=True, slots=True)
class DiskInfo:
    """One ``guest-get-disks`` entry: ``name`` is the device node, e.g. /dev/vda."""

    name: str
    partition: bool
    dependencies: tuple[str, ...] = ()
    address: DiskAddress | None = None
    alias: str | None = None
    smart: DiskSmart | None = None

    @classmethod
    def from_json(cls, value: Any) -> DiskInfo:
        what = "guest-get-disks"
        value = expect_dict(value, what)
        dependencies = member(value, "dependencies", list, what, optional=True) or []
        if not all(isinstance(d, str) for d in dependencies):
            raise shape_error(what, "dependencies must be strings")
        address = member(value, "address", dict, what, optional=True)
        smart = member(value, "smart", dict, what, optional=True)
        return cls(
            name=member(value, "name", str, what),
            partition=member(value, "partition", bool, what),
            dependencies=tuple(dependencies),
            address=None if address is None else DiskAddress.from_json(address, f"{what} address"),
            alias=member(value, "alias", str, what, optional=True),
            smart=None if smart is None else DiskSmart.from_json(smart),
        )


@dataclass(frozen=True, slots=True)
class DiskStats:
    """Block-layer counters of one disk (all optional; ticks are milliseconds)."""

    read_sectors: int | None = None
    read_ios: int | None = None
    read_merges: int | None = None
    write_sectors: int | None = None
    write_ios: int | None = None
    write_merges: int | None = None
    discard_sectors: int | None = None
    discard_ios: int | None = None
    discard_merges: int | None = None
    flush_ios: int | None = None
    read_ticks: int | None = None
    write_ticks: int | None = None
    discard_ticks: int | None = None
    flush_ticks: int | None = None
    ios_pgr: int | None = None
    total_ticks: int | None = None
    weight_ticks: int | None = None

    @classmethod
    def from_json(cls, value: Any, what: str = "guest-get-diskstats stats") -> DiskStats:
        return cls(**int_members(expect_dict(value, what), field_names(cls), what, optional=True))


@dataclass(frozen=True, slots=True)
class DiskStatsInfo:
    """One ``guest-get-diskstats`` entry."""

    name: str
    major: int
    minor: int
    stats: DiskStats

    @classmethod
    def from_json(cls, value: Any) -> DiskStatsInfo:
        what = "guest-get-diskstats"
        value = expect_dict(value, what)
        return cls(
            name=member(value, "name", str, what),
            **int_members(value, ("major", "minor"), what, optional=False),
            stats=DiskStats.from_json(member(value, "stats", dict, what)),
        )


@dataclass(frozen=True, slots=True)
class FstrimResult:
    """One path of ``guest-fstrim``: bytes ``trimmed``, or an ``error`` message."""

    path: str
    trimmed: int | None = None
    minimum: int | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, value: Any) -> FstrimResult:
        what = "guest-fstrim"
        value = expect_dict(value, what)
        return cls(
            path=member(value, "path", str, what),
            **int_members(value, ("trimmed", "minimum"), what, optional=True),
            error=member(value, "error", str, what, optional=True),
        )

    @classmethod
    def list_from_json(cls, value: Any) -> list[FstrimResult]:
        """The reply is ``{"paths": [...]}``."""
        what = "guest-fstrim"
        paths = member(expect_dict(value, what), "paths", list, what)
        return [cls.from_json(p) for p in expect_list(paths, what)]


@dataclass(frozen=True, slots=True)
class FileRead:
    """``guest-file-read``: ``data`` is decoded; ``eof`` says the end was reached."""

    data: bytes
    eof: bool

    @classmethod
    def from_json(cls, value: Any) -> FileRead:
        what = "guest-file-read"
        value = expect_dict(value, what)
        count = member(value, "count", int, what)
        data = decode_base64(member(value, "buf-b64", str, what), what)
        if len(data) != count:
            raise shape_error(what, f"count says {count} bytes but buf-b64 holds {len(data)}")
        return cls(data=data, eof=member(value, "eof", bool, what))


@dataclass(frozen=True, slots=True)
class FileWrite:
    """``guest-file-write``: how many bytes the agent wrote."""

    count: int
    eof: bool

    @classmethod
    def from_json(cls, value: Any) -> FileWrite:
        what = "guest-file-write"
        value = expect_dict(value, what)
        return cls(count=member(value, "count", int, what), eof=member(value, "eof", bool, what))


@dataclass(frozen=True, slots=True)
class FileSeek:
    """``guest-file-seek``: the position after seeking."""

    position: int
    eof: bool

    @classmethod
    def from_json(cls, value: Any) -> FileSeek:
        what = "guest-file-seek"
        value = expect_dict(value, what)
        return cls(
            position=member(value, "position", int, what), eof=member(value, "eof", bool, what)
        )
