"""The exporter's cache: what a listing, an answer or a failure leaves for a scrape."""

from __future__ import annotations

from gagent.host.exporter.cache import ExporterCache, Filesystem, GuestInfo

ROOT = (Filesystem("/", "ext4", 100, 40),)


def cache_with(*listing) -> ExporterCache:
    cache = ExporterCache([("h", "test:///default")])
    cache.set_listing("h", listing, now=1000.0)
    return cache


def test_a_listing_adds_and_drops_domains():
    cache = cache_with(("a", "running", True, {}), ("b", "shut off", False, {}))
    cache.set_listing("h", [("a", "running", True, {})], now=1001.0)
    [view] = cache.snapshot()
    assert [d.name for d in view.domains] == ["a"]


def test_an_answer_makes_a_domain_fresh_and_a_failure_stale_since_its_first_failure():
    cache = cache_with(("a", "running", True, {}))
    cache.agent_answered("h", "a", filesystems=ROOT, users=2)
    entry = cache.domain("h", "a")
    assert entry.agent_up and entry.serves_guest_data and entry.filesystems == ROOT
    cache.agent_failed("h", "a", 2000.0, "no answer within 10s")
    cache.agent_failed("h", "a", 2060.0, "no answer within 10s")
    entry = cache.domain("h", "a")
    assert (entry.agent_up, entry.stale_since) == (False, 2000.0)
    assert entry.error == "no answer within 10s"
    assert not entry.serves_guest_data
    assert entry.filesystems == ROOT  # kept, not served: back at once with the next answer
    cache.agent_answered("h", "a", users=1)
    entry = cache.domain("h", "a")
    assert entry.serves_guest_data and entry.stale_since is None and entry.users == 1


def test_a_paused_domain_goes_stale_when_first_seen_paused():
    cache = cache_with(("a", "running", True, {}))
    cache.agent_answered("h", "a", users=0)
    cache.set_listing("h", [("a", "paused", False, {})], now=1500.0)
    cache.set_listing("h", [("a", "paused", False, {})], now=1600.0)
    entry = cache.domain("h", "a")
    assert (entry.running, entry.agent_up, entry.stale_since) == (False, False, 1500.0)


def test_a_domain_that_stops_forgets_its_guest_data():
    cache = cache_with(("a", "running", True, {"org.gagent.agent.0": "connected"}))
    cache.agent_answered("h", "a", info=GuestInfo("Debian", "6.1", "a", "7.2"))
    cache.set_listing("h", [("a", "shut off", False, {})], now=1100.0)
    entry = cache.domain("h", "a")
    assert (entry.info, entry.agent_up, entry.stale_since) == (None, False, None)
    assert entry.channels == ()


def test_an_agent_event_changes_one_channel():
    cache = cache_with(("a", "running", True, {"org.gagent.agent.0": "connected"}))
    cache.set_channel("h", "a", "org.qemu.guest_agent.0", "disconnected")
    assert cache.domain("h", "a").channels == (
        ("org.gagent.agent.0", "connected"),
        ("org.qemu.guest_agent.0", "disconnected"),
    )


def test_a_snapshot_does_not_change_under_later_updates():
    cache = cache_with(("a", "running", True, {}))
    cache.count_error("h", "agent")
    [before] = cache.snapshot()
    cache.agent_answered("h", "a", users=3)
    cache.count_error("h", "agent")
    cache.set_listing("h", [], now=1200.0)
    assert before.domains[0].users is None
    assert dict(before.errors) == {"libvirt": 0, "agent": 1}


def test_a_domain_without_an_agent_route_has_nothing_stale():
    cache = cache_with(("a", "running", True, {}))
    cache.agent_answered("h", "a", users=3)
    cache.agent_absent("h", "a", "no agent channel")
    entry = cache.domain("h", "a")
    assert (entry.users, entry.agent_up, entry.stale_since) == (None, False, None)


def test_an_answer_that_lands_after_the_pause_does_not_make_it_fresh():
    cache = cache_with(("a", "running", True, {}))
    cache.set_listing("h", [("a", "paused", False, {})], now=1500.0)
    cache.agent_answered("h", "a", users=4)  # its collection was under way
    entry = cache.domain("h", "a")
    assert (entry.agent_up, entry.stale_since, entry.users) == (False, 1500.0, None)
