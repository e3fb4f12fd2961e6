"""Where the first reply on a fresh connection into a guest goes.

A one-shot call pays for a fresh connection to the guest's channel socket, and the
first guest-sync-delimited on it takes far longer than later ones (58-100 ms in a
TCG guest against ~1 ms).  This separates the parts:

* ``fresh``       connect, then 0xFF + guest-sync-delimited at once: the first reply;
* ``fresh+wait``  connect, wait ``--wait`` ms (default 150) doing nothing, then the
                  same exchange: only the exchange is timed;
* ``again``       a second guest-sync-delimited on the same connection.

If the delay were gagent's handshake (0xFF, the sync, reading the delimiter),
``fresh+wait`` would cost what ``fresh`` does.  If it is the guest agent noticing
that a host connected, waiting first hides it.  qemu-ga's channel loop on
virtio-serial sleeps 100 ms whenever a read finds no host end (qga/main.c,
channel_event_cb: "virtio causes us to spin here when no process is attached to
host-side chardev. sleep a bit to mitigate this" -> usleep(100 * 1000)), so a
host end that connects is seen at the next wake-up: U(0, 100) ms plus the
exchange, which only a connection kept open avoids (libvirtd keeps one; so does
the exporter).

The local qemu-ga (unix-listen, no virtio) is the control: it accepts at once.
Give a guest's channel socket with ``--socket`` (e.g. the e2e harness's
``org.gagent.agent.0``); without it only the control runs.

    .venv/bin/python bench/first_sync.py [--socket PATH ...] [--rounds N] [--wait MS]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede the other imports
import sys
from pathlib import Path

# This directory holds copy.py, which would shadow the standard library's copy module.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import json
import socket
import tempfile
import time

from _common import Series, make_parser, print_environment, print_table, progress

from gagent.localagent import local_qemu_ga

DELIMITER = b"\xff"


def _exchange(sock: socket.socket, sync_id: int, deadline: float) -> float:
    """0xFF + guest-sync-delimited; seconds until its reply (after the agent's own 0xFF)
    is complete."""
    request = json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}})
    started = time.perf_counter()
    sock.sendall(DELIMITER + request.encode() + b"\n")
    buffer = b""
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the agent closed the connection")
        buffer += chunk
        _, _, reply = buffer.rpartition(DELIMITER)
        if reply.endswith(b"\n") and json.loads(reply).get("return") == sync_id:
            return time.perf_counter() - started


def measure(path: str, rounds: int, wait_ms: float) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"fresh": [], "fresh+wait": [], "again": []}
    for round_number in range(rounds):
        for kind in ("fresh", "fresh+wait"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(path)
                if kind == "fresh+wait":
                    time.sleep(wait_ms / 1000)
                deadline = time.monotonic() + 10
                base = 1_000_000 + round_number * 10
                samples[kind].append(_exchange(sock, base + (kind == "fresh+wait"), deadline))
                if kind == "fresh":
                    samples["again"].append(_exchange(sock, base + 5, deadline))
            time.sleep(0.05)  # let the agent see the host end go away before the next round
    return samples


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--socket", action="append", default=[], help="a guest's channel socket")
    parser.add_argument("--wait", type=float, default=150.0, help="ms between connect and sync")
    args = parser.parse_args()
    rounds = args.rounds or (8 if args.quick else 30)
    print_environment("first_sync: the first reply on a fresh connection", {
        "rounds": rounds, "wait_ms": args.wait, "sockets": args.socket or "(control only)",
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, local_qemu_ga(tmp) as control:
        targets = {"local qemu-ga": str(control.socket_path)}
        targets.update({f"guest {i}": path for i, path in enumerate(args.socket)})
        for label, path in targets.items():
            progress(f"{label}: {rounds} rounds")
            samples = measure(path, rounds, args.wait)
            print_table(
                f"{label} ({path}): the first complete reply",
                [Series(kind, values) for kind, values in samples.items()],
                unit="ms", scale=1e3, baselines=["again"],
            )  # fmt: skip


if __name__ == "__main__":
    main()
