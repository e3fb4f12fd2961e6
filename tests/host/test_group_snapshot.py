"""gagent.host.group_snapshot: one frozen instant across several domains.

Each member is a fake domain (libvirt's test driver makes no disk-only snapshots, as in
test_snapshot.py) whose agent is the freezable fake on a real unix socket.  Each
snapshot call records every member's freeze state at that moment: the protocol holds
when every member is frozen at every call.  The command line: tests/host/cli.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from fakeagent import Delay, fake_unix_socket
from test_freeze import FREEZE, THAW, FreezableFake
from test_snapshot import FakeDomain, FakeHypervisor, channel

from gagent.errors import AgentUnavailable, CommandUnavailable, HostError
from gagent.host.channel import GAGENT_CHANNEL
from gagent.host.consistency import load_records
from gagent.host.group_record import load_group, load_groups
from gagent.host.group_snapshot import GroupSnapshotFailed, Member, snapshot_group
from gagent.host.virt import DomainState

REAL_DEADLINE = 30


class GroupDomain(FakeDomain):
    """A fake domain named ``name``; ``group`` lets its snapshot call see every agent."""

    def __init__(self, name: str, sock: Path, group: dict[str, FreezableFake]):
        super().__init__(channels=channel(GAGENT_CHANNEL, str(sock)))
        self.name, self.uuid, self.group = name, f"uuid-{name}", group
        self.seen: dict[str, str] = {}
        self.taken = trio.Event()

    async def xml(self, *, inactive: bool = False) -> str:
        return (await super().xml()).replace("<name>vm1</name>", f"<name>{self.name}</name>")

    async def snapshot_create_xml(self, xml: str, **flags: Any) -> str:
        self.seen = {name: fake.state for name, fake in self.group.items()}
        made = await super().snapshot_create_xml(xml, **flags)
        self.taken.set()
        return made


@contextlib.asynccontextmanager
async def group_of(
    tmp_path: Path, *names: str, **fakes: FreezableFake
) -> AsyncIterator[tuple[list[Member], dict[str, GroupDomain], dict[str, FreezableFake]]]:
    """Members ``names``, each a fake domain with its own agent (``fakes`` overrides one;
    a name without a served agent is given as ``name:down``)."""
    agents: dict[str, FreezableFake] = {}
    domains: dict[str, GroupDomain] = {}
    async with contextlib.AsyncExitStack() as stack:
        for word in names:
            name, _, down = word.partition(":")
            sock = tmp_path / f"{name}.sock"
            domains[name] = GroupDomain(name, sock, agents)
            if not down:
                agents[name] = fakes.get(name) or FreezableFake()
                await stack.enter_async_context(fake_unix_socket(agents[name], sock))
        members = [Member(n, uri="fake:///", hypervisor=FakeHypervisor(d))
                   for n, d in domains.items()]  # fmt: skip
        yield members, domains, agents


async def test_every_member_is_frozen_at_every_snapshot_call(tmp_path: Path) -> None:
    warned: list[str] = []
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app", "web") as (members, domains, agents):
            record = await snapshot_group(members, "g1", warn=warned.append, store=tmp_path)
    for domain in domains.values():
        assert domain.seen == {"db": "frozen", "app": "frozen", "web": "frozen"}
    assert all(fake.state == "thawed" for fake in agents.values())
    assert all(fake.commands.count(FREEZE) == 1 for fake in agents.values())
    assert record.consistent and record.window_ms is not None and record.window_ms > 0
    last_frozen = max(m.freeze_confirmed.monotonic for m in record.members)
    first_thaw = min(m.thaw_sent.monotonic for m in record.members)
    assert record.window_start.monotonic == last_frozen
    assert record.window_end.monotonic == first_thaw
    for m in record.members:
        steps = [m.freeze_sent, m.freeze_confirmed, m.snapshot_start, m.snapshot_end,
                 m.thaw_sent, m.thaw_confirmed]  # fmt: skip
        assert [s.monotonic for s in steps] == sorted(s.monotonic for s in steps), m
        assert m.snapshot_start.monotonic >= last_frozen  # no call before every freeze
        assert m.state == "kept" and m.consistency == "filesystem" and m.thawed
        assert m.disks[0]["overlay"] == "/img/data.g1" and m.disks[0]["backing"] == "/img/data.raw"
    # stored with the group, and each member's snapshot has its consistency record
    [stored] = load_groups(tmp_path)
    assert stored.to_json() == record.to_json()
    assert load_records("uuid-app", tmp_path)["g1"].consistency == "filesystem"
    assert "consistent, common window" in record.describe()


async def test_require_freezes_nothing_when_a_member_cannot_be_reached(tmp_path: Path) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app", "web:down") as (members, domains, agents):
            with pytest.raises(GroupSnapshotFailed) as caught:
                await snapshot_group(members, "g1", warn=print, store=tmp_path, connect_timeout=5)
    assert all(FREEZE not in fake.commands for fake in agents.values())
    assert all(("snapshot", d.calls) and not d.calls for d in domains.values())
    record = caught.value.record
    assert isinstance(caught.value.first, AgentUnavailable)
    assert "web" in str(caught.value) and record.consistency == "failed"
    assert [(m.label, m.state) for m in record.members] == [
        ("db", "not-taken"), ("app", "not-taken"), ("web", "failed"),
    ]  # fmt: skip
    assert load_group("g1", tmp_path).consistency == "failed"


async def test_require_freezes_nothing_when_a_member_cannot_freeze(tmp_path: Path) -> None:
    blocked = FreezableFake(disabled={FREEZE})
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app", app=blocked) as (members, _, agents):
            with pytest.raises(GroupSnapshotFailed) as caught:
                await snapshot_group(members, "g1", warn=print, store=tmp_path)
    assert isinstance(caught.value.first, CommandUnavailable)
    assert "app cannot freeze" in str(caught.value)
    assert all(FREEZE not in fake.commands for fake in agents.values())


async def test_a_member_failing_in_the_window_removes_the_others_snapshots(
    tmp_path: Path,
) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app", "web") as (members, domains, agents):
            domains["web"].fail = HostError("creating a snapshot of web: domain is not running")
            domains["db"].delay = 0.3  # still in its call when web fails: it finishes, then goes
            with pytest.raises(GroupSnapshotFailed) as caught:
                await snapshot_group(members, "g1", warn=print, store=tmp_path)
    record = caught.value.record
    states = {m.label: m.state for m in record.members}
    assert states == {"db": "removed", "app": "removed", "web": "failed"}
    assert "web: creating a snapshot of web" in str(caught.value)
    for name in ("db", "app"):
        assert ("delete", ("g1", False)) in domains[name].calls
        assert "g1" not in load_records(f"uuid-{name}", tmp_path)
    assert all(fake.state == "thawed" and THAW in fake.commands for fake in agents.values())
    assert record.consistency == "failed"


async def test_prefer_keeps_the_group_labelled_crash(tmp_path: Path) -> None:
    warned: list[str] = []
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "web:down") as (members, _, _):
            record = await snapshot_group(
                members, "g1", policy="prefer", warn=warned.append, store=tmp_path,
                connect_timeout=5,
            )  # fmt: skip
    assert record.consistency == "crash" and not record.consistent
    states = {m.label: (m.state, m.consistency) for m in record.members}
    assert states == {"db": ("kept", "filesystem"), "web": ("kept", "crash")}
    assert any("web" in line and "CRASH-CONSISTENT" in line for line in warned)
    assert load_records("uuid-web", tmp_path)["g1"].fallback


async def test_cancelled_in_the_window_thaws_everyone_and_takes_nothing(tmp_path: Path) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app") as (members, domains, agents):
            with trio.CancelScope() as scope:

                async def interrupt() -> None:  # Ctrl-C once every member is frozen
                    scope.cancel()
                    await trio.sleep_forever()

                await snapshot_group(members, "g1", warn=print, store=tmp_path, on_frozen=interrupt)
    assert scope.cancelled_caught
    assert all(fake.state == "thawed" and fake.commands[-2:] == [THAW, "guest-fsfreeze-status"]
               for fake in agents.values())  # fmt: skip
    assert all(not d.calls for d in domains.values())
    assert load_group("g1", tmp_path).consistency == "failed"


async def test_cancelled_during_the_snapshots_removes_those_taken(tmp_path: Path) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app") as (members, domains, agents):
            domains["app"].delay = 30  # libvirt's call hangs: the command is interrupted
            async with trio.open_nursery() as nursery:

                async def interrupt_once_db_is_taken() -> None:
                    await domains["db"].taken.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(interrupt_once_db_is_taken)
                await snapshot_group(members, "g1", warn=print, store=tmp_path)
    assert all(fake.state == "thawed" for fake in agents.values())
    assert ("delete", ("g1", False)) in domains["db"].calls  # db's was taken: removed
    record = load_group("g1", tmp_path)
    assert {m.label: m.state for m in record.members}["db"] == "removed"


async def test_a_slow_freeze_holds_the_others_no_longer_than_freeze_timeout(
    tmp_path: Path,
) -> None:
    slow = FreezableFake().on(FREEZE, Delay(3))
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app", app=slow) as (members, domains, agents):
            with pytest.raises(GroupSnapshotFailed):
                await snapshot_group(members, "g1", warn=print, store=tmp_path, freeze_timeout=1)
    assert all(fake.state == "thawed" for fake in agents.values())
    assert all(not d.calls for d in domains.values())


def test_usage_errors() -> None:
    from gagent.errors import UsageError

    for members, name, match in (
        ([], "g", "at least one"), ([Member("a"), Member("a")], "g", "named twice"),
        ([Member("a")], "a/b", "bad snapshot name"),
        ([Member("a", label="x"), Member("a", label="y")], "g", "in the group twice"),
    ):  # fmt: skip
        with pytest.raises(UsageError, match=match):
            trio.run(lambda: snapshot_group(members, name, warn=print))  # noqa: B023
    with pytest.raises(UsageError, match="--consistency"):
        trio.run(lambda: snapshot_group([Member("a")], "g", policy="maybe", warn=print))


async def test_a_shut_off_member_is_offline(tmp_path: Path) -> None:
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "off:down") as (members, domains, _):
            domains["off"]._state = DomainState.SHUTOFF
            record = await snapshot_group(members, "g1", warn=print, store=tmp_path)
    got = {m.label: m.consistency for m in record.members}
    assert got == {"db": "filesystem", "off": "offline"}
    assert record.consistent  # (a shut-off domain's disks are at rest: no freeze needed)


async def test_a_thaw_that_cannot_be_confirmed_is_the_first_error(tmp_path: Path) -> None:
    from fakeagent import Silence

    from gagent.freeze import ThawUnconfirmed

    stuck = FreezableFake().set_default(THAW, Silence())
    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app", app=stuck) as (members, domains, agents):
            with pytest.raises(GroupSnapshotFailed) as caught:
                await snapshot_group(members, "g1", warn=print, store=tmp_path, thaw_timeout=0.6)
    assert isinstance(caught.value.first, ThawUnconfirmed)  # the CLI exits 9 with its command
    assert "MAY STILL BE FROZEN" in str(caught.value.first)
    app = {m.label: m for m in caught.value.record.members}["app"]
    assert app.thawed is False and app.thaw_sent is not None and "FROZEN" in app.error
    assert agents["db"].state == "thawed"
    for domain in domains.values():  # app's snapshot was made before its thaw failed: removed
        assert ("delete", ("g1", False)) in domain.calls


async def test_group_delete_removes_each_member_snapshot_then_the_record(
    tmp_path: Path, monkeypatch
) -> None:
    from gagent.host import group_cleanup, session

    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app") as (members, domains, _):
            await snapshot_group(members, "g1", warn=print, store=tmp_path)

            def reopen(ref: str, *, uri: str | None = None):  # by the stored UUID, on fake:///
                domain = domains[ref.removeprefix("uuid-")]
                return session.open_domain(ref, hypervisor=FakeHypervisor(domain))

            monkeypatch.setattr(group_cleanup, "open_domain", reopen)
            domains["app"].fail = HostError("deleting snapshot g1 of app: disk busy")
            removed, left = await group_cleanup.delete_group_snapshot("g1", store=tmp_path)
            assert [m.label for m in removed] == ["db"] and [m.label for m in left] == ["app"]
            assert "gagent snapshot delete app -c fake:/// g1" in left[0].advice
            stored = load_group("g1", tmp_path)  # kept, saying what is left
            assert {m.label: m.state for m in stored.members} == {"db": "removed", "app": "kept"}
            domains["app"].fail = None
            removed, left = await group_cleanup.delete_group_snapshot("g1", store=tmp_path)
    assert [m.label for m in removed] == ["app"] and left == []
    assert load_group("g1", tmp_path) is None
    assert all(("delete", ("g1", False)) in d.calls for d in domains.values())


async def test_on_frozen_failing_calls_the_group_off(tmp_path: Path) -> None:
    async def fault() -> None:
        raise RuntimeError("the application marker could not be written")

    with trio.fail_after(REAL_DEADLINE):
        async with group_of(tmp_path, "db", "app") as (members, domains, agents):
            with pytest.raises(BaseExceptionGroup) as caught:  # (from the group's nursery)
                await snapshot_group(members, "g1", warn=print, store=tmp_path, on_frozen=fault)
    assert caught.group_contains(RuntimeError, match="application marker", depth=1)
    assert all(fake.state == "thawed" for fake in agents.values())
    assert all(not d.calls for d in domains.values())  # no snapshot was asked for


def test_conclude() -> None:
    from gagent.freeze import Instant
    from gagent.host.group_record import GroupRecord, MemberRecord, conclude

    def member(label: str, consistency: str, frozen: float | None, thaw: float | None):
        return MemberRecord(
            label, label, None, state="kept", consistency=consistency,
            freeze_confirmed=None if frozen is None else Instant(frozen, frozen),
            thaw_sent=None if thaw is None else Instant(thaw, thaw),
        )  # fmt: skip

    for members, consistency, window in (
        ([member("a", "filesystem", 1.0, 1.5), member("b", "filesystem", 1.2, 1.4)],
         "consistent", 200.0),
        ([member("a", "filesystem", 1.0, 1.1), member("b", "filesystem", 1.2, 1.4)],
         "crash", -100.0),  # a thawed before b froze: no common instant
        ([member("a", "filesystem", 1.0, 1.5), member("b", "crash", None, None)], "crash", None),
        ([member("a", "offline", None, None), member("b", "offline", None, None)],
         "consistent", None),
        ([member("a", "filesystem", 1.0, 1.5), member("b", "offline", None, None)],
         "consistent", 500.0),
    ):  # fmt: skip
        group = GroupRecord("g", "require", members=members)
        conclude(group)
        assert group.consistency == consistency and group.window_ms == pytest.approx(window)
