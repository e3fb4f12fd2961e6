"""fsfreeze on the shared guest; a disk-only external snapshot taken while frozen.

Each qemu-ga process keeps its own freeze state: the guest runs one on
gagent's channel and one on libvirt's.  The freeze goes through ours; the
guest write that must block is started (and watched) through the other,
which still runs guest-exec and guest-exec-status while ours refuses them.
"""

from __future__ import annotations

import json
import uuid

import libvirt
import pytest
import trio

from gagent.errors import FrozenStateViolation, GuestFrozen
from gagent.fs_types import FsfreezeStatus
from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

#: How long the blocked write must stay blocked while frozen.
BLOCKED_FOR = 1.0


async def _thaw(agent) -> int:
    """Thaw whatever happens to the caller (cancelled or not), within a bound."""
    with trio.CancelScope(shield=True), trio.fail_after(30):
        return await agent.fsfreeze_thaw()


async def test_fsfreeze_blocks_guest_writes_until_thaw(main_domain):
    probe = f"/data/freeze-probe-{uuid.uuid4().hex[:8]}"
    uri = main_domain.uri
    async with (
        open_domain_agent(main_domain.name, uri=uri) as agent,
        open_domain_agent(main_domain.name, uri=uri, transport="libvirt") as other,
    ):
        with trio.fail_after(10):
            assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
        writer = None
        try:
            with trio.fail_after(30):
                assert await agent.fsfreeze_freeze() >= 1
                assert agent.frozen
                assert await agent.fsfreeze_status() is FsfreezeStatus.FROZEN
                # ours refuses exec: locally first, and the agent itself too
                with pytest.raises(FrozenStateViolation):
                    await agent.exec("/bin/true")
                with pytest.raises(GuestFrozen):
                    await agent.execute("guest-exec", {"path": "/bin/true"})
                # the write, started right after the freeze through the other agent
                writer = await other.exec(
                    "/bin/sh", ["-c", f"echo x > {probe} && sync"], capture_output=True
                )
            # ... does not complete while frozen
            with trio.fail_after(30):
                blocked_until = trio.current_time() + BLOCKED_FOR
                while trio.current_time() < blocked_until:
                    status = await other.exec_status(writer)
                    assert not status.exited, f"write to frozen /data completed: {status}"
                    await trio.sleep(0.2)
                assert await agent.fsfreeze_status() is FsfreezeStatus.FROZEN
        finally:
            thawed = await _thaw(agent)
        assert thawed >= 1
        assert not agent.frozen
        with trio.fail_after(30):
            # ... and completes after the thaw
            while True:
                status = await other.exec_status(writer)
                if status.exited:
                    break
                await trio.sleep(0.1)
            assert status.exit_code == 0, status
            assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
            result = await run_program(agent, ["/bin/cat", probe])
            assert result.stdout == b"x\n"
            await run_program(agent, ["/bin/rm", "-f", probe])


async def test_disk_only_snapshot_while_frozen(doomed_domain, tmp_path):
    """External disk-only snapshot of vda (plain libvirt-python) inside a freeze.

    On a guest of its own: the domain goes on writing to the overlay, and the
    shared guest's disk must stay what other tests expect."""
    dom = doomed_domain.dom
    overlay = tmp_path / "vda-overlay.qcow2"
    base = doomed_domain.data_disk
    snapshot_xml = f"""<domainsnapshot>
  <name>e2e-{uuid.uuid4().hex[:8]}</name>
  <disks>
    <disk name='vda' snapshot='external'>
      <driver type='qcow2'/>
      <source file='{overlay}'/>
    </disk>
  </disks>
</domainsnapshot>"""
    flags = (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
    )
    async with open_domain_agent(doomed_domain.name, uri=doomed_domain.uri) as agent:
        try:
            with trio.fail_after(30):
                assert await agent.fsfreeze_freeze() >= 1
            with trio.fail_after(120):
                await trio.to_thread.run_sync(dom.snapshotCreateXML, snapshot_xml, flags)
        finally:
            thawed = await _thaw(agent)
        assert thawed >= 1
        with trio.fail_after(30):
            assert await agent.fsfreeze_status() is FsfreezeStatus.THAWED
            # the guest still writes, now into the overlay
            result = await run_program(
                agent, ["/bin/sh", "-c", "echo after > /data/after-snapshot && sync"]
            )
            assert result.succeeded, result

    assert overlay.exists()
    assert f"file='{overlay}'" in dom.XMLDesc(0)
    assert dom.snapshotNum() == 0  # NO_METADATA: libvirt keeps no snapshot object
    with trio.fail_after(60):
        proc = await trio.run_process(
            ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(overlay)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()
    chain = json.loads(proc.stdout)
    assert [image["format"] for image in chain] == ["qcow2", "raw"], chain
    assert chain[0]["filename"] == str(overlay)
    assert chain[0]["full-backing-filename"] == str(base)
    assert chain[1]["filename"] == str(base)
