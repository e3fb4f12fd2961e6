"""Which type each command's reply decodes to, imported per type group when first used.

The typed commands (:mod:`gagent.commands`) ask :func:`decoder_for` for a
command's :class:`~gagent.decoding.ReplyDecoder`; the first request of a group
imports its module (``gagent.types``, ``gagent.fs_types`` or
``gagent.hw_types``) and msgspec with it, so a one-shot ``ping`` imports none
of them.  Decoders are made once per process and shared by every connection.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["REPLY_TYPES", "decoder_for", "untyped_decoder"]

#: command -> (module, type name, shape, member to unwrap).  Shapes: "one" (the
#: type), "list" (a JSON array of it), "int" (a bare integer, no type).
REPLY_TYPES: dict[str, tuple[str, str, str, str | None]] = {
    "guest-info": ("types", "AgentInfo", "one", None),
    "guest-get-osinfo": ("types", "OSInfo", "one", None),
    "guest-get-host-name": ("types", "HostName", "one", "host_name"),
    "guest-get-users": ("types", "GuestUser", "list", None),
    "guest-get-timezone": ("types", "Timezone", "one", None),
    "guest-exec": ("types", "ExecPid", "one", "pid"),
    "guest-exec-status": ("types", "ExecStatus", "one", None),
    "guest-ssh-get-authorized-keys": ("types", "SshAuthorizedKeys", "one", "keys"),
    "guest-network-get-interfaces": ("hw_types", "NetworkInterface", "list", None),
    "guest-get-vcpus": ("hw_types", "VCpu", "list", None),
    "guest-get-memory-blocks": ("hw_types", "MemoryBlock", "list", None),
    "guest-set-memory-blocks": ("hw_types", "MemoryBlockResult", "list", None),
    "guest-get-memory-block-info": ("hw_types", "MemoryBlockInfo", "one", None),
    "guest-get-cpustats": ("hw_types", "CpuStats", "list", None),
    "guest-get-devices": ("hw_types", "DeviceInfo", "list", None),
    "guest-get-fsinfo": ("fs_types", "FilesystemInfo", "list", None),
    "guest-get-disks": ("fs_types", "DiskInfo", "list", None),
    "guest-get-diskstats": ("fs_types", "DiskStatsInfo", "list", None),
    "guest-fstrim": ("fs_types", "FstrimResponse", "one", "paths"),
    "guest-fsfreeze-status": ("fsfreeze_state", "FsfreezeStatus", "one", None),
    "guest-file-read": ("fs_types", "FileRead", "one", None),
    "guest-file-write": ("fs_types", "FileWrite", "one", None),
    "guest-file-seek": ("fs_types", "FileSeek", "one", None),
    "guest-get-time": ("", "", "int", None),
    "guest-set-vcpus": ("", "", "int", None),
    "guest-fsfreeze-freeze": ("", "", "int", None),
    "guest-fsfreeze-freeze-list": ("", "", "int", None),
    "guest-fsfreeze-thaw": ("", "", "int", None),
    "guest-file-open": ("", "", "int", None),
}

_DECODERS: dict[str, Any] = {}


def decoder_for(command: str) -> Any:
    """The shared :class:`~gagent.decoding.ReplyDecoder` of ``command``'s reply."""
    decoder = _DECODERS.get(command)
    if decoder is None:
        decoder = _DECODERS[command] = _make(command)
    return decoder


_UNTYPED: dict[str, Any] = {}


def untyped_decoder(command: str) -> Any:
    """A decoder of ``command``'s reply into plain JSON values (``execute``): msgspec
    parses a reply in under half json.loads' time (bench/decode.py).  One per command
    name, for the first 256 names (callers may send any name)."""
    decoder = _UNTYPED.get(command)
    if decoder is None:
        from .decoding import ReplyDecoder

        decoder = ReplyDecoder(command, Any)
        if len(_UNTYPED) < 256:
            _UNTYPED[command] = decoder
    return decoder


def _make(command: str) -> Any:
    from .decoding import ReplyDecoder  # msgspec, on the first typed reply

    module, name, shape, member = REPLY_TYPES[command]
    kind: Any = int
    if shape != "int":
        kind = getattr(importlib.import_module(f"gagent.{module}"), name)
        if shape == "list":
            kind = list[kind]
    unwrap = None if member is None else _getter(member)
    # guest-info is asked on every connect that checks availability, and its reply
    # rarely changes: the same bytes give the same (frozen) value.
    return ReplyDecoder(command, kind, unwrap, memo=command == "guest-info")


def _getter(member: str) -> Any:
    def unwrap(value: Any) -> Any:
        return getattr(value, member)

    return unwrap
