"""copy_to_guest / copy_from_guest through the real qemu-ga (it runs as this
user, so guest paths are local paths; guest-exec is blocked there, so copies
to it are in place), and a scripted agent on trio memory streams for what the
real one will not do on demand: short writes, hangs, and the atomic replacement,
whose guest-exec steps run the real shell scripts on this host (the e2e tests
run them in a real guest)."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import stat
import subprocess
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from scripted_agent import ScriptedAgent, b64, guest_info, with_fake

import gagent
from gagent import transfer
from gagent.errors import AgentError, CommandUnavailable, LocalFileError, UsageError
from gagent.protocol import encode_command
from gagent.transfer import (
    DEFAULT_CHUNK,
    MAX_CHUNK,
    MAX_WRITE_CHUNK,
    copy_from_guest,
    copy_to_guest,
    largest_write_chunk,
)

TIMEOUT = 30
MiB = 1024 * 1024


@pytest.fixture
async def agent(qemu_ga):
    async with AsyncExitStack() as stack:
        with trio.fail_after(TIMEOUT):
            connected = await stack.enter_async_context(gagent.open_agent(qemu_ga.socket_path))
        yield connected


def record_handles(agent) -> list[int]:
    """Keep the handles file_open returns (wrapping the bound method on the instance)."""
    handles: list[int] = []
    original = agent.file_open

    async def file_open(path: str, mode: str = "r") -> int:
        handle = await original(path, mode)
        handles.append(handle)
        return handle

    agent.file_open = file_open
    return handles


async def assert_closed(agent, handle: int) -> None:
    with pytest.raises(AgentError, match="not been found"):
        await agent.file_close(handle)


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


# ------------------------------------------------------------- real qemu-ga


@pytest.mark.qemu_ga
async def test_roundtrip_5_mib(agent, tmp_path):
    data = os.urandom(5 * MiB)
    source, guest, back = tmp_path / "source.bin", tmp_path / "guest.bin", tmp_path / "back.bin"
    source.write_bytes(data)
    to_calls: list[tuple[int, int | None]] = []
    from_calls: list[tuple[int, int | None]] = []
    handles = record_handles(agent)
    with trio.fail_after(TIMEOUT):
        assert await copy_to_guest(
            agent, source, str(guest), in_place=True, progress=lambda *a: to_calls.append(a)
        ) == len(data)
        assert await copy_from_guest(
            agent, str(guest), back, progress=lambda *a: from_calls.append(a)
        ) == len(data)
        for handle in handles:
            await assert_closed(agent, handle)
    digest = hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(guest.read_bytes()).hexdigest() == digest
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest
    expected = [(n * DEFAULT_CHUNK, len(data)) for n in range(1, 6)]
    assert to_calls == expected
    assert from_calls == expected
    assert oct(back.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert leftovers(tmp_path) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.qemu_ga
async def test_uneven_chunks_in_place_and_async_progress(agent, tmp_path):
    data = os.urandom(100_001)
    source, guest, back = tmp_path / "s", tmp_path / "g", tmp_path / "b"
    source.write_bytes(data)
    guest.write_bytes(b"an older and longer content " * 10_000)
    guest.chmod(0o640)
    seen: list[int] = []

    async def progress(done: int, total: int | None) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(done)

    with trio.fail_after(TIMEOUT):
        await copy_to_guest(
            agent, source, str(guest), chunk_size=30_000, in_place=True, progress=progress
        )
        assert seen == [30_000, 60_000, 90_000, 100_001]
        seen.clear()
        await copy_from_guest(agent, str(guest), back, chunk_size=30_000, progress=progress)
    assert back.read_bytes() == guest.read_bytes() == data  # truncated, then written
    assert stat.S_IMODE(guest.stat().st_mode) == 0o640  # in place: the file keeps its mode
    assert seen == [30_000, 60_000, 90_000, 100_001]


@pytest.mark.qemu_ga
async def test_empty_and_unsized_files(agent, tmp_path):
    empty, back = tmp_path / "empty", tmp_path / "back"
    empty.write_bytes(b"")
    calls: list[tuple[int, int | None]] = []

    def record(*args) -> None:
        calls.append(args)

    with trio.fail_after(TIMEOUT):
        assert (
            await copy_to_guest(
                agent,
                empty,
                str(tmp_path / "g"),
                in_place=True,
                progress=lambda *a: calls.append(a),
            )
            == 0
        )
        assert calls == [(0, 0)]
        calls.clear()
        # /proc files claim a size of 0: the total is unknown, the data is not.
        copied = await copy_from_guest(
            agent, f"/proc/{os.getpid()}/status", back, progress=lambda *a: calls.append(a)
        )
    assert copied == len(back.read_bytes()) > 0
    assert b"Name:" in back.read_bytes()
    assert calls == [(copied, None)]


@pytest.mark.qemu_ga
async def test_failed_copies_leave_nothing(agent, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"x" * 1000)
    target = tmp_path / "target"
    with trio.fail_after(TIMEOUT):
        with pytest.raises(AgentError, match="No such file"):
            await copy_to_guest(agent, source, str(tmp_path / "missing-dir" / "f"), in_place=True)
        with pytest.raises(AgentError, match="No such file"):
            await copy_from_guest(agent, str(tmp_path / "missing-file"), target)
        with pytest.raises(LocalFileError, match=r"cannot read .*no-source: No such file"):
            await copy_to_guest(agent, tmp_path / "no-source", str(tmp_path / "g"), in_place=True)
        with pytest.raises(LocalFileError, match="Is a directory"):
            await copy_to_guest(agent, tmp_path, str(tmp_path / "g"), in_place=True)
        with pytest.raises(UsageError, match="not a directory"):
            await copy_from_guest(agent, str(source), tmp_path / "missing-dir" / "x")
        for bad in (0o10000, -1, "644", True):
            with pytest.raises(UsageError, match="permission bits"):
                await copy_to_guest(agent, source, str(tmp_path / "g"), mode=bad)
        with pytest.raises(UsageError, match="cannot be set when writing in place"):
            await copy_to_guest(agent, source, str(tmp_path / "g"), mode=0o644, in_place=True)
        await agent.ping()
    assert not target.exists()
    assert not (tmp_path / "g").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.qemu_ga
async def test_atomic_copy_needs_guest_exec_and_says_so(agent, tmp_path):
    """This qemu-ga blocks guest-exec: the atomic copy (the default) is refused before
    anything is created, naming the command and the way out."""
    work = tmp_path / "work"
    work.mkdir()
    source, guest = work / "source", work / "guest"
    source.write_bytes(b"new")
    guest.write_bytes(b"old")
    handles = record_handles(agent)
    with trio.fail_after(TIMEOUT):
        with pytest.raises(CommandUnavailable) as refused:
            await copy_to_guest(agent, source, str(guest))
    assert refused.value.command == "guest-exec"
    assert "has it disabled" in str(refused.value) and "--in-place" in str(refused.value)
    assert handles == [] and guest.read_bytes() == b"old"
    assert sorted(p.name for p in work.iterdir()) == ["guest", "source"]


class Boom(Exception):
    pass


@pytest.mark.qemu_ga
async def test_error_mid_copy_closes_handle_and_leaves_nothing(agent, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(os.urandom(3 * MiB))
    target = tmp_path / "target"
    handles = record_handles(agent)

    def fail_after_first_chunk(done: int, total: int | None) -> None:
        raise Boom(done)

    with trio.fail_after(TIMEOUT):
        with pytest.raises(Boom):
            await copy_from_guest(agent, str(source), target, progress=fail_after_first_chunk)
        with pytest.raises(Boom):
            await copy_to_guest(
                agent, source, str(tmp_path / "g"), in_place=True, progress=fail_after_first_chunk
            )
        assert len(handles) == 2
        for handle in handles:
            await assert_closed(agent, handle)
    assert not target.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.qemu_ga
@pytest.mark.parametrize("where", ["between-commands", "mid-command"])
@pytest.mark.parametrize("direction", ["to", "from"])
async def test_cancellation_closes_guest_handle(agent, tmp_path, where, direction):
    """Cancelled after the first chunk: either before the next command is sent,
    or (deadline a few ms later) while its 1 MiB reply or request is in flight,
    which leaves the client out of sync: the shielded close must resync first."""
    source = tmp_path / "source"
    source.write_bytes(os.urandom(8 * MiB))
    target = tmp_path / "target"
    handles = record_handles(agent)
    with trio.CancelScope() as scope:

        def cancel(done: int, total: int | None) -> None:
            if where == "between-commands":
                scope.cancel()
            else:
                scope.deadline = trio.current_time() + 0.003

        with trio.fail_after(TIMEOUT):
            if direction == "to":
                await copy_to_guest(agent, source, str(target), in_place=True, progress=cancel)
            else:
                await copy_from_guest(agent, str(source), target, progress=cancel)
    assert scope.cancelled_caught
    with trio.fail_after(TIMEOUT):
        (handle,) = handles
        await assert_closed(agent, handle)
        await agent.ping()
    if direction == "from":
        assert not target.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.qemu_ga
async def test_chunk_size_checks(qemu_ga, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"y" * 4000)
    with trio.fail_after(TIMEOUT):
        async with gagent.open_agent(qemu_ga.socket_path, max_reply_size=MiB) as agent:
            handles = record_handles(agent)
            # 1 MiB of data is ~1.33 MiB of base64: over this client's bound.
            with pytest.raises(UsageError, match=r"max_reply_size of 1048576.*<= 786336"):
                await copy_from_guest(agent, str(source), tmp_path / "x", chunk_size=MiB)
            # copy_to_guest's replies are small: the same chunk size is fine.
            await copy_to_guest(agent, source, str(tmp_path / "g"), chunk_size=MiB, in_place=True)
            assert (
                await copy_from_guest(agent, str(source), tmp_path / "x", chunk_size=786336) == 4000
            )
            for bad in (0, -1, MAX_WRITE_CHUNK + 1, 1.5, True):
                with pytest.raises(UsageError):
                    await copy_to_guest(
                        agent, source, str(tmp_path / "g"), chunk_size=bad, in_place=True
                    )
            with pytest.raises(UsageError, match="over qemu-ga's limit"):
                await copy_from_guest(agent, str(source), tmp_path / "x", chunk_size=MAX_CHUNK + 1)
            with pytest.raises(UsageError, match="is a directory"):
                await copy_from_guest(agent, str(source), tmp_path, chunk_size=4096)
            assert len(handles) == 2  # refused before anything was opened


# ------------------------------------------------ scripted agent on memory streams


async def test_short_writes_are_completed(tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"abcdefghij")
    written = bytearray()

    def write(args: dict[str, Any]) -> dict[str, Any]:
        data = base64.b64decode(args["buf-b64"])[:3]  # the agent takes 3 bytes at a time
        written.extend(data)
        return {"count": len(data), "eof": False}

    handlers = {
        "guest-info": guest_info("guest-file-open", "guest-file-write", "guest-file-close"),
        "guest-file-open": lambda args: 1000,
        "guest-file-write": write,
        "guest-file-close": lambda args: {},
    }

    async def body(agent) -> None:
        assert await copy_to_guest(agent, source, "/guest/file", in_place=True) == 10

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(handlers, body)
    assert bytes(written) == b"abcdefghij"
    assert len(fake.sent("guest-file-write")) == 4
    assert len(fake.sent("guest-file-close")) == 1


async def test_hung_close_gives_up_after_its_deadline(tmp_path, monkeypatch):
    """The agent stops answering mid-copy: the caller's timeout fires, the shielded
    close waits CLOSE_TIMEOUT at most, and the caller's TooSlowError comes out.

    Real time, short timeouts: copy_from_guest uses worker threads for the local
    file, and an autojump clock would jump while they run."""
    monkeypatch.setattr(transfer, "CLOSE_TIMEOUT", 0.5)
    handlers = {
        "guest-info": guest_info("guest-file-open", "guest-file-read", "guest-file-close"),
        "guest-file-open": lambda args: 1000,
        "guest-file-read": lambda args: ScriptedAgent.NO_REPLY,
        "guest-file-close": lambda args: ScriptedAgent.NO_REPLY,
    }
    times = []

    async def body(agent) -> None:
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.3):
                await copy_from_guest(agent, "/guest/file", tmp_path / "target")
        times.append(trio.current_time() - start)

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(handlers, body)
    assert len(fake.sent("guest-file-close")) == 1
    assert 0.3 + 0.5 <= times[0] < 0.3 + 0.5 + 5
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "target").exists()


async def test_reads_that_return_data_with_eof(tmp_path):
    chunks = iter(
        [
            {"count": 3, "buf-b64": b64(b"abc"), "eof": False},
            {"count": 2, "buf-b64": b64(b"de"), "eof": True},
        ]
    )
    handlers = {
        "guest-info": guest_info("guest-file-open", "guest-file-read", "guest-file-close"),
        "guest-file-open": lambda args: 1000,
        "guest-file-read": lambda args: next(chunks),
        "guest-file-close": lambda args: {},
    }

    async def body(agent) -> None:
        assert await copy_from_guest(agent, "/guest/file", tmp_path / "t", chunk_size=3) == 5

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(handlers, body)
    assert (tmp_path / "t").read_bytes() == b"abcde"
    assert [args["count"] for args, _ in fake.sent("guest-file-read")] == [3, 3]


# ------------------------------------ the atomic replacement, its shell steps run for real


class HostShellGuest:
    """Handlers of a scripted agent whose guest is this host: the guest-file API on real
    files, guest-exec running the real program (the replacement's /bin/sh scripts).
    ``fail_write`` = n answers the n-th guest-file-write with qemu-ga's ENOSPC error."""

    def __init__(self, *, fail_write: int | None = None):
        self.files: dict[int, Any] = {}
        self.runs: dict[int, subprocess.CompletedProcess[bytes]] = {}
        self.argvs: list[list[str]] = []
        self.writes = 0
        self.fail_write = fail_write
        self.ids = itertools.count(1000)

    def handlers(self) -> dict[str, Any]:
        return {
            "guest-info": guest_info(
                "guest-file-open",
                "guest-file-write",
                "guest-file-close",
                "guest-exec",
                "guest-exec-status",
            ),
            "guest-file-open": self.open,
            "guest-file-write": self.write,
            "guest-file-close": lambda args: self.files.pop(args["handle"]).close() or {},
            "guest-exec": self.exec,
            "guest-exec-status": self.status,
        }

    def open(self, args: dict[str, Any]) -> int:
        handle = next(self.ids)
        self.files[handle] = open(args["path"], args["mode"])  # closed by close
        return handle

    def write(self, args: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        if self.writes == self.fail_write:
            raise AgentError(
                "guest-file-write",
                "GenericError",
                "failed to write to file: No space left on device",
            )
        data = base64.b64decode(args["buf-b64"])
        self.files[args["handle"]].write(data)
        return {"count": len(data), "eof": False}

    def exec(self, args: dict[str, Any]) -> dict[str, Any]:
        argv = [args["path"], *args.get("arg", [])]
        self.argvs.append(argv)
        pid = next(self.ids)
        self.runs[pid] = subprocess.run(argv, capture_output=True, check=False, timeout=30)
        return {"pid": pid}

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        done = self.runs.pop(args["pid"])
        return {"exited": True, "exitcode": done.returncode,
                "out-data": b64(done.stdout), "err-data": b64(done.stderr)}  # fmt: skip

    def steps(self) -> list[str]:
        """The replacement steps run, by the name their script ran under ($0)."""
        return [argv[3] for argv in self.argvs if argv[:2] == ["/bin/sh", "-c"]]


def temps(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".gagent-" in p.name)


async def test_atomic_copy_replaces_the_file_with_its_mode(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "app.conf"
    data = os.urandom(300_001)
    source.write_bytes(data)
    dest.write_bytes(b"old")
    dest.chmod(0o600)
    guest = HostShellGuest()

    async def body(agent) -> None:
        assert await copy_to_guest(agent, source, str(dest), chunk_size=100_000) == len(data)
        assert dest.read_bytes() == data and stat.S_IMODE(dest.stat().st_mode) == 0o644
        assert await copy_to_guest(agent, io.BytesIO(b"#!/bin/sh\n"), str(dest), mode=0o750) == 10
        assert dest.read_bytes() == b"#!/bin/sh\n" and stat.S_IMODE(dest.stat().st_mode) == 0o750
        new = tmp_path / "new-file"
        await copy_to_guest(agent, source, str(new))
        assert new.read_bytes() == data and stat.S_IMODE(new.stat().st_mode) == 0o644

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(guest.handlers(), body)
    assert guest.steps() == ["gagent-make-temp", "gagent-put-in-place"] * 3
    # the data went into the private temporary file, never into the destination
    opened = [args["path"] for args, _ in fake.sent("guest-file-open")]
    assert all(f"{tmp_path}/." in path and ".gagent-" in path for path in opened), opened
    assert temps(tmp_path) == []


async def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "data.bin"
    source.write_bytes(os.urandom(250_000))
    dest.write_bytes(b"the old content")
    guest = HostShellGuest(fail_write=2)

    async def body(agent) -> None:
        with pytest.raises(AgentError) as failed:
            await copy_to_guest(agent, source, str(dest), chunk_size=100_000)
        assert "No space left on device" in str(failed.value)
        assert f"({dest} is unchanged)" in str(failed.value)

    with trio.fail_after(TIMEOUT):
        fake = await with_fake(guest.handlers(), body)
    assert dest.read_bytes() == b"the old content"
    assert guest.steps() == ["gagent-make-temp", "gagent-discard"]
    assert len(fake.sent("guest-file-close")) == 1  # the handle was closed before the rm
    assert temps(tmp_path) == []


async def test_cancelled_copy_removes_its_temporary_file(tmp_path):
    source, dest = tmp_path / "source", tmp_path / "data.bin"
    source.write_bytes(os.urandom(250_000))
    dest.write_bytes(b"the old content")
    guest = HostShellGuest()

    async def body(agent) -> None:
        with trio.CancelScope() as scope:
            await copy_to_guest(
                agent, source, str(dest), chunk_size=100_000, progress=lambda *_: scope.cancel()
            )
        assert scope.cancelled_caught

    with trio.fail_after(TIMEOUT):
        await with_fake(guest.handlers(), body)
    assert dest.read_bytes() == b"the old content"
    assert guest.steps() == ["gagent-make-temp", "gagent-discard"]
    assert temps(tmp_path) == []


async def test_symlinks_are_written_through_and_non_files_refused(tmp_path):
    real, link = tmp_path / "real.conf", tmp_path / "link.conf"
    real.write_bytes(b"old")
    link.symlink_to(real.name)
    (tmp_path / "dir").mkdir()
    guest = HostShellGuest()

    async def body(agent) -> None:
        await copy_to_guest(agent, io.BytesIO(b"new"), str(link))
        with pytest.raises(UsageError, match=r"dir is a directory"):
            await copy_to_guest(agent, io.BytesIO(b"x"), str(tmp_path / "dir"))
        with pytest.raises(UsageError, match=r"null is not a regular file"):
            await copy_to_guest(agent, io.BytesIO(b"x"), "/dev/null")
        with pytest.raises(UsageError, match="absolute path"):
            await copy_to_guest(agent, io.BytesIO(b"x"), "relative/file")

    with trio.fail_after(TIMEOUT):
        await with_fake(guest.handlers(), body)
    assert link.is_symlink() and os.readlink(link) == real.name
    assert real.read_bytes() == b"new"
    assert (tmp_path / "dir").is_dir() and list((tmp_path / "dir").iterdir()) == []
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert temps(tmp_path) == []


# ------------------------------------------------------------- the local side


@pytest.mark.qemu_ga
async def test_copy_from_writes_through_symlinks_and_refuses_non_files(agent, tmp_path):
    guest = tmp_path / "guest.bin"
    guest.write_bytes(b"from the guest")
    real, link = tmp_path / "real", tmp_path / "link"
    real.write_bytes(b"old")
    real.chmod(0o640)
    link.symlink_to(real)
    fifo, fifo_link, dangling = tmp_path / "fifo", tmp_path / "to-fifo", tmp_path / "dangling"
    os.mkfifo(fifo)
    fifo_link.symlink_to(fifo)
    dangling.symlink_to(tmp_path / "nothing")
    with trio.fail_after(TIMEOUT):
        assert await copy_from_guest(agent, str(guest), link) == 14
        for refused, why in ((fifo, "it is a FIFO"), (fifo_link, "it is a FIFO"),
                             (dangling, "which does not exist")):  # fmt: skip
            with pytest.raises(UsageError, match=why):
                await copy_from_guest(agent, str(guest), refused)
    assert link.is_symlink() and real.read_bytes() == b"from the guest"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the replaced file's mode is kept
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and fifo_link.is_symlink()
    assert dangling.is_symlink() and not (tmp_path / "nothing").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.qemu_ga
async def test_streams_and_local_write_errors(agent, tmp_path):
    guest = tmp_path / "guest.bin"
    data = os.urandom(70_000)
    with trio.fail_after(TIMEOUT):
        await copy_to_guest(agent, io.BytesIO(data), str(guest), in_place=True)
        sink = io.BytesIO()
        assert await copy_from_guest(agent, str(guest), sink) == len(data)
        assert sink.getvalue() == data
        with open("/dev/full", "wb") as full:  # noqa: ASYNC230 - a device, never blocks
            with pytest.raises(LocalFileError, match="cannot write /dev/full: No space left"):
                await copy_from_guest(agent, str(guest), full)
        await agent.ping()  # the guest handle was closed, the client is in step


@pytest.mark.qemu_ga
async def test_default_chunks_fit_the_routes_bound_on_one_request(agent, tmp_path):
    """A route that bounds requests (libvirt's: 64 KiB) gets chunks that fit it: every
    guest-file-write request sent, JSON and all, is within the bound."""
    agent.max_request_size = 64 * 1024
    sizes: list[int] = []
    execute_decoded = agent.execute_decoded  # the typed commands' way out

    async def measured(command: str, arguments: dict[str, Any] | None, decoder: Any) -> Any:
        if command == "guest-file-write":
            sizes.append(len(encode_command(command, arguments)))
        return await execute_decoded(command, arguments, decoder)

    agent.execute_decoded = measured
    data = os.urandom(500_000)
    source, guest = tmp_path / "s", tmp_path / "g"
    source.write_bytes(data)
    with trio.fail_after(TIMEOUT):
        await copy_to_guest(agent, source, str(guest), in_place=True)
    assert guest.read_bytes() == data
    assert len(sizes) == -(-len(data) // largest_write_chunk(agent))
    assert max(sizes) <= 64 * 1024 < max(sizes) + 4 * 64  # as large as fits, no larger
