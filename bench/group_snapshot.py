"""How long a group snapshot holds each member frozen, against a single-domain snapshot.

Clients, interleaved round-robin in one run (one unrecorded warm-up round):

* single  - ``gagent.host.snapshot.take_snapshot`` of one domain (the single path):
            its freeze window (freeze reply -> thaw reply);
* group N - ``gagent.host.group_snapshot.snapshot_group`` of N = 2, 4, 8 domains:
            each member's freeze window (the longest and the median member of the
            round) and the group's common window (last freeze confirmed -> first
            thaw sent).

Target: a group of 4 holds its longest-frozen member no longer than 1.5x a single
snapshot of the same guest (issue 16).

The guests are stand-ins: booting 8 TCG guests on a 2-CPU machine measures the
machine, not gagent.  Each member is a fake domain (the domain session's route,
state and XML; its snapshot call a 50 ms sleep in a worker thread, as libvirt's
runs in one) whose agent is tests/test_freeze.py's freezable fake on a real unix
socket, all served from one other thread.  So the numbers are gagent's own
coordination cost around a fixed snapshot call, not QEMU's or the guests'.

Run: .venv/bin/python bench/group_snapshot.py [--quick] [--strict] [--rounds N]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
sys.path += [str(_HERE.parent / "tests")]

import tempfile
import threading
import time
from contextlib import AsyncExitStack
from typing import Any

import trio
from _common import Series, Targets, make_parser, median, print_environment, print_table, progress

SIZES = (2, 4, 8)
FAKE_CALL = 0.05  # seconds: the stand-in for libvirt's snapshot call


class BenchDomain:
    """What a domain session and the snapshot need of a libvirt domain."""

    def __init__(self, name: str, sock: Path):
        self.name, self.uuid, self.sock = name, f"bench-{name}", sock

    async def state(self) -> Any:
        from gagent.host.virt import DomainState

        return DomainState.RUNNING

    async def xml(self, *, inactive: bool = False) -> str:
        return (
            f"<domain type='kvm'><name>{self.name}</name><devices>"
            "<disk type='file' device='disk'><source file='/img/x.raw'/><target dev='vda'/>"
            f"</disk><channel type='unix'><source mode='bind' path='{self.sock}'/>"
            "<target type='virtio' name='org.gagent.agent.0' state='connected'/></channel>"
            "</devices></domain>"
        )

    async def snapshot_create_xml(self, xml: str, **_flags: Any) -> str:
        await trio.to_thread.run_sync(time.sleep, FAKE_CALL)
        return "bench"

    async def delete_snapshot(self, name: str, *, metadata_only: bool = False) -> None:
        pass


class BenchHypervisor:
    uri = "bench:///"

    def __init__(self, domain: BenchDomain):
        self.domain = domain

    async def lookup(self, ref: str) -> BenchDomain:
        return self.domain


def serve_fakes(socks: list[Path]) -> threading.Event:
    """Serve a freezable fake on each socket from one other thread; set the returned event
    to stop them."""
    from fakeagent import fake_unix_socket
    from test_freeze import FreezableFake

    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with AsyncExitStack() as stack:
            for sock in socks:
                await stack.enter_async_context(fake_unix_socket(FreezableFake(), sock))
            ready.set()
            await trio.to_thread.run_sync(stop.wait)

    threading.Thread(target=trio.run, args=(serve,), daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("the fake agents did not start")
    return stop


def single_round(domain: BenchDomain, name: str) -> float:
    from gagent.host.snapshot import take_snapshot

    async def run() -> float:
        result = await take_snapshot(BenchHypervisor(domain), domain.name, name)
        assert result.freeze is not None and result.freeze.window_ms is not None
        return result.freeze.window_ms / 1000

    return trio.run(run)


def group_round(domains: list[BenchDomain], name: str, store: Path) -> tuple[list[float], float]:
    """(each member's freeze window, the common window) in seconds."""
    from gagent.host.group_snapshot import Member, snapshot_group

    async def run() -> tuple[list[float], float]:
        members = [Member(d.name, BenchHypervisor.uri, BenchHypervisor(d)) for d in domains]
        record = await snapshot_group(members, name, warn=lambda _: None, store=store)
        assert record.consistent and record.window_ms is not None, record.describe()
        return [m.frozen_ms / 1000 for m in record.members], record.window_ms / 1000  # type: ignore[operator]

    return trio.run(run)


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 12)
    series = {"single frozen": Series("single frozen")}
    for n in SIZES:
        for what in ("frozen max", "frozen median", "common window"):
            series[f"group{n} {what}"] = Series(f"group{n} {what}")
    with tempfile.TemporaryDirectory(prefix="gagent-bench-group-") as tmp:
        work = Path(tmp)
        domains = [BenchDomain(f"m{i}", work / f"m{i}.sock") for i in range(max(SIZES) + 1)]
        stop = serve_fakes([d.sock for d in domains])
        try:
            print_environment("group_snapshot", {
                "rounds": rounds, "sizes": SIZES,
                "snapshot call": f"{FAKE_CALL * 1000:.0f} ms sleep",
                "target": "fake domains + freezable fake agents on unix sockets (no guests)",
            })  # fmt: skip
            for index in range(rounds + 1):  # round 0: warm-up
                single = single_round(domains[-1], f"s{index}")
                groups = {n: group_round(domains[:n], f"g{n}-{index}", work) for n in SIZES}
                if index == 0:
                    continue
                series["single frozen"].samples.append(single)
                for n, (frozen, window) in groups.items():
                    series[f"group{n} frozen max"].samples.append(max(frozen))
                    series[f"group{n} frozen median"].samples.append(median(frozen))
                    series[f"group{n} common window"].samples.append(window)
                progress(f"   round {index}/{rounds}")
        finally:
            stop.set()
    print_table("freeze windows (ms): each member's, the group's common one", list(series.values()),
                unit="ms", scale=1000, baselines=["single frozen"], fmt="{:.2f}")  # fmt: skip
    single = series["single frozen"].samples
    targets = Targets()
    four = [a / b for a, b in zip(series["group4 frozen max"].samples, single, strict=True)]
    targets.at_most(
        "group of 4", median(four), 1.5, "longest-frozen member / single snapshot (median ratio)",
        note="fake guests: gagent's coordination around a 50 ms snapshot call",
    )  # fmt: skip
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
