"""What a freeze through gagent costs on top of the snapshot it protects.

Against the e2e guest (QEMU/TCG booted under the private libvirtd of
tests/harness, disk-only external snapshots of its raw data disk, NO_METADATA),
three clients per round, interleaved:

* gagent  - ``gagent.host.snapshot.snapshot(domain, agent, ...)``: guest-fsfreeze-freeze,
            snapshotCreateXML in a worker thread, guest-fsfreeze-thaw, guest-fsfreeze-status;
            freeze window = freeze reply -> thaw reply (gagent's own record)
* floor   - a blocking socket and libvirt-python in one thread, nothing else: freeze, reply,
            snapshotCreateXML, thaw, reply; the same window
* bare    - snapshotCreateXML alone (no freeze): the bare snapshot call

Reported: each window, each snapshot call, window - call (what the freeze adds
to the frozen time: the thaw round trip plus the client's own work), the thaw
round trip alone, and gagent's window minus the same round's bare call.

Target: gagent's own cost (window - call - thaw round trip) < 5 ms.

``--fake`` (also the fallback when no guest can be booted: not root, no
libvirtd...) runs the same clients against tests/test_freeze.py's fake agent on
a real unix socket, served from another thread, with a 50 ms sleep in a worker
thread standing in for libvirt: it measures gagent's own cost only, and says so.

Run: .venv/bin/python bench/freeze_overhead.py [--quick] [--strict] [--rounds N] [--fake]
"""

from __future__ import annotations

# ruff: noqa: E402 - the sys.path fix below must precede every other import
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
_REPO = _HERE.parent
sys.path += [str(_REPO / "tests")]

import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio
from _common import Series, Targets, make_parser, median, print_environment, print_table, progress

from gagent.client import open_agent

NAME = "gagent-bench-freeze"
FAKE_CALL = 0.05  # seconds: the stand-in for libvirt's snapshot call


@dataclass
class Target:
    """What the clients act on: the agent socket and the snapshot call."""

    socket_path: str
    domain: Any  # something with snapshot_create_xml / state / xml / name (gagent's Domain)
    create_blocking: Callable[[str], None]  # the bare call, in this thread
    snapshot_xml: Callable[[str], str]


# ------------------------------------------------------------------ clients


