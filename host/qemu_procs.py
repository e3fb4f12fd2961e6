"""Finding a running domain's agent socket without libvirt, from its QEMU process.

The emergency thaw's way around a hung libvirtd: QEMU itself keeps running and
keeps listening on the channel's socket.  libvirt starts QEMU with
``-name guest=NAME,...`` and ``-uuid UUID``; each virtio-serial port is a
``-device virtserialport`` (``key=value`` or JSON) naming its ``chardev`` and
its port ``name``, and the chardev is a ``-chardev socket,id=...`` with either
``path=`` or (libvirt >= 6) ``fd=N``: a listening socket libvirt created and
passed in, whose bound path ``/proc/net/unix`` tells by inode.

Only processes whose ``-name`` or ``-uuid`` matches the domain the operator
named are considered; when two match (the same name on two connections), the
caller is told and picks by UUID: never a guess between two VMs.  Linux only;
reading another user's process needs the privileges the socket needs anyway.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["QemuChannel", "find_channel_sockets", "parse_qemu_argv"]


@dataclass(frozen=True)
class QemuChannel:
    """One virtio-serial port of a running QEMU and the host socket behind it."""

    pid: int
    name: str  # the domain's name (-name guest=...)
    uuid: str | None
    channel: str  # the port's name, e.g. org.gagent.agent.0
    socket_path: str | None  # None: the socket has no path we could find


@dataclass(frozen=True)
class _Parsed:
    name: str | None
    uuid: str | None
    ports: dict[str, str]  # port name -> chardev id
    chardev_paths: dict[str, str]  # chardev id -> path=
    chardev_fds: dict[str, int]  # chardev id -> fd=


def _options(text: str) -> dict[str, str]:
    """``a=1,b=2`` (QEMU's ``,,`` escapes a comma) or a JSON object, as strings."""
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
    found: dict[str, str] = {}
    parts = text.replace(",,", "\0").split(",")
    for index, part in enumerate(parts):
        key, sep, val = part.replace("\0", ",").partition("=")
        if sep:
            found[key] = val
        elif index == 0:
            found["backend"] = key  # -chardev socket,id=... : the backend comes first
    return found


def parse_qemu_argv(argv: list[str]) -> _Parsed:
    """The domain identity and channel sockets in a QEMU command line (pure)."""
    name = uuid = None
    ports: dict[str, str] = {}
    paths: dict[str, str] = {}
    fds: dict[str, int] = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-name":
            opts = _options(value)
            name = opts.get("guest") or opts.get("backend")
        elif flag == "-uuid":
            uuid = value.lower()
        elif flag == "-device":
            opts = _options(value)
            if opts.get("driver", opts.get("backend")) == "virtserialport" and "name" in opts:
                ports[opts["name"]] = opts.get("chardev", "")
        elif flag == "-chardev":
            opts = _options(value)
            chardev = opts.get("id", "")
            if "path" in opts:
                paths[chardev] = opts["path"]
            elif opts.get("fd", "").isdigit():
                fds[chardev] = int(opts["fd"])
    return _Parsed(name, uuid, ports, paths, fds)


def _unix_paths_by_inode(proc: Path) -> dict[int, str]:
    """Bound unix socket paths by inode, from /proc/net/unix."""
    found: dict[int, str] = {}
    try:
        lines = (proc / "net" / "unix").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[6].isdigit():
            found[int(fields[6])] = fields[7]
    return found


def _socket_inode(proc: Path, pid: int, fd: int) -> int | None:
    try:
        target = os.readlink(proc / str(pid) / "fd" / str(fd))
    except OSError:
        return None
    if target.startswith("socket:[") and target.endswith("]"):
        return int(target[len("socket:[") : -1])
    return None


def find_channel_sockets(
    domain: str, channel: str, *, proc: Path = Path("/proc")
) -> list[QemuChannel]:
    """Every running QEMU whose ``-name`` or ``-uuid`` is ``domain`` and has port ``channel``."""
    by_inode: dict[int, str] | None = None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if not argv or "qemu" not in os.path.basename(argv[0]) or "-name" not in argv:
            continue
        parsed = parse_qemu_argv(argv)
        # names are case-sensitive in libvirt; UUIDs are not
        named = domain == parsed.name or domain.lower() == parsed.uuid
        if not named or channel not in parsed.ports:
            continue
        chardev = parsed.ports[channel]
        path = parsed.chardev_paths.get(chardev)
        if path is None and chardev in parsed.chardev_fds:
            inode = _socket_inode(proc, int(entry.name), parsed.chardev_fds[chardev])
            if inode is not None:
                by_inode = _unix_paths_by_inode(proc) if by_inode is None else by_inode
                path = by_inode.get(inode)
        found.append(QemuChannel(int(entry.name), parsed.name or "", parsed.uuid, channel, path))
    return found
