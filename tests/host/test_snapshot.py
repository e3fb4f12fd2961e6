"""gagent.host.snapshot against a fake domain (libvirt's test driver has no disk-only
snapshots) and the freezable fake agent (tests/test_freeze.py) on a real unix socket.

Each test asserts the exact command sequence the agent received and that the
guest ends thawed - also when the snapshot call raises or hangs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from fakeagent import Default, Disconnect, Silence, fake_over_memory, fake_unix_socket
from test_freeze import FREEZE, HAPPY, INFO, STATUS, SYNC, THAW, FreezableFake

from gagent.client import open_agent_over
from gagent.errors import AgentUnavailable, HostError, UsageError
from gagent.freeze import ThawUnconfirmed
from gagent.host.channel import GAGENT_CHANNEL, LIBVIRT_AGENT_CHANNEL
from gagent.host.snapshot import (
    SnapshotMethod,
    SnapshotTimeout,
    snapshot,
    take_snapshot,
)
from gagent.host.snapshot_list import delete_snapshot, list_snapshots
from gagent.host.thaw import emergency_thaw
from gagent.host.virt import DomainState

DEADLINE = 300
REAL_DEADLINE = 20

DISKS = """
<disk type='file' device='disk'><driver name='qemu' type='raw'/>
  <source file='/img/data.raw'/><target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><source file='/img/logs.qcow2'/><target dev='vdb' bus='virtio'/>
</disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda'/><readonly/></disk>
"""


def channel(name: str, path: str | None) -> str:
    source = f"<source mode='bind' path='{path}'/>" if path else "<source mode='bind'/>"
    return (
        f"<channel type='unix'>{source}"
        f"<target type='virtio' name='{name}' state='connected'/></channel>"
    )


class FakeDomain:
    """The subset of gagent.host.virt.Domain the snapshot workflow uses."""

    def __init__(self, *, channels: str = "", state: DomainState = DomainState.RUNNING):
        self.name = "vm1"
        self._state = state
        self.disks = {"vda": "/img/data.raw", "vdb": "/img/logs.qcow2"}
        self.backing: dict[str, str] = {}
        self.channels = channels
        self.calls: list[tuple[str, Any]] = []
        self.fail: Exception | None = None
        self.hang = False
        self.delay = 0.02  # the call's own time
        self.watch: FreezableFake | None = None  # record its state at the snapshot call
        self.frozen_during_call: str | None = None
        self.snapshots: list[tuple[str, str, bool]] = []
        self.libvirt_agent_state = "thawed"

    async def state(self) -> DomainState:
        return self._state

    async def xml(self, *, inactive: bool = False) -> str:
        disks = DISKS
        for target, old in (("vda", "/img/data.raw"), ("vdb", "/img/logs.qcow2")):
            backing = self.backing.get(target)
            chain = f"<backingStore type='file'><source file='{backing}'/></backingStore>"
            disks = disks.replace(
                f"<source file='{old}'/>",
                f"<source file='{self.disks[target]}'/>" + (chain if backing else ""),
            )
        return (
            f"<domain type='kvm'><name>vm1</name><devices>{disks}{self.channels}</devices></domain>"
        )

    async def snapshot_create_xml(self, xml: str, **flags: Any) -> str:
        self.calls.append(("snapshot", flags))
        if self.watch is not None:
            self.frozen_during_call = self.watch.state
        if self.fail is not None:
            raise self.fail
        if self.hang:
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        name = xml.split("<name>")[1].split("</name>")[0]
        for target in ("vda", "vdb"):
            if f'name="{target}" snapshot="external"' in xml:
                self.backing[target] = self.disks[target]
                self.disks[target] = self.disks[target].rsplit(".", 1)[0] + "." + name
        return name

    async def list_snapshots(self) -> list[tuple[str, str, bool]]:
        return self.snapshots

    async def delete_snapshot(self, name: str, *, metadata_only: bool = False) -> None:
        self.calls.append(("delete", (name, metadata_only)))
        if self.fail is not None:
            raise self.fail

    async def agent_command(self, request: str, wait_seconds: int) -> str:
        """libvirt's relay to its own agent (org.qemu.guest_agent.0)."""
        command = json.loads(request)["execute"]
        self.calls.append(("libvirt-agent", command))
        names = ["guest-ping", "guest-info", STATUS, THAW, FREEZE]
        info = {
            "version": "7.2",
            "supported_commands": [{"name": n, "enabled": True} for n in names],
        }
        value: Any = {
            "guest-info": info,
            STATUS: self.libvirt_agent_state,
            THAW: 1 if self.libvirt_agent_state == "frozen" else 0,
        }.get(command, {})
        if command == THAW:
            self.libvirt_agent_state = "thawed"
        return json.dumps({"return": value})


