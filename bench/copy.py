"""File copy into and out of the guest through a local qemu-ga, in MiB/s.

qemu-ga runs on this host as the same user, so "guest" paths are files in a
temporary directory.  Every client copies the same random file with the same
chunk size (1 MiB by default), one client after another, rounds interleaved.

Upload (local -> guest):
* gagent.copy   - gagent.transfer.copy_to_guest(agent, local, guest, chunk_size=..., in_place=True)
* gagent.exec   - the bare loop below, but through agent.execute (client overhead only)
* bare          - blocking socket: guest-file-open "wb", guest-file-write of base64
                  chunks, guest-file-close; JSON by hand

Download (guest -> local):
* gagent.copy   - gagent.transfer.copy_from_guest(agent, guest, local, chunk_size=...)
                  (writes a temporary file, fsyncs it and renames it over the target)
* gagent.exec   - the bare loop through agent.execute
* bare          - blocking socket: guest-file-open "rb", guest-file-read until eof,
                  guest-file-close, plain local writes (no fsync)
* bare+fsync    - bare, plus the fsync copy_from_guest does (like for like)

Target: gagent.copy >= 85% of bare's rate, each direction.  qemu-ga itself
bounds writes (~35 MiB/s here: it parses every base64 byte as a JSON token)
and reads (~100 MiB/s).

Run: .venv/bin/python bench/copy.py [--quick] [--strict] [--size-mib N] [--chunk-kib N]
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

import base64
import filecmp
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any

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
from gagent.localagent import start_local_qemu_ga

try:
    from gagent.transfer import copy_from_guest, copy_to_guest
except ImportError as exc:  # another part of the project, possibly not there yet
    copy_to_guest = copy_from_guest = None  # type: ignore[assignment]
    TRANSFER_MISSING = f"gagent.transfer not importable ({exc})"
else:
    TRANSFER_MISSING = ""

MIB = 1024 * 1024

# ---------------------------------------------------------------- the bare loop


class BareAgent:
    """The minimal blocking client: one JSON request, read to b"\\n", json.loads."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)

    def close(self) -> None:
        self.sock.close()

    def execute(self, command: str, arguments: dict[str, Any]) -> Any:
        request = {"execute": command, "arguments": arguments}
        self.sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
        chunks = []
        while True:
            data = self.sock.recv(MIB)
            if not data:
                raise EOFError(f"agent closed the connection during {command}")
            chunks.append(data)
            if data.endswith(b"\n"):
                break
        reply = json.loads(b"".join(chunks))
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error']}")
        return reply["return"]


def bare_upload(path: str, source: Path, guest: Path, chunk: int) -> float:
    agent = BareAgent(path)
    try:
        start = time.perf_counter()
        with open(source, "rb") as f:
            handle = agent.execute("guest-file-open", {"path": str(guest), "mode": "wb"})
            while data := f.read(chunk):
                arguments = {"handle": handle, "buf-b64": base64.b64encode(data).decode()}
                if agent.execute("guest-file-write", arguments)["count"] != len(data):
                    raise RuntimeError("short write")
            agent.execute("guest-file-close", {"handle": handle})
        return time.perf_counter() - start
    finally:
        agent.close()


def bare_download(path: str, guest: Path, target: Path, chunk: int, fsync: bool) -> float:
    agent = BareAgent(path)
    try:
        start = time.perf_counter()
        handle = agent.execute("guest-file-open", {"path": str(guest), "mode": "rb"})
        with open(target, "wb") as f:
            while True:
                block = agent.execute("guest-file-read", {"handle": handle, "count": chunk})
                f.write(base64.b64decode(block["buf-b64"]))
                if block["eof"]:
                    break
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        agent.execute("guest-file-close", {"handle": handle})
        return time.perf_counter() - start
    finally:
        agent.close()


# ---------------------------------------------------------------- gagent


async def _gagent_copy_upload(path: str, source: Path, guest: Path, chunk: int) -> float:
    async with gagent.open_agent(path) as agent:
        start = time.perf_counter()
        # in place: this qemu-ga blocks guest-exec, which the atomic replacement needs
        await copy_to_guest(agent, source, str(guest), chunk_size=chunk, in_place=True)
        return time.perf_counter() - start


async def _gagent_copy_download(path: str, guest: Path, target: Path, chunk: int) -> float:
    async with gagent.open_agent(path) as agent:
        start = time.perf_counter()
        await copy_from_guest(agent, str(guest), target, chunk_size=chunk)
        return time.perf_counter() - start


async def _gagent_exec_upload(path: str, source: Path, guest: Path, chunk: int) -> float:
    async with gagent.open_agent(path) as agent:
        execute = agent.execute
        start = time.perf_counter()
        async with await trio.open_file(source, "rb") as f:
            handle = await execute("guest-file-open", {"path": str(guest), "mode": "wb"})
            while data := await f.read(chunk):
                arguments = {"handle": handle, "buf-b64": base64.b64encode(data).decode()}
                if (await execute("guest-file-write", arguments))["count"] != len(data):
                    raise RuntimeError("short write")
            await execute("guest-file-close", {"handle": handle})
        return time.perf_counter() - start


