"""Group snapshots on three real guests: a consistent cut, and a naive sequence that is not.

Each guest runs a writer (python3) that appends ``SEQ STAMP`` lines to ``/data/cut.log``
on its data disk, every ~2 ms, STAMP being the guest's CLOCK_REALTIME in ns taken just
before the write.  Clocks: before and after, the host asks each guest's agent for its
time (guest-get-time, five samples, the one with the shortest round trip); a stamp is
put on the host's clock with the "before" offset, and a guest's error bound is half
that round trip plus how far its offset moved between "before" and "after" (half the
"after" round trip too).  Two guests' stamps compare within the sum of their bounds.

The consistent-cut property, read from the snapshotted images themselves (the backing
file of each new overlay, read with debugfs; a qcow2 one converted to raw first):
no image holds a record stamped later than a record another member wrote after its
own cut.  "Written after the cut": the *first* record missing from an image may have
been stamped before the freeze and blocked in write(2) by it, so the member's cut is
bounded by its *second* missing record, stamped only after the first one got through,
i.e. after the thaw.  A group snapshot holds every freeze together, so every image's
last record precedes every member's thaw; ``gagent snapshot create`` run on each domain
in turn does not (each thaws before the next freezes) and the same check fails on it.

``snapshot group delete`` then merges every member back.  Then the failures, on the
same guests (booting is the cost): a member destroyed in
the common window (the others thawed, their snapshots removed, the report names it),
and a member whose agents are stopped (nothing frozen anywhere, nothing taken).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from gagent.host.group_snapshot import GroupSnapshotFailed, Member, snapshot_group
from gagent.host.session import open_domain_agent
from gagent.host.virt import open_hypervisor
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

GAGENT = str(Path(sys.executable).with_name("gagent"))
#: Bounds that only catch a hang (a busy 2-CPU host runs TCG guests slowly).
BOUND = 240.0
LOG = "/data/cut.log"
WRITER = (
    "import os, time\n"
    f"fd = os.open('{LOG}', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
    "n = 0\n"
    "while not os.path.exists('/tmp/stop-writer'):\n"
    "    n += 1\n"
    "    os.write(fd, b'%d %d\\n' % (n, time.time_ns()))\n"
    "    time.sleep(0.002)\n"
)
PORTS = "org.gagent.agent.0 org.qemu.guest_agent.0"
INIT_SCRIPT = "/etc/gagent/sysvinit/gagent-qga"


def gagent(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run([GAGENT, *argv], capture_output=True, text=True, timeout=BOUND)
    return proc.returncode, proc.stdout, proc.stderr


async def sh(domain, script: str, transport: str = "libvirt") -> str:
    async with open_domain_agent(domain.name, uri=domain.uri, transport=transport) as agent:
        result = await run_program(agent, ["/bin/sh", "-c", script])
    assert result.exit_code == 0, (script, result)
    return result.stdout.decode()


async def clock_offset(domain) -> tuple[float, float]:
    """(guest - host offset in s, error bound in s) from the fastest of five round trips."""
    best = None
    async with open_domain_agent(domain.name, uri=domain.uri, transport="socket") as agent:
        for _ in range(5):
            before = time.time_ns()
            guest = await agent.time()
            after = time.time_ns()
            sample = ((guest - (before + after) / 2) / 1e9, (after - before) / 2e9)
            if best is None or sample[1] < best[1]:
                best = sample
    assert best is not None
    return best


def records(text: str) -> list[tuple[int, int]]:
    found = [tuple(map(int, line.split())) for line in text.splitlines() if line.strip()]
    assert [n for n, _ in found] == list(range(1, len(found) + 1)), "records lost or torn"
    return found  # type: ignore[return-value]


def image_log(image: str, workdir: Path) -> list[tuple[int, int]]:
    """The writer's file in a snapshotted image (never written: it is a backing file now)."""
    raw = Path(image)
    fmt = json.loads(subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", image], capture_output=True, text=True,
        timeout=BOUND, check=True,
    ).stdout)["format"]  # fmt: skip
    if fmt != "raw":
        raw = workdir / (Path(image).name + ".raw")
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", image, str(raw)],
                       timeout=BOUND, check=True)  # fmt: skip
    out = subprocess.run(["debugfs", "-R", f"cat {LOG.removeprefix('/data')}", str(raw)],
                         capture_output=True, text=True, timeout=BOUND, check=True)  # fmt: skip
    return records(out.stdout)


