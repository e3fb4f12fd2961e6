"""Round trip of guest-ping and guest-info against ONE real local qemu-ga.

Clients, each connected in turn (qemu-ga serves one client at a time): connect,
N calls timed, disconnect; then the next client; repeated for several rounds.

* floor         - blocking socket: sendall + recv until b"\\n" (no JSON parsing)
* floor+json    - the floor plus json.loads of each reply (what any client that
                  returns data must at least do; reference only)
* trio-naive    - trio.open_unix_socket: send_all + receive_some until b"\\n"
* gagent.execute- gagent.open_agent, agent.execute("guest-ping"/"guest-info")
* gagent.typed  - agent.ping() / agent.info() (guards + AgentInfo dataclasses)
* qmp.legacy    - qemu.qmp.legacy.QEMUMonitorProtocol(path), connect(negotiate=False), cmd()
* qmp.async     - qemu.qmp.QMPClient with await_greeting/negotiate off, execute()

Targets: gagent <= 1.3x the floor; gagent >= 3x faster than qemu.qmp; typed guest-info
<= 1.1x the floor's wall time and <= 2x its client CPU; typed guest-ping <= 1.5x the
floor's client CPU (issue 18).  trio-naive's own ratios show what the event loop alone
costs: a target below them is out of reach of any trio client.

Run: .venv/bin/python bench/roundtrip.py [--quick] [--strict] [--profile]
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

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import Callable

import trio
from _common import (
    Series,
    Stopwatch,
    Targets,
    interleave,
    make_parser,
    print_environment,
    print_table,
    progress,
    ratio_median,
)

import gagent
from gagent.localagent import start_local_qemu_ga

OPS = {"ping": "guest-ping", "info": "guest-info"}

# ---------------------------------------------------------------- the clients
# Each returns (wall, CPU) seconds spent in the N calls only (connect/disconnect excluded).


def floor_batch(path: str, command: str, n: int) -> tuple[float, float]:
    request = f'{{"execute":"{command}"}}\n'.encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        watch = Stopwatch()
        for _ in range(n):
            sock.sendall(request)
            data = sock.recv(65536)
            while not data.endswith(b"\n"):
                data += sock.recv(65536)
        return watch.stop()


def floor_json_batch(path: str, command: str, n: int) -> tuple[float, float]:
    request = f'{{"execute":"{command}"}}\n'.encode()
    loads = json.loads
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        watch = Stopwatch()
        for _ in range(n):
            sock.sendall(request)
            data = sock.recv(65536)
            while not data.endswith(b"\n"):
                data += sock.recv(65536)
            loads(data)
        return watch.stop()


async def _trio_naive(path: str, command: str, n: int) -> tuple[float, float]:
    request = f'{{"execute":"{command}"}}\n'.encode()
    stream = await trio.open_unix_socket(path)
    async with stream:
        watch = Stopwatch()
        for _ in range(n):
            await stream.send_all(request)
            data = await stream.receive_some(65536)
            while not data.endswith(b"\n"):
                data += await stream.receive_some(65536)
        return watch.stop()


def trio_naive_batch(path: str, command: str, n: int) -> tuple[float, float]:
    return trio.run(_trio_naive, path, command, n)


async def _gagent_execute(path: str, command: str, n: int) -> tuple[float, float]:
    async with gagent.open_agent(path) as agent:
        execute = agent.execute
        watch = Stopwatch()
        for _ in range(n):
            await execute(command)
        return watch.stop()


def gagent_execute_batch(path: str, command: str, n: int) -> tuple[float, float]:
    return trio.run(_gagent_execute, path, command, n)


async def _gagent_typed(path: str, command: str, n: int) -> tuple[float, float]:
    async with gagent.open_agent(path) as agent:
        method = {"guest-ping": agent.ping, "guest-info": agent.info}[command]
        watch = Stopwatch()
        for _ in range(n):
            await method()
        return watch.stop()


def gagent_typed_batch(path: str, command: str, n: int) -> tuple[float, float]:
    return trio.run(_gagent_typed, path, command, n)


def qmp_legacy_batch(path: str, command: str, n: int) -> tuple[float, float]:
    from qemu.qmp.legacy import QEMUMonitorProtocol

    qmp = QEMUMonitorProtocol(path)
    qmp.connect(negotiate=False)  # qemu-ga sends no greeting
    try:
        cmd = qmp.cmd
        watch = Stopwatch()
        for _ in range(n):
            cmd(command)
        return watch.stop()
    finally:
        qmp.close()


async def _qmp_async(path: str, command: str, n: int) -> tuple[float, float]:
    from qemu.qmp import QMPClient

    client = QMPClient("bench")
    client.await_greeting = False  # qemu-ga sends no greeting...
    client.negotiate = False  # ...and knows no qmp_capabilities
    await client.connect(path)
    try:
        execute = client.execute
        watch = Stopwatch()
        for _ in range(n):
            await execute(command)
        return watch.stop()
    finally:
        await client.disconnect()


def qmp_async_batch(path: str, command: str, n: int) -> tuple[float, float]:
    # The legacy client uses the thread's current loop too: one loop for both.
    return (
        asyncio.get_event_loop_policy()
        .get_event_loop()
        .run_until_complete(_qmp_async(path, command, n))
    )


CLIENTS: dict[str, Callable[[str, str, int], tuple[float, float]]] = {
    "floor": floor_batch,
    "floor+json": floor_json_batch,
    "trio-naive": trio_naive_batch,
    "gagent.execute": gagent_execute_batch,
    "gagent.typed": gagent_typed_batch,
    "qmp.legacy": qmp_legacy_batch,
    "qmp.async": qmp_async_batch,
}

# ---------------------------------------------------------------- profiling


def profile_gagent(path: str, n: int) -> None:
    """cProfile of gagent.execute("guest-info") and ("guest-ping") batches."""
    import cProfile
    import pstats

    for command in ("guest-ping", "guest-info"):
        profiler = cProfile.Profile()
        profiler.enable()
        gagent_execute_batch(path, command, n)
        profiler.disable()
        print(f"-- cProfile: gagent.execute({command!r}) x {n}, top 18 by own time")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(18)


# ---------------------------------------------------------------- main


PIN_MODES = ("none", "same", "split")


def pin(mode: str, agent_pid: int) -> str:
    """Pin this process and the agent: "same" CPU or "split" over two; returns a description."""
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "none" or len(cpus) < 2:
        return "not pinned"
    mine, theirs = (cpus[-1], cpus[-1]) if mode == "same" else (cpus[0], cpus[-1])
    os.sched_setaffinity(0, {mine})
    os.sched_setaffinity(agent_pid, {theirs})
    return f"client on CPU {mine}, qemu-ga on CPU {theirs}"


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None, help="calls per batch")
    parser.add_argument(
        "--pin",
        choices=PIN_MODES,
        default="none",
        help="CPU placement: none (the scheduler's), same (one CPU: round trips are "
        "context switches, ratios weigh client CPU cost), split (two CPUs: every "
        "round trip pays cross-CPU wake-ups)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of gagent's batches"
    )
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    calls = args.calls or (100 if args.quick else 400)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    targets = Targets()
    with tempfile.TemporaryDirectory(prefix="gagent-bench-") as tmp:
        agent = start_local_qemu_ga(tmp)
        try:
            path = str(agent.socket_path)
            placement = pin(args.pin, agent.pid)
            print_environment(
                "roundtrip: one local qemu-ga, one client at a time",
                {"rounds": rounds, "calls/batch": calls, "pin": f"{args.pin} ({placement})"},
            )
            wall: dict[str, list[Series]] = {}
            cpu: dict[str, list[Series]] = {}
            for op, command in OPS.items():
                wall[op] = [Series(name) for name in CLIENTS]
                cpu[op] = [Series(name) for name in CLIENTS]
                steps = [
                    (
                        (w, c),
                        lambda fn=fn, command=command: [
                            t / calls for t in fn(path, command, calls)
                        ],
                    )
                    for w, c, fn in zip(wall[op], cpu[op], CLIENTS.values(), strict=True)
                ]
                interleave(rounds, steps, label=op)
            for op in OPS:
                print_table(
                    f"{OPS[op]}: wall time per call",
                    wall[op],
                    unit="us",
                    scale=1e6,
                    baselines=("floor", "gagent.execute"),
                )
            for op in OPS:
                print_table(
                    f"{OPS[op]}: client CPU time per call (this process only; informational)",
                    cpu[op],
                    unit="us",
                    scale=1e6,
                    baselines=("floor",),
                )
            floor_ping = Series("", wall["ping"][0].samples).median * 1e6
            print(
                f"   regime: floor guest-ping = {floor_ping:.0f} us; ~20 us means client and "
                "qemu-ga share a CPU (busy machine\n   or --pin same) and ratios weigh client "
                "CPU; ~80-150 us means cross-CPU wake-ups, which hide it.\n"
            )
            for op in OPS:
                by = {s.name: s for s in wall[op]}
                for name in ("gagent.execute", "gagent.typed"):
                    targets.at_most(
                        f"{op}: {name} <= 1.3x floor",
                        ratio_median(by[name].samples, by["floor"].samples),
                        1.3,
                        f"{name}/floor",
                    )
                for qmp in ("qmp.legacy", "qmp.async"):
                    ceiling = ratio_median(by[qmp].samples, by["floor"].samples)
                    targets.at_least(
                        f"{op}: gagent.execute >= 3x faster than {qmp}",
                        ratio_median(by[qmp].samples, by["gagent.execute"].samples),
                        3.0,
                        f"{qmp}/gagent.execute",
                        note=f"ceiling: {qmp}/floor = {ceiling:.2f}",
                    )
            typed = {op: {s.name: s for s in wall[op]}["gagent.typed"] for op in OPS}
            floor = {op: {s.name: s for s in wall[op]}["floor"] for op in OPS}
            targets.at_most(
                "info: gagent.typed <= 1.1x floor (wall)",
                ratio_median(typed["info"].samples, floor["info"].samples),
                1.1,
                "gagent.typed/floor",
            )
            for op, ceiling in (("info", 2.0), ("ping", 1.5)):
                by_cpu = {s.name: s for s in cpu[op]}
                naive = ratio_median(by_cpu["trio-naive"].samples, by_cpu["floor"].samples)
                targets.at_most(
                    f"{op}: gagent.typed <= {ceiling}x floor (client CPU)",
                    ratio_median(by_cpu["gagent.typed"].samples, by_cpu["floor"].samples),
                    ceiling,
                    "gagent.typed/floor CPU",
                    note=f"trio-naive/floor CPU = {naive:.2f}",
                )
            if args.profile:
                profile_gagent(path, calls * 5)
        finally:
            agent.stop()
            loop.close()
    progress("")
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
