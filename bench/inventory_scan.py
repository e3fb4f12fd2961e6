"""Inventory scan: gagent vs a virsh shell loop, 10 hypervisors x 100 domains (and x 1,000).

Each "hypervisor" is a node XML file for libvirt's test driver (test:///PATH.xml),
generated in a temporary directory: 100 domains each (two thirds running), one
NIC and one disk per domain.  Clients, measured in the same run, interleaved:

* gagent-cli   - `gagent inventory scan NAME=URI... --format json` in a fresh process
                 (Python start-up and imports included; agents on, as by default:
                 the domains have no agent channel, so each is marked unavailable)
* gagent-lib   - gagent.host.inventory.scan_hypervisors(...) in this process
* virsh-loop   - the shell loop the issue names: per hypervisor `virsh list --all
                 --name`, then `virsh dumpxml NAME` per domain (one process each)
* virsh-batch  - reference: ONE virsh per hypervisor reading the same commands on
                 stdin (no per-domain process; one connection per hypervisor)

Then 10 x 1,000 domains (skipped with --quick) for gagent only, to show the cost
growing linearly; the virsh loop is not run there (each call re-reads the whole
1,000-domain node file: it would take an hour), its cost is estimated from a
sample of calls and printed as such.

Targets: gagent-cli < 2 s for the 1,000 domains; per-domain cost at 10 x 1,000
within 1.5x of the cost at 10 x 100 (linear growth).

Run: .venv/bin/python bench/inventory_scan.py [--quick] [--strict] [--rounds N]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy
# module (imported by dataclasses, attrs, trio...) if it stayed first on sys.path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time

import trio
from _common import Series, Targets, interleave, make_parser, print_table, progress

from gagent.host.inventory import parse_targets, scan_hypervisors
from gagent.host.inventory.testnode import NodeDomain, write_node

HYPERVISORS = 10
# The inventory group may not be registered in the gagent CLI yet: register it here.
RUN_CLI = (
    "import sys; from gagent.host.cli import cli, main; "
    "from gagent.host.cli.inventory import inventory_group; "
    "cli.add_command(inventory_group); sys.exit(main(sys.argv[1:]))"
)


def make_nodes(workdir: Path, per_hypervisor: int) -> list[str]:
    """NAME=URI per hypervisor."""
    specs = []
    for h in range(HYPERVISORS):
        domains = [
            NodeDomain(
                f"vm{h:02d}-{i:04d}",
                running=i % 3 != 0,
                nics=[("br0", f"52:54:00:{h:02x}:{i // 256:02x}:{i % 256:02x}")],
                disks=[f"/var/lib/libvirt/images/vm{h:02d}-{i:04d}.qcow2"],
            )
            for i in range(per_hypervisor)
        ]
        uri = write_node(workdir / f"kvmhost{h:02d}-{per_hypervisor}.xml", domains)
        specs.append(f"kvmhost{h:02d}={uri}")
    return specs


def uris(specs: list[str]) -> list[str]:
    return [spec.split("=", 1)[1] for spec in specs]


def run_gagent_cli(specs: list[str], expected: int) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "inventory", "scan", *specs, "--format", "json"],
        capture_output=True,
        check=True,
    ).stdout
    took = time.perf_counter() - start
    found = len(json.loads(out)["guests"])
    if found != expected:
        raise RuntimeError(f"gagent found {found} domains, not {expected}")
    return took


def run_gagent_lib(specs: list[str], expected: int) -> float:
    targets = parse_targets(specs)
    start = time.perf_counter()
    result = trio.run(lambda: scan_hypervisors(targets))
    took = time.perf_counter() - start
    if len(result.guests) != expected:
        raise RuntimeError(f"gagent found {len(result.guests)} domains, not {expected}")
    return took


VIRSH_LOOP = r"""
n=0
for uri in "$@"; do
  for dom in $(virsh -q -c "$uri" list --all --name); do
    virsh -q -c "$uri" dumpxml "$dom" > /dev/null || exit 1
    n=$((n + 1))
  done
done
echo "$n"
"""

VIRSH_BATCH = r"""
n=0
for uri in "$@"; do
  names=$(virsh -q -c "$uri" list --all --name)
  { for dom in $names; do echo "dumpxml $dom"; done; } | virsh -q -c "$uri" > /dev/null || exit 1
  n=$((n + $(echo "$names" | grep -c .)))
