"""qemu-ga's hardware replies: network interfaces, vCPUs, memory blocks, CPU
statistics and devices, as frozen structs described once.

A companion of :mod:`gagent.types` (the agent and system replies).  Same rules:
tolerant of omitted optional members, strict on shape.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

import msgspec

from .decoding import Described

__all__ = [
    "CpuStats",
    "DeviceId",
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


class IpAddress(Described, frozen=True):
    command = "guest-network-get-interfaces"

    address: str = msgspec.field(name="ip-address")
    type: IpAddressType = msgspec.field(name="ip-address-type")
    prefix: int


class InterfaceStatistics(Described, frozen=True):
    command = "guest-network-get-interfaces"

    rx_bytes: int
    rx_packets: int
    rx_errs: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errs: int
    tx_dropped: int


class NetworkInterface(Described, frozen=True):
    """One ``guest-network-get-interfaces`` entry."""

    command = "guest-network-get-interfaces"

    name: str
    hardware_address: str | None = None
    ip_addresses: tuple[IpAddress, ...] = ()
    statistics: InterfaceStatistics | None = None


class VCpu(Described, frozen=True):
    """A logical processor (``guest-get-vcpus``; also the input of ``set_vcpus``)."""

    command = "guest-get-vcpus"

    logical_id: int
    online: bool
    can_offline: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"logical-id": self.logical_id, "online": self.online}


class MemoryBlock(Described, frozen=True):
    """A memory block (``guest-get-memory-blocks``; also the input of ``set_memory_blocks``)."""

    command = "guest-get-memory-blocks"

    phys_index: int
    online: bool
    can_offline: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"phys-index": self.phys_index, "online": self.online}


class MemoryBlockResponse(enum.StrEnum):
    SUCCESS = "success"
    NOT_FOUND = "not-found"
    OPERATION_NOT_SUPPORTED = "operation-not-supported"
    OPERATION_FAILED = "operation-failed"


class MemoryBlockResult(Described, frozen=True):
    """One ``guest-set-memory-blocks`` result; ``error_code`` is an errno on failure."""

    command = "guest-set-memory-blocks"

    phys_index: int
    response: MemoryBlockResponse
    error_code: int | None = None


class MemoryBlockInfo(Described, frozen=True):
    """``guest-get-memory-block-info``: the size of one block, in bytes."""

    command = "guest-get-memory-block-info"

    size: int


class CpuStats(Described, frozen=True):
    """One CPU of ``guest-get-cpustats`` (type "linux": times in milliseconds)."""

    command = "guest-get-cpustats"
    unknown_value = {"type": "unsupported statistics type {value} (this agent is newer)"}

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
    type: Literal["linux"] = "linux"


class DeviceId(Described, frozen=True):
    """GuestDeviceId: how a device is identified (``type`` "pci": both ids are required)."""

    command = "guest-get-devices"

    type: str
    vendor_id: int | None = None
    device_id: int | None = None

    def __post_init__(self) -> None:
        if self.type == "pci":
            for name, value in (("vendor-id", self.vendor_id), ("device-id", self.device_id)):
                if value is None:
                    raise ValueError(f"member '{name}' is missing")


class DeviceInfo(Described, frozen=True):
    """One ``guest-get-devices`` entry (Windows guests); ``driver_date`` is ns since the epoch.

    The agent's ``id`` (GuestDeviceId) is flattened into ``id_type`` and, for a
    PCI device, its two ids."""

    command = "guest-get-devices"

    driver_name: str
    driver_date: int | None = None
    driver_version: str | None = None
    id_type: str | None = msgspec.field(default=None, name="gagent:id-type")
    pci_vendor_id: int | None = msgspec.field(default=None, name="gagent:pci-vendor-id")
    pci_device_id: int | None = msgspec.field(default=None, name="gagent:pci-device-id")
    _id: DeviceId | None = msgspec.field(default=None, name="id")

    def __post_init__(self) -> None:
        device = self._id
        if device is not None:
            pci = device.type == "pci"
            _set(self, "id_type", device.type)
            _set(self, "pci_vendor_id", device.vendor_id if pci else None)
            _set(self, "pci_device_id", device.device_id if pci else None)


_set = msgspec.structs.force_setattr
