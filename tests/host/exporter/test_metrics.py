"""The cache as Prometheus serves it: every metric, its labels, both formats, the README."""

from __future__ import annotations

import re
from pathlib import Path

from exporter_helpers import scrape, series, value
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from gagent.host.exporter.cache import Deadman, ExporterCache, Filesystem, GuestInfo
from gagent.host.exporter.metrics import METRICS
from gagent.host.exporter.serve import make_registry

README = Path(__file__).resolve().parents[3] / "README.md"
OURS, LIBVIRTS = "org.gagent.agent.0", "org.qemu.guest_agent.0"


def full_cache() -> ExporterCache:
    cache = ExporterCache([("kvm1", "qemu+ssh://kvm1/system")])
    channels = {OURS: "connected", LIBVIRTS: "disconnected", "org.gagent.idle.0": "unknown"}
    cache.set_listing(
        "kvm1",
        [
            ("vm1", "running", True, channels),
            ("hung", "running", True, {OURS: "connected"}),
            ("off", "shut off", False, {}),
        ],
        now=1000.0,
    )
    cache.agent_answered(
        "kvm1",
        "vm1",
        round_trip_seconds=0.002,
        frozen=False,
        filesystems=(Filesystem("/", "ext4", 1000, 400), Filesystem("/data", "xfs", 500, 5)),
        info=GuestInfo("Debian GNU/Linux 12 (bookworm)", "6.1.0-9-amd64", "vm1.example", "7.2.0"),
        users=2,
        deadman=Deadman(60, armed=False, fired=1, last_fired=1700000000.5),
    )
    cache.agent_answered("kvm1", "hung", users=1, frozen=True)
    cache.agent_failed("kvm1", "hung", 1234.5, "no answer within 10s")
    cache.count_error("kvm1", "agent")
    cache.set_duration("kvm1", "libvirt", 0.01)
    cache.set_duration("kvm1", "agent", 0.5)
    cache.set_up("kvm1", True)
    return cache


def test_every_metric_and_its_labels():
    samples = scrape(full_cache())
    vm1 = {"hypervisor": "kvm1", "domain": "vm1"}
    assert value(samples, "gagent_hypervisor_up", hypervisor="kvm1") == 1
    assert series(samples, "gagent_scrape_errors_total") == {
        (("hypervisor", "kvm1"), ("kind", "agent")): 1,
        (("hypervisor", "kvm1"), ("kind", "libvirt")): 0,
    }
    assert series(samples, "gagent_collection_duration_seconds") == {
        (("group", "agent"), ("hypervisor", "kvm1")): 0.5,
        (("group", "libvirt"), ("hypervisor", "kvm1")): 0.01,
    }
    assert value(samples, "gagent_domain_running", **vm1) == 1
    assert value(samples, "gagent_domain_running", domain="off") == 0
    # the state libvirt does not know ('unknown') is no series, rather than a guess
    assert series(samples, "gagent_agent_channel_connected", domain="vm1") == {
        (("channel", LIBVIRTS), ("domain", "vm1"), ("hypervisor", "kvm1")): 0,
        (("channel", OURS), ("domain", "vm1"), ("hypervisor", "kvm1")): 1,
    }
    assert value(samples, "gagent_agent_up", **vm1) == 1
    assert value(samples, "gagent_agent_round_trip_seconds", **vm1) == 0.002
    assert value(samples, "gagent_guest_frozen", **vm1) == 0
    fs = {
        dict(k)["mountpoint"]: (dict(k)["fstype"], v)
        for k, v in series(samples, "gagent_guest_filesystem_used_bytes", **vm1).items()
    }
    assert fs == {"/": ("ext4", 400), "/data": ("xfs", 5)}
    assert value(samples, "gagent_guest_filesystem_size_bytes", **vm1, mountpoint="/data") == 500
    [(labels, one)] = series(samples, "gagent_guest_info", **vm1).items()
    assert one == 1 and dict(labels) == {
        **vm1,
        "os": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.1.0-9-amd64",
        "hostname": "vm1.example",
        "agent_version": "7.2.0",
    }
    assert value(samples, "gagent_guest_users", **vm1) == 2
    assert value(samples, "gagent_guest_deadman_deadline_seconds", **vm1) == 60
    assert value(samples, "gagent_guest_deadman_armed", **vm1) == 0
    assert value(samples, "gagent_guest_deadman_fired_total", **vm1) == 1
    assert value(samples, "gagent_guest_deadman_last_fired_timestamp_seconds", **vm1) == 1.7e9 + 0.5


def test_a_stale_domain_keeps_only_its_liveness_series():
    samples = scrape(full_cache())
    hung = {name for (name, labels) in samples if ("domain", "hung") in labels}
    assert hung == {
        "gagent_domain_running",
        "gagent_agent_channel_connected",
        "gagent_agent_up",
        "gagent_guest_stale_since_seconds",
    }
    assert value(samples, "gagent_guest_stale_since_seconds", domain="hung") == 1234.5
    assert value(samples, "gagent_agent_up", domain="hung") == 0
    assert not series(samples, "gagent_guest_stale_since_seconds", domain="vm1")
    off = {name for (name, labels) in samples if ("domain", "off") in labels}
    assert off == {"gagent_domain_running", "gagent_agent_up"}


def test_openmetrics_format_parses_with_the_same_samples():
    text = openmetrics_latest(make_registry(full_cache())).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["gagent_guest"].type == "info"  # its sample: gagent_guest_info
    assert families["gagent_scrape_errors"].type == "counter"
    assert families["gagent_guest_deadman_fired"].type == "counter"
    om = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert om == scrape(full_cache())


def test_every_metric_served_is_declared_and_documented_in_the_readme():
    served = {name for name, _ in scrape(full_cache())}
    declared = set(METRICS)
    assert served == declared  # samples: counters carry _total, the info metric its own name
    documented = set(re.findall(r"`(gagent_[a-z_]+)`", README.read_text()))
    assert declared <= documented, sorted(declared - documented)
