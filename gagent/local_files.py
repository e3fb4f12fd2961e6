"""The local side of :mod:`gagent.transfer`: what a copy reads from and writes to here.

A local file is a path or an open binary stream (``sys.stdin.buffer``,
``sys.stdout.buffer``).  A path copied *to* is replaced atomically (a temporary
file beside it, fsynced, renamed over it) and only if it is a regular file or a
symlink to one (written through: the link stays); a FIFO, a device or a socket
is refused, never replaced.  Every OS error becomes
:class:`~gagent.errors.LocalFileError` ("cannot write LOCAL: No space left on
device").
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import IO, Any

import trio

from .errors import LocalFileError, UsageError

__all__ = [
    "Local",
    "Reader",
    "create_temp_beside",
    "flush_and_sync",
    "is_stream",
    "local_errors",
    "local_source",
    "local_target",
    "stream_name",
    "unlink_quietly",
]

#: A local file: a path, or an open binary stream.
Local = str | os.PathLike[str] | IO[bytes]
#: ``await read(n)``: up to n bytes, b"" at the end.
Reader = Callable[[int], Awaitable[bytes]]


@contextmanager
def local_errors(doing: str, shown: str) -> Iterator[None]:
    """Turn an OSError into LocalFileError("cannot DOING SHOWN: ...")."""
    try:
        yield
    except OSError as exc:
        raise LocalFileError.from_os_error(doing, shown, exc) from exc


@asynccontextmanager
async def local_source(source: Local) -> AsyncIterator[tuple[Reader, int | None, str]]:
    """(read, total size or None, name for messages) of a path or a stream."""
    if is_stream(source):
        stream: IO[bytes] = source  # type: ignore[assignment]
        shown = stream_name(stream)
        yield _reader(stream, shown), _regular_size(stream), shown
        return
    shown = os.fspath(source)  # type: ignore[arg-type]
    with local_errors("read", shown):
        opened = await trio.open_file(shown, "rb")
    async with opened:
        yield _reader(opened.wrapped, shown), _regular_size(opened.wrapped), shown


def _reader(stream: IO[bytes], shown: str) -> Reader:
    async def read(count: int) -> bytes:
        with local_errors("read", shown):
            return await trio.to_thread.run_sync(stream.read, count)

    return read


def _regular_size(stream: IO[bytes]) -> int | None:
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def is_stream(value: object) -> bool:
    return hasattr(value, "read") or hasattr(value, "write")


def stream_name(stream: Any) -> str:
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) else "the stream"


def local_target(shown: str) -> tuple[str, os.stat_result | None]:
    """The regular file to replace (a symlink's target) and its stat, or (path, None)
    for a new file; refuses whatever is not a regular file."""
    path = os.path.abspath(shown)
    try:
        info = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        if os.path.islink(path):
            raise UsageError(
                f"cannot write {shown}: it is a symlink to {os.readlink(path)}, which does "
                "not exist (a symlink is written through only to an existing file)"
            ) from None
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise UsageError(f"cannot copy to {shown}: {directory} is not a directory") from None
        return path, None
    except OSError as exc:
        raise LocalFileError.from_os_error("write", shown, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"cannot copy to {shown}: it is a directory (give the file's path)")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(
            f"cannot write {shown}: it is {_kind(info.st_mode)}, not a regular file, and a "
            "copy never replaces one (to write to standard output, give -)"
        )
    return os.path.realpath(path), info


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def create_temp_beside(path: str, existing: os.stat_result | None, shown: str) -> tuple[int, str]:
    """A new file next to ``path`` (same filesystem, so it can be renamed over it), with
    the mode (and, as root, the owner) of the file it replaces, else what open() gives."""
    directory, name = os.path.split(path)
    with local_errors("write", shown):
        fd, temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    try:
        with local_errors("write", shown):
            if existing is None:
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
            else:
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
                if os.geteuid() == 0:
                    os.fchown(fd, existing.st_uid, existing.st_gid)
    except BaseException:
        os.close(fd)
        unlink_quietly(temp_path)
        raise
    return fd, temp_path


def flush_and_sync(stream: IO[bytes]) -> None:
    stream.flush()
    os.fsync(stream.fileno())


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


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
