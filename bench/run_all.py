"""Run every benchmark in turn and repeat their TARGET lines at the end.

Run: .venv/bin/python bench/run_all.py [--quick] [--strict] [--only NAME ...]

Each benchmark runs in its own process (the same interpreter as this one).
Exit status: 0, or 1 with --strict if a target was missed, or 2 if a
benchmark crashed.
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy
# module if it stayed first on sys.path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import argparse
import subprocess
import time

BENCHMARKS = (
    "roundtrip", "fanout", "copy", "freeze_overhead", "inventory_scan", "exporter",
    "group_snapshot",
)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()

    summary: list[str] = []
    crashed: list[str] = []
    for name in args.only or BENCHMARKS:
        argv = [sys.executable, str(_HERE / f"{name}.py")]
        if args.quick:
            argv.append("--quick")
        print(f"\n######## {name}: {' '.join(argv[1:])}", flush=True)
        started = time.monotonic()
        process = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        print(process.stdout, end="", flush=True)
        summary += [line for line in process.stdout.splitlines() if line.startswith("TARGET ")]
        took = time.monotonic() - started
        if process.returncode != 0:
            crashed.append(f"{name} (exit {process.returncode})")
        print(f"######## {name}: {took:.0f}s", flush=True)

    print("\n######## summary")
    for line in summary:
        print(line)
    for entry in crashed:
        print(f"CRASHED {entry}")
    if crashed:
        return 2
    if args.strict and any(line.rstrip().split("  (")[0].endswith("MISS") for line in summary):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
