"""gagent.host.freeze_findings: the preflight's verdict from facts written by hand."""

from __future__ import annotations

from gagent.fs_types import FilesystemInfo
from gagent.host.freeze_findings import (
    ERROR,
    INFO,
    WARNING,
    assess,
    deadman_warning,
    freeze_expected_to_work,
    missing_mountpoints,
)
from gagent.host.preflight import Deadman, GuestFacts, Mount

ALL_ENABLED = {
    "guest-fsfreeze-freeze": True,
    "guest-fsfreeze-freeze-list": True,
    "guest-fsfreeze-thaw": True,
    "guest-fsfreeze-status": True,
}
THAW = "gagent thaw vm1 -c qemu:///system"


def fs(name: str, point: str, fstype: str) -> FilesystemInfo:
    return FilesystemInfo.from_json({"name": name, "mountpoint": point, "type": fstype, "disk": []})


def mount(device: str, point: str, fstype: str = "ext4", options: str = "rw") -> Mount:
    return Mount(device, point, fstype, tuple(options.split(",")))


def facts(**changes) -> GuestFacts:
    made = GuestFacts(
        "domain vm1 via /run/vm1.sock",
        version="7.2.0",
        commands=dict(ALL_ENABLED),
        status="thawed",
        filesystems=[fs("vda", "/data", "ext4")],
        deadman=Deadman("on", 60),
        hooks={"/etc/gagent/fsfreeze-hook": True, "/etc/qemu/fsfreeze-hook": False},
        mounts=[mount("/dev/vda", "/data")],
        selinux="disabled",
    )
    for key, value in changes.items():
        setattr(made, key, value)
    return made


def by_code(found, code):
    return [f for f in found if f.code == code]


def test_a_healthy_guest_is_expected_to_freeze():
    found = assess(facts(), thaw_command=THAW)
    assert freeze_expected_to_work(found)
    assert {f.severity for f in found} == {INFO}
    assert "via /run/vm1.sock (qemu-ga 7.2.0)" in found[0].message


def test_a_blocked_freeze_is_an_error_with_the_way_to_enable_it():
    found = assess(
        facts(commands={**ALL_ENABLED, "guest-fsfreeze-freeze": False}), thaw_command=THAW
    )
    [blocked] = by_code(found, "command-disabled")
    assert blocked.severity == ERROR and "has disabled guest-fsfreeze-freeze" in blocked.message
    assert "--block-rpcs" in blocked.fix
    assert not freeze_expected_to_work(found)
    # with --mountpoint it is the -list variant that must be enabled
    listed = {**ALL_ENABLED, "guest-fsfreeze-freeze-list": None}
    found = assess(facts(commands=listed), thaw_command=THAW, mountpoints=["/data"])
    assert (
        "does not implement guest-fsfreeze-freeze-list"
        in by_code(found, "command-disabled")[0].message
    )


def test_already_frozen_names_the_thaw():
    found = assess(facts(status="frozen"), thaw_command=THAW)
    [frozen] = by_code(found, "already-frozen")
    assert frozen.severity == ERROR and THAW in frozen.fix


def test_a_mountpoint_the_guest_lacks():
    state = facts()
    assert missing_mountpoints(state, ["/data", "/data/", "/srv"]) == ["/srv"]
    found = assess(state, thaw_command=THAW, mountpoints=["/srv"])
    [missing] = by_code(found, "no-such-mountpoint")
    assert missing.severity == ERROR and "/srv" in missing.message and "/data" in missing.fix
    assert missing_mountpoints(facts(filesystems=None), ["/srv"]) == []  # unknown: not refused


def test_risky_mounts():
    mounts = [
        mount("/dev/vda", "/data"),
        mount("server:/export", "/mnt/nfs", "nfs4"),
        mount("sshfs", "/mnt/fuse", "fuse.sshfs"),
        mount("/dev/vdb", "/srv/ro", "ext4", "ro,relatime"),
    ]
    found = assess(facts(mounts=mounts), thaw_command=THAW)
    kinds = {f.message.split(" ")[0]: f.severity for f in by_code(found, "not-frozen-fs")}
    assert kinds == {"/mnt/nfs": WARNING, "/mnt/fuse": WARNING}
    [readonly] = by_code(found, "read-only")
    assert readonly.severity == INFO and "/srv/ro" in readonly.message
    assert freeze_expected_to_work(found)


def test_a_device_mounted_twice():
    twice = [fs("vda", "/data", "ext4"), fs("vda", "/srv", "ext4")]
    [finding] = by_code(assess(facts(filesystems=twice), thaw_command=THAW), "mounted-twice")
    assert "vda is mounted 2 times (/data, /srv)" in finding.message


def test_a_loop_device_on_a_frozen_parent():
    # mounted after its parent: qemu-ga (reverse mount order) freezes it first: a warning
    after = [mount("/dev/vda", "/data"), mount("/dev/loop0", "/mnt/loop")]
    found = assess(facts(mounts=after, loops={"loop0": "/data/disk.img"}), thaw_command=THAW)
    [loop] = by_code(found, "loop-device")
    assert loop.severity == WARNING and "backed by /data/disk.img on /data" in loop.message
    # its parent mounted after it (a remount): the parent freezes first and the freeze hangs
    before = [mount("/dev/loop0", "/mnt/loop"), mount("/dev/vda", "/data")]
    found = assess(facts(mounts=before, loops={"loop0": "/data/disk.img"}), thaw_command=THAW)
    [loop] = by_code(found, "loop-device")
    assert loop.severity == ERROR and "the freeze hangs" in loop.message
    assert not freeze_expected_to_work(found)
    # backed by a file on a filesystem no freeze touches (tmpfs is not a block device)
    tmp = [mount("tmpfs", "/tmp", "tmpfs"), mount("/dev/loop1", "/mnt/l1")]
    found = assess(facts(mounts=tmp, loops={"loop1": "/tmp/x.img"}), thaw_command=THAW)
    assert by_code(found, "loop-device")[0].severity == INFO


def test_safety_nets_missing():
    found = assess(
        facts(hooks={"/etc/gagent/fsfreeze-hook": False}, deadman=Deadman("absent"),
              selinux="enforcing"),
        thaw_command=THAW,
    )  # fmt: skip
    assert by_code(found, "no-hooks")[0].severity == WARNING
    assert "no dead-man's switch" in by_code(found, "deadman")[0].message
    assert "ausearch" in by_code(found, "selinux")[0].fix
    assert freeze_expected_to_work(found)  # all warnings: the freeze itself works


def test_deadman_warning_lines():
    assert deadman_warning(facts(), "vm1", 60.0) is None  # not shorter
    line = deadman_warning(facts(deadman=Deadman("on", 5)), "vm1", 60.0)
    assert line.startswith("vm1's dead-man's switch thaws it after 5 s, shorter than the 60 s")
    held = deadman_warning(facts(), "vm1", None)  # fsfreeze freeze: left frozen
    assert "thaws it by itself 60 s into this freeze" in held
    unread = deadman_warning(facts(deadman=Deadman("unreadable", reason="blocked")), "vm1", 60)
    assert unread.startswith("could not read vm1's freeze dead-man's deadline (blocked)")
    assert deadman_warning(facts(deadman=Deadman("off", 0)), "vm1", 60.0) is None
    assert deadman_warning(facts(deadman=Deadman("absent")), "vm1", 60.0) is None