done
echo "$n"
"""


def run_shell(script: str, specs: list[str], expected: int) -> float:
    start = time.perf_counter()
    out = subprocess.run(
        ["bash", "-c", script, "bash", *uris(specs)], capture_output=True, text=True, check=True
    ).stdout
    took = time.perf_counter() - start
    if int(out.strip()) != expected:
        raise RuntimeError(f"the shell loop saw {out.strip()} domains, not {expected}")
    return took


def virsh_dumpxml_seconds(uri: str, name: str, calls: int = 5) -> float:
    """Median seconds of one `virsh dumpxml` against ``uri`` (for the estimate)."""
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        subprocess.run(["virsh", "-q", "-c", uri, "dumpxml", name], capture_output=True, check=True)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    if shutil.which("virsh") is None:
        print("virsh is not installed (apt-get install libvirt-clients)", file=sys.stderr)
        return 2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("== inventory scan: gagent vs virsh, libvirt test driver")
    print(f"   python {platform.python_version()}, trio {trio.__version__}, "
          f"{os.cpu_count()} CPUs, load {load}")  # fmt: skip
    print(f"   hypervisors={HYPERVISORS}, rounds={rounds}, quick={args.quick}")
    print()
    targets = Targets()
    with tempfile.TemporaryDirectory(prefix="gagent-bench-inv-") as tmp:
        workdir = Path(tmp)
        small = make_nodes(workdir, 100)
        n_small = HYPERVISORS * 100
        cli = Series("gagent-cli")
        lib = Series("gagent-lib")
        loop = Series("virsh-loop")
        batch = Series("virsh-batch")
        progress(f"   warm-up: {n_small} domains")
        run_gagent_cli(small, n_small)
        run_gagent_lib(small, n_small)
        interleave(
            rounds,
            [
                (cli, lambda: run_gagent_cli(small, n_small)),
                (lib, lambda: run_gagent_lib(small, n_small)),
                (batch, lambda: run_shell(VIRSH_BATCH, small, n_small)),
                (loop, lambda: run_shell(VIRSH_LOOP, small, n_small)),
            ],
            warmup=0,
            label=f"{HYPERVISORS} x 100",
        )
        print_table(
            f"{HYPERVISORS} hypervisors x 100 domains = {n_small} domains (seconds per scan)",
            [cli, lib, batch, loop],
            unit="s",
            fmt="{:.3f}",
            baselines=["virsh-loop", "gagent-cli"],
        )
        print(f"   virsh-loop / gagent-cli = {loop.median / cli.median:.1f}x "
              f"(gagent is that many times faster than the shell loop)\n")  # fmt: skip
        targets.at_most(
            "scan 1,000 domains", cli.median, 2.0, "gagent-cli median seconds",
            f"{loop.median / cli.median:.0f}x faster than virsh-loop",
        )  # fmt: skip
        if args.quick:
            targets.skip("linear growth", "--quick: 10 x 1,000 not run")
        else:
            big = make_nodes(workdir, 1000)
            n_big = HYPERVISORS * 1000
            cli_big, lib_big = Series("gagent-cli"), Series("gagent-lib")
            progress(f"   warm-up: {n_big} domains")
            run_gagent_lib(big, n_big)
            interleave(
                rounds,
                [
                    (cli_big, lambda: run_gagent_cli(big, n_big)),
                    (lib_big, lambda: run_gagent_lib(big, n_big)),
                ],
                warmup=0,
                label=f"{HYPERVISORS} x 1000",
            )
            print_table(
                f"{HYPERVISORS} hypervisors x 1,000 domains = {n_big} domains (seconds per scan)",
                [cli_big, lib_big],
                unit="s",
                fmt="{:.3f}",
            )
            per_call = virsh_dumpxml_seconds(uris(big)[0], "vm00-0001")
            print(f"   virsh-loop not run at this size: one `virsh dumpxml` against a "
                  f"1,000-domain node file takes {per_call:.3f} s (median of 5), so the loop "
                  f"would take about {per_call * n_big / 60:.0f} min\n")  # fmt: skip
            print("-- growth: microseconds per domain")
            for name, one, ten in (("gagent-cli", cli, cli_big), ("gagent-lib", lib, lib_big)):
                small_us, big_us = one.median / n_small * 1e6, ten.median / n_big * 1e6
                print(f"   {name:<11} 10x100: {small_us:7.0f} us   10x1000: {big_us:7.0f} us   "
                      f"ratio {big_us / small_us:.2f}")  # fmt: skip
            print()
            growth = (lib_big.median / n_big) / (lib.median / n_small)
            targets.at_most(
                "linear growth", growth, 1.5, "gagent-lib per-domain cost, 10x1000 / 10x100",
                f"10x1000 takes {lib_big.median:.2f} s",
            )  # fmt: skip
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
