"""Exporter: one collection cycle and one scrape for 1,000 domains on 10 hypervisors.

Each "hypervisor" is a node XML file for libvirt's test driver (test:///PATH.xml)
with 100 running domains whose gagent channel points at a real qemu-ga on this
host (unix-listen, dangerous RPCs blocked), one each, as bench/fanout.py starts
them (a qemu-ga in listen mode serves one client: domains cannot share one).

* cycle   - the exporter's pollers from nothing to every domain collected (every
            agent group: fsfreeze-status, fsinfo, info, osinfo, hostname, users,
            the dead-man's switch files), libvirt listing included
* scrape  - one scrape over HTTP as Prometheus asks (OpenMetrics, gzip) and in the
            classic text format: the body the exporter keeps rendered
* render  - rendering it: prometheus_client's generate_latest on our collector, text
            and OpenMetrics (a background thread does it after the cache changes)
* floor   - the library's own text exposition of the same samples, prebuilt (what a
            render would cost with no cache to read and no families to build)
* RSS     - this process's resident memory after the cycle, minus before the
            pollers started, per domain

Targets (issue 17): scrape < 100 ms and a cycle < 5 s; render (text) <= 2x floor.

Run: .venv/bin/python bench/exporter.py [--quick] [--strict] [--rounds N]
     [--hypervisors N] [--domains N-per-hypervisor]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy
# module if it stayed first on sys.path: move it to the end.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import tempfile
import time
import urllib.request

import trio
from _common import Series, Targets, interleave, make_parser, print_environment, print_table
from _common import progress as say
from fanout import start_agents, stop_agents
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from gagent.host.exporter.cache import ExporterCache
from gagent.host.exporter.poll import ExporterSettings, parse_intervals, run_pollers
from gagent.host.exporter.serve import make_registry, start_server
from gagent.host.inventory.testnode import NodeDomain, write_node
from gagent.localagent import LocalAgent

#: What Prometheus 2.x sends.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
#: Longer than any run: exactly one collection per domain.
ONCE = 3600.0


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_nodes(workdir: Path, hypervisors: int, per: int, sockets: list[str]):
    targets = []
    for h in range(hypervisors):
        domains = [
            NodeDomain(f"vm{h:02d}-{i:04d}", agent_socket=sockets[h * per + i]) for i in range(per)
        ]
        targets.append((f"kvmhost{h:02d}", write_node(workdir / f"kvmhost{h:02d}.xml", domains)))
    return targets


async def one_cycle(targets, settings: ExporterSettings, total: int, bound: float):
    """Seconds until every domain answered once; the cache, for the scrapes."""
    cache = ExporterCache(targets)
    started = time.perf_counter()
    with trio.fail_after(bound):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_pollers, targets, cache, settings)
            while True:
                snapshot = cache.snapshot()
                done = sum(
                    1 for hv in snapshot for d in hv.domains if d.agent_up and d.info is not None
                )
                failed = [d.error for hv in snapshot for d in hv.domains if d.error]
                if done == total or failed:
                    break
                await trio.sleep(0.01)
            seconds = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    if failed:
        raise RuntimeError(f"{len(failed)} domains failed, e.g. {failed[0]}")
    listing = max(dict(hv.durations).get("libvirt", 0.0) for hv in cache.snapshot())
    return seconds, listing, cache


class Prebuilt:
    """The same metric families, built once: the library's exposition alone."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.families = list(registry.collect())

    def collect(self):
        return self.families


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--hypervisors", type=int, default=None)
    parser.add_argument("--domains", type=int, default=None, help="domains per hypervisor")
    args = parser.parse_args()
    hypervisors = args.hypervisors or (2 if args.quick else 10)
    per = args.domains or (50 if args.quick else 100)
    rounds = args.rounds or (3 if args.quick else 5)
    total = agent_count = hypervisors * per
    settings = ExporterSettings(
        intervals=parse_intervals(ONCE, (f"libvirt={ONCE}",)), agent_timeout=30.0
    )
    targets_met = Targets()
    agents: list[LocalAgent] = []
    with tempfile.TemporaryDirectory(prefix="gagent-bench-") as tmp:
        try:
            started = time.perf_counter()
            start_agents(Path(tmp), agent_count, agents)
            say(f"   started {len(agents)} qemu-ga in {time.perf_counter() - started:.1f}s")
            sockets = sorted(str(a.socket_path) for a in agents)
            targets = make_nodes(Path(tmp), hypervisors, per, sockets)
            print_environment(
                f"exporter: {total} domains on {hypervisors} hypervisors, a qemu-ga each",
                {"rounds": rounds, "concurrency": settings.concurrency},
            )
            rss_before = rss_bytes()
            cycles, listings = Series("cycle"), Series("listing (slowest hypervisor)")
            caches: list[ExporterCache] = []

            def cycle() -> tuple[float, float]:
                seconds, listing, cache = trio.run(one_cycle, targets, settings, total, 300.0)
                caches[:] = [cache]
                return seconds, listing

            interleave(rounds, [((cycles, listings), cycle)], label="cycle")
            rss_per_domain = (rss_bytes() - rss_before) / total
            cache = caches[0]
            registry = make_registry(cache)
            floor_registry = CollectorRegistry(auto_describe=False)
            floor_registry.register(Prebuilt(registry))
            text = generate_latest(registry).decode()
            samples = sum(len(f.samples) for f in text_string_to_metric_families(text))
            server = start_server(cache, "127.0.0.1", 0)
            url = f"http://127.0.0.1:{server.port}/metrics"
            try:
                names = ("http openmetrics+gzip", "http text", "render text", "render openmetrics")
                scrapes = [Series(n) for n in (*names, "floor")]

                def timed(func):
                    def run() -> float:
                        t0 = time.perf_counter()
                        func()
                        return time.perf_counter() - t0

                    return run

                def over_http(**headers: str) -> None:
                    request = urllib.request.Request(url, headers=headers)
                    with urllib.request.urlopen(request, timeout=30) as reply:
                        reply.read()

                prometheus = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
                steps = [
                    (scrapes[0], timed(lambda: over_http(**prometheus))),
                    (scrapes[1], timed(over_http)),
                    (scrapes[2], timed(lambda: generate_latest(registry))),
                    (scrapes[3], timed(lambda: openmetrics_latest(registry))),
                    (scrapes[4], timed(lambda: generate_latest(floor_registry))),
                ]
                interleave(rounds * 4, steps, label="scrape")
            finally:
                server.stop()
            print_table(
                f"one collection cycle, {total} domains", [cycles, listings], unit="s", fmt="{:.2f}"
            )
            print_table(
                f"one scrape: {samples} samples, {len(text) // 1024} KiB of text",
                scrapes,
                unit="ms",
                scale=1e3,
                baselines=("floor",),
            )
            print(f"   RSS: {rss_per_domain / 1024:.1f} KiB per domain after the cycles")
            print()
            by = {s.name: s for s in scrapes}
            scrape_ms = by["http openmetrics+gzip"].median * 1e3
            targets_met.at_most("scrape < 100 ms", scrape_ms, 100, "http scrape median ms")
            targets_met.at_most("cycle < 5 s", cycles.median, 5, "cycle median s")
            ratio = by["render text"].median / by["floor"].median
            targets_met.at_most("render <= 2x floor", ratio, 2, "render text/floor")
        finally:
            stop_agents(agents)
    return targets_met.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
