"""The freeze preflight's verdict: findings, each with a fix, from :class:`GuestFacts` (pure).

Severities: ``error`` (a freeze is not expected to work, or would hang the
guest), ``warning`` (it works, but something will not be consistent, or a
safety net is missing), ``info``.  :func:`assess` never talks to a guest, so
every rule is tested on facts written by hand.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from gagent.freeze import FREEZE, FREEZE_LIST, STATUS, THAW

from .preflight import DEADMAN_CONFIG, GuestFacts, Mount

__all__ = [
    "ERROR", "INFO", "NETWORK_FS", "WARNING", "Finding", "assess", "deadman_warning",
    "freeze_expected_to_work", "missing_mountpoints",
]  # fmt: skip

ERROR, WARNING, INFO = "error", "warning", "info"
#: Filesystems qemu-ga never freezes (no block device behind them).
NETWORK_FS = frozenset(
    "nfs nfs4 cifs smb3 smbfs ceph glusterfs 9p virtiofs afs ncpfs lustre gfs2 ocfs2".split()
)
BLOCK_HINT = (
    "enable it in the guest: drop it from qemu-ga's --block-rpcs (gagent-guest: "
    "GAGENT_QGA_ARGS in /etc/default/gagent-qga) or from /etc/qemu/qemu-ga.conf, and "
    "restart qemu-ga"
)


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    fix: str = ""


def freeze_expected_to_work(findings: Iterable[Finding]) -> bool:
    return not any(f.severity == ERROR for f in findings)


def missing_mountpoints(facts: GuestFacts, wanted: Iterable[str]) -> list[str]:
    """The requested mountpoints that guest-get-fsinfo does not list ([] when unknown)."""
    if facts.filesystems is None:
        return []
    have = {fs.mountpoint for fs in facts.filesystems}
    return [m for m in wanted if m not in have and m.rstrip("/") not in have]


def deadman_warning(facts: GuestFacts, domain: str, hold: float | None) -> str | None:
    """One line when the guest's dead-man's switch would thaw before ``hold`` seconds
    (None: the freeze is left in place, as 'fsfreeze freeze' does), or cannot be read."""
    deadman = facts.deadman
    if deadman is None:
        return None
    if deadman.state == "unreadable":
        return (
            f"could not read {domain}'s freeze dead-man's deadline ({deadman.reason}): "
            "how long the guest tolerates this freeze is unknown"
        )
    if deadman.state != "on" or deadman.deadline is None:
        return None
    if hold is None:
        return (
            f"{domain}'s dead-man's switch thaws it by itself {deadman.deadline} s into this "
            f"freeze (GAGENT_FREEZE_DEADLINE in the guest's {DEADMAN_CONFIG}): thaw before then"
        )
    if deadman.deadline < hold:
        return (
            f"{domain}'s dead-man's switch thaws it after {deadman.deadline} s, shorter than "
            f"the {hold:g} s this may hold the freeze: a slow snapshot would end up "
            "crash-consistent (lower the timeout, or raise GAGENT_FREEZE_DEADLINE in "
            f"{DEADMAN_CONFIG})"
        )
    return None


def assess(
    facts: GuestFacts, *, thaw_command: str, mountpoints: Iterable[str] = ()
) -> list[Finding]:
    """Every finding about ``facts``; ``thaw_command`` is what thaws this domain."""
    wanted = list(mountpoints)
    found = [Finding("agent", INFO, f"agent answers on {facts.route} (qemu-ga {facts.version})")]
    found += _commands(facts, bool(wanted))
    if facts.status == "frozen":
        found.append(
            Finding("already-frozen", ERROR, "the guest's agent is in its frozen state already",
                    f"thaw it: {thaw_command}")
        )  # fmt: skip
        return found
    found += _filesystems(facts, wanted)
    found += _mount_risks(facts)
    found += _safety_nets(facts)
    for question, why in facts.problems.items():
        if question not in ("hooks", "filesystems"):
            found.append(Finding(f"unknown-{question.split()[0]}", INFO, f"{question}: {why}"))
    return found


def _commands(facts: GuestFacts, listed: bool) -> list[Finding]:
    needed = [FREEZE_LIST if listed else FREEZE, THAW, STATUS]
    found = []
    for command in needed:
        state = facts.commands.get(command)
        if state:
            continue
        what = "does not implement" if state is None else "has disabled"
        found.append(
            Finding("command-disabled", ERROR, f"the guest's qemu-ga {what} {command}",
                    BLOCK_HINT if state is False else "update qemu-ga in the guest")
        )  # fmt: skip
    return found


def _filesystems(facts: GuestFacts, wanted: list[str]) -> list[Finding]:
    if facts.filesystems is None:
        why = facts.problems.get("filesystems", "unknown")
        return [Finding("fsinfo", WARNING, f"the guest's filesystems are unknown ({why})")]
    found = []
    points = [fs.mountpoint for fs in facts.filesystems]
    if not points:
        found.append(
            Finding("nothing-freezable", ERROR, "guest-get-fsinfo lists no filesystem to freeze",
                    "give the guest a disk-backed filesystem (tmpfs cannot be frozen)")
        )  # fmt: skip
    else:
        listed = ", ".join(f"{fs.mountpoint} ({fs.type} on {fs.name})" for fs in facts.filesystems)
        found.append(Finding("filesystems", INFO, f"freezable: {listed}"))
    for missing in missing_mountpoints(facts, wanted):
        found.append(
            Finding("no-such-mountpoint", ERROR,
                    f"the guest has no filesystem mounted on {missing}",
                    f"choose among: {', '.join(points)}")
        )  # fmt: skip
    devices: dict[str, list[str]] = {}
    for fs in facts.filesystems:
        devices.setdefault(fs.name, []).append(fs.mountpoint)
    for device, where in devices.items():
        if len(where) > 1:
            found.append(
                Finding("mounted-twice", INFO,
                        f"{device} is mounted {len(where)} times ({', '.join(where)}): frozen "
                        "once, the others are skipped as already frozen",
                        "nothing to do; with --mountpoint name one of them")
            )  # fmt: skip
    return found


def _parent(mounts: list[Mount], path: str) -> Mount | None:
    """The mount holding ``path``: the longest mountpoint prefix, the latest of equals."""
    best = None
    for mount in mounts:
        point = mount.mountpoint
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best.mountpoint):
                best = mount
    return best


def _mount_risks(facts: GuestFacts) -> list[Finding]:
    found = []
    mounts = facts.mounts or []
    for index, mount in enumerate(mounts):
        fstype = mount.fstype
        if fstype in NETWORK_FS or fstype.startswith("fuse"):
            kind = "FUSE" if fstype.startswith("fuse") else "network"
            found.append(
                Finding("not-frozen-fs", WARNING,
                        f"{mount.mountpoint} is a {kind} filesystem ({fstype}): qemu-ga does not "
                        "freeze it, so its data is not consistent in a snapshot",
                        "quiesce what writes there with an fsfreeze hook, or accept it")
            )  # fmt: skip
        elif mount.readonly and mount.device.startswith("/dev/"):
            found.append(
                Finding("read-only", INFO,
                        f"{mount.mountpoint} ({mount.device}) is mounted read-only: nothing of it "
                        "needs freezing; a remount read-write during the freeze would block",
                        "nothing to do; leave it out with --mountpoint to skip it")
            )  # fmt: skip
        name = mount.device.removeprefix("/dev/")
        if name in facts.loops:
            found.append(_loop_finding(facts, mounts, index, mount, facts.loops[name]))
    return found


def _loop_finding(
    facts: GuestFacts, mounts: list[Mount], index: int, mount: Mount, backing: str | None
) -> Finding:
    where = f"{mount.mountpoint} is on loop device {mount.device}"
    if backing is None:
        return Finding(
            "loop-device", WARNING, f"{where}, its backing file is unknown",
            "make sure its backing file's filesystem is not frozen before it",
        )  # fmt: skip
    parent = _parent(mounts, posixpath.normpath(backing.removesuffix(" (deleted)")))
    if parent is None or not parent.device.startswith("/dev/") or parent.fstype in NETWORK_FS:
        # (a tmpfs, network or FUSE parent: no freeze touches it)
        return Finding("loop-device", INFO, f"{where}, backed by {backing}")
    # qemu-ga freezes in reverse mount order: a loop mounted after its parent freezes first
    # and flushes into it; mounted before, the parent freezes first and the loop's flush hangs.
    parent_index = mounts.index(parent)
    risk = f"{where}, backed by {backing} on {parent.mountpoint}, which the same freeze covers"
    if parent_index > index:
        return Finding(
            "loop-device", ERROR,
            f"{risk}; {parent.mountpoint} was mounted after it, so qemu-ga freezes it first and "
            "the loop filesystem's flush would block on it: the freeze hangs",
            f"freeze with --mountpoint, naming {mount.mountpoint} and {parent.mountpoint} in "
            "separate freezes never held together, or remount the loop filesystem",
        )  # fmt: skip
    return Finding(
        "loop-device", WARNING,
        f"{risk}; it freezes before its parent now, but a freeze of {parent.mountpoint} alone "
        "(or by another agent) blocks writes to it",
        f"freeze both together (not {parent.mountpoint} alone), or move {backing} to a "
        "filesystem that is not frozen",
    )  # fmt: skip


def _safety_nets(facts: GuestFacts) -> list[Finding]:
    found = []
    present = [hook for hook, here in facts.hooks.items() if here]
    if present:
        found.append(Finding("hooks", INFO, f"fsfreeze hook present: {', '.join(present)}"))
    elif any(here is None for here in facts.hooks.values()):
        found.append(Finding("hooks", INFO, f"fsfreeze hooks unknown ({facts.problems['hooks']})"))
    else:
        found.append(
            Finding("no-hooks", WARNING,
                    "no fsfreeze hook: filesystems freeze, applications (databases) are not told",
                    "install gagent-guest (its hook runs /etc/gagent/fsfreeze-hook.d/*) or run "
                    "qemu-ga with --fsfreeze-hook")
        )  # fmt: skip
    deadman = facts.deadman
    if deadman is not None and deadman.state == "on":
        found.append(
            Finding("deadman", INFO, f"dead-man's switch on: the guest thaws itself after "
                    f"{deadman.deadline} s frozen")
        )  # fmt: skip
    elif deadman is not None and deadman.state == "unreadable":
        found.append(
            Finding("deadman", INFO, f"dead-man's switch unknown ({deadman.reason})",
                    f"allow guest-file-open and guest-file-read, so {DEADMAN_CONFIG} can be read")
        )  # fmt: skip
    elif deadman is not None:
        says = {
            "off": "dead-man's switch off (GAGENT_FREEZE_DEADLINE=0)",
            "absent": "no dead-man's switch in the guest",
        }[deadman.state]
        found.append(
            Finding("deadman", WARNING, f"{says}: a freeze whose host dies stays until thawed",
                    "install gagent-guest in the guest and keep GAGENT_FREEZE_DEADLINE above 0 "
                    f"in {DEADMAN_CONFIG}")
        )  # fmt: skip
    if facts.selinux == "enforcing":
        found.append(
            Finding("selinux", WARNING,
                    "SELinux is enforcing: it may deny qemu-ga's freeze or its hooks",
                    "after a failed freeze look for denials (ausearch -m avc -c qemu-ga) and "
                    "allow them, e.g. setsebool -P virt_qemu_ga_run_unconfined 1 for hooks")
        )  # fmt: skip
    elif facts.selinux is not None:
        found.append(Finding("selinux", INFO, f"SELinux {facts.selinux}"))
    return found
