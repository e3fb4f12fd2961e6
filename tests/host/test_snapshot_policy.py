"""gagent.host.snapshot_policy's pure parts: the record of a snapshot, and which failures
'prefer' may fall back from (the policy at the command line: tests/host/cli)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gagent.errors import AgentUnavailable, HostError
from gagent.freeze import FreezeRecord
from gagent.fs_types import FilesystemInfo
from gagent.host import snapshot_policy
from gagent.host.consistency import load_records
from gagent.host.preflight import Deadman, GuestFacts
from gagent.host.reach import Transport
from gagent.host.snapshot import SnapshotDisk, SnapshotMethod, SnapshotResult
from gagent.host.snapshot_policy import _freeze_failed, build_record

SESSION = SimpleNamespace(name="vm1", domain=SimpleNamespace(uuid="u-1"))


def fs(name: str, point: str, dev: str | None) -> FilesystemInfo:
    disk = [] if dev is None else [{
        "pci-controller": {"domain": 0, "bus": 0, "slot": 4, "function": 0},
        "bus-type": "virtio", "bus": 0, "target": 0, "unit": 0, "dev": dev,
    }]  # fmt: skip
    return FilesystemInfo.from_json(
        {"name": name, "mountpoint": point, "type": "ext4", "disk": disk}
    )


FACTS = GuestFacts(
    "domain vm1 via /s", version="7.2.0",
    filesystems=[fs("vda", "/data", "/dev/vda"), fs("vdb1", "/srv", "/dev/vdb")],
    deadman=Deadman("on", 60), hooks={"/etc/gagent/fsfreeze-hook": True},
)  # fmt: skip


def result(method: SnapshotMethod, window: float | None = 12.5) -> SnapshotResult:
    freeze = FreezeRecord(frozen=2, window_ms=window) if window is not None else None
    disks = [SnapshotDisk("vda", "/o/vda", "/b/vda"), SnapshotDisk("vdb", "/o/vdb", "/b/vdb")]
    return SnapshotResult("vm1", "s1", method, True, disks, 3.0, freeze)


def test_a_gagent_freeze_of_every_filesystem():
    record = build_record(
        SESSION, result(SnapshotMethod.GAGENT_FREEZE), "require", FACTS, None, None
    )
    assert (record.consistency, record.freeze_window_ms, record.qga_version) == (
        "filesystem",
        12.5,
        "7.2.0",
    )
    assert record.filesystems == {"/data": "ext4", "/srv": "ext4"}
    assert [(d.target, d.consistency, d.mountpoints) for d in record.disks] == [
        ("vda", "filesystem", ["/data"]), ("vdb", "filesystem", ["/srv"]),
    ]  # fmt: skip
    assert record.hooks == {"/etc/gagent/fsfreeze-hook": True} and record.deadman_deadline == 60
    assert record.domain_uuid == "u-1" and record.policy == "require"


def test_with_mountpoint_a_disk_none_of_whose_filesystems_froze_is_crash_consistent():
    record = build_record(
        SESSION, result(SnapshotMethod.GAGENT_FREEZE), "require", FACTS, ["/data"], None
    )
    assert record.filesystems == {"/data": "ext4"}
    assert [d.consistency for d in record.disks] == ["filesystem", "crash"]
    assert record.summary() == "filesystem 12ms (per disk: vda=filesystem vdb=crash)"


def test_a_fallback_and_a_crash_snapshot():
    record = build_record(
        SESSION, result(SnapshotMethod.CRASH_CONSISTENT, None), "prefer", FACTS, None, "no agent"
    )
    assert record.consistency == "crash" and record.fallback == "no agent"
    assert record.filesystems == {} and record.hooks == {} and record.freeze_window_ms is None
    assert {d.consistency for d in record.disks} == {"crash"}
    offline = build_record(
        SESSION, result(SnapshotMethod.OFFLINE, None), "require", None, None, None
    )
    assert offline.consistency == "offline" and offline.qga_version is None


def test_prefer_falls_back_only_from_a_failed_freeze():
    libvirt_route = SimpleNamespace(transport=Transport.LIBVIRT)
    socket_route = SimpleNamespace(transport=Transport.SOCKET)
    assert _freeze_failed(AgentUnavailable("no channel"), None)
    agent_down = HostError("creating a snapshot: QEMU guest agent is not connected")
    assert _freeze_failed(agent_down, libvirt_route)  # libvirt's quiesce failed
    assert not _freeze_failed(agent_down, socket_route)  # libvirt's snapshot failed, not a freeze
    assert not _freeze_failed(HostError("disk image exists"), libvirt_route)


# ------------------------------------------------ the policy, around a stand-in snapshot


class Session(SimpleNamespace):
    def command(self, *words: str, options: tuple[str, ...] = ()) -> str:
        return " ".join(["gagent", *words, self.name, *options])


SESSION_WITH_COMMAND = Session(name="vm1", domain=SimpleNamespace(uuid="u-1"))


def stand_in(outcomes: list):
    """snapshot_session's stand-in: raises or returns the next outcome, records the calls."""
    calls = []

    async def fake(session, name, **options):
        calls.append(options)
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return fake, calls


async def test_prefer_falls_back_records_why_and_a_store_failure_is_one_warning(
    monkeypatch, tmp_path
):
    failed = AgentUnavailable("the agent of vm1 did not answer within 10s")
    fake, calls = stand_in([failed, result(SnapshotMethod.CRASH_CONSISTENT, None)])
    monkeypatch.setattr(snapshot_policy, "snapshot_session", fake)
    warned: list[str] = []
    got, record = await snapshot_policy.create_snapshot(
        SESSION_WITH_COMMAND, "s1", policy="prefer", warn=warned.append, store=tmp_path
    )
    assert [c.get("quiesce", True) for c in calls] == [True, False]
    assert got.method is SnapshotMethod.CRASH_CONSISTENT and record.fallback == str(failed)
    [line] = warned
    assert line.startswith("could not freeze vm1 (the agent of vm1 did not answer")
    assert load_records("u-1", tmp_path)["s1"].fallback == str(failed)

    # require: the same failure is the error, and nothing is taken or stored
    fake, calls = stand_in([failed])
    monkeypatch.setattr(snapshot_policy, "snapshot_session", fake)
    with pytest.raises(AgentUnavailable):
        await snapshot_policy.create_snapshot(
            SESSION_WITH_COMMAND, "s2", warn=warned.append, store=tmp_path
        )
    assert len(calls) == 1 and "s2" not in load_records("u-1", tmp_path)

    # a store that cannot be written: the snapshot stands, one warning says so
    blocker = tmp_path / "file"
    blocker.write_text("")
    fake, _ = stand_in([result(SnapshotMethod.GAGENT_FREEZE)])
    monkeypatch.setattr(snapshot_policy, "snapshot_session", fake)
    warned.clear()
    got, _ = await snapshot_policy.create_snapshot(
        SESSION_WITH_COMMAND, "s3", warn=warned.append, store=blocker
    )
    assert got.method is SnapshotMethod.GAGENT_FREEZE
    [line] = warned
    assert "consistency record could not be stored" in line and "GAGENT_STATE_DIR" in line
