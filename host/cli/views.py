"""Human views of typed results, where a generic table would be unreadable."""

from __future__ import annotations

import datetime
from typing import Any

from .render import format_table, human_bytes

__all__ = ["VIEWS"]


def _bus(address: Any) -> str:
    return str(getattr(address.bus_type, "value", address.bus_type))


def _disk_names(disks: Any) -> str:
    return ",".join(d.dev or _bus(d) for d in disks) or "-"


def fsinfo_view(filesystems: list[Any]) -> str:
    rows = []
    for fs in filesystems:
        used = "-"
        if fs.used_bytes is not None and fs.total_bytes:
            used = f"{100 * fs.used_bytes / fs.total_bytes:.0f}%"
        rows.append(
            (fs.mountpoint, fs.type, fs.name, human_bytes(fs.used_bytes),
             human_bytes(fs.total_bytes), used, _disk_names(fs.disks))
        )  # fmt: skip
    return format_table(["mountpoint", "type", "device", "used", "total", "use%", "disks"], rows)


def disks_view(disks: list[Any]) -> str:
    rows = [
        (d.name, "partition" if d.partition else "disk", ",".join(d.dependencies) or "-",
         _bus(d.address) if d.address else "-", (d.address.serial if d.address else None) or "-",
         d.alias or "-")
        for d in disks
    ]  # fmt: skip
    return format_table(["name", "kind", "depends on", "bus", "serial", "alias"], rows)


def interfaces_view(interfaces: list[Any]) -> str:
    rows = [
        (nic.name, nic.hardware_address or "-",
         [f"{a.address}/{a.prefix}" for a in nic.ip_addresses] or "-")
        for nic in interfaces
    ]  # fmt: skip
    return format_table(["interface", "mac", "addresses"], rows)


def users_view(users: list[Any]) -> str:
    if not users:
        return "(nobody logged in)"
    rows = [
        (u.user, u.domain or "-",
         datetime.datetime.fromtimestamp(u.login_time, datetime.UTC).isoformat(timespec="seconds"))
        for u in users
    ]  # fmt: skip
    return format_table(["user", "domain", "login (UTC)"], rows)


def time_view(ns: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)
    return f"{stamp.isoformat(timespec='microseconds')} ({ns} ns since the epoch)"


def osinfo_view(info: Any) -> str:
    return format_table(
        ["field", "value"],
        [(k, getattr(info, k)) for k in ("pretty_name", "id", "version_id", "kernel_release",
                                         "kernel_version", "machine")],
    )  # fmt: skip


#: method name -> human renderer
VIEWS = {
    "fsinfo": fsinfo_view,
    "disks": disks_view,
    "network_interfaces": interfaces_view,
    "users": users_view,
    "time": time_view,
    "osinfo": osinfo_view,
}
