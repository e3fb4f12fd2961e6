"""How large a guest-file-write request and a guest-file-read reply libvirt's
qemuAgentCommand passes for one running domain, and how long each takes.

::

    .venv/bin/python bench/libvirt_agent_bounds.py DOMAIN [-c URI] [--max-kib N] [--wait S]

Talks to libvirt directly (libvirt_qemu.qemuAgentCommand, as gagent's
``--transport libvirt`` does) and to nothing of gagent's, so it measures libvirt
and the guest, not gagent's chunking.  In a scratch file of the guest's /tmp
(removed at the end):

* writes: one guest-file-write per size, growing, each timed; the first that
  fails or takes over ``--wait`` seconds stops the ladder.  CAUTION: such a
  request may leave libvirt's agent for the domain stuck for minutes ("cannot
  acquire state change lock"), so the ladder never goes past the first failure;
* reads: the scratch file is filled to ``--max-kib`` with small writes, then one
  guest-file-read per count, growing, each timed, stopping the same way.

One line per request: kind, data bytes, JSON bytes of the request (writes) or
of the reply (reads), seconds, ok/FAILED.  The last lines give the largest
request and reply that passed.  Exit 0 if every size passed, 1 if one did not.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

import libvirt
import libvirt_qemu

KIB = 1024
#: Data sizes tried (KiB), up to --max-kib.
LADDER_KIB = (16, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 512, 768, 1024, 2048, 3072)
SCRATCH = "/tmp/.gagent-bound-probe"
#: Writes used to fill the scratch file before the reads (well below any bound).
FILL_KIB = 32


def command(dom: libvirt.virDomain, name: str, arguments: dict, wait: int) -> tuple[str, float]:
    request = json.dumps({"execute": name, "arguments": arguments})
    start = time.monotonic()
    reply = libvirt_qemu.qemuAgentCommand(dom, request, wait, 0)
    return reply, time.monotonic() - start


def returned(reply: str) -> object:
    return json.loads(reply)["return"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("domain")
    parser.add_argument("-c", "--connect", default=None, help="libvirt URI")
    parser.add_argument("--max-kib", type=int, default=1024, help="largest data size tried")
    parser.add_argument("--wait", type=int, default=20, help="seconds one request may take")
    parser.add_argument(
        "--kib",
        type=float,
        nargs="+",
        default=LADDER_KIB,
        help="data sizes to try, in KiB (default: a ladder from 16 to 3072)",
    )
    parser.add_argument("--skip-writes", action="store_true")
    parser.add_argument("--skip-reads", action="store_true")
    args = parser.parse_args()
    dom = libvirt.open(args.connect).lookupByName(args.domain)
    sizes = [int(k * KIB) for k in args.kib if k <= args.max_kib]
    largest = {"write": 0, "read": 0}
    handle = returned(command(dom, "guest-file-open", {"path": SCRATCH, "mode": "w+"}, 10)[0])
    try:
        ok = args.skip_writes or ladder(dom, "write", handle, sizes, args.wait, largest)
        if ok and not args.skip_reads:
            fill = base64.b64encode(bytes(FILL_KIB * KIB)).decode()
            for _ in range(args.max_kib // FILL_KIB):
                command(dom, "guest-file-write", {"handle": handle, "buf-b64": fill}, args.wait)
            ok = ladder(dom, "read", handle, sizes, args.wait, largest)
    finally:
        try:
            command(dom, "guest-file-close", {"handle": handle}, 10)
            # truncating reopen, then close: the scratch file stays, empty (no rm without exec)
            empty = returned(command(dom, "guest-file-open", {"path": SCRATCH, "mode": "w"}, 10)[0])
            command(dom, "guest-file-close", {"handle": empty}, 10)
        except libvirt.libvirtError as exc:
            print(f"cleanup failed: {exc}", file=sys.stderr)
    print(f"largest write request passed: {largest['write']} bytes")
    print(f"largest read reply passed: {largest['read']} bytes")
    return 0 if ok else 1


def ladder(
    dom: libvirt.virDomain, kind: str, handle: int, sizes: list[int], wait: int, largest: dict
) -> bool:
    """One request per size, growing; False at the first that fails (and stop there)."""
    for size in sizes:
        if kind == "write":
            name, arguments = "guest-file-write", {"handle": handle, "buf-b64": b64zeros(size)}
            measured = len(json.dumps({"execute": name, "arguments": arguments}))
        else:
            command(dom, "guest-file-seek", {"handle": handle, "offset": 0, "whence": "set"}, 10)
            name, arguments = "guest-file-read", {"handle": handle, "count": size}
        ok, seconds, reply_or_why = probe(dom, name, arguments, wait)
        if kind == "read":
            measured = len(reply_or_why) if ok else 0
        what = "request" if kind == "write" else "reply"
        verdict = "ok" if ok else f"FAILED {reply_or_why}"
        print(f"{kind:<5} {size:>8} data {measured:>8} {what} bytes {seconds:7.2f} s {verdict}")
        sys.stdout.flush()
        if not ok:
            return False
        largest[kind] = measured
    return True


def b64zeros(size: int) -> str:
    return base64.b64encode(bytes(size)).decode()


def probe(dom: libvirt.virDomain, name: str, arguments: dict, wait: int) -> tuple[bool, float, str]:
    """(passed within ``wait``, seconds, the reply or why it failed)."""
    start = time.monotonic()
    try:
        reply, seconds = command(dom, name, arguments, wait)
    except libvirt.libvirtError as exc:
        return False, time.monotonic() - start, str(exc)
    if seconds > wait:
        return False, seconds, "too slow"
    return True, seconds, reply


if __name__ == "__main__":
    sys.exit(main())
