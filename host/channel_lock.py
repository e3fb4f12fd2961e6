"""Serializing channel edits: one lock file per domain (and per socket path).

A channel edit reads the domain's definition, changes it and hands all of it
back to libvirt (defineXML): two edits at once each write their own version
and one is lost.  Every gagent edit of a domain's channels therefore holds an
exclusive ``flock`` on a lock file named after the connection URI and the
domain's UUID; an edit that names a socket path also holds one named after
the path (host-wide: two domains must not claim one socket at once).  Locks
are taken in that order (domain, then path), so two editors never wait on
each other in a circle.

``flock`` locks belong to an open file, so two tasks of one process exclude
each other as two processes do; the kernel drops the lock when the holder
exits, even when it is killed.  The wait polls a non-blocking ``flock`` (the
trio task sleeps between tries), so it is bounded and cancellable.

The files live in a runtime directory: ``$XDG_RUNTIME_DIR/gagent``, else
``/run/gagent`` for root, else ``<tmp>/gagent-UID`` (a private directory).
The lock only orders gagent's own edits; other tools (``virsh edit``) do not
take it, which is why the edit is also verified after defineXML.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from gagent.errors import GagentError

__all__ = ["ChannelEditConflict", "domain_lock_path", "edit_lock", "path_lock_path", "runtime_dir"]

DEFAULT_LOCK_WAIT = 10.0  # an edit takes well under a second; leave room for a queue
_POLL_FIRST, _POLL_MAX = 0.005, 0.05


class ChannelEditConflict(GagentError):
    """Another edit of the same domain got in the way: its lock was held too long,
    or the definition lost our change twice (something else rewrote it)."""


def runtime_dir() -> Path:
    """The private directory for gagent's lock files (created on first use).

    The first usable of ``$XDG_RUNTIME_DIR/gagent`` (when that directory is
    ours), ``/run/gagent`` (root only) and ``<tmp>/gagent-UID``; usable means a
    real directory (not a symlink) owned by us that nobody else may write to.
    """
    uid = os.geteuid()
    candidates = []
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    # only our own: 'sudo' may pass on the invoking user's XDG_RUNTIME_DIR
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg) and os.stat(xdg).st_uid == uid:
        candidates.append(Path(xdg) / "gagent")
    if uid == 0:
        candidates.append(Path("/run/gagent"))
    candidates.append(Path(tempfile.gettempdir()) / f"gagent-{uid}")
    problems = []
    for candidate in candidates:
        try:
            return _private_dir(candidate, uid)
        except OSError as exc:
            problems.append(f"{candidate}: {exc.strerror or exc}")
    raise GagentError(
        "no usable directory for gagent's lock files (" + "; ".join(problems) + "): "
        "set XDG_RUNTIME_DIR to a directory of your own"
    )


def _private_dir(path: Path, uid: int) -> Path:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(errno.ENOTDIR, "exists and is not a directory")
    if info.st_uid != uid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # someone else's (or a shared) directory: their lock files could be ours
        raise OSError(errno.EPERM, "not a private directory of this user")
    return path


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def domain_lock_path(uri: str, uuid: str) -> Path:
    """The lock file of one domain on one connection."""
    return runtime_dir() / f"domain-{uuid}-{_digest(uri, uuid)}.lock"


def path_lock_path(socket_path: str) -> Path:
    """The lock file of one socket path (host-wide, whatever the connection)."""
    return runtime_dir() / f"socket-{_digest(os.path.normpath(socket_path))}.lock"


@asynccontextmanager
async def edit_lock(
    lock_file: Path, *, what: str, wait: float = DEFAULT_LOCK_WAIT
) -> AsyncIterator[None]:
    """Hold an exclusive flock on ``lock_file`` for the block.

    ``what`` names the locked thing in the error raised when the lock stays
    held past ``wait`` seconds (ChannelEditConflict, naming the holder's
    PID when it wrote one).
    """
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise GagentError(
            f"cannot open the lock file {lock_file} ({exc.strerror or exc}): "
            "set XDG_RUNTIME_DIR to a directory of your own"
        ) from None
    try:
        deadline = trio.current_time() + wait
        pause = _POLL_FIRST
        while not _try_lock(fd):
            if trio.current_time() >= deadline:
                holder = _holder(fd)
                raise ChannelEditConflict(
                    f"another gagent{holder} has been changing {what} for over {wait:g}s "
                    f"(lock {lock_file}): wait for it to finish, then run the command again"
                )
            await trio.sleep(pause)
            pause = min(pause * 2, _POLL_MAX)
        # Who holds it, for the message of anyone who waits too long.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (PID {pid})" if pid.isdigit() else ""
