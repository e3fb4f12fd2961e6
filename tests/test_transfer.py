"""copy_to_guest / copy_from_guest through the real qemu-ga (it runs as this
user, so guest paths are local paths), and a scripted agent on trio memory
streams for what the real one will not do on demand (short writes, hangs)."""

from __future__ import annotations

import base64
import hashlib
import os
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from scripted_agent import ScriptedAgent, b64, guest_info, with_fake

import gagent
from gagent import transfer
from gagent.errors import AgentError, UsageError
from gagent.transfer import (
    DEFAULT_CHUNK,
    MAX_CHUNK,
    MAX_WRITE_CHUNK,
    copy_from_guest,
    copy_to_guest,
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
            agent, source, str(guest), progress=lambda *a: to_calls.append(a)
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
async def test_uneven_chunks_append_and_async_progress(agent, tmp_path):
    data = os.urandom(100_001)
    source, guest, back = tmp_path / "s", tmp_path / "g", tmp_path / "b"
    source.write_bytes(data)
    guest.write_bytes(b"head:")
    seen: list[int] = []

    async def progress(done: int, total: int | None) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(done)

    with trio.fail_after(TIMEOUT):
        await copy_to_guest(
            agent, source, str(guest), chunk_size=30_000, mode="ab", progress=progress
        )
        assert seen == [30_000, 60_000, 90_000, 100_001]
        seen.clear()
        await copy_from_guest(agent, str(guest), back, chunk_size=30_000, progress=progress)
    assert back.read_bytes() == b"head:" + data
    assert seen == [30_000, 60_000, 90_000, 100_006]


@pytest.mark.qemu_ga
async def test_empty_and_unsized_files(agent, tmp_path):
    empty, back = tmp_path / "empty", tmp_path / "back"
    empty.write_bytes(b"")
    calls: list[tuple[int, int | None]] = []
    with trio.fail_after(TIMEOUT):
        assert (
            await copy_to_guest(
                agent, empty, str(tmp_path / "g"), progress=lambda *a: calls.append(a)
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
            await copy_to_guest(agent, source, str(tmp_path / "missing-dir" / "file"))
        with pytest.raises(AgentError, match="No such file"):
            await copy_from_guest(agent, str(tmp_path / "missing-file"), target)
        with pytest.raises(FileNotFoundError):
            await copy_to_guest(agent, tmp_path / "no-source", str(tmp_path / "g"))
        with pytest.raises(UsageError, match="not a directory"):
            await copy_from_guest(agent, str(source), tmp_path / "missing-dir" / "x")
        with pytest.raises(UsageError, match="for writing"):
            await copy_to_guest(agent, source, str(tmp_path / "g"), mode="rb")
        await agent.ping()
    assert not target.exists()
    assert not (tmp_path / "g").exists()
    assert leftovers(tmp_path) == []


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
            await copy_to_guest(agent, source, str(tmp_path / "g"), progress=fail_after_first_chunk)
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
                await copy_to_guest(agent, source, str(target), progress=cancel)
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
            await copy_to_guest(agent, source, str(tmp_path / "g"), chunk_size=MiB)
            assert (
                await copy_from_guest(agent, str(source), tmp_path / "x", chunk_size=786336) == 4000
            )
            for bad in (0, -1, MAX_WRITE_CHUNK + 1, 1.5, True):
                with pytest.raises(UsageError):
                    await copy_to_guest(agent, source, str(tmp_path / "g"), chunk_size=bad)
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
        assert await copy_to_guest(agent, source, "/guest/file") == 10

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
