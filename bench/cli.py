"""CLI: one `gagent agent --all ping` over N domains vs a shell loop of single calls.

The domains live on libvirt's test driver (a node file written for the run,
``test:///PATH``), each with gagent's channel pointing at its own real qemu-ga
on this host (started as bench/fanout.py starts them).  Whole-process wall
time, as a script sees it:

* all        - ``gagent agent -c URI --all ping``: one process, every domain concurrently
* loop       - ``sh -c 'for d in ...; do gagent agent -c URI "$d" ping; done'``
* all/json   - the same as ``all`` with ``--json`` (one object per line)

Target: over 100 domains, ``loop`` / ``all`` >= 20 (one call is at least 20x faster
than the loop).

With ``--uri URI`` it measures the running domains of that connection instead (real
guests with an agent on libvirt's channel), adding

* virsh-loop - ``virsh -c URI qemu-agent-command D '{"execute":"guest-ping"}'`` per domain

Target there: ``virsh-loop`` / ``all`` >= 3.

Run: .venv/bin/python bench/cli.py [--quick] [--strict] [--rounds N] [--domains N] [--uri URI]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import json
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable

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
from fanout import start_agents, stop_agents

from gagent.localagent import LocalAgent

GAGENT = str(Path(sys.executable).with_name("gagent"))


def write_node(path: Path, agents: list[LocalAgent]) -> list[str]:
    """A test-driver node file with one running domain per agent; returns their names."""
    names, domains = [], []
    for index, agent in enumerate(sorted(agents, key=lambda a: str(a.socket_path))):
        name = f"bench{index:03d}"
        names.append(name)
        domains.append(
            f"<domain type='test'><name>{name}</name><memory unit='KiB'>65536</memory>"
            "<os><type>hvm</type></os><devices><channel type='unix'>"
            f"<source mode='bind' path='{agent.socket_path}'/>"
            "<target type='virtio' name='org.gagent.agent.0'/></channel></devices></domain>"
        )
    path.write_text("<node>" + "".join(domains) + "</node>")
    return names


def timed(argv: list[str], check: Callable[[subprocess.CompletedProcess[str]], None]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    check(result)
    return elapsed


def expect_all_ok(count: int) -> Callable[[subprocess.CompletedProcess[str]], None]:
    def check(result: subprocess.CompletedProcess[str]) -> None:
        lines = result.stdout.splitlines()
        if result.returncode != 0 or len(lines) != count:
            raise RuntimeError(
                f"expected {count} answering domains, got exit {result.returncode}, "
                f"{len(lines)} lines; stderr: {result.stderr.strip()[:500]}"
            )
        if lines and lines[0].startswith("{"):
            bad = [line for line in lines if not json.loads(line)["ok"]]
            if bad:
                raise RuntimeError(f"failed domains: {bad[:3]}")

    return check


def _shell_loop(names: list[str], command: str) -> list[str]:
    """sh -c 'for d in NAMES; do COMMAND "$d"; done' (stops at the first failure)."""
    words = " ".join(shlex.quote(n) for n in names)
    return ["sh", "-c", f"for d in {words}; do {command} || exit 1; done"]


def expect_exit_0(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"exit {result.returncode}: {result.stderr.strip()[:500]}")


def make_clients(uri: str, names: list[str], *, virsh: bool) -> dict[str, Callable[[], float]]:
    count = len(names)
    loop = _shell_loop(names, f'{shlex.quote(GAGENT)} agent -c {shlex.quote(uri)} "$d" ping')
    clients = {
        "all": lambda: timed([GAGENT, "agent", "-c", uri, "--all", "ping"], expect_all_ok(count)),
        "all/json": lambda: timed(
            [GAGENT, "agent", "-c", uri, "--all", "--json", "ping"], expect_all_ok(count)
        ),
        "loop": lambda: timed(loop, expect_all_ok(count)),
    }
    if virsh:
        ping = shlex.quote('{"execute":"guest-ping"}')
        virsh_loop = _shell_loop(
            names, f'virsh -c {shlex.quote(uri)} qemu-agent-command "$d" {ping}'
        )
        clients["virsh-loop"] = lambda: timed(virsh_loop, expect_exit_0)
    return clients


def running_domains(uri: str) -> list[str]:
    result = subprocess.run(
        ["virsh", "-c", uri, "list", "--name", "--state-running"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [line for line in result.stdout.splitlines() if line.strip()]


def measure(uri: str, names: list[str], rounds: int, targets: Targets, *, virsh: bool) -> None:
    clients = make_clients(uri, names, virsh=virsh)
    series = [Series(name) for name in clients]
    interleave(rounds, list(zip(series, clients.values(), strict=True)), label="cli")
    print_table(
        f"ping on all {len(names)} domains: whole-process wall time",
        series,
        unit="ms",
        scale=1e3,
        baselines=("all",),
    )
    by = {s.name: s for s in series}
    speedup = ratio_median(by["loop"].samples, by["all"].samples)
    if virsh:
        virsh_ratio = ratio_median(by["virsh-loop"].samples, by["all"].samples)
        targets.at_least("--all >= 3x a virsh loop", virsh_ratio, 3, "virsh-loop/all")
    elif len(names) >= 100:
        targets.at_least("--all >= 20x a shell loop", speedup, 20, "loop/all")
    else:
        targets.skip(
            "--all >= 20x a shell loop",
            f"loop/all = {speedup:.1f} over {len(names)} domains; the target is for 100",
        )


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=None, help="domains (one qemu-ga each)")
    parser.add_argument("--uri", help="measure this connection's running domains instead")
    args = parser.parse_args()
    count = args.domains or (20 if args.quick else 100)
    rounds = args.rounds or (3 if args.quick else 5)

    targets = Targets()
    if args.uri:
        names = running_domains(args.uri)
        print_environment(
            f"cli: 'gagent agent --all ping' over the {len(names)} running domains of a "
            "connection vs shell loops of gagent and virsh",
            {"rounds": rounds, "domains": len(names)},
        )
        measure(args.uri, names, rounds, targets, virsh=True)
        return targets.report(args.strict)
    agents: list[LocalAgent] = []
    with tempfile.TemporaryDirectory(prefix="gagent-bench-cli-") as tmp:
        try:
            started = time.perf_counter()
            start_agents(Path(tmp), count, agents)
            progress(f"   started {len(agents)} qemu-ga in {time.perf_counter() - started:.1f}s")
            node = Path(tmp) / "node.xml"
            names = write_node(node, agents)
            uri = f"test://{node}"
            print_environment(
                f"cli: 'gagent agent --all ping' over {count} domains vs a shell loop",
                {"rounds": rounds, "domains": count, "uri": "test:///<node file>"},
            )
            measure(uri, names, rounds, targets, virsh=False)
        finally:
            stop_agents(agents)
            alive = [a.pid for a in agents if a.process.poll() is None]
            if alive:
                progress(f"   qemu-ga still running: pids {alive}")
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
