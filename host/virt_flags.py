"""The flags and parameters gagent passes to libvirt, built from plain options.

libvirt-free (only ``host/virt_calls.py`` imports libvirt, which re-exports
these functions): the values are libvirt's public enum values, stable across
releases as its ABI is, named as libvirt names them; tests/host/test_virt_flags.py
checks each against libvirt's own constant.  Apart from virt_calls.py so that
what gagent asks of libvirt reads, and is tested, apart from how it is asked.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "affect_flags", "migration_flags", "migration_params", "snapshot_create_flags",
    "snapshot_delete_flags", "xml_flags",
]  # fmt: skip

VIR_DOMAIN_XML_INACTIVE = 2
VIR_DOMAIN_AFFECT_LIVE = 1
VIR_DOMAIN_AFFECT_CONFIG = 2
VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA = 4
VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY = 16
VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE = 64
VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC = 128
VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY = 2
VIR_MIGRATE_LIVE = 1
VIR_MIGRATE_PERSIST_DEST = 8
VIR_MIGRATE_UNDEFINE_SOURCE = 16
VIR_MIGRATE_NON_SHARED_DISK = 64
VIR_MIGRATE_PARAM_URI = "migrate_uri"


def _flags(*wanted: tuple[bool, int]) -> int:
    flags = 0
    for on, flag in wanted:
        if on:
            flags |= flag
    return flags


def xml_flags(*, inactive: bool) -> int:
    return VIR_DOMAIN_XML_INACTIVE if inactive else 0


def affect_flags(*, live: bool, config: bool) -> int:
    return _flags((live, VIR_DOMAIN_AFFECT_LIVE), (config, VIR_DOMAIN_AFFECT_CONFIG))


def snapshot_create_flags(
    *, disk_only: bool, atomic: bool, no_metadata: bool, quiesce: bool
) -> int:
    return _flags(
        (disk_only, VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY),
        (atomic, VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC),
        (no_metadata, VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA),
        (quiesce, VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE),
    )


def snapshot_delete_flags(*, metadata_only: bool) -> int:
    return VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0


def migration_flags(
    *,
    live: bool = False,
    persist_dest: bool = False,
    undefine_source: bool = False,
    copy_storage: bool = False,
) -> int:
    """libvirt's VIR_MIGRATE_* flags for these options."""
    return _flags(
        (live, VIR_MIGRATE_LIVE),
        (persist_dest, VIR_MIGRATE_PERSIST_DEST),
        (undefine_source, VIR_MIGRATE_UNDEFINE_SOURCE),
        (copy_storage, VIR_MIGRATE_NON_SHARED_DISK),
    )


def migration_params(*, uri: str | None) -> dict[str, Any]:
    """migrate3's parameters: the hypervisor's own migration URI, when given."""
    return {VIR_MIGRATE_PARAM_URI: uri} if uri else {}