def cut_violations(
    images: dict[str, list], live: dict[str, list], clocks: dict
) -> tuple[list[str], float]:
    """Pairs (i, j) where image i holds a record stamped after member j's cut (see the doc),
    and the worst pair's distance (s; negative: how far every image stays before every cut)."""

    def host(name: str, stamp: int) -> float:
        return stamp / 1e9 - clocks[name][0]

    last, after_cut = {}, {}
    for name, image in images.items():
        assert image and live[name][: len(image)] == image, f"{name}: image not a prefix of the log"
        missing = live[name][len(image) :]
        assert len(missing) >= 2, f"{name}: the writer wrote too little after the snapshot"
        last[name], after_cut[name] = host(name, image[-1][1]), host(name, missing[1][1])
    found, worst = [], float("-inf")
    for i in images:
        for j in images:
            slack = clocks[i][1] + clocks[j][1]
            worst = max(worst, last[i] - after_cut[j]) if i != j else worst
            if i != j and last[i] > after_cut[j] + slack:
                found.append(f"{i}'s image holds a record {last[i] - after_cut[j]:.3f}s after "
                             f"{j}'s cut (clock bound {slack * 1000:.1f} ms)")  # fmt: skip
    return found, worst


async def test_group_snapshot_is_a_consistent_cut_and_fails_safely(
    doomed_domains, tmp_path: Path
) -> None:
    domains = await trio.to_thread.run_sync(doomed_domains, 3)  # (it runs trio itself)
    names = [d.name for d in domains]
    uri = domains[0].uri
    with trio.fail_after(BOUND):
        for d in domains:
            await sh(d, f'setsid python3 -c "{WRITER}" </dev/null >/dev/null 2>&1 &')
        before = {d.name: await clock_offset(d) for d in domains}
        await trio.sleep(1.5)

    # the group: one frozen instant
    code, out, err = gagent("snapshot", "group", "create", "cut", *names, "-c", uri, "--json")
    assert code == 0, (out, err)
    group = json.loads(out)
    assert group["consistency"] == "consistent" and group["window_ms"] > 0
    for member in group["members"]:
        assert member["state"] == "kept" and member["consistency"] == "filesystem"
        assert member["snapshot_start"]["monotonic"] >= group["window_start"]["monotonic"]
    print(f"e2e: group window {group['window_ms']:.1f} ms; frozen per member (ms): "
          + ", ".join(f"{m['frozen_ms']:.1f}" for m in group["members"]))  # fmt: skip

    # the naive sequence: each domain on its own freeze, one after the other
    naive, windows = {}, []
    for d in domains:
        code, out, err = gagent("snapshot", "create", d.name, "naive", "-c", uri, "--json")
        assert code == 0, err
        naive[d.name] = json.loads(out)["disks"][0]["backing"]
        windows.append(json.loads(out)["freeze"]["window_ms"])
    print("e2e: single snapshots frozen (ms): " + ", ".join(f"{w:.1f}" for w in windows))

    with trio.fail_after(BOUND):
        await trio.sleep(1.0)
        after = {d.name: await clock_offset(d) for d in domains}
        live = {}
        for d in domains:
            await sh(d, "touch /tmp/stop-writer; sleep 0.5")
            live[d.name] = records(await sh(d, f"cat {LOG}"))
    clocks = {n: (before[n][0], before[n][1] + after[n][1] + abs(after[n][0] - before[n][0]))
              for n in names}  # fmt: skip
    print("e2e: clock bounds (ms): " + ", ".join(f"{v[1] * 1000:.1f}" for v in clocks.values()))
    group_images = {m["domain"]: image_log(m["disks"][0]["backing"], tmp_path)
                    for m in group["members"]}  # fmt: skip
    naive_images = {n: image_log(path, tmp_path) for n, path in naive.items()}
    violations, worst = cut_violations(group_images, live, clocks)
    print(f"e2e: the group: every image ends {-worst * 1000:.1f} ms or more before every cut")
    assert violations == []
    violations, _ = cut_violations(naive_images, live, clocks)
    print("e2e: the naive sequence: " + "; ".join(violations))
    assert violations, "one-after-another snapshots must break the cut (else the check is blind)"

    # group delete: libvirt merges each member's overlay back (the naive ones first: newest)
    for d in domains:
        code, _, err = gagent("snapshot", "delete", d.name, "naive", "-c", uri)
        assert code == 0, err
    code, out, err = gagent("snapshot", "group", "delete", "cut")
    assert (code, out.splitlines()[-1]) == (0, "deleted group snapshot cut"), err
    for d in domains:
        assert d.dom.snapshotNum() == 0
        assert f"<source file='{d.data_disk}'" in d.dom.XMLDesc(0)
    code, out, _ = gagent("snapshot", "group", "list", "--json")
    assert "cut" not in [g["name"] for g in json.loads(out)]

    # a member destroyed in the common window: the others thawed, their snapshots removed
    first, doomed, third = domains
    taken = {d.name: d.dom.snapshotNum() for d in (first, third)}
    sources = {d.name: d.dom.XMLDesc(0).split("<source file='")[1].split("'")[0]
               for d in (first, third)}  # fmt: skip

    async def destroy() -> None:
        await trio.to_thread.run_sync(doomed.dom.destroy)

    warned: list[str] = []
    with trio.fail_after(BOUND):
        hypervisor = await open_hypervisor(uri)
        try:
            with pytest.raises(GroupSnapshotFailed) as caught:
                await snapshot_group(
                    [Member(n, uri, hypervisor) for n in names], "doomed", warn=warned.append,
                    thaw_timeout=6, on_frozen=destroy,
                )  # fmt: skip
        finally:
            await hypervisor.close()
    record = caught.value.record
    states = {m.domain: m.state for m in record.members}
    # (libvirt may still snapshot the shut-off domain's disks: then that one is removed too)
    assert states[first.name] == states[third.name] == "removed", (record.describe(), warned)
    assert states[doomed.name] in ("failed", "removed") and doomed.dom.snapshotNum() == 0
    assert doomed.name in str(caught.value) and "no freeze is left behind" in str(caught.value)
    assert record.consistency == "failed"
    for d in (first, third):
        assert d.dom.snapshotNum() == taken[d.name]
        assert d.dom.XMLDesc(0).split("<source file='")[1].split("'")[0] == sources[d.name]
        assert (await sh(d, "echo ok", transport="socket")).strip() == "ok"  # thawed: answers

    # a member whose agents are stopped: under require nothing freezes, nothing is taken
    with trio.fail_after(BOUND):
        await sh(third, f"setsid sh -c 'sleep 1; GAGENT_PORTS=\"{PORTS}\" {INIT_SCRIPT} stop' "
                        ">/dev/null 2>&1 </dev/null &")  # fmt: skip
        await third.wait_channel_state("org.qemu.guest_agent.0", "disconnected")
        last_freeze = await sh(first, "cat /run/gagent/deadman/last")
    files = sorted(p.name for p in first.data_disk.parent.iterdir())
    code, out, err = gagent("snapshot", "group", "create", "nope", first.name, third.name,
                            "-c", uri)  # fmt: skip
    assert code == 3, (out, err)  # EXIT_CODES: agent unreachable
    assert third.name in err and f"{third.name}: failed" in out
    with trio.fail_after(BOUND):
        assert await sh(first, "cat /run/gagent/deadman/last") == last_freeze  # no freeze
    assert sorted(p.name for p in first.data_disk.parent.iterdir()) == files
    assert first.dom.snapshotNum() == taken[first.name]
