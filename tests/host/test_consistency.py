"""gagent.host.consistency: the records' store (atomic, per domain UUID) and their summary."""

from __future__ import annotations

import json

from gagent.host.consistency import (
    ConsistencyRecord,
    DiskConsistency,
    delete_record,
    load_records,
    state_dir,
    write_record,
)

UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"


def record(name: str = "s1", **changes) -> ConsistencyRecord:
    made = ConsistencyRecord(
        domain="vm1", domain_uuid=UUID, snapshot=name, consistency="filesystem",
        policy="require", freeze_window_ms=12.4, qga_version="7.2.0",
        filesystems={"/data": "ext4"}, hooks={"/etc/gagent/fsfreeze-hook": True},
        disks=[DiskConsistency("vda", "/img/vda.s1", "/img/vda.raw", "filesystem", ["/data"])],
    )  # fmt: skip
    for key, value in changes.items():
        setattr(made, key, value)
    return made


def test_write_load_delete_round_trip(tmp_path):
    first, odd = record(), record("../we ird")
    path = write_record(first, tmp_path)
    write_record(odd, tmp_path)
    assert path.parent.parent == tmp_path / "snapshots" and path.name == "s1.json"
    assert sorted(p.name for p in path.parent.iterdir()) == ["..%2Fwe%20ird.json", "s1.json"]
    found = load_records(UUID, tmp_path)
    assert found == {"s1": first, "../we ird": odd}
    assert json.loads(path.read_text())["disks"][0]["mountpoints"] == ["/data"]
    assert delete_record(UUID, "s1", tmp_path) and not delete_record(UUID, "s1", tmp_path)
    assert list(load_records(UUID, tmp_path)) == ["../we ird"]
    assert load_records("other-uuid", tmp_path) == {}


def test_a_rewrite_replaces_whole_and_leaves_no_temporary(tmp_path):
    write_record(record(), tmp_path)
    path = write_record(record(consistency="crash", freeze_window_ms=None), tmp_path)
    assert [p.name for p in path.parent.iterdir()] == ["s1.json"]
    assert load_records(UUID, tmp_path)["s1"].consistency == "crash"


def test_unreadable_and_misnamed_files_are_skipped(tmp_path):
    path = write_record(record(), tmp_path)
    (path.parent / "broken.json").write_text("{not json")
    (path.parent / "other.json").write_text(path.read_text())  # says it is s1
    assert list(load_records(UUID, tmp_path)) == ["s1"]


def test_records_of_a_newer_gagent_load_known_fields():
    known = record()
    value = {**known.to_json(), "future": 1}
    value["disks"][0]["future"] = 2
    assert ConsistencyRecord.from_json(value) == known


def test_summary():
    assert record().summary() == "filesystem 12ms"
    assert record(consistency="crash", freeze_window_ms=None, fallback="no agent",
                  disks=[]).summary() == "crash (fallback)"  # fmt: skip
    mixed = record(disks=[DiskConsistency("vda", None, None, "filesystem"),
                          DiskConsistency("vdb", None, None, "crash")])  # fmt: skip
    assert mixed.summary() == "filesystem 12ms (per disk: vda=filesystem vdb=crash)"


def test_state_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GAGENT_STATE_DIR", str(tmp_path))
    assert state_dir() == tmp_path
    monkeypatch.delenv("GAGENT_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "x"))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert state_dir() == tmp_path / "x" / "gagent"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert str(state_dir()) == "/var/lib/gagent"
