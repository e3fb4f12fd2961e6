"""Which hypervisors to scan, and what each is called.

A target is a libvirt URI, optionally named: ``NAME=URI`` on the command line,
``NAME URI`` (or a bare ``URI``) per line in a hosts file (``#`` starts a
comment).  The order matters: it is the order "last found" refers to in the
``--write`` mode.  Command-line targets come first, then the hosts file's.

A hypervisor's name is the URI's host part (``qemu+ssh://root@kvm1/system`` ->
``kvm1``); for URIs without one, the NAME given with it; only when neither
gives one, libvirt's getHostname() (asked by the scan).  Test-driver URIs all
report the local host name, so tests name their hypervisors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gagent.errors import UsageError

__all__ = ["Target", "parse_targets", "uri_host"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Target:
    """One hypervisor to scan: its URI and the name it goes by (None: ask libvirt)."""

    uri: str
    name: str | None = None


def uri_host(uri: str) -> str | None:
    """The host part of a libvirt URI, or None (``qemu:///system``, ``test:///x.xml``)."""
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    return host or None


def _target(name: str | None, uri: str, where: str) -> Target:
    if not _SCHEME.match(uri):
        raise UsageError(
            f"{where}: {uri!r} is not a libvirt URI (like qemu+ssh://root@host/system, "
            "qemu:///system or test:///path/node.xml)"
        )
    if name is not None and not _NAME.fullmatch(name):
        raise UsageError(f"{where}: {name!r} is not a usable hypervisor name")
    return Target(uri, uri_host(uri) or name)


def _split_arg(arg: str) -> tuple[str | None, str]:
    """``NAME=URI`` or ``URI`` (a URI's own '=' sits after its scheme, in the query)."""
    head, sep, tail = arg.partition("=")
    if sep and not _SCHEME.match(head) and "/" not in head:
        return head, tail
    return None, arg


def parse_targets(args: list[str], hosts_file: str | os.PathLike[str] | None = None):
    """Targets from the command line, then from the hosts file, in order, without repeats."""
    targets: list[Target] = []
    for arg in args:
        name, uri = _split_arg(arg)
        targets.append(_target(name, uri, "argument"))
    if hosts_file is not None:
        try:
            with open(hosts_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read hosts file {os.fspath(hosts_file)}: {exc}") from None
        for number, line in enumerate(lines, 1):
            words = line.split("#", 1)[0].split()
            where = f"{os.fspath(hosts_file)}:{number}"
            if not words:
                continue
            if len(words) == 1:
                targets.append(_target(None, words[0], where))
            elif len(words) == 2:
                targets.append(_target(words[0], words[1], where))
            else:
                raise UsageError(f"{where}: expected 'NAME URI' or 'URI', got {line.strip()!r}")
    if not targets:
        raise UsageError("no hypervisor to scan: give URIs (or NAME=URI) or --hosts-file")
    unique: list[Target] = []
    for target in targets:
        if any(t.uri == target.uri for t in unique):
            continue  # the same URI twice: scanned once, at its first place
        if target.name is not None and any(t.name == target.name for t in unique):
            raise UsageError(
                f"two hypervisors are named {target.name!r}; name each once (NAME=URI)"
            )
        unique.append(target)
    return unique
