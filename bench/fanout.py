"""Fan-out: guest-info from many qemu-ga processes at once, cold.

Every sample contacts every agent once, cold: connect, guest-sync-delimited,
guest-info, close.  One sample per client per round, clients interleaved.

* gagent          - gagent.open_agent + agent.execute("guest-info"), all at once in a nursery
* gagent.info     - the same with the typed agent.info() (parses AgentInfo)
* gagent/limit32  - gagent.execute with at most 32 connections at a time
* trio-naive      - trio.open_unix_socket, 0xFF + sync, read to 0xFF + line, guest-info,
                    read line, json.loads both (same round trips as gagent), all at once
* trio-pipelined  - trio-naive sending sync and guest-info in ONE write (one round trip)
* sequential      - the trio-naive exchange with blocking sockets, one agent after another

Targets: gagent <= 1.5x trio-naive; gagent and gagent.info <= 1.2x trio-naive (issue 18).

Run: .venv/bin/python bench/fanout.py [--quick] [--strict] [--agents N]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy
# module (imported by dataclasses, attrs, trio...) if it stayed first on sys.path:
# move it to the end, where only _common is looked up.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import json
import random
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import trio
from _common import (
    Series,
    Targets,
    interleave,
    make_parser,
    print_environment,
    print_table,
    progress,
    ratio_median,
)

import gagent
from gagent.localagent import LocalAgent, start_local_qemu_ga

SENTINEL = b"\xff"
GUEST_INFO = b'{"execute":"guest-info"}\n'


def sync_request(sync_id: int) -> bytes:
    return SENTINEL + b'{"execute":"guest-sync-delimited","arguments":{"id":%d}}\n' % sync_id


def check_sync_line(line: bytes, sync_id: int) -> None:
    if json.loads(line).get("return") != sync_id:
        raise RuntimeError(f"unexpected sync reply {line!r}")


def check_info_line(line: bytes) -> None:
    if "return" not in json.loads(line):
        raise RuntimeError(f"unexpected guest-info reply {line[:200]!r}")


# ---------------------------------------------------------------- agents


def start_agents(workdir: Path, count: int, agents: list[LocalAgent]) -> None:
    """Start ``count`` qemu-ga processes, appending each to ``agents`` as it comes up
    (so the caller can stop every one that started, even if a later one fails)."""

    def start(index: int) -> None:
        agents.append(start_local_qemu_ga(workdir, name=f"qga{index:03d}", ready_timeout=30))

    with ThreadPoolExecutor(max_workers=min(16, count)) as pool:
        futures = [pool.submit(start, i) for i in range(count)]
        try:
            for future in futures:
                future.result()
        except BaseException:
            # Start no more; the ones already starting finish (and are listed).
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def stop_agents(agents: list[LocalAgent]) -> None:
    """Stop every agent by its PID (LocalAgent.stop), in parallel; never raises."""

    def stop(agent: LocalAgent) -> None:
        try:
            agent.stop()
        except Exception as exc:
            progress(f"   could not stop qemu-ga pid {agent.pid}: {exc}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(stop, agents))


# ---------------------------------------------------------------- the clients
# Each returns the seconds to get guest-info from all agents.


async def _gagent_one(path: str) -> None:
    async with gagent.open_agent(path) as agent:
        await agent.execute("guest-info")


async def _gagent_info_one(path: str) -> None:
    async with gagent.open_agent(path) as agent:
        await agent.info()


async def _fan(paths: list[str], one: Callable, limit: int | None = None) -> float:
    limiter = trio.CapacityLimiter(limit) if limit else None

    async def run(path: str) -> None:
        if limiter is None:
            await one(path)
        else:
            async with limiter:
                await one(path)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for path in paths:
            nursery.start_soon(run, path)
    return time.perf_counter() - start


class _LineReader:
    """Just enough buffering for the naive clients."""

    def __init__(self, receive: Callable) -> None:
        self.receive = receive
        self.buffer = b""

    async def until(self, delimiter: bytes) -> bytes:
        while (index := self.buffer.find(delimiter)) < 0:
            data = await self.receive(65536)
            if not data:
                raise EOFError("agent closed the connection")
            self.buffer += data
        head, self.buffer = self.buffer[:index], self.buffer[index + len(delimiter) :]
        return head


async def _naive_one(path: str, pipelined: bool = False) -> None:
    sync_id = random.randrange(1, 2**31)
    stream = await trio.open_unix_socket(path)
    async with stream:
        reader = _LineReader(stream.receive_some)
        if pipelined:
            await stream.send_all(sync_request(sync_id) + GUEST_INFO)
        else:
            await stream.send_all(sync_request(sync_id))
        await reader.until(SENTINEL)  # drops the parse-error line the 0xFF provokes
        check_sync_line(await reader.until(b"\n"), sync_id)
        if not pipelined:
            await stream.send_all(GUEST_INFO)
        check_info_line(await reader.until(b"\n"))


async def _pipelined_one(path: str) -> None:
    await _naive_one(path, pipelined=True)


def _blocking_one(path: str) -> None:
    sync_id = random.randrange(1, 2**31)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(sync_request(sync_id))
        buffer = b""
        while SENTINEL not in buffer:
            buffer += sock.recv(65536)
        buffer = buffer[buffer.index(SENTINEL) + 1 :]
        while b"\n" not in buffer:
            buffer += sock.recv(65536)
        line, buffer = buffer.split(b"\n", 1)
        check_sync_line(line, sync_id)
        sock.sendall(GUEST_INFO)
        while b"\n" not in buffer:
            buffer += sock.recv(65536)
        check_info_line(buffer.split(b"\n", 1)[0])


def sequential(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        _blocking_one(path)
    return time.perf_counter() - start


def make_clients(paths: list[str]) -> dict[str, Callable[[], float]]:
    return {
        "gagent": lambda: trio.run(_fan, paths, _gagent_one),
        "gagent.info": lambda: trio.run(_fan, paths, _gagent_info_one),
        "gagent/limit32": lambda: trio.run(_fan, paths, _gagent_one, 32),
        "trio-naive": lambda: trio.run(_fan, paths, _naive_one),
        "trio-pipelined": lambda: trio.run(_fan, paths, _pipelined_one),
        "sequential": lambda: sequential(paths),
    }


# ---------------------------------------------------------------- profiling


def profile_gagent(paths: list[str], repeat: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        trio.run(_fan, paths, _gagent_one)
    profiler.disable()
    print(f"-- cProfile: gagent fan-out to {len(paths)} agents x {repeat}, top 20 by own time")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(20)


# ---------------------------------------------------------------- main


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=None, help="qemu-ga processes")
    parser.add_argument("--profile", action="store_true", help="also cProfile gagent's fan-out")
    args = parser.parse_args()
    count = args.agents or (20 if args.quick else 200)
    rounds = args.rounds or (7 if args.quick else 21)

    targets = Targets()
    agents: list[LocalAgent] = []
    with tempfile.TemporaryDirectory(prefix="gagent-bench-") as tmp:
        try:
            started = time.perf_counter()
            start_agents(Path(tmp), count, agents)
            progress(f"   started {len(agents)} qemu-ga in {time.perf_counter() - started:.1f}s")
            paths = sorted(str(a.socket_path) for a in agents)
            print_environment(
                f"fanout: guest-info from {count} qemu-ga, cold (connect, sync, command, close)",
                {"rounds": rounds, "agents": count},
            )
            clients = make_clients(paths)
            series = [Series(name) for name in clients]
            interleave(rounds, list(zip(series, clients.values(), strict=True)), label="fanout")
            print_table(
                f"guest-info from all {count} agents: wall time",
                series,
                unit="ms",
                scale=1e3,
                baselines=("trio-naive", "gagent"),
            )
            by = {s.name: s for s in series}
            targets.at_most(
                "gagent <= 1.5x trio-naive",
                ratio_median(by["gagent"].samples, by["trio-naive"].samples),
                1.5,
                "gagent/trio-naive",
            )
            for name in ("gagent", "gagent.info"):
                targets.at_most(
                    f"{name} <= 1.2x trio-naive",
                    ratio_median(by[name].samples, by["trio-naive"].samples),
                    1.2,
                    f"{name}/trio-naive",
                )
            if args.profile:
                profile_gagent(paths, 5)
        finally:
            stop_agents(agents)
            alive = [a.pid for a in agents if a.process.poll() is None]
            if alive:
                progress(f"   qemu-ga still running: pids {alive}")
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