class FakeHypervisor:
    def __init__(self, domain: FakeDomain):
        self.domain = domain
        self.uri = "fake:///"

    async def lookup(self, ref: str) -> FakeDomain:
        return self.domain


# ---------------------------------------------------------- the workflow


async def test_snapshot_inside_our_freeze(autojump_clock: Any) -> None:
    fake, domain = FreezableFake(), FakeDomain()
    domain.watch = fake
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
            result = await snapshot(domain, agent, "s1", ["vda"], no_metadata=True)
    assert domain.frozen_during_call == "frozen"
    assert fake.commands == HAPPY and fake.state == "thawed"
    # DISK_ONLY | ATOMIC (| NO_METADATA), never libvirt's QUIESCE with our freeze
    assert domain.calls == [
        ("snapshot", {"no_metadata": True, "quiesce": False, "abandon_on_cancel": True})
    ]
    assert result.method is SnapshotMethod.GAGENT_FREEZE
    assert [(d.target, d.overlay, d.backing) for d in result.disks] == [
        ("vda", "/img/data.s1", "/img/data.raw")
    ]
    assert result.snapshot_ms == pytest.approx(20, abs=1)
    assert result.freeze.window_ms == pytest.approx(20, abs=1)
    assert result.overhead_ms == pytest.approx(0, abs=1)
    text = result.describe()
    assert "application-consistent" in text and "freeze window 20.0 ms" in text
    assert "no metadata" in text


async def test_snapshot_call_raising_still_thaws(autojump_clock: Any) -> None:
    fake, domain = FreezableFake(), FakeDomain()
    domain.fail = HostError("creating a snapshot of vm1: no space left", code=1)
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
            with pytest.raises(HostError, match="no space left"):
                await snapshot(domain, agent, "s1")
            assert not agent.frozen
    assert fake.commands == HAPPY and fake.state == "thawed"


async def test_snapshot_call_hanging_is_abandoned_and_thawed(autojump_clock: Any) -> None:
    fake, domain = FreezableFake(), FakeDomain()
    domain.hang = True
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
            start = trio.current_time()
            with pytest.raises(SnapshotTimeout, match="NOT application-consistent"):
                await snapshot(domain, agent, "s1", snapshot_timeout=5, thaw_timeout=30)
            assert trio.current_time() - start == pytest.approx(5)
    assert fake.commands == HAPPY and fake.state == "thawed"


async def test_snapshot_cancelled_during_the_call_thaws_at_once_and_says_what_may_follow(
    autojump_clock: Any,
) -> None:
    # Ctrl-C or SIGTERM while libvirt's call hangs: the guest must not wait frozen for it
    fake, domain = FreezableFake(), FakeDomain()
    domain.watch, domain.delay = fake, 50
    notices: list[str] = []
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
            with trio.move_on_after(2) as scope:
                await snapshot(
                    domain, agent, "s1", notify=notices.append,
                    delete_command="gagent snapshot delete vm1 -c test:///x s1",
                )  # fmt: skip
            assert trio.current_time() == pytest.approx(2)  # thawed at once, not after 50 s
    assert scope.cancel_called
    assert domain.frozen_during_call == "frozen"
    assert fake.commands == HAPPY and fake.state == "thawed"
    (notice,) = notices
    assert "interrupted while libvirt was creating snapshot s1 of vm1" in notice
    assert "thawed at once (confirmed)" in notice
    assert "CRASH-CONSISTENT" in notice and "gagent snapshot delete vm1 -c test:///x s1" in notice


