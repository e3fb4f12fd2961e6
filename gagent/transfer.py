"""Copying files to and from the guest, on top of :class:`~gagent.commands.AgentCommands`
(running a program to completion is :mod:`gagent.programs`).

::

    async with gagent.open_agent(path) as agent:
        await copy_to_guest(agent, "build/tool", "/usr/local/bin/tool")
        await copy_from_guest(agent, "/var/log/tool.log", "tool.log")

Timeouts are the caller's (``with trio.fail_after(...)``).  Whatever happens,
the guest file handle is closed: on error or cancellation the close runs in a
shielded cancel scope with its own short deadline (:data:`CLOSE_TIMEOUT`).

Files copied *from* the guest are written atomically: into a temporary file
beside the destination, renamed over it only once everything arrived, so a
failed copy leaves nothing behind.  Files copied *to* the guest cannot be
written that way (qemu-ga has no rename), so a failed copy can leave a partial
guest file.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable
from typing import Any

import trio

from .commands import AgentCommands
from .errors import AgentError, GagentError, UsageError
from .fs_types import SeekWhence

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_CHUNK",
    "MAX_CHUNK",
    "MAX_WRITE_CHUNK",
    "Progress",
    "close_guest_file",
    "copy_from_guest",
    "copy_to_guest",
    "largest_read_chunk",
]

#: Bytes per guest-file-read/-write.  A read reply carries 4/3 of it as base64,
#: far below the client's default bound on one reply (16 MiB).
DEFAULT_CHUNK = 1024 * 1024
#: qemu-ga refuses reads above 48 MiB ...
MAX_CHUNK = 48 * 1024 * 1024
#: ... and requests above 64 MiB of JSON ("JSON token size limit exceeded"):
#: a write's base64 must stay below that, a little under 48 MiB of data.
MAX_WRITE_CHUNK = (64 * 1024 * 1024 - 256) // 4 * 3
#: Seconds the guest-file-close of a failed or cancelled copy may take.
CLOSE_TIMEOUT = 5.0
#: JSON around the base64 of a guest-file-read reply: {"return": {"count": N, ...}}.
_READ_REPLY_OVERHEAD = 128
#: JSON around the base64 of a guest-file-write request.
_WRITE_REQUEST_OVERHEAD = 128
#: Pause before reading again when a read returned nothing yet no EOF (a pipe).
_EMPTY_READ_PAUSE = 0.05

#: ``progress(bytes_done, total_bytes_or_None)``; may be a coroutine function.
Progress = Callable[[int, int | None], Any]


# ------------------------------------------------------------------ copying


async def copy_to_guest(
    agent: AgentCommands,
    local_path: str | os.PathLike[str],
    guest_path: str,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    mode: str = "wb",
    progress: Progress | None = None,
) -> int:
    """Copy a local file into the guest; returns the number of bytes copied.

    ``mode`` is the guest fopen mode ("wb" truncates, "ab" appends).
    ``progress`` is called after every chunk (once with 0 for an empty file).
    """
    _check_chunk_size(agent, chunk_size)
    if not isinstance(mode, str) or not (mode[:1] in ("w", "a") or "+" in mode):
        raise UsageError(f"mode must open the guest file for writing ('wb', 'ab'...), not {mode!r}")
    async with await trio.open_file(local_path, "rb") as source:
        total = os.fstat(source.fileno()).st_size
        handle = await agent.file_open(guest_path, mode)
        done = 0
        try:
            while chunk := await source.read(chunk_size):
                await _write_all(agent, handle, chunk)
                done += len(chunk)
                await _report(progress, done, total)
            if done == 0:
                await _report(progress, 0, total)
        except BaseException:
            await close_guest_file(agent, handle, strict=False)
            raise
        # Closing flushes the agent's buffer: a failure here is a failed copy.
        await close_guest_file(agent, handle, strict=True)
    return done


async def copy_from_guest(
    agent: AgentCommands,
    guest_path: str,
    local_path: str | os.PathLike[str],
    *,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> int:
    """Copy a guest file to ``local_path`` (atomically); returns the number of bytes.

    With ``progress``, the guest file's size is asked first (two seeks) and
    given as the total; it is None for files that cannot tell (pipes, /proc).
    """
    _check_chunk_size(agent, chunk_size, reading=True)
    local_path = _local_target(local_path)
    handle = await agent.file_open(guest_path, "rb")
    temp_path: str | None = None
    closed = False
    try:
        total = await _guest_size(agent, handle) if progress is not None else None
        fd, temp_path = _create_temp_beside(local_path)
        async with trio.wrap_file(os.fdopen(fd, "wb")) as target:
            done = 0
            while True:
                block = await agent.file_read(handle, chunk_size)
                if block.data:
                    await target.write(block.data)
                    done += len(block.data)
                    await _report(progress, done, total)
                if block.eof:
                    break
                if not block.data:
                    await trio.sleep(_EMPTY_READ_PAUSE)
            if done == 0:
                await _report(progress, 0, total)
            await target.flush()
            await trio.to_thread.run_sync(os.fsync, target.fileno())
        closed = True
        await close_guest_file(agent, handle, strict=True)
        os.replace(temp_path, local_path)
        temp_path = None
    except BaseException:
        if not closed:
            await close_guest_file(agent, handle, strict=False)
        raise
    finally:
        if temp_path is not None:
            _unlink_quietly(temp_path)
    return done


def _local_target(local_path: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.fspath(local_path))
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise UsageError(f"cannot copy to {path}: {directory} is not a directory")
    if os.path.isdir(path):
        raise UsageError(f"cannot copy to {path}: it is a directory (give the file's path)")
    return path


def _create_temp_beside(path: str) -> tuple[int, str]:
    """A new file next to ``path`` (same filesystem, so it can be renamed over it)."""
    directory, name = os.path.split(path)
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
    except BaseException:
        os.close(fd)
        _unlink_quietly(temp_path)
        raise
    return fd, temp_path


def _check_chunk_size(agent: AgentCommands, chunk_size: int, *, reading: bool = False) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise UsageError(f"chunk_size must be a positive int, not {chunk_size!r}")
    largest = MAX_CHUNK if reading else MAX_WRITE_CHUNK
    if chunk_size > largest:
        raise UsageError(f"chunk_size {chunk_size} is over qemu-ga's limit of {largest} bytes")
    if reading:
        _check_fits(chunk_size, _max_reply_size(agent), _READ_REPLY_OVERHEAD,
                    "comes back as", "the client's max_reply_size")  # fmt: skip
    else:
        _check_fits(chunk_size, agent.max_request_size, _WRITE_REQUEST_OVERHEAD,
                    "goes out as", "the route's bound on one request")  # fmt: skip


def _check_fits(chunk_size: int, bound: int | None, overhead: int, how: str, what: str) -> None:
    """A chunk's base64 JSON must fit the transport's ``bound`` (None: no bound)."""
    size = 4 * -(-chunk_size // 3) + overhead
    if bound is not None and size > bound:
        raise UsageError(
            f"a {chunk_size}-byte chunk {how} ~{size} bytes of base64 JSON, over {what} "
            f"of {bound}: use chunk_size <= {(bound - overhead) // 4 * 3}"
        )


def _max_reply_size(agent: AgentCommands) -> int | None:
    """The transport's bound on one reply, if it has one."""
    return agent.max_reply_size