async def _gagent_exec_download(path: str, guest: Path, target: Path, chunk: int) -> float:
    async with gagent.open_agent(path) as agent:
        execute = agent.execute
        start = time.perf_counter()
        handle = await execute("guest-file-open", {"path": str(guest), "mode": "rb"})
        async with await trio.open_file(target, "wb") as f:
            while True:
                block = await execute("guest-file-read", {"handle": handle, "count": chunk})
                await f.write(base64.b64decode(block["buf-b64"]))
                if block["eof"]:
                    break
        await execute("guest-file-close", {"handle": handle})
        return time.perf_counter() - start


# ---------------------------------------------------------------- main


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=None, help="file size (default 64, 8)")
    parser.add_argument("--chunk-kib", type=int, default=1024, help="chunk size (default 1024)")
    parser.add_argument("--profile", action="store_true", help="also cProfile gagent's copies")
    args = parser.parse_args()
    size = (args.size_mib or (8 if args.quick else 64)) * MIB
    chunk = args.chunk_kib * 1024
    rounds = args.rounds or (3 if args.quick else 5)
    mib = size / MIB

    targets = Targets()
    with tempfile.TemporaryDirectory(prefix="gagent-bench-") as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        with open(source, "wb") as f:
            for _ in range(size // MIB):
                f.write(os.urandom(MIB))
            f.write(os.urandom(size % MIB))
        agent = start_local_qemu_ga(work)
        try:
            path = str(agent.socket_path)
            print_environment(
                "copy: file transfer through one local qemu-ga",
                {
                    "rounds": rounds,
                    "size": f"{mib:g} MiB",
                    "chunk": f"{chunk // 1024} KiB",
                    "qemu-ga pid": agent.pid,
                    "gagent.transfer": "missing" if TRANSFER_MISSING else "present",
                },
            )
            if TRANSFER_MISSING:
                print(f"   NOTE: {TRANSFER_MISSING}: gagent.copy is not measured\n")

            def rate(seconds: float) -> float:
                return mib / seconds

            up: dict[str, Callable[[], float]] = {}
            down: dict[str, Callable[[], float]] = {}
            outputs: list[Path] = []

            def guest_dst(name: str) -> Path:
                outputs.append(work / f"guest-{name}.bin")
                return outputs[-1]

            def local_dst(name: str) -> Path:
                outputs.append(work / f"local-{name}.bin")
                return outputs[-1]

            if not TRANSFER_MISSING:
                g = guest_dst("gagent.copy")
                up["gagent.copy"] = lambda g=g: rate(
                    trio.run(_gagent_copy_upload, path, source, g, chunk)
                )
                d = local_dst("gagent.copy")
                down["gagent.copy"] = lambda d=d: rate(
                    trio.run(_gagent_copy_download, path, source, d, chunk)
                )
            g = guest_dst("gagent.exec")
            up["gagent.exec"] = lambda g=g: rate(
                trio.run(_gagent_exec_upload, path, source, g, chunk)
            )
            g = guest_dst("bare")
            up["bare"] = lambda g=g: rate(bare_upload(path, source, g, chunk))
            d = local_dst("gagent.exec")
            down["gagent.exec"] = lambda d=d: rate(
                trio.run(_gagent_exec_download, path, source, d, chunk)
            )
            d = local_dst("bare")
            down["bare"] = lambda d=d: rate(bare_download(path, source, d, chunk, False))
            d = local_dst("bare+fsync")
            down["bare+fsync"] = lambda d=d: rate(bare_download(path, source, d, chunk, True))

            results = {}
            for direction, clients in (("upload", up), ("download", down)):
                series = [Series(name) for name in clients]
                interleave(
                    rounds, list(zip(series, clients.values(), strict=True)), label=direction
                )
                results[direction] = series

            bad = [p.name for p in outputs if not filecmp.cmp(source, p, shallow=False)]
            if bad:
                print(f"   ERROR: copies differ from the source: {bad}")

            for direction, series in results.items():
                print_table(
                    f"{direction} of {mib:g} MiB in {chunk // 1024} KiB chunks: rate",
                    series,
                    unit="MiB/s",
                    baselines=("bare",),
                    higher_is_better=True,
                )
            for direction, series in results.items():
                by = {s.name: s for s in series}
                name = f"{direction}: gagent.copy >= 85% of bare"
                if "gagent.copy" not in by:
                    targets.skip(name, TRANSFER_MISSING)
                    continue
                targets.at_least(
                    name,
                    ratio_median(by["gagent.copy"].samples, by["bare"].samples),
                    0.85,
                    "gagent.copy rate / bare rate",
                )
            if bad:
                targets.fail("copies are intact", f"differ from the source: {bad}")
            if args.profile and not TRANSFER_MISSING:
                profile_copy(path, source, work, chunk)
        finally:
            agent.stop()
    progress("")
    return targets.report(args.strict)


def profile_copy(path: str, source: Path, work: Path, chunk: int) -> None:
    import cProfile
    import pstats

    for label, fn, args in (
        ("copy_to_guest", _gagent_copy_upload, (path, source, work / "prof-up.bin", chunk)),
        ("copy_from_guest", _gagent_copy_download, (path, source, work / "prof-dn.bin", chunk)),
    ):
        profiler = cProfile.Profile()
        profiler.enable()
        trio.run(fn, *args)
        profiler.disable()
        print(f"-- cProfile: {label}, top 15 by own time")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    sys.exit(main())
