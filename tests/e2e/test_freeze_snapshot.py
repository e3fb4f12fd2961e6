"""gagent.freeze and gagent.host.snapshot on a real guest (QEMU/TCG under a real libvirtd).

* a guest write blocks while ``frozen()`` holds the freeze and lands after the thaw;
* the two agents of one guest keep separate freeze states: after libvirt's
  freeze ours froze nothing (NothingFrozen), and our thaw ended libvirt's freeze;
* ``gagent snapshot create`` (gagent freeze, libvirt's quiesce, crash-consistent)
  makes overlays that ``qemu-img info --backing-chain`` shows on top of the
  base image, states the freeze window in ms; list, delete (libvirt merges the
  overlay back), ``gagent fsfreeze`` and the emergency ``gagent thaw``.

The write is started and watched through the *other* agent (libvirt's, still
serving guest-exec while ours is frozen).  Snapshot tests use the short-lived
``doomed_domain`` (its disk chain changes); the freeze tests the shared guest.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import trio

from gagent.freeze import NothingFrozen, frozen
from gagent.fs_types import FsfreezeStatus
from gagent.host.cli import cli, main
from gagent.host.cli.freeze import fsfreeze_group, snapshot_group, thaw_command
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

BLOCKED_FOR = 1.0


@pytest.fixture
def registered(monkeypatch):
    for command in (fsfreeze_group, snapshot_group, thaw_command):
        monkeypatch.setitem(cli.commands, command.name, command)


def gagent(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def backing_chain(image: str | Path) -> list[dict]:
    proc = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(image)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def test_guest_write_blocks_while_frozen_and_lands_after(main_domain):
    probe = f"/data/frozen-probe-{uuid.uuid4().hex[:8]}"
    name, uri = main_domain.name, main_domain.uri
    async with (
        open_domain_agent(name, uri=uri, transport="socket") as ours,
        open_domain_agent(name, uri=uri, transport="libvirt") as other,
    ):
        with trio.fail_after(120):
            async with frozen(ours, domain=name) as record:
                writer = await other.exec(
                    "/bin/sh", ["-c", f"echo x > {probe} && sync"], capture_output=True
                )
                blocked_until = trio.current_time() + BLOCKED_FOR
                while trio.current_time() < blocked_until:
                    status = await other.exec_status(writer)
                    assert not status.exited, f"a write to frozen /data completed: {status}"
                    await trio.sleep(0.2)
                assert await ours.fsfreeze_status() is FsfreezeStatus.FROZEN
            print(f"e2e: frozen {record.frozen} filesystem(s) for {record.window_ms:.1f} ms")
            assert record.frozen >= 1 and record.confirmed and record.thawed == record.frozen
            assert record.window_ms >= BLOCKED_FOR * 1000
            for _ in range(300):
                status = await other.exec_status(writer)
                if status.exited:
                    break
                await trio.sleep(0.1)
            assert status.exit_code == 0, status
            assert (await run_program(ours, ["/bin/cat", probe])).stdout == b"x\n"
            await run_program(ours, ["/bin/rm", "-f", probe])


async def test_two_agents_keep_separate_freeze_states(main_domain):
    name, uri = main_domain.name, main_domain.uri
    async with (
        open_domain_agent(name, uri=uri, transport="socket") as ours,
        open_domain_agent(name, uri=uri, transport="libvirt") as theirs,
    ):
        with trio.fail_after(120):
            try:
                assert await theirs.fsfreeze_freeze() >= 1
                assert await ours.fsfreeze_status() is FsfreezeStatus.THAWED
                with pytest.raises(NothingFrozen, match="our thaw ended it") as caught:
                    async with frozen(ours, domain=name):
                        raise AssertionError("the block must not run")
                record = caught.value.record
                assert record.frozen == 0 and record.thawed >= 1 and record.confirmed
                # libvirt's agent still believes it holds a freeze...
                assert await theirs.fsfreeze_status() is FsfreezeStatus.FROZEN
                # ... but our thaw ended it: a write lands
                write = await run_program(ours, ["/bin/sh", "-c", "echo y > /data/2 && sync"])
                assert write.exit_code == 0
            finally:
                with trio.CancelScope(shield=True), trio.fail_after(30):
                    await theirs.fsfreeze_thaw()
            assert await theirs.fsfreeze_status() is FsfreezeStatus.THAWED


def test_snapshot_workflow_through_the_cli(doomed_domain, registered, capsys):
    name, uri, base = doomed_domain.name, doomed_domain.uri, doomed_domain.data_disk

    # 1. gagent's own freeze, with metadata; the window is stated in ms
    code, out, err = gagent(capsys, "snapshot", "create", name, "s1", "-c", uri, "--json")
    assert (code, err) == (0, ""), err
    result = json.loads(out)
    assert result["method"] == "gagent-freeze" and result["metadata"]
    assert result["freeze"]["frozen"] >= 1 and result["freeze"]["window_ms"] > 0
    assert result["overhead_ms"] == pytest.approx(
        result["freeze"]["window_ms"] - result["snapshot_ms"]
    )
    with capsys.disabled():
        print(
            f"\ne2e: snapshot call {result['snapshot_ms']:.1f} ms, freeze window "
            f"{result['freeze']['window_ms']:.1f} ms, overhead {result['overhead_ms']:.1f} ms"
        )
    (disk,) = result["disks"]
    overlay = Path(disk["overlay"])
    assert disk["target"] == "vda" and disk["backing"] == str(base) and overlay.exists()
    chain = backing_chain(overlay)
    assert [i["format"] for i in chain] == ["qcow2", "raw"]
    assert chain[0]["full-backing-filename"] == str(base)

    code, out, _ = gagent(capsys, "snapshot", "list", name, "-c", uri)
    assert code == 0 and out.splitlines()[0].startswith("name ")
    assert out.splitlines()[1].startswith("s1 ") and str(overlay) in out

    # 2. delete: libvirt (>= 9.0) merges the overlay back into the base, live
    code, out, err = gagent(capsys, "snapshot", "delete", name, "s1", "-c", uri)
    assert (code, err) == (0, ""), err
    assert "merged back" in out
    assert f"file='{base}'" in doomed_domain.dom.XMLDesc(0) and not overlay.exists()
    assert gagent(capsys, "snapshot", "list", name, "-c", uri)[1] == "(no snapshots)\n"

    # 3. libvirt's own quiesce (its channel), no metadata, overlay path given
    explicit = doomed_domain.workdir / "vda-s2.qcow2"
    code, out, err = gagent(
        capsys, "snapshot", "create", name, "s2", "-c", uri,
        "--libvirt-quiesce", "--no-metadata", "--disk", f"vda={explicit}",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "filesystems frozen by libvirt's agent" in out and f"vda: {explicit}" in out
    assert doomed_domain.dom.snapshotNum() == 0

    # 4. crash-consistent: says so; the chain grows
    code, out, err = gagent(capsys, "snapshot", "create", name, "s3", "-c", uri, "--no-quiesce")
    assert (code, err) == (0, ""), err
    assert "CRASH-CONSISTENT" in out
    top = out.split("vda: ")[1].split(" ")[0]
    assert [i["filename"] for i in backing_chain(top)] == [top, str(explicit), str(base)]

    # 5. human output of a frozen snapshot states the window
    code, out, err = gagent(capsys, "snapshot", "create", name, "s4", "-c", uri)
    assert (code, err) == (0, ""), err
    assert "application-consistent" in out and "freeze window " in out and " ms = " in out


def test_fsfreeze_commands_and_emergency_thaw(doomed_domain, registered, capsys):
    name, uri = doomed_domain.name, doomed_domain.uri
    code, out, err = gagent(capsys, "fsfreeze", "freeze", name, "-c", uri)
    try:
        # the one line: the guest's dead-man's switch thaws a freeze left in place
        assert code == 0 and err.startswith(f"gagent: warning: {name}'s dead-man's switch"), err
        assert err.count("\n") == 1 and "60 s into this freeze" in err
        assert "they stay frozen" in out
        assert gagent(capsys, "fsfreeze", "status", name, "-c", uri)[1] == f"{name}: frozen\n"
        # the snapshot's thaw-on-connect would thaw it; without it, our freeze is refused
        code, _, err = gagent(
            capsys, "snapshot", "create", name, "x", "-c", uri, "--no-thaw-on-connect"
        )
        assert code == 13 and "already in its frozen state" in err  # a frozen guest
    finally:
        code, out, err = gagent(capsys, "thaw", name, "-c", uri)
    assert (code, err) == (0, ""), err
    ours, theirs = out.splitlines()
    assert "via " in ours and "confirmed" in ours and "thawed 0" not in ours
    assert "via libvirt" in theirs and "confirmed" in theirs
    assert gagent(capsys, "fsfreeze", "status", name, "-c", uri)[1] == f"{name}: thawed\n"