def largest_read_chunk(agent: AgentCommands, cap: int = MAX_CHUNK) -> int:
    """The largest guest-file-read count (at most ``cap``) whose reply fits the transport."""
    limit = _max_reply_size(agent)
    if limit is None:
        return cap
    return max(1, min(cap, (limit - _READ_REPLY_OVERHEAD) // 4 * 3))


async def _write_all(agent: AgentCommands, handle: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        written = (await agent.file_write(handle, view)).count
        if not 0 < written <= len(view):
            raise AgentError(
                "guest-file-write",
                "ShortWrite",
                f"the agent wrote {written} of {len(view)} bytes",
            )
        view = view[written:]


async def _guest_size(agent: AgentCommands, handle: int) -> int | None:
    try:
        end = (await agent.file_seek(handle, 0, SeekWhence.END)).position
    except AgentError:
        return None  # not seekable: a pipe or a device
    await agent.file_seek(handle, 0, SeekWhence.SET)
    return end if end > 0 else None  # /proc and /sys files claim 0


async def close_guest_file(agent: AgentCommands, handle: int, *, strict: bool) -> None:
    """Close ``handle`` even if we are being cancelled; ``strict`` raises what fails."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + CLOSE_TIMEOUT
        try:
            await agent.file_close(handle)
        except GagentError:
            if strict:
                raise
            # A failure is already propagating: it is the one worth reporting.
    if scope.cancelled_caught and strict:
        raise trio.TooSlowError(f"guest-file-close of handle {handle} took over {CLOSE_TIMEOUT}s")


async def _report(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is not None:
        result = progress(done, total)
        if inspect.isawaitable(result):
            await result


def _umask() -> int:
    """The process umask, read without changing it (Linux); 0o022 elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
