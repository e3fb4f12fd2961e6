"""Frozen dataclasses for qemu-ga's hardware replies: network interfaces, vCPUs,
memory blocks, CPU statistics and devices.

A companion of :mod:`gagent.types` (the agent and system replies, and the
shared parsing helpers).  Same rules: tolerant of omitted optional members,
strict on shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .types import (
    enum_member,
    expect_dict,
    field_names,
    int_members,
    member,
    shape_error,
)

__all__ = [
    "CpuStats",
    "DeviceInfo",
    "InterfaceStatistics",
    "IpAddress",
    "IpAddressType",
    "MemoryBlock",
    "MemoryBlockInfo",
    "MemoryBlockResponse",
    "MemoryBlockResult",
    "NetworkInterface",
    "VCpu",
]


class IpAddressType(enum.StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"


@dataclass(frozen=True, slots=True)
class IpAddress:
    address: str
    type: IpAddressType
    prefix: int

    @classmethod
    def from_json(cls, value: Any) -> IpAddress:
        what = "guest-network-get-interfaces ip-addresses"
        value = expect_dict(value, what)
        return cls(
            address=member(value, "ip-address", str, what),
            type=enum_member(IpAddressType, member(value, "ip-address-type", str, what), what),
            prefix=member(value, "prefix", int, what),
        )


@dataclass(frozen=True, slots=True)
class InterfaceStatistics:
    rx_bytes: int
    rx_packets: int
    rx_errs: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errs: int
    tx_dropped: int

    @classmethod
    def from_json(cls, value: Any) -> InterfaceStatistics:
        what = "guest-network-get-interfaces statistics"
        return cls(**int_members(expect_dict(value, what), field_names(cls), what, optional=False))


@dataclass(frozen=True, slots=True)
class NetworkInterface:
    """One ``guest-network-get-interfaces`` entry."""

    name: str
    hardware_address: str | None = None
    ip_addresses: tuple[IpAddress, ...] = ()
    statistics: InterfaceStatistics | None = None

    @classmethod
    def from_json(cls, value: Any) -> NetworkInterface:
        what = "guest-network-get-interfaces"
        value = expect_dict(value, what)
        addresses = member(value, "ip-addresses", list, what, optional=True) or []
        statistics = member(value, "statistics", dict, what, optional=True)
        return cls(
            name=member(value, "name", str, what),
            hardware_address=member(value, "hardware-address", str, what, optional=True),
            ip_addresses=tuple(IpAddress.from_json(a) for a in addresses),
            statistics=None if statistics is None else InterfaceStatistics.from_json(statistics),
        )


@dataclass(frozen=True, slots=True)
class VCpu:
    """A logical processor (``guest-get-vcpus``; also the input of ``set_vcpus``)."""

    logical_id: int
    online: bool
    can_offline: bool | None = None

    @classmethod
    def from_json(cls, value: Any) -> VCpu:
        what = "guest-get-vcpus"
        value = expect_dict(value, what)
        return cls(
            logical_id=member(value, "logical-id", int, what),
            online=member(value, "online", bool, what),
            can_offline=member(value, "can-offline", bool, what, optional=True),
        )

    def to_json(self) -> dict[str, Any]:
        return {"logical-id": self.logical_id, "online": self.online}


@dataclass(frozen=True, slots=True)
class MemoryBlock:
    """A memory block (``guest-get-memory-blocks``; also the input of ``set_memory_blocks``)."""

    phys_index: int
    online: bool
    can_offline: bool | None = None

    @classmethod
    def from_json(cls, value: Any) -> MemoryBlock:
        what = "guest-get-memory-blocks"
        value = expect_dict(value, what)
        return cls(
            phys_index=member(value, "phys-index", int, what),
            online=member(value, "online", bool, what),
            can_offline=member(value, "can-offline", bool, what, optional=True),
        )

    def to_json(self) -> dict[str, Any]:
        return {"phys-index": self.phys_index, "online": self.online}


class MemoryBlockResponse(enum.StrEnum):
    SUCCESS = "success"
    NOT_FOUND = "not-found"
    OPERATION_NOT_SUPPORTED = "operation-not-supported"
    OPERATION_FAILED = "operation-failed"


@dataclass(frozen=True, slots=True)
class MemoryBlockResult:
    """One ``guest-set-memory-blocks`` result; ``error_code`` is an errno on failure."""

    phys_index: int
    response: MemoryBlockResponse
    error_code: int | None = None

    @classmethod
    def from_json(cls, value: Any) -> MemoryBlockResult:
        what = "guest-set-memory-blocks"
        value = expect_dict(value, what)
        return cls(
            phys_index=member(value, "phys-index", int, what),
            response=enum_member(MemoryBlockResponse, member(value, "response", str, what), what),
            error_code=member(value, "error-code", int, what, optional=True),
        )


@dataclass(frozen=True, slots=True)
class MemoryBlockInfo:
    """``guest-get-memory-block-info``: the size of one block, in bytes."""

    size: int

    @classmethod
    def from_json(cls, value: Any) -> MemoryBlockInfo:
        what = "guest-get-memory-block-info"
        return cls(size=member(expect_dict(value, what), "size", int, what))


_CPU_TIMES = ("cpu", "user", "nice", "system", "idle")


@dataclass(frozen=True, slots=True)
class CpuStats:
    """One CPU of ``guest-get-cpustats`` (type "linux": times in milliseconds)."""

    cpu: int
    user: int
    nice: int
    system: int
    idle: int
    iowait: int | None = None
    irq: int | None = None
    softirq: int | None = None
    steal: int | None = None
    guest: int | None = None
    guestnice: int | None = None
    type: str = "linux"

    @classmethod
    def from_json(cls, value: Any) -> CpuStats:
        what = "guest-get-cpustats"
        value = expect_dict(value, what)
        kind = member(value, "type", str, what)
        if kind != "linux":
            raise shape_error(what, f"unsupported statistics type {kind!r} (this agent is newer)")
        return cls(
            type=kind,
            **int_members(value, _CPU_TIMES, what, optional=False),
            **int_members(value, field_names(cls, skip=("type", *_CPU_TIMES)), what, optional=True),
        )


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One ``guest-get-devices`` entry (Windows guests); ``driver_date`` is ns since the epoch."""

    driver_name: str
    driver_date: int | None = None
    driver_version: str | None = None
    id_type: str | None = None
    pci_vendor_id: int | None = None
    pci_device_id: int | None = None

    @classmethod
    def from_json(cls, value: Any) -> DeviceInfo:
        what = "guest-get-devices"
        value = expect_dict(value, what)
        device_id = member(value, "id", dict, what, optional=True) or {}
        id_type = member(device_id, "type", str, what, optional=True)
        pci = id_type == "pci"
        return cls(
            driver_name=member(value, "driver-name", str, what),
            driver_date=member(value, "driver-date", int, what, optional=True),
            driver_version=member(value, "driver-version", str, what, optional=True),
            id_type=id_type,
            pci_vendor_id=member(device_id, "vendor-id", int, what) if pci else None,
            pci_device_id=member(device_id, "device-id", int, what) if pci else None,
        )
