"""gagent.host.preflight against the real qemu-ga on this host (freeze and exec blocked).

The local agent is a real guest agent whose "guest" is this host: its freeze is
blocked with --block-rpcs, so the preflight must find exactly that, and read the
host's real mount table and files through guest-file-open/read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import gagent
from gagent.errors import CommandUnavailable
from gagent.host.freeze_findings import ERROR, assess, freeze_expected_to_work
from gagent.host.preflight import (
    DEADMAN_CONFIG,
    GuestFileMissing,
    gather,
    parse_mounts,
    read_guest_file,
)
from gagent.localagent import local_qemu_ga

TIMEOUT = 30


@pytest.fixture
async def agent(qemu_ga):
    async with gagent.open_agent(qemu_ga.socket_path) as connected:
        yield connected


def host_view() -> tuple[set[str], bool]:
    """This host's mountpoints and whether it has a dead-man's switch config."""
    mounts = parse_mounts(Path("/proc/self/mounts").read_text())
    return {m.mountpoint for m in mounts}, Path(DEADMAN_CONFIG).exists()


async def test_gather_finds_the_blocked_freeze_and_the_real_mounts(agent):
    with trio.fail_after(TIMEOUT):
        facts = await gather(agent, "local qemu-ga", full=True)
    assert facts.version and facts.commands["guest-fsfreeze-freeze"] is False
    assert facts.commands["guest-fsfreeze-thaw"] is True
    assert facts.status == "thawed"
    ours, has_deadman = host_view()
    assert {m.mountpoint for m in facts.mounts} == ours  # qemu-ga reads its own, same namespace
    expected = "on" if has_deadman else "absent"
    assert facts.deadman is not None and facts.deadman.state in (expected, "off")
    assert set(facts.hooks) == {"/etc/gagent/fsfreeze-hook", "/etc/qemu/fsfreeze-hook"}
    assert facts.selinux in ("enforcing", "permissive", "disabled")
    found = assess(facts, thaw_command="gagent thaw vm1")
    blocked = [f for f in found if f.code == "command-disabled"]
    assert [f.severity for f in blocked] == [ERROR]
    assert "guest-fsfreeze-freeze" in blocked[0].message
    assert not freeze_expected_to_work(found)


async def test_the_cheap_preflight_asks_less(agent):
    with trio.fail_after(TIMEOUT):
        facts = await gather(agent, "local qemu-ga")
    assert facts.status is None and facts.mounts is None and facts.selinux is None
    assert facts.filesystems is not None or "filesystems" in facts.problems
    with trio.fail_after(TIMEOUT):
        least = await gather(agent, "local qemu-ga", filesystems=False, hooks=False)
    assert least.filesystems is None and least.hooks == {} and least.deadman is not None


async def test_read_guest_file(agent, tmp_path):
    path = tmp_path / "deadman.conf"
    path.write_text("# comment\nGAGENT_FREEZE_DEADLINE='7'\n" + "x" * 70000)
    with trio.fail_after(TIMEOUT):
        data = await read_guest_file(agent, str(path))
        assert len(data) == path.stat().st_size  # more than one chunk
        assert len(await read_guest_file(agent, str(path), 100)) == 100
        with pytest.raises(GuestFileMissing):
            await read_guest_file(agent, str(tmp_path / "absent"))


async def test_blocked_file_commands_make_the_deadline_unreadable(tmp_path):
    blocked = (*gagent.localagent.BLOCKED_RPCS, "guest-file-open")
    with local_qemu_ga(tmp_path, blocked=blocked) as local:
        async with gagent.open_agent(local.socket_path) as agent:
            with trio.fail_after(TIMEOUT):
                facts = await gather(agent, "local qemu-ga")
                with pytest.raises(CommandUnavailable):
                    await read_guest_file(agent, "/etc/hostname")
    assert facts.deadman.state == "unreadable" and "guest-file-open" in facts.deadman.reason
    assert set(facts.hooks.values()) == {None}


def test_parse_mounts_undoes_octal_escapes():
    [m] = parse_mounts("/dev/vdb /mnt/with\\040space ext4 ro,relatime 0 0\n")
    assert m.mountpoint == "/mnt/with space" and m.readonly and m.fstype == "ext4"
