"""``gagent snapshot group create|list|delete``: several domains at one frozen instant.

Defined here on the options of :mod:`.freeze_options`; :mod:`gagent.host.cli.freeze`
adds it to its ``snapshot_group``.
``create`` runs under :func:`~gagent.host.cli.common.run_command` like every freeze:
Ctrl-C, SIGTERM, SIGHUP and ``--timeout`` thaw every member that froze (shielded,
within ``--thaw-timeout``) and remove the snapshots already taken before it exits.

Members: ``DOMAIN`` (on ``-c URI``), ``URI:DOMAIN`` (the URI has ``://``; the domain
follows its last ``:``), either behind ``LABEL=`` to name it in the record, or
``@FILE``: one member per line (blank lines and ``#`` comments skipped).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click

from gagent.errors import UsageError

from .common import Output, run_command, say
from .freeze_options import (
    connect_option,
    freeze_timeout_option,
    json_option,
    thaw_timeout_option,
    timeout_option,
    transport_option,
)
from .options import Seconds, channel_option
from .render import format_table

__all__ = ["group_command", "parse_members"]


def _one(word: str, uri: str | None) -> tuple[str, str, str | None]:
    label, sep, rest = word.partition("=")
    if not sep or ":" in label or "/" in label or not label:
        label, rest = "", word
    if "://" in rest:
        found, _, ref = rest.rpartition(":")
        if "://" not in found or not ref or "/" in ref:
            raise UsageError(f"member {word!r}: write URI:DOMAIN, e.g. qemu:///system:vm1")
        uri = found
    else:
        ref = rest
    if not ref:
        raise UsageError(f"member {word!r} names no domain")
    return label or ref, ref, uri


def parse_members(
    words: list[str] | tuple[str, ...], uri: str | None
) -> list[tuple[str, str, str | None]]:
    """(label, domain, URI) of each member word (see the module doc)."""
    found = []
    for word in words:
        if word.startswith("@"):
            try:
                lines = Path(word[1:]).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise UsageError(f"cannot read member file {word[1:]}: {exc.strerror}") from None
            found += [_one(s, uri) for s in (ln.split("#")[0].strip() for ln in lines) if s]
        else:
            found.append(_one(word, uri))
    return found


@click.group("group")
def group_command() -> None:
    """Snapshots of several domains at one frozen instant (a multi-VM application)."""


@group_command.command("create")
@click.argument("name")
@click.argument("members", nargs=-1, required=True)
@click.option(
    "--consistency", "policy", type=click.Choice(["require", "prefer", "crash"]),
    default="require", show_default=True,
    help="require: every member frozen in one common window, or nothing kept; prefer: "
    "members that cannot freeze are taken crash-consistent; crash: no freeze.",
)  # fmt: skip
@freeze_timeout_option
@thaw_timeout_option
@click.option(
    "--snapshot-timeout", type=Seconds(min=0.1), default=60.0, show_default=True,
    help="Seconds a member may stay frozen for libvirt's call.",
)  # fmt: skip
@connect_option
@transport_option
@channel_option
@timeout_option(300.0)
@json_option
def group_create(name: str, members: tuple[str, ...], policy: str, freeze_timeout: float,
                 thaw_timeout: float, snapshot_timeout: float, connect: str | None,
                 transport: str, channel: str, timeout: float,
                 as_json: bool) -> None:  # fmt: skip
    """Snapshot every MEMBER as NAME at one frozen instant.

    \b
    MEMBER: DOMAIN (on -c URI), URI:DOMAIN, LABEL=URI:DOMAIN, or @FILE (one per line).
    Every member is reached and preflighted first; all freeze concurrently; once every
    freeze is confirmed each takes its disk-only snapshot and thaws.  A member failing
    thaws the others and removes what was taken (require).  Exit codes: 0 consistent
    (or kept under prefer/crash); else the first failing member's code (3 unreachable,
    5 cannot freeze, 8 libvirt...), 9 a thaw could not be confirmed, 1 otherwise.
    """
    from gagent.host.group_snapshot import GroupSnapshotFailed, Member, snapshot_group
    from gagent.host.session import open_hypervisor_session

    parsed = parse_members(members, connect)

    def warn(line: str) -> None:
        say(f"gagent: warning: {line}")

    async def run() -> Any:
        async with AsyncExitStack() as stack:
            connections: dict[str | None, Any] = {}
            for _, _, uri in parsed:  # one connection per hypervisor
                if uri not in connections:
                    connections[uri] = await stack.enter_async_context(open_hypervisor_session(uri))
            group = [Member(ref, uri, connections[uri], label) for label, ref, uri in parsed]
            try:
                return await snapshot_group(
                    group, name, policy=policy, warn=warn, freeze_timeout=freeze_timeout,
                    thaw_timeout=thaw_timeout, snapshot_timeout=snapshot_timeout,
                    transport=transport, channel_name=channel,
                )  # fmt: skip
            except GroupSnapshotFailed as exc:
                return exc  # (reported below, outside run_command's nursery)

    output = Output(as_json)
    outcome = run_command(run, seconds=timeout, target=f"group {name}")
    record = outcome.record if isinstance(outcome, GroupSnapshotFailed) else outcome
    output.emit(record.to_json(), lambda _: record.describe())
    if isinstance(outcome, GroupSnapshotFailed):
        first = outcome.first
        if isinstance(first, Exception) and not isinstance(first, UsageError):
            raise first from outcome  # its one line and exit code say what to do
        raise outcome


@group_command.command("list")
@json_option
def group_list(as_json: bool) -> None:
    """The group snapshots gagent keeps a record of, oldest first."""
    from gagent.host.group_record import load_groups

    groups = load_groups()
    Output(as_json).emit([g.to_json() for g in groups], lambda _: _table(groups))


def _table(groups: list[Any]) -> str:
    if not groups:
        return "(no group snapshots)"
    rows = [
        (
            g.name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(g.created)),
            g.consistency, "-" if g.window_ms is None else f"{g.window_ms:.1f}ms",
            " ".join(f"{m.label}={m.state}" for m in g.members),
        )
        for g in groups
    ]  # fmt: skip
    return format_table(["name", "created", "consistency", "window", "members"], rows)


@group_command.command("delete")
@click.argument("name")
@timeout_option(600.0)
@json_option
def group_delete(name: str, timeout: float, as_json: bool) -> None:
    """Delete every member snapshot of group NAME (libvirt merges the overlays back), then
    its record; a member that cannot be removed keeps the record, with the command to run."""
    from gagent.errors import HostError
    from gagent.host.group_cleanup import delete_group_snapshot

    removed, left = run_command(
        lambda: delete_group_snapshot(name), seconds=timeout, target=f"group {name}"
    )
    value = {
        "name": name,
        "deleted": not left,
        "removed": [{"label": m.label, "domain": m.domain} for m in removed],
        "left": [{"label": m.label, "domain": m.domain, "advice": m.advice} for m in left],
    }
    lines = [f"{m.label}: deleted snapshot {name} of {m.domain}" for m in removed]
    if not left:
        lines.append(f"deleted group snapshot {name}")
    if as_json or lines:
        Output(as_json).emit(value, lambda _: "\n".join(lines))
    if left:
        raise HostError(
            f"group {name}: could not delete the snapshot of "
            + "; ".join(f"{m.label} (run {m.advice})" for m in left)
        )
