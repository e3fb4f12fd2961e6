"""Checks that a channel's ``--path`` is ours to take, before any definition changes.

QEMU unlinks whatever is at a channel's socket path and binds its own socket
there.  A path that names an existing file would destroy that file; a path
another domain's device already uses would hand that domain's socket to this
one (gagent would then talk to the wrong guest, and removing the channel would
delete the other domain's socket).  So a path must not exist, or be the socket
of this very channel; it must not appear in any ``<source>`` of any domain on
the connection, running or defined; and a socket someone listens on that no
domain claims (another program, a domain of another connection) is refused
too.  On a remote connection only the domains' XML can be checked: the file
system is the libvirt host's, and the result says so.
"""

from __future__ import annotations

import errno
import os
import shlex
import socket
import stat
from dataclasses import dataclass

import trio

from gagent.errors import UsageError

from .channel import ChannelSpec, PathUse, check_socket_directory, path_uses
from .virt import Domain, DomainNotFound

__all__ = ["PathClaim", "SocketPathRefused", "check_socket_path", "path_claims"]

_CHOOSE = "choose another path, or leave --path out to let libvirt choose one"


class SocketPathRefused(UsageError):
    """A channel's socket path is not ours to take (a file, or another domain's socket)."""

    def __init__(self, message: str, *, path: str):
        self.path = path
        super().__init__(message)


@dataclass(frozen=True)
class PathClaim:
    """A domain whose XML names the path (``live``: in its running XML, else its definition)."""

    domain: str
    use: PathUse
    live: bool

    def where(self) -> str:
        return "running" if self.live else "defined"


async def path_claims(domain: Domain, path: str, *, local: bool) -> list[PathClaim]:
    """Every device of every domain on ``domain``'s connection that names ``path``.

    Reads the running XML of active domains and the definition of persistent
    ones (a device may be in one only).  ``local`` compares resolved paths
    (symlinked directories lead to the same socket).
    """
    found: list[PathClaim] = []
    for other in await domain.hypervisor.domains():
        try:
            xmls = []
            if (await other.state()).is_active:
                xmls.append((True, await other.xml()))
            if await other.is_persistent():
                xmls.append((False, await other.xml(inactive=True)))
        except DomainNotFound:
            continue  # gone while we looked: it claims nothing any more
        for live, xml in xmls:
            found += [PathClaim(other.name, use, live) for use in path_uses(xml)]
    resolve = os.path.realpath if local else os.path.normpath

    def same_path() -> list[PathClaim]:
        wanted = resolve(path)
        return [claim for claim in found if resolve(claim.use.path) == wanted]

    # realpath reads the file system (a hung NFS mount must not block trio)
    return await trio.to_thread.run_sync(same_path, abandon_on_cancel=True)


async def check_socket_path(domain: Domain, spec: ChannelSpec, *, local: bool) -> list[str]:
    """Raise SocketPathRefused unless ``spec.path`` may become this channel's socket.

    Returns notes for the operator (on a remote connection: what was not checked).
    Locally the path's directory must exist (see check_socket_directory).
    """
    path = spec.path
    if path is None:
        return []
    uri = domain.hypervisor.uri
    own = False
    for claim in await path_claims(domain, path, local=local):
        if claim.domain != domain.name:
            raise SocketPathRefused(
                f"socket path {path} is already used by domain {claim.domain} ({claim.use}, "
                f"{claim.where()}): a socket serves one domain, and gagent would reach "
                f"{claim.domain}'s guest through it; {_CHOOSE}",
                path=path,
            )
        if claim.use.device == "channel" and claim.use.name == spec.name:
            own = True  # this very channel: adding it again changes nothing
            continue
        raise SocketPathRefused(
            f"socket path {path} is already used by {claim.use} of domain {domain.name} "
            f"({claim.where()}); {_CHOOSE}",
            path=path,
        )
    if not local:
        return [
            f"socket path {path} was checked against the domains of {uri} only: it is on "
            "the libvirt host, so whether a file is there was not checked"
        ]
    if not own:
        await trio.to_thread.run_sync(_check_file, path, uri, abandon_on_cancel=True)
    return []


def _check_file(path: str, uri: str) -> None:
    """Refuse anything at ``path`` on this machine: QEMU would unlink it."""
    check_socket_directory(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SocketPathRefused(
            f"cannot check socket path {path} ({exc.strerror}): run as a user who may, "
            f"or {_CHOOSE}",
            path=path,
        ) from None
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketPathRefused(
            f"socket path {path} is an existing {_kind(info.st_mode)}, not a socket: QEMU "
            f"would delete it to make its socket; {_CHOOSE}",
            path=path,
        )
    state = _listening(path)
    if state is None:
        return  # removed since lstat
    if state:
        raise SocketPathRefused(
            f"something is listening on socket {path} and no domain on {uri} uses it "
            f"(another program, or a domain of another libvirt connection); {_CHOOSE}",
            path=path,
        )
    raise SocketPathRefused(
        f"socket path {path} is a leftover socket nothing listens on and no domain on {uri} "
        f"uses: if it is no one's, remove it (rm {shlex.quote(path)}) and run the command "
        f"again; or {_CHOOSE}",
        path=path,
    )


def _listening(path: str) -> bool | None:
    """Does something accept connections on the socket at ``path``? (None: gone)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK) as sock:
        code = sock.connect_ex(path)
    if code in (0, errno.EAGAIN, errno.EINPROGRESS):
        return True  # accepted, or listening with a full backlog
    if code == errno.ECONNREFUSED:
        return False
    if code == errno.ENOENT:
        return None
    raise SocketPathRefused(
        f"cannot check socket path {path} ({os.strerror(code)}): run as a user who may, "
        f"or {_CHOOSE}",
        path=path,
    )


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
    )  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "file")