async def test_libvirt_quiesce_and_crash_consistent_paths(autojump_clock: Any) -> None:
    domain = FakeDomain()
    result = await snapshot(domain, None, "s1", libvirt_quiesce=True)
    assert result.method is SnapshotMethod.LIBVIRT_QUIESCE and result.freeze is None
    assert domain.calls[-1][1]["quiesce"] is True
    result = await snapshot(domain, None, "s2", quiesce=False)
    assert result.method is SnapshotMethod.CRASH_CONSISTENT
    assert domain.calls[-1][1]["quiesce"] is False
    assert "CRASH-CONSISTENT" in result.describe()
    off = FakeDomain(state=DomainState.SHUTOFF)
    assert (await snapshot(off, None, "s3")).method is SnapshotMethod.OFFLINE
    with pytest.raises(UsageError, match="quiesce needs an agent"):
        await snapshot(domain, None, "s4")
    fake = FreezableFake()
    async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
        with pytest.raises(UsageError, match="never mix"):
            await snapshot(domain, agent, "s5", libvirt_quiesce=True)
    assert fake.commands == [SYNC]


async def test_take_snapshot_thaws_on_connect_and_reconnects(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    fake = FreezableFake().on(THAW, Default(), Disconnect())
    fake.state, fake._held = "frozen", 2  # left frozen by a crashed run
    domain = FakeDomain(channels=channel(GAGENT_CHANNEL, path))
    domain.watch = fake
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, path):
            result = await take_snapshot(FakeHypervisor(domain), "vm1", "s1")
    assert result.thawed_on_connect and result.freeze.reconnected
    assert domain.frozen_during_call == "frozen"
    assert fake.commands == [
        SYNC, STATUS, THAW, STATUS,  # thaw on connect: found frozen, thawed
        INFO, FREEZE, THAW,  # the snapshot; the connection is lost at the thaw...
        SYNC, THAW, STATUS,  # ... which goes over a new one
    ]  # fmt: skip
    assert fake.state == "thawed" and fake.connections == 2
    assert "found frozen" in result.describe()


async def test_take_snapshot_routes(tmp_path: Path) -> None:
    theirs = FakeDomain(channels=channel(LIBVIRT_AGENT_CHANNEL, None))
    result = await take_snapshot(FakeHypervisor(theirs), "vm1", "s1")
    assert result.method is SnapshotMethod.LIBVIRT_QUIESCE
    assert ("libvirt-agent", STATUS) in theirs.calls  # thaw-on-connect through libvirt
    none = FakeDomain()
    with pytest.raises(AgentUnavailable, match="--no-quiesce"):
        await take_snapshot(FakeHypervisor(none), "vm1", "s1")
    result = await take_snapshot(FakeHypervisor(none), "vm1", "s1", quiesce=False)
    assert result.method is SnapshotMethod.CRASH_CONSISTENT


async def test_unconfirmed_thaw_in_a_snapshot_is_loud(autojump_clock: Any) -> None:
    fake, domain = FreezableFake().set_default(THAW, Silence()), FakeDomain()
    with trio.fail_after(DEADLINE):
        async with fake_over_memory(fake) as stream, open_agent_over(stream) as agent:
            with pytest.raises(ThawUnconfirmed, match="gagent thaw vm1"):
                await snapshot(domain, agent, "s1", thaw_timeout=3)
    assert fake.commands == [SYNC, INFO, FREEZE, THAW, SYNC, THAW, SYNC, THAW]


# ------------------------------------------------------- list, delete, thaw


