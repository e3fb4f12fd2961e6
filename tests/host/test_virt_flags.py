"""gagent.host.virt_flags: libvirt's flag values without libvirt, checked against libvirt's own."""

from __future__ import annotations

import libvirt
import pytest

from gagent.host import virt_flags
from gagent.host.virt_flags import (
    affect_flags,
    migration_flags,
    migration_params,
    snapshot_create_flags,
    snapshot_delete_flags,
    xml_flags,
)

NAMES = [name for name in dir(virt_flags) if name.startswith("VIR_")]


def test_every_value_is_libvirts():
    assert len(NAMES) == 13
    assert {name: getattr(virt_flags, name) for name in NAMES} == {
        name: getattr(libvirt, name) for name in NAMES
    }


@pytest.mark.parametrize("inactive", [False, True])
def test_xml_flags(inactive):
    assert xml_flags(inactive=inactive) == (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0)


def test_flags_are_combined_from_the_options_given():
    assert affect_flags(live=True, config=False) == libvirt.VIR_DOMAIN_AFFECT_LIVE
    assert affect_flags(live=True, config=True) == (
        libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    )
    assert snapshot_create_flags(disk_only=True, atomic=True, no_metadata=False, quiesce=False) == (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    )
    assert snapshot_create_flags(disk_only=False, atomic=False, no_metadata=True, quiesce=True) == (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    )
    assert snapshot_delete_flags(metadata_only=False) == 0
    assert snapshot_delete_flags(metadata_only=True) == (
        libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY
    )
    assert migration_flags() == 0
    every = migration_flags(live=True, persist_dest=True, undefine_source=True, copy_storage=True)
    assert every == (
        libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_NON_SHARED_DISK
    )  # fmt: skip


def test_migration_params_name_the_uri_only_when_given():
    assert migration_params(uri=None) == {}
    assert migration_params(uri="tcp://10.0.0.2:49152") == {
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.0.0.2:49152"
    }