def _line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("agent closed the connection")
        buf += data
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def floor_round(target: Target, name: str) -> tuple[float, float, float]:
    """(window, call, thaw round trip) in seconds, blocking socket + libvirt in one thread."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(target.socket_path)
        buf = bytearray()
        sock.sendall(b'\xff{"execute":"guest-sync-delimited","arguments":{"id":4242}}\n')
        while not _line(sock, buf).lstrip(b"\xff").startswith(b'{"return": 4242'):
            pass
        xml = target.snapshot_xml(name)
        sock.sendall(b'{"execute":"guest-fsfreeze-freeze"}\n')
        frozen = json.loads(_line(sock, buf))["return"]
        assert frozen >= 1, frozen
        t_frozen = time.perf_counter()
        target.create_blocking(xml)
        t_called = time.perf_counter()
        sock.sendall(b'{"execute":"guest-fsfreeze-thaw"}\n')
        json.loads(_line(sock, buf))
        t_thawed = time.perf_counter()
    return t_thawed - t_frozen, t_called - t_frozen, t_thawed - t_called


def bare_round(target: Target, name: str) -> float:
    xml = target.snapshot_xml(name)
    start = time.perf_counter()
    target.create_blocking(xml)
    return time.perf_counter() - start


def gagent_round(target: Target, name: str) -> tuple[float, float, float]:
    from gagent.host.snapshot import snapshot

    async def run() -> tuple[float, float, float]:
        async with open_agent(target.socket_path) as agent:
            result = await snapshot(target.domain, agent, name, no_metadata=True)
        record = result.freeze
        assert record is not None and record.window_ms is not None and record.thaw_ms
        return record.window_ms / 1000, result.snapshot_ms / 1000, record.thaw_ms / 1000

    return trio.run(run)


# ------------------------------------------------------------------ targets


@contextlib.contextmanager
def real_guest(workdir: Path) -> Iterator[Target]:
    import libvirt
    from harness.image.boot import AgentConnection, domain_xml
    from harness.image.build import build_image, repo_python_trees
    from harness.libvirtd.daemon import running_libvirtd

    from gagent.host.channel import GAGENT_CHANNEL, ChannelSpec
    from gagent.host.channel_ops import add_to_domain
    from gagent.host.snapshot import domain_disks, snapshot_xml
    from gagent.host.virt import open_hypervisor

    progress("   building (or finding) the guest image...")
    image = build_image(extra_python_trees=repo_python_trees())
    with running_libvirtd(workdir / "lv") as daemon:
        conn = libvirt.open(daemon.uri)
        disk, sock = workdir / "data.ext4", workdir / "agent.sock"
        shutil.copyfile(image.data_disk_template, disk)
        conn.defineXML(
            domain_xml(image, NAME, disk, workdir / "serial.log", ports=[GAGENT_CHANNEL])
        )
        dom = conn.lookupByName(NAME)
        try:

            async def add() -> None:
                hv = await open_hypervisor(daemon.uri)
                try:
                    await add_to_domain(
                        await hv.lookup(NAME), ChannelSpec(GAGENT_CHANNEL, str(sock))
                    )
                finally:
                    await hv.close()

            trio.run(add)
            progress("   booting the guest (TCG)...")
            started = time.monotonic()
            dom.create()
            while "state='connected'" not in dom.XMLDesc(0):
                if time.monotonic() - started > 180:
                    tail = (workdir / "serial.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(
                        f"the guest's agent channel did not connect in 180 s:\n{tail}\n"
                        f"{dom.XMLDesc(0)}"
                    )
                time.sleep(0.2)
            with AgentConnection(sock) as agent:
                agent.sync(timeout=60)
            progress(f"   guest up in {time.monotonic() - started:.1f} s")
            flags = (
                libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            )
            hv_conn = libvirt.open(daemon.uri)

            async def lookup() -> Any:
                return await (await open_hypervisor(daemon.uri)).lookup(NAME)

            domain = trio.run(lookup)
            yield Target(
                socket_path=str(sock),
                domain=domain,
                create_blocking=lambda xml: hv_conn.lookupByName(NAME).snapshotCreateXML(
                    xml, flags
                ),
                snapshot_xml=lambda name: snapshot_xml(name, domain_disks(dom.XMLDesc(0))),
            )
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()


class _FakeDomain:
    name = NAME

    async def state(self) -> Any:
        from gagent.host.virt import DomainState

        return DomainState.RUNNING

    async def xml(self, *, inactive: bool = False) -> str:
        return "<domain><devices><disk device='disk'><source file='/x.raw'/><target dev='vda'/></disk></devices></domain>"  # noqa: E501

    async def snapshot_create_xml(self, xml: str, **_flags: Any) -> str:
        await trio.to_thread.run_sync(time.sleep, FAKE_CALL)
        return "fake"


@contextlib.contextmanager
def fake_guest(workdir: Path) -> Iterator[Target]:
    from fakeagent import fake_unix_socket
    from test_freeze import FreezableFake

    from gagent.host.snapshot import domain_disks, snapshot_xml

    sock = workdir / "fake.sock"
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with fake_unix_socket(FreezableFake(), sock):
            ready.set()
            await trio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    ready.wait(10)
    domain = _FakeDomain()
    try:
        yield Target(
            socket_path=str(sock),
            domain=domain,
            create_blocking=lambda _xml: time.sleep(FAKE_CALL),
            snapshot_xml=lambda name: snapshot_xml(name, domain_disks(trio.run(domain.xml))),
        )
    finally:
        stop.set()
        thread.join(10)


# --------------------------------------------------------------------- main


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="the fake agent, no guest")
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 12)
    series = {n: Series(n) for n in (
        "gagent window", "gagent call", "gagent window-call", "gagent thaw rtt", "gagent own",
        "floor window", "floor call", "floor window-call", "floor thaw rtt",
        "bare call", "gagent window-bare",
    )}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gagent-bench-freeze-") as tmp:
        workdir = Path(tmp)
        mode = "fake agent on a unix socket (no guest; the snapshot call is a 50 ms sleep)"
        stack = contextlib.ExitStack()
        target = None
        if not args.fake:
            try:
                target = stack.enter_context(real_guest(workdir))
                mode = "e2e guest: QEMU/TCG under the private libvirtd, real snapshots"
            except Exception as exc:  # no root, no libvirtd, no image...
                progress(f"   cannot boot the e2e guest ({exc}): falling back to the fake agent")
                stack.close()
                stack = contextlib.ExitStack()
        with stack:
            if target is None:
                target = stack.enter_context(fake_guest(workdir))
            print_environment("freeze_overhead", {"rounds": rounds, "target": mode})
            for index in range(rounds + 1):  # round 0: warm-up
                g = gagent_round(target, f"g{index}")
                f = floor_round(target, f"f{index}")
                b = bare_round(target, f"b{index}")
                if index == 0:
                    continue
                for who, (window, call, thaw) in (("gagent", g), ("floor", f)):
                    series[f"{who} window"].samples.append(window)
                    series[f"{who} call"].samples.append(call)
                    series[f"{who} window-call"].samples.append(window - call)
                    series[f"{who} thaw rtt"].samples.append(thaw)
                    if who == "gagent":  # (the floor's is 0 by construction)
                        series["gagent own"].samples.append(window - call - thaw)
                series["bare call"].samples.append(b)
                series["gagent window-bare"].samples.append(g[0] - b)
                progress(f"   round {index}/{rounds}")
    print_table(
        "freeze window and snapshot call (ms)",
        list(series.values()),
        unit="ms",
        scale=1000,
        fmt="{:.2f}",
    )
    own = median(series["gagent own"].samples) * 1000
    extra = (median(series["gagent window-call"].samples)
             - median(series["floor window-call"].samples)) * 1000  # fmt: skip
    targets = Targets()
    targets.at_most(
        "freeze overhead", own, 5.0, "gagent window - snapshot call - thaw round trip (ms)",
        note=f"window - call {median(series['gagent window-call'].samples) * 1000:.2f} ms, "
        f"of which the guest's thaw round trip {median(series['gagent thaw rtt'].samples) * 1000:.2f} "  # noqa: E501
        f"ms; vs the floor client {extra:+.2f} ms; target: {mode}",
    )  # fmt: skip
    return targets.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
