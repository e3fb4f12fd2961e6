"""The rscan write modes as a pure decision (the store applies the same function)."""

from __future__ import annotations

from gagent.host.inventory import Guest, Mode, Sighting, plan_writes
from gagent.host.inventory.diff import compute_diff


def guest(name: str, hv: str, cpu: int = 2) -> Guest:
    return Guest("kvm", name, hv, None, cpu, 2048, [], [], None, "shut off")


def names(guests: list[Guest]) -> list[tuple[str, str]]:
    return [(g.name, g.hypervisor) for g in guests]


def test_write_duplicates_store_the_last_in_target_order():
    found = [guest("kvm1", "h1"), guest("kvm1", "h2"), guest("kvm1", "h3"), guest("kvm2", "h1")]
    plan = plan_writes(found, {}, Mode.WRITE)
    assert names(plan.inserts) == [("kvm1", "h3"), ("kvm2", "h1")]
    assert [(c.kind, c.first, c.second, c.written) for c in plan.conflicts] == [
        ("duplicate", "h1", "h3", "h3"),
        ("duplicate", "h2", "h3", "h3"),
    ]
    assert plan.conflicts[0].message == (
        "conflict: kvm1 found on both h1 and h3: stored the one on h3 (the last found)"
    )


def test_write_never_overwrites_a_guest_stored_for_another_hypervisor():
    plan = plan_writes([guest("kvm1", "h2")], {"kvm1": "h1"}, Mode.WRITE)
    assert plan.inserts == plan.updates == []
    (conflict,) = plan.conflicts
    assert (conflict.kind, conflict.first, conflict.second, conflict.written) == (
        "stored-elsewhere",
        "h1",
        "h2",
        "h1",
    )
    assert (
        conflict.message == "conflict: kvm1 is stored for h1 but was found on h2: not overwritten"
    )


def test_update_writes_nothing_for_unstored_duplicates():
    plan = plan_writes(
        [guest("kvm1", "h1"), guest("kvm1", "h2"), guest("kvm3", "h1")], {}, Mode.UPDATE
    )
    assert plan.inserts == plan.updates == []
    assert [(c.first, c.second, c.written) for c in plan.conflicts] == [("h1", "h2", None)]
    assert "nothing written" in plan.conflicts[0].message
    assert names(plan.skipped) == [("kvm1", "h1"), ("kvm1", "h2"), ("kvm3", "h1")]


def test_update_touches_only_same_name_and_hypervisor():
    plan = plan_writes([guest("kvm1", "h1", 4), guest("kvm1", "h2")], {"kvm1": "h1"}, Mode.UPDATE)
    assert names(plan.updates) == [("kvm1", "h1")] and plan.updates[0].cpu == 4
    assert [(c.kind, c.first, c.second) for c in plan.conflicts] == [
        ("stored-elsewhere", "h1", "h2")
    ]


def test_new_adds_only_unstored_names():
    stored = {"kvm1": "h1", "kvm2": "h1"}
    found = [guest("kvm1", "h1"), guest("kvm2", "h2"), guest("kvm3", "h1")]
    plan = plan_writes(found, stored, Mode.NEW)
    assert names(plan.inserts) == [("kvm3", "h1")]
    assert plan.updates == []
    assert [(c.first, c.second) for c in plan.conflicts] == [("h1", "h2")]
    assert plan.conflicts[0].message.endswith("not added")


def test_diff_new_gone_moved_changed():
    before = [
        Sighting("a", "h1", cpu=2, memory=1024),
        Sighting("b", "h1"),
        Sighting("c", "h1"),
        Sighting("d", "h2"),
    ]
    after = [
        Sighting("a", "h1", cpu=4, memory=1024),
        Sighting("b", "h2"),
        Sighting("d", "h2"),
        Sighting("e", "h2"),
    ]
    diff = compute_diff(before, after)
    assert [(s.name, s.hypervisor) for s in diff.new] == [("e", "h2")]
    assert [(s.name, s.hypervisor) for s in diff.gone] == [("c", "h1")]
    assert [(a.hypervisor, b.hypervisor) for a, b in diff.moved] == [("h1", "h2")]
    assert [(b.name, f) for _, b, f in diff.changed] == [("a", ["cpu"])]
    assert diff.lines() == [
        "new      e on h2",
        "gone     c from h1",
        "moved    b from h1 to h2",
        "changed  a on h1: cpu 2 -> 4",
    ]
    assert compute_diff(after, after).empty
