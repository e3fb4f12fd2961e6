"""Copying files to and from the guest, on top of :class:`~gagent.commands.AgentCommands`
(running a program to completion is :mod:`gagent.programs`).

::

    async with gagent.open_agent(path) as agent:
        await copy_to_guest(agent, "build/tool", "/usr/local/bin/tool", mode=0o755)
        await copy_from_guest(agent, "/var/log/tool.log", "tool.log")

Timeouts are the caller's (``with trio.fail_after(...)``).  Whatever happens,
the guest file handle is closed: on error or cancellation the close runs in a
shielded cancel scope with its own short deadline (:data:`CLOSE_TIMEOUT`).

Neither direction ever leaves a destination half-written:

* *to* the guest, the data goes into a private temporary file beside the
  destination, which is given its mode (``mode``, default 0644) and renamed over
  the destination only once complete; on any failure or cancellation it is
  removed, and the old file stays as it was (:mod:`gagent.guest_replace`: those
  steps need guest-exec).  Without guest-exec, ``in_place=True`` writes the
  destination directly: a failure then leaves it partial, a new file gets
  qemu-ga's mode 0666 and an existing one keeps its mode;
* *from* the guest, into a temporary file beside LOCAL, fsynced and renamed over
  it (a symlink is written through to the regular file it names; anything else
  that is not a regular file is refused, never replaced).

Either side may instead be an open binary stream (stdin, stdout), copied as it
comes.  Local failures (EACCES, ENOSPC, a closed pipe) are
:class:`~gagent.errors.LocalFileError`: "cannot write LOCAL: ...".

Chunks are sized to the route: one guest-file-write request, base64 and all,
within ``agent.max_request_size``; one guest-file-read reply within
``agent.max_reply_size`` (libvirt's route bounds both far below gagent's own
channel, see gagent.host.libvirt_agent).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import IO, Any

import trio

from . import guest_replace
from .commands import AgentCommands
from .errors import AgentError, GagentError, UsageError, error_from_reply
from .fs_types import SeekWhence
from .local_files import (
    Local,
    Reader,
    create_temp_beside,
    flush_and_sync,
    is_stream,
    local_errors,
    local_source,
    local_target,
    stream_name,
    unlink_quietly,
)

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_CHUNK",
    "DEFAULT_MODE",
    "MAX_CHUNK",
    "MAX_WRITE_CHUNK",
    "Progress",
    "close_guest_file",
    "copy_from_guest",
    "copy_to_guest",
    "largest_read_chunk",
    "largest_write_chunk",
]

#: Bytes per guest-file-read/-write when the route allows it.  A read reply
#: carries 4/3 of it as base64, far below the client's default bound (16 MiB).
DEFAULT_CHUNK = 1024 * 1024
#: qemu-ga refuses reads above 48 MiB ...
MAX_CHUNK = 48 * 1024 * 1024
#: ... and requests above 64 MiB of JSON ("JSON token size limit exceeded"):
#: a write's base64 must stay below that, a little under 48 MiB of data.
MAX_WRITE_CHUNK = (64 * 1024 * 1024 - 256) // 4 * 3
#: Mode of a file copied into the guest unless the caller says otherwise.
DEFAULT_MODE = 0o644
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
    source: Local,
    guest_path: str,
    *,
    mode: int | None = None,
    in_place: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Copy ``source`` (a path or a binary stream) into the guest as ``guest_path``;
    returns the number of bytes copied.

    The destination is replaced atomically with permission bits ``mode``
    (default :data:`DEFAULT_MODE`), or, with ``in_place``, written directly
    (see the module doc; ``mode`` cannot be applied then).  ``chunk_size``
    defaults to the largest the route carries, at most :data:`DEFAULT_CHUNK`.
    ``progress`` is called after every chunk (once with 0 for an empty file).
    """
    chunk = _chunk(agent, chunk_size, reading=False)
    if in_place and mode is not None:
        raise UsageError(
            "a mode cannot be set when writing in place (qemu-ga has no chmod): "
            "an existing file keeps its mode, a new one gets 0666"
        )
    mode = DEFAULT_MODE if mode is None else _check_mode(mode)
    if not isinstance(guest_path, str) or not guest_path or "\n" in guest_path:
        raise UsageError(f"bad guest path {guest_path!r}")
    async with local_source(source) as (read, total, _shown):
        if in_place:
            handle = await agent.file_open(guest_path, "wb")
            return await _send(agent, handle, read, chunk, total, progress)
        if not guest_path.startswith("/"):
            raise UsageError(f"give the guest path as an absolute path, not {guest_path!r}")
        await guest_replace.require_shell(agent, guest_path)
        target, temp = await guest_replace.make_temp(agent, guest_path)
        try:
            try:
                handle = await agent.file_open(temp, "wb")
                done = await _send(agent, handle, read, chunk, total, progress)
            except AgentError as exc:
                if type(exc) is not AgentError:
                    raise
                raise error_from_reply(
                    exc.command,
                    {"class": exc.error_class, "desc": f"{exc.desc} ({guest_path} is unchanged)"},
                    arguments=exc.arguments,
                ) from None
            await guest_replace.put_in_place(agent, temp, target, mode)
        except BaseException:
            await guest_replace.discard(agent, temp)
            raise
    return done


