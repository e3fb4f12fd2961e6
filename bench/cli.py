"""CLI: one-shot calls vs python3/virsh, and `gagent agent --all ping` vs a shell loop.

One-shot (whole-process wall time of a single call, interleaved, ratios per round):

* socket     - ``gagent agent --socket S ping`` on a real qemu-ga on this host
* python     - ``python3 -c pass`` (the floor of any Python command), run by the
               interpreter the ``gagent`` script runs on (the ``python3`` on PATH
               may be a wrapper such as pyenv's shim, which costs more than gagent)
* imports    - ``python3 -c 'import ...'`` of what ``socket`` imports (click, the CLI,
               gagent.sync): its start-up, without talking to any agent
* domain     - ``gagent agent -c URI DOMAIN ping`` (the first domain of the run)

Target: ``socket`` / ``python`` <= 2.0.  With ``--uri`` (real guests) also

* domain/libvirt - ``gagent agent -c URI --transport libvirt DOMAIN ping``
* virsh          - ``virsh -c URI qemu-agent-command DOMAIN '{"execute":"guest-ping"}'``

Targets there: ``domain`` / ``virsh`` <= 2.0 and ``domain/libvirt`` / ``virsh`` <= 2.0.

Many domains:

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
     [--single-rounds N] [--only-single]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import json
import os
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


def cache_bytecode(tmp: Path) -> None:
    """Let the measured processes keep their compiled bytecode (under ``tmp``).

    An installed gagent has its .pyc files; a checkout run with
    PYTHONDONTWRITEBYTECODE=1 would compile every gagent module again in every
    process (tens of ms), measuring the compiler instead of the command.  The
    warm-up round fills the cache; the checkout itself stays untouched.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")


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


#: What ``gagent agent --socket S ping`` imports (tests/host/cli/test_one_shot_cli.py
#: holds that it is no more: no trio, lxml or libvirt).
ONE_SHOT_IMPORTS = "import gagent.host.cli, gagent.host.cli.agent, gagent.sync"


def measure_single(
    sock: str, uri: str, domain: str, rounds: int, targets: Targets, *, virsh: bool
) -> None:
    """One call per process: gagent on a socket and a domain vs python3 -c pass (and virsh)."""
    clients: dict[str, Callable[[], float]] = {
        "python": lambda: timed([sys.executable, "-c", "pass"], expect_exit_0),
        "imports": lambda: timed([sys.executable, "-c", ONE_SHOT_IMPORTS], expect_exit_0),
        "socket": lambda: timed([GAGENT, "agent", "--socket", sock, "ping"], expect_exit_0),
        "domain": lambda: timed([GAGENT, "agent", "-c", uri, domain, "ping"], expect_exit_0),
    }
    if virsh:
        libvirt_route = [GAGENT, "agent", "-c", uri, "--transport", "libvirt", domain, "ping"]
        ping = '{"execute":"guest-ping"}'
        clients["domain/libvirt"] = lambda: timed(libvirt_route, expect_exit_0)
        clients["virsh"] = lambda: timed(
            ["virsh", "-c", uri, "qemu-agent-command", domain, ping], expect_exit_0
        )
    series = [Series(name) for name in clients]
    interleave(rounds, list(zip(series, clients.values(), strict=True)), label="one-shot")
    baselines = ("python", "virsh") if virsh else ("python",)
    print_table("one ping per process: whole-process wall time", series, unit="ms", scale=1e3,
                baselines=baselines)  # fmt: skip
    by = {s.name: s for s in series}
    socket_ratio = ratio_median(by["socket"].samples, by["python"].samples)
    targets.at_most("--socket ping <= 2x python3 -c pass", socket_ratio, 2.0, "socket/python")
    if virsh:
        for name in ("domain", "domain/libvirt"):
            ratio = ratio_median(by[name].samples, by["virsh"].samples)
            targets.at_most(f"{name} ping <= 2x virsh", ratio, 2.0, f"{name}/virsh")
    else:
        ratio = ratio_median(by["domain"].samples, by["python"].samples)
        targets.skip(
            "domain ping <= 2x virsh",
            f"test driver (no virsh agent route); domain/python = {ratio:.2f}, use --uri",
        )


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
    parser.add_argument("--single-rounds", type=int, default=None, help="rounds of one-shot calls")
    parser.add_argument("--only-single", action="store_true", help="one-shot calls only")
    args = parser.parse_args()
    count = args.domains or (20 if args.quick else 100)
    if args.only_single or args.uri:
        count = 1  # one local qemu-ga, for the --socket call
    rounds = args.rounds or (3 if args.quick else 5)
    single_rounds = args.single_rounds or (10 if args.quick else 20)

    targets = Targets()
    agents: list[LocalAgent] = []
    with tempfile.TemporaryDirectory(prefix="gagent-bench-cli-") as tmp:
        cache_bytecode(Path(tmp))
        try:
            started = time.perf_counter()
            start_agents(Path(tmp), count, agents)
            progress(f"   started {len(agents)} qemu-ga in {time.perf_counter() - started:.1f}s")
            sock = str(agents[0].socket_path)
            if args.uri:
                names = running_domains(args.uri)
                print_environment(
                    f"cli: one-shot calls, and 'gagent agent --all ping' over the {len(names)} "
                    "running domains of a connection vs shell loops of gagent and virsh",
                    {"rounds": rounds, "one-shot rounds": single_rounds, "domains": len(names)},
                )
                measure_single(sock, args.uri, names[0], single_rounds, targets, virsh=True)
                if not args.only_single:
                    measure(args.uri, names, rounds, targets, virsh=True)
                return targets.report(args.strict)
            node = Path(tmp) / "node.xml"
            names = write_node(node, agents)
            uri = f"test://{node}"
            print_environment(
                f"cli: one-shot calls, and 'gagent agent --all ping' over {count} domains vs "
                "a shell loop",
                {"rounds": rounds, "one-shot rounds": single_rounds, "domains": count,
                 "uri": "test:///<node file>"},
            )  # fmt: skip
            measure_single(sock, uri, names[0], single_rounds, targets, virsh=False)
            if not args.only_single:
                measure(uri, names, rounds, targets, virsh=False)
        finally:
            stop_agents(agents)
            alive = [a.pid for a in agents if a.process.poll() is None]
            if alive:
                progress(f"   qemu-ga still running: pids {alive}")
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