async def test_list_and_delete() -> None:
    domain = FakeDomain()
    domain.snapshots = [
        (
            "b",
            "<domainsnapshot><name>b</name><state>disk-snapshot</state>"
            "<creationTime>200</creationTime><disks><disk name='vda' snapshot='external'>"
            "<source file='/img/data.b'/></disk><disk name='vdb' snapshot='no'/></disks>"
            "</domainsnapshot>",
            True,
        ),
        ("a", "<domainsnapshot><name>a</name><creationTime>100</creationTime>"
              "<description>first</description></domainsnapshot>", False),
    ]  # fmt: skip
    found = await list_snapshots(domain)
    assert [s.name for s in found] == ["a", "b"]
    assert found[1].current and found[1].state == "disk-snapshot"
    assert [(d.target, d.overlay) for d in found[1].disks] == [("vda", "/img/data.b")]
    assert found[0].description == "first"
    assert "merged back" in await delete_snapshot(domain, "b")
    assert "forgot" in await delete_snapshot(domain, "a", metadata_only=True)
    assert domain.calls == [("delete", ("b", False)), ("delete", ("a", True))]
    domain.fail = HostError("deletion of 1 external disk snapshots not supported yet", code=3)
    with pytest.raises(HostError, match="--metadata-only") as caught:
        await delete_snapshot(domain, "b")
    assert caught.value.code == 3


async def test_emergency_thaw_uses_every_agent(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    fake = FreezableFake()
    fake.state, fake._held = "frozen", 2
    domain = FakeDomain(
        channels=channel(GAGENT_CHANNEL, path) + channel(LIBVIRT_AGENT_CHANNEL, None)
    )
    domain.libvirt_agent_state = "frozen"
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, path):
            reports = await emergency_thaw(FakeHypervisor(domain), "vm1")
    assert [(r.thawed, r.confirmed, r.error) for r in reports] == [(2, True, None), (1, True, None)]
    assert "via" in reports[0].route and "libvirt" in reports[1].route
    assert fake.commands == [SYNC, THAW, STATUS] and fake.state == "thawed"
    assert domain.libvirt_agent_state == "thawed"
    with pytest.raises(AgentUnavailable, match="no reachable agent"):
        await emergency_thaw(FakeHypervisor(FakeDomain()), "vm1")


async def test_a_domain_destroyed_during_the_snapshot_is_no_false_alarm(tmp_path: Path) -> None:
    # 'virsh destroy' mid-snapshot: libvirt's call fails, the agent is gone with the guest
    path = str(tmp_path / "agent.sock")
    fake = FreezableFake().set_default(THAW, Silence())
    domain = FakeDomain(channels=channel(GAGENT_CHANNEL, path))

    async def destroyed(xml: str, **flags: Any) -> str:
        domain._state = DomainState.SHUTOFF
        raise HostError("creating a snapshot of vm1: domain is not running", code=55)

    domain.snapshot_create_xml = destroyed
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, path):
            with pytest.raises(HostError) as caught:
                await take_snapshot(FakeHypervisor(domain), "vm1", "s1", thaw_timeout=0.6)
    message = str(caught.value)
    assert not isinstance(caught.value, ThawUnconfirmed)
    assert message.startswith("creating a snapshot of vm1: domain is not running; ")
    assert "vm1 is shut off now" in message and "no freeze is left behind" in message
    assert "MAY STILL BE FROZEN" not in message and caught.value.code == 55


async def test_an_unconfirmed_thaw_of_a_running_domain_stays_loud(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    fake = FreezableFake().set_default(THAW, Silence())
    domain = FakeDomain(channels=channel(GAGENT_CHANNEL, path))
    with trio.fail_after(REAL_DEADLINE):
        async with fake_unix_socket(fake, path):
            with pytest.raises(ThawUnconfirmed, match="gagent thaw vm1 -c fake:///"):
                await take_snapshot(FakeHypervisor(domain), "vm1", "s1", thaw_timeout=0.6)