async def copy_from_guest(
    agent: AgentCommands,
    guest_path: str,
    target: Local,
    *,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Copy a guest file to ``target`` (a path, replaced atomically, or a binary
    stream); returns the number of bytes.

    With ``progress``, the guest file's size is asked first (two seeks) and
    given as the total; it is None for files that cannot tell (pipes, /proc).
    """
    chunk = _chunk(agent, chunk_size, reading=True)
    if is_stream(target):
        shown = stream_name(target)
        handle = await agent.file_open(guest_path, "rb")
        return await _receive(agent, handle, target, shown, chunk, progress)  # type: ignore[arg-type]
    shown = os.fspath(target)  # type: ignore[arg-type]
    real_path, existing = local_target(shown)
    handle = await agent.file_open(guest_path, "rb")
    try:
        fd, temp_path = create_temp_beside(real_path, existing, shown)
    except BaseException:
        await close_guest_file(agent, handle, strict=False)
        raise
    try:
        with os.fdopen(fd, "wb") as stream:
            done = await _receive(agent, handle, stream, shown, chunk, progress, flush=False)
            with local_errors("write", shown):
                await trio.to_thread.run_sync(flush_and_sync, stream)
        with local_errors("write", shown):
            os.replace(temp_path, real_path)
    except BaseException:
        unlink_quietly(temp_path)
        raise
    return done


async def _send(
    agent: AgentCommands,
    handle: int,
    read: Reader,
    chunk: int,
    total: int | None,
    progress: Progress | None,
) -> int:
    """Write what ``read`` gives into the guest handle, then close it (strictly: closing
    flushes qemu-ga's buffer, so a failure there is a failed copy)."""
    done = 0
    try:
        while block := await read(chunk):
            await _write_all(agent, handle, block)
            done += len(block)
            await _report(progress, done, total)
        if done == 0:
            await _report(progress, 0, total)
    except BaseException:
        await close_guest_file(agent, handle, strict=False)
        raise
    await close_guest_file(agent, handle, strict=True)
    return done


async def _receive(
    agent: AgentCommands,
    handle: int,
    stream: IO[bytes],
    shown: str,
    chunk: int,
    progress: Progress | None,
    *,
    flush: bool = True,
) -> int:
    """Read the guest handle to its end into ``stream`` (flushed if ``flush``), then
    close the handle (on failure too)."""
    try:
        total = await _guest_size(agent, handle) if progress is not None else None
        done = 0
        while True:
            block = await agent.file_read(handle, chunk)
            if block.data:
                with local_errors("write", shown):
                    await trio.to_thread.run_sync(stream.write, block.data)
                done += len(block.data)
                await _report(progress, done, total)
            if block.eof:
                break
            if not block.data:
                await trio.sleep(_EMPTY_READ_PAUSE)
        if done == 0:
            await _report(progress, 0, total)
        if flush:
            with local_errors("write", shown):
                await trio.to_thread.run_sync(stream.flush)
    except BaseException:
        await close_guest_file(agent, handle, strict=False)
        raise
    await close_guest_file(agent, handle, strict=True)
    return done


# ------------------------------------------------------------------ chunks


def _chunk(agent: AgentCommands, chunk_size: int | None, *, reading: bool) -> int:
    if chunk_size is None:
        fits = largest_read_chunk(agent) if reading else largest_write_chunk(agent)
        return min(DEFAULT_CHUNK, fits)
    _check_chunk_size(agent, chunk_size, reading=reading)
    return chunk_size


def _check_chunk_size(agent: AgentCommands, chunk_size: int, *, reading: bool = False) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise UsageError(f"chunk_size must be a positive int, not {chunk_size!r}")
    largest = MAX_CHUNK if reading else MAX_WRITE_CHUNK
    if chunk_size > largest:
        raise UsageError(f"chunk_size {chunk_size} is over qemu-ga's limit of {largest} bytes")
    if reading:
        _check_fits(chunk_size, agent.max_reply_size, _READ_REPLY_OVERHEAD,
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


def largest_read_chunk(agent: AgentCommands, cap: int = MAX_CHUNK) -> int:
    """The largest guest-file-read count (at most ``cap``) whose reply fits the transport."""
    return _largest(agent.max_reply_size, _READ_REPLY_OVERHEAD, cap)


def largest_write_chunk(agent: AgentCommands, cap: int = MAX_WRITE_CHUNK) -> int:
    """The largest guest-file-write (at most ``cap`` bytes) whose request fits the route."""
    return _largest(agent.max_request_size, _WRITE_REQUEST_OVERHEAD, cap)


def _largest(bound: int | None, overhead: int, cap: int) -> int:
    if bound is None:
        return cap
    return max(1, min(cap, (bound - overhead) // 4 * 3))


def _check_mode(mode: int) -> int:
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise UsageError(f"mode must be permission bits from 0 to 0o7777, not {mode!r}")
    return mode


# ------------------------------------------------------------------ the guest side


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
