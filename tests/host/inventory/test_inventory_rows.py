"""A guest as a row of the guests table and back: by column name, every column the schema has."""

from __future__ import annotations

from gagent.host.inventory import AgentData, Disk, Guest, Nic, Store
from gagent.host.inventory.rows import (
    GUEST_COLUMNS,
    GUEST_FIELDS,
    UPDATED_FIELDS,
    guest_of,
    guest_values,
    row_by_name,
)


def test_the_fields_are_the_migrated_tables_columns(tmp_path):
    """A column a migration adds must be read and written by name too."""
    with Store.open(tmp_path / "inv.sqlite3") as store:
        columns = [row[1] for row in store.backend.execute("PRAGMA table_info(guests)")]
    assert sorted(GUEST_FIELDS) == sorted(columns)
    assert GUEST_COLUMNS.split(", ") == list(GUEST_FIELDS)
    assert set(GUEST_FIELDS) - set(UPDATED_FIELDS) == {"name", "hypervisor"}


def test_a_guest_goes_through_its_row_unchanged():
    guest = Guest(
        "kvm", "vm1", "h1", 7, 2, 2048,
        [Nic("bridge", "br0", "52:54:00:00:00:01")], [Disk("file", "/d/vm1.img", "vda")],
        "uuid-1", "running", manager="OpenStack nova",
    ).with_agent("ok", AgentData(version="8.0", hostname="vm1"))  # fmt: skip
    row = row_by_name(guest_values(GUEST_FIELDS, guest, 42, "2026-01-01T00:00:00.000+00:00"))
    assert (row["manager"], row["scan_id"], row["updated_at"]) == (
        "OpenStack nova", 42, "2026-01-01T00:00:00.000+00:00",
    )  # fmt: skip
    assert guest_of(row) == guest
    assert guest_values(("scan_id", "name"), guest, 42, "t") == (42, "vm1")
