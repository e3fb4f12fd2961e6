"""qemu-ga's filesystem, disk and file replies, as frozen structs described once.

The companion of :mod:`gagent.types` (the agent and system replies).  Same
rules: tolerant of omitted optional members, strict on shape.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from .decoding import Described
from .fsfreeze_state import FsfreezeStatus

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
    "FstrimResponse",
    "FstrimResult",
    "PciAddress",
    "SeekWhence",
]

_set = msgspec.structs.force_setattr


class SeekWhence(enum.StrEnum):
    """``guest-file-seek`` origins (QGASeek)."""

    SET = "set"
    CUR = "cur"
    END = "end"


class DiskBusType(enum.StrEnum):
    """GuestDiskBusType as of qemu-ga 7.2.  Decoding keeps unknown names as plain
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


_BUS_TYPES = {b.value: b for b in DiskBusType}


class PciAddress(Described, frozen=True):
    """A controller's PCI address (members are -1 when the agent could not tell)."""

    command = "guest-get-fsinfo"

    domain: int
    bus: int
    slot: int
    function: int


class CcwAddress(Described, frozen=True):
    """A CCW address (s390x guests)."""

    command = "guest-get-disks"

    cssid: int
    ssid: int
    subchno: int
    devno: int


class DiskAddress(Described, frozen=True):
    """Where a disk sits (GuestDiskAddress): ``dev`` is the device node, e.g. /dev/vda."""

    command = "guest-get-disks"

    pci_controller: PciAddress
    #: A DiskBusType, or the plain name of a bus newer than this module (__post_init__).
    bus_type: str
    bus: int
    target: int
    unit: int
    serial: str | None = None
    dev: str | None = None
    ccw_address: CcwAddress | None = None

    def __post_init__(self) -> None:
        _set(self, "bus_type", _BUS_TYPES.get(self.bus_type, self.bus_type))


class FilesystemInfo(Described, frozen=True):
    """One ``guest-get-fsinfo`` entry (mounted, non-network filesystems)."""

    command = "guest-get-fsinfo"

    name: str
    mountpoint: str
    type: str
    disks: tuple[DiskAddress, ...] = msgspec.field(name="disk")
    used_bytes: int | None = None
    total_bytes: int | None = None


class DiskSmart(Described, frozen=True):
    """SMART data of a disk (GuestDiskSmart; qemu-ga 7.2 fills it for NVMe only).

    The members are GuestNVMeSmart's, all optional here; ``values`` keeps those
    sent, by their JSON names (``critical-warning``, ``data-units-read-lo``...);
    :meth:`counter` joins a 128-bit ``-lo``/``-hi`` pair.
    """

    command = "guest-get-disks"

    #: A DiskBusType, or the plain name of a newer one (as bus_type).
    type: str
    values: dict[str, int] = msgspec.field(default_factory=dict, name="gagent:values")
    critical_warning: int | None = None
    temperature: int | None = None
    available_spare: int | None = None
    available_spare_threshold: int | None = None
    percentage_used: int | None = None
    data_units_read_lo: int | None = None
    data_units_read_hi: int | None = None
    data_units_written_lo: int | None = None
    data_units_written_hi: int | None = None
    host_read_commands_lo: int | None = None
    host_read_commands_hi: int | None = None
    host_write_commands_lo: int | None = None
    host_write_commands_hi: int | None = None
    controller_busy_time_lo: int | None = None
    controller_busy_time_hi: int | None = None
    power_cycles_lo: int | None = None
    power_cycles_hi: int | None = None
    power_on_hours_lo: int | None = None
    power_on_hours_hi: int | None = None
    unsafe_shutdowns_lo: int | None = None
    unsafe_shutdowns_hi: int | None = None
    media_errors_lo: int | None = None
    media_errors_hi: int | None = None
    number_of_error_log_entries_lo: int | None = None
    number_of_error_log_entries_hi: int | None = None

    def __post_init__(self) -> None:
        _set(self, "type", _BUS_TYPES.get(self.type, self.type))
        if not self.values:
            names = self.__struct_encode_fields__[2:]
            fields = self.__struct_fields__[2:]
            values = {n: getattr(self, f) for n, f in zip(names, fields, strict=True)}
            _set(self, "values", {n: v for n, v in values.items() if v is not None})

    def counter(self, name: str) -> int | None:
        """``counter("data-units-read")`` = hi << 64 | lo, or None if absent."""
        low = self.values.get(f"{name}-lo")
        if low is None:
            return None
        return self.values.get(f"{name}-hi", 0) << 64 | low


class DiskInfo(Described, frozen=True):
    """One ``guest-get-disks`` entry: ``name`` is the device node, e.g. /dev/vda."""

    command = "guest-get-disks"

    name: str
    partition: bool
    dependencies: tuple[str, ...] = ()
    address: DiskAddress | None = None
    alias: str | None = None
    smart: DiskSmart | None = None


class DiskStats(Described, frozen=True):
    """Block-layer counters of one disk (all optional; ticks are milliseconds)."""

    command = "guest-get-diskstats"

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


class DiskStatsInfo(Described, frozen=True):
    """One ``guest-get-diskstats`` entry."""

    command = "guest-get-diskstats"

    name: str
    major: int
    minor: int
    stats: DiskStats


class FstrimResult(Described, frozen=True):
    """One path of ``guest-fstrim``: bytes ``trimmed``, or an ``error`` message."""

    command = "guest-fstrim"

    path: str
    trimmed: int | None = None
    minimum: int | None = None
    error: str | None = None

    @classmethod
    def list_from_json(cls, value: Any) -> list[FstrimResult]:
        """The reply is ``{"paths": [...]}``."""
        return FstrimResponse.from_json(value).paths


class FstrimResponse(Described, frozen=True):
    """``guest-fstrim`` (the typed command returns ``paths``)."""

    command = "guest-fstrim"

    paths: list[FstrimResult]


class FileRead(Described, frozen=True):
    """``guest-file-read``: ``data`` is decoded; ``eof`` says the end was reached."""

    command = "guest-file-read"

    data: bytes = msgspec.field(name="buf-b64")
    eof: bool
    #: What the agent says it read (checked against ``data``).
    count: int | None = None

    def __post_init__(self) -> None:
        if self.count is None:
            _set(self, "count", len(self.data))
        elif self.count != len(self.data):
            raise ValueError(f"count says {self.count} bytes but buf-b64 holds {len(self.data)}")


class FileWrite(Described, frozen=True):
    """``guest-file-write``: how many bytes the agent wrote."""

    command = "guest-file-write"

    count: int
    eof: bool


class FileSeek(Described, frozen=True):
    """``guest-file-seek``: the position after seeking."""

    command = "guest-file-seek"

    position: int
    eof: bool
