"""The cache as Prometheus metrics: a custom Collector that only reads a snapshot.

A scrape calls :meth:`CacheCollector.collect` in the HTTP server's thread; it
copies the cache's references under its lock (:meth:`ExporterCache.snapshot`)
and builds the metric families from them, so it never waits on libvirt or a
guest.  Every metric is documented in README.md ("Exporter"); a test holds
:data:`METRICS` and the README to each other.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .cache import DomainEntry, ExporterCache

__all__ = ["METRICS", "CacheCollector"]

DOMAIN = ["hypervisor", "domain"]

#: name -> help, for every metric this exporter serves (as Prometheus sees the name).
METRICS: dict[str, str] = {
    "gagent_hypervisor_up": "1 while the exporter holds a working libvirt connection to it",
    "gagent_scrape_errors_total": "Failed libvirt calls or connects (kind=libvirt) and failed "
    "agent exchanges (kind=agent) on this hypervisor since the exporter started",
    "gagent_collection_duration_seconds": "How long the last collection of each group "
    "(libvirt listing, agent, fs, os) took on this hypervisor",
    "gagent_domain_running": "1 when libvirt reports the domain running (0: paused, shut off...)",
    "gagent_agent_channel_connected": "1 when libvirt reports the guest end of this virtio "
    "agent channel open (live XML or agent event), 0 when not",
    "gagent_agent_up": "1 when the last agent exchange succeeded within its deadline",
    "gagent_agent_round_trip_seconds": "Round trip of the last guest-fsfreeze-status",
    "gagent_guest_frozen": "1 while the agent reports the guest's filesystems frozen",
    "gagent_guest_filesystem_size_bytes": "Size of a mounted guest filesystem (guest-get-fsinfo)",
    "gagent_guest_filesystem_used_bytes": "Used bytes of a mounted guest filesystem",
    "gagent_guest_info": "The guest's OS, kernel, hostname and agent version (always 1)",
    "gagent_guest_users": "Users logged in to the guest (guest-get-users)",
    "gagent_guest_deadman_deadline_seconds": "The guest's freeze dead-man's switch deadline "
    "(0: switched off); only for guests that ship the switch",
    "gagent_guest_deadman_armed": "1 while the dead-man's switch guards a freeze",
    "gagent_guest_deadman_fired_total": "Times the dead-man's switch thawed the guest since boot",
    "gagent_guest_deadman_last_fired_timestamp_seconds": "When it last fired (unix time)",
    "gagent_guest_stale_since_seconds": "Only while a running domain's guest data is not "
    "fresh (agent silent, refused, or domain paused): since when (unix time); its guest "
    "series are then left out",
}


def _family(kind, name: str, labels: list[str]):
    # prometheus_client adds _total to counters and _info to info metrics itself
    base = name.removesuffix("_total") if kind is CounterMetricFamily else name
    base = base.removesuffix("_info") if kind is InfoMetricFamily else base
    return kind(base, METRICS[name], labels=labels)


class CacheCollector(Collector):
    """Serves :class:`ExporterCache` to prometheus_client's registry."""

    def __init__(self, cache: ExporterCache) -> None:
        self.cache = cache

    def describe(self) -> list[Metric]:
        return []  # no fixed series: the registry must not call collect() at register time

    def collect(self) -> Iterator[Metric]:
        snapshot = self.cache.snapshot()
        hv_up = _family(GaugeMetricFamily, "gagent_hypervisor_up", ["hypervisor"])
        errors = _family(CounterMetricFamily, "gagent_scrape_errors_total", ["hypervisor", "kind"])
        durations = _family(
            GaugeMetricFamily, "gagent_collection_duration_seconds", ["hypervisor", "group"]
        )
        for hv in snapshot:
            hv_up.add_metric([hv.name], 1.0 if hv.up else 0.0)
            for kind, count in hv.errors:
                errors.add_metric([hv.name, kind], count)
            for group, seconds in hv.durations:
                durations.add_metric([hv.name, group], seconds)
        yield hv_up
        yield errors
        yield durations
        yield from _domain_families(snapshot)


def _domain_families(snapshot) -> Iterator[Metric]:
    g = GaugeMetricFamily
    running = _family(g, "gagent_domain_running", DOMAIN)
    channel = _family(g, "gagent_agent_channel_connected", [*DOMAIN, "channel"])
    up = _family(g, "gagent_agent_up", DOMAIN)
    rtt = _family(g, "gagent_agent_round_trip_seconds", DOMAIN)
    frozen = _family(g, "gagent_guest_frozen", DOMAIN)
    fs_labels = [*DOMAIN, "mountpoint", "fstype"]
    fs_size = _family(g, "gagent_guest_filesystem_size_bytes", fs_labels)
    fs_used = _family(g, "gagent_guest_filesystem_used_bytes", fs_labels)
    info = _family(InfoMetricFamily, "gagent_guest_info", DOMAIN)
    users = _family(g, "gagent_guest_users", DOMAIN)
    deadline = _family(g, "gagent_guest_deadman_deadline_seconds", DOMAIN)
    armed = _family(g, "gagent_guest_deadman_armed", DOMAIN)
    fired = _family(CounterMetricFamily, "gagent_guest_deadman_fired_total", DOMAIN)
    last_fired = _family(g, "gagent_guest_deadman_last_fired_timestamp_seconds", DOMAIN)
    stale = _family(g, "gagent_guest_stale_since_seconds", DOMAIN)
    for hv in snapshot:
        for entry in hv.domains:
            labels = [hv.name, entry.name]
            running.add_metric(labels, 1.0 if entry.running else 0.0)
            up.add_metric(labels, 1.0 if entry.agent_up else 0.0)
            for name, state in entry.channels:
                if state != "unknown":
                    channel.add_metric([*labels, name], 1.0 if state == "connected" else 0.0)
            if entry.stale_since is not None:  # only running or paused domains have one
                stale.add_metric(labels, entry.stale_since)
            if not entry.serves_guest_data:
                continue
            _guest_data(entry, labels, rtt, frozen, fs_size, fs_used, info, users)
            if entry.deadman is not None:
                deadline.add_metric(labels, entry.deadman.deadline_seconds)
                armed.add_metric(labels, 1.0 if entry.deadman.armed else 0.0)
                fired.add_metric(labels, entry.deadman.fired)
                if entry.deadman.last_fired is not None:
                    last_fired.add_metric(labels, entry.deadman.last_fired)
    yield from (running, channel, up, rtt, frozen, fs_size, fs_used, info, users)
    yield from (deadline, armed, fired, last_fired, stale)


def _guest_data(entry: DomainEntry, labels, rtt, frozen, fs_size, fs_used, info, users) -> None:
    if entry.round_trip_seconds is not None:
        rtt.add_metric(labels, entry.round_trip_seconds)
    if entry.frozen is not None:
        frozen.add_metric(labels, 1.0 if entry.frozen else 0.0)
    for fs in entry.filesystems or ():
        fs_size.add_metric([*labels, fs.mountpoint, fs.fstype], fs.size_bytes)
        fs_used.add_metric([*labels, fs.mountpoint, fs.fstype], fs.used_bytes)
    if entry.info is not None:
        i = entry.info
        values = {"os": i.os, "kernel": i.kernel, "hostname": i.hostname}
        info.add_metric(labels, {**values, "agent_version": i.agent_version})
    if entry.users is not None:
        users.add_metric(labels, entry.users)
