"""``gagent agent DOMAIN copy-to|copy-from`` as an operator runs them, on both routes
(gagent's channel and libvirt's qemuAgentCommand), checked from inside the guest:
5 MB files by sha256, the mode, the atomic replacement (a full /data leaves the old
file whole and no temporary file), symlinks written through, '-' for stdin/stdout."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import trio

from gagent.host.session import open_domain_agent
from gagent.programs import run_program

pytestmark = pytest.mark.e2e

GAGENT = Path(sys.executable).with_name("gagent")
SIZE = 5 * 1000 * 1000 + 4321  # 5 MB, not a multiple of any chunk size
#: Generous: a 5 MB copy through libvirt's 64 KiB requests takes ~10 s under TCG.
COPY_WITHIN = 240
ROUTES = ["socket", "libvirt"]


def checker(domain):
    """The tests' own agent, to look inside the guest: through libvirt, which relays
    many clients; gagent's channel serves one client at a time (the CLI's)."""
    return open_domain_agent(domain.name, uri=domain.uri, transport="libvirt")


async def gagent(domain, route: str, *argv: str, stdin: bytes | None = None):
    """Run ``gagent agent DOMAIN -c URI --transport ROUTE ARGV...``; (rc, stdout, stderr)."""
    command = [str(GAGENT), "agent", domain.name, "-c", domain.uri, "--transport", route, *argv]
    proc = await trio.run_process(
        command, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr.decode()


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gagent: error: "), stderr
    return lines[0]


async def sh(agent, script: str) -> str:
    result = await run_program(agent, ["/bin/sh", "-c", script])
    assert result.succeeded, (script, result)
    return result.stdout.decode()


async def guest_sha256(agent, path: str) -> str:
    return (await sh(agent, f"sha256sum '{path}'")).split()[0]


async def leftover_temps(agent, directory: str) -> list[str]:
    return [n for n in (await sh(agent, f"ls -a '{directory}'")).split() if ".gagent-" in n]


@pytest.mark.parametrize("route", ROUTES)
async def test_5mb_copies_both_ways(main_domain, tmp_path, route):
    payload = os.urandom(SIZE)
    digest = hashlib.sha256(payload).hexdigest()
    source, back = tmp_path / "payload.bin", tmp_path / "back.bin"
    source.write_bytes(payload)
    guest = f"/data/e2e-copy-{route}.bin"
    with trio.fail_after(COPY_WITHIN * 2):
        async with checker(main_domain) as agent:
            await sh(agent, f"echo old > {guest} && chmod 666 {guest}")
            try:
                rc, out, err = await gagent(main_domain, route, "copy-to", str(source), guest)
                assert (rc, out, err) == (0, f"copied {SIZE} bytes\n".encode(), "")
                assert await guest_sha256(agent, guest) == digest
                assert (await sh(agent, f"stat -c %a {guest}")).strip() == "644"

                rc, out, err = await gagent(main_domain, route, "copy-from", guest, str(back))
                assert (rc, err) == (0, "")
                assert hashlib.sha256(back.read_bytes()).hexdigest() == digest

                # '-': standard output carries the file itself, standard input feeds copy-to
                rc, out, err = await gagent(main_domain, route, "copy-from", guest, "-")
                assert (rc, err) == (0, "") and hashlib.sha256(out).hexdigest() == digest
                small = f"{guest}.small"
                rc, _, err = await gagent(
                    main_domain, route, "copy-to", "--mode", "750", "-", small, stdin=b"#!/bin/sh\n"
                )
                assert (rc, err) == (0, "")
                assert (await sh(agent, f"cat {small}; stat -c %a {small}")) == "#!/bin/sh\n750\n"
                assert await leftover_temps(agent, "/data") == []
            finally:
                await sh(agent, f"rm -f {guest} {guest}.small")


@pytest.mark.parametrize("route", ROUTES)
async def test_full_filesystem_leaves_the_old_file_whole(main_domain, tmp_path, route):
    """/data is filled up, then a 5 MB copy-to over an existing file fails with ENOSPC:
    exit 6, one line, the old file unchanged (sha256 in the guest), no temporary file."""
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(SIZE))
    guest, filler = f"/data/e2e-keep-{route}.bin", "/data/e2e-filler"
    with trio.fail_after(COPY_WITHIN * 2):
        async with checker(main_domain) as agent:
            await sh(agent, f"head -c 1000000 /dev/urandom > {guest}")
            old = await guest_sha256(agent, guest)
            try:
                # dd stops at ENOSPC (its exit code says so: ignored)
                await sh(agent, f"dd if=/dev/zero of={filler} bs=1M 2>/dev/null; sync; true")
                free = int((await sh(agent, "df -k /data | tail -1")).split()[3])
                assert free * 1024 < SIZE, f"/data still has {free} KiB free"
                rc, out, err = await gagent(main_domain, route, "copy-to", str(source), guest)
                assert (rc, out) == (6, b""), err
                line = one_error_line(err)
                assert "No space left on device" in line, line
                assert await guest_sha256(agent, guest) == old
                assert await leftover_temps(agent, "/data") == []
            finally:
                await sh(agent, f"rm -f {filler} {guest}")


async def test_symlinks_directories_and_relative_paths(main_domain, tmp_path):
    """In the guest (busybox): a symlink is written through, the link stays; a directory
    is refused (exit 2, one line); relative paths are refused."""
    source = tmp_path / "conf"
    source.write_bytes(b"value=2\n")
    with trio.fail_after(COPY_WITHIN):
        async with checker(main_domain) as agent:
            await sh(agent, "echo value=1 > /data/real.conf && ln -sf real.conf /data/link.conf")
            try:
                rc, _, err = await gagent(main_domain, "socket", "copy-to", str(source),
                                          "/data/link.conf")  # fmt: skip
                assert (rc, err) == (0, "")
                assert await sh(agent, "readlink /data/link.conf; cat /data/real.conf") == (
                    "real.conf\nvalue=2\n"
                )
                rc, out, err = await gagent(main_domain, "socket", "copy-to", str(source), "/data")
                assert (rc, out) == (2, b"")
                assert "/data is a directory" in one_error_line(err)
                rc, out, err = await gagent(main_domain, "socket", "copy-to", str(source), "x.conf")
                assert (rc, out) == (2, b"") and "absolute path" in one_error_line(err)
                assert await leftover_temps(agent, "/data") == []
            finally:
                await sh(agent, "rm -f /data/real.conf /data/link.conf")
