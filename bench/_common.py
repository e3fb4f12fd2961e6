"""Shared helpers for the benchmarks: arguments, interleaved samples, tables, targets.

The machines these run on are shared and noisy, so no absolute time is ever a
verdict.  Every benchmark measures all of its clients in the same run, in
round-robin order (A, B, C, A, B, C, ...), and judges only *ratios* between
them: the median of per-round ratios, which cancels slow phases of the machine
that hit every client of a round alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a smaller, faster run (for smoke tests and CI)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if any target is missed (default: exit 0)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default depends on --quick)"
    )
    return parser


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio_median(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of per-round ratios ``numerators[i] / denominators[i]``."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def spread(values: Sequence[float]) -> str:
    """Interquartile spread as a percentage of the median (a noise gauge)."""
    if len(values) < 4:
        return "-"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{100 * (q3 - q1) / statistics.median(values):.0f}%"


def qemu_ga_version() -> str:
    from gagent.localagent import find_qemu_ga

    try:
        out = subprocess.run(
            [find_qemu_ga(), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except Exception as exc:
        return f"unknown ({exc})"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def print_environment(title: str, params: dict[str, Any]) -> None:
    import trio

    print(f"== {title}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"   python {platform.python_version()}, trio {trio.__version__}, "
        f"{qemu_ga_version()}, {os.cpu_count()} CPUs, load {load}"
    )
    print("   " + ", ".join(f"{k}={v}" for k, v in params.items()))
    print()


@dataclass
class Series:
    """One measured client: one sample per round (lower is better unless stated)."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return median(self.samples)


def print_table(
    title: str,
    series: Sequence[Series],
    *,
    unit: str,
    scale: float = 1.0,
    baselines: Sequence[str] = (),
    fmt: str = "{:.1f}",
    higher_is_better: bool = False,
) -> None:
    """Medians, min/max, spread and per-round ratios against each named baseline.

    ``scale`` multiplies raw samples for display (e.g. 1e6 for seconds -> us).
    With ``higher_is_better`` (rates) the best is the max, not the min.
    """
    by_name = {s.name: s for s in series}
    headers = ["client", f"median {unit}", "best", "worst", "IQR"]
    headers += [f"x {b}" for b in baselines]
    rows = []
    for s in series:
        values = [v * scale for v in s.samples]
        best, worst = (max(values), min(values)) if higher_is_better else (min(values), max(values))
        row = [
            s.name,
            fmt.format(median(values)),
            fmt.format(best),
            fmt.format(worst),
            spread(values),
        ]
        for b in baselines:
            base = by_name.get(b)
            row.append(f"{ratio_median(s.samples, base.samples):.2f}" if base else "-")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print(f"-- {title}")
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(headers, widths, strict=True))
    )
    print("   " + line)
    print("   " + "-" * len(line))
    for r in rows:
        print(
            "   "
            + "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    if baselines:
        print(
            "   (x NAME = median over rounds of this client's sample / NAME's sample, same round)"
        )
    print()


@dataclass
class Target:
    name: str
    passed: bool | None  # None: could not be measured
    detail: str

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "SKIP"}[self.passed]


class Targets:
    def __init__(self) -> None:
        self.items: list[Target] = []

    def at_most(self, name: str, value: float, limit: float, what: str, note: str = "") -> None:
        detail = f"{what} = {value:.3f}, want <= {limit:g}" + (f"; {note}" if note else "")
        self.items.append(Target(name, value <= limit, detail))

    def at_least(self, name: str, value: float, limit: float, what: str, note: str = "") -> None:
        detail = f"{what} = {value:.3f}, want >= {limit:g}" + (f"; {note}" if note else "")
        self.items.append(Target(name, value >= limit, detail))

    def fail(self, name: str, why: str) -> None:
        self.items.append(Target(name, False, why))

    def skip(self, name: str, why: str) -> None:
        self.items.append(Target(name, None, why))

    def report(self, strict: bool) -> int:
        width = max((len(t.name) for t in self.items), default=0)
        for t in self.items:
            dots = "." * (width - len(t.name) + 3)
            print(f"TARGET {t.name} {dots} {t.verdict}  ({t.detail})")
        missed = [t for t in self.items if t.passed is False]
        if strict and missed:
            return 1
        return 0


def interleave(
    rounds: int,
    steps: Sequence[tuple[Series | tuple[Series, ...], Callable[[], Any]]],
    *,
    warmup: int = 1,
    label: str = "",
) -> None:
    """Run every step once per round, in order, appending each result to its series.

    A step may return a tuple of values, one per series of a tuple of series
    (e.g. wall time and CPU time).  The first ``warmup`` rounds run the same
    steps but are not recorded (imports, caches, the agent's first allocations).
    """
    for index in range(warmup + rounds):
        for series, step in steps:
            value = step()
            if index < warmup:
                continue
            if isinstance(series, tuple):
                for one, v in zip(series, value, strict=True):
                    one.samples.append(v)
            else:
                series.samples.append(value)
        if label:
            done = index - warmup + 1
            progress(f"   {label}: round {done}/{rounds}" if done > 0 else f"   {label}: warm-up")


class Stopwatch:
    """Wall time and this process's CPU time (all threads) since creation."""

    def __init__(self) -> None:
        self.cpu = time.process_time()
        self.wall = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        wall = time.perf_counter() - self.wall
        return wall, time.process_time() - self.cpu


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
