"""Helpers for the exporter tests: a running exporter, scrapes parsed back, bounded waits."""

from __future__ import annotations

from contextlib import asynccontextmanager

import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gagent.host.exporter.cache import ExporterCache
from gagent.host.exporter.guest import DeadmanPaths
from gagent.host.exporter.poll import ExporterSettings, parse_intervals, run_pollers
from gagent.host.exporter.serve import make_registry
from gagent.host.inventory.testnode import NodeDomain

#: Generous bounds: the machine is shared and busy.
WAIT = 30.0


def settings(tmp_path, **overrides) -> ExporterSettings:
    """Short intervals and deadlines; the dead-man's switch files under ``tmp_path``."""
    values = {
        "intervals": parse_intervals(0.2, ("libvirt=0.2",)),
        "agent_timeout": 2.0,
        "host_timeout": 10.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "deadman": DeadmanPaths(str(tmp_path / "deadman.conf"), str(tmp_path / "deadman")),
    }
    return ExporterSettings(**(values | overrides))


@asynccontextmanager
async def running_exporter(targets, settings_, **kwargs):
    """The pollers for ``targets`` in a nursery: yields (cache, pollers); cancelled after."""
    cache = ExporterCache(targets)
    async with trio.open_nursery() as nursery:
        pollers = await nursery.start(lambda task_status: run_pollers(
            targets, cache, settings_, task_status=task_status, **kwargs))  # fmt: skip
        yield cache, pollers
        nursery.cancel_scope.cancel()


def scrape(cache: ExporterCache) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape in the classic text format, parsed back: (sample name, labels) -> value."""
    text = generate_latest(make_registry(cache)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` whose labels include ``labels``."""
    return {
        key: value
        for (sample, key), value in samples.items()
        if sample == name and all((k, v) in key for k, v in labels.items())
    }


def value(samples, name: str, **labels: str) -> float | None:
    found = series(samples, name, **labels)
    assert len(found) <= 1, found
    return next(iter(found.values()), None)


async def wait_until(condition, what: str, bound: float = WAIT) -> None:
    """Poll ``condition()`` until true (bounded; the failure says what was awaited)."""
    try:
        with trio.fail_after(bound):
            while not condition():  # noqa: ASYNC110 - the cache has no event to wait on
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"not within {bound:g}s: {what}") from None


__all__ = ["NodeDomain", "running_exporter", "scrape", "series", "settings", "value", "wait_until"]
