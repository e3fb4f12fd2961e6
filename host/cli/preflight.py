"""``gagent fsfreeze check``, the preflight before ``fsfreeze freeze``, and snapshot records.

``fsfreeze check DOMAIN`` is defined here and added to ``fsfreeze_group`` by
:mod:`gagent.host.cli.freeze`, on the options of :mod:`.freeze_options`.  It
exits 0 when a freeze is expected to work, 10 (``EXIT_CODES``: a check failed)
otherwise, with every finding and its fix.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import click

from gagent.commands import AgentCommands

from .common import Output, say
from .completion import domain_argument
from .freeze_options import (
    connect_option,
    json_option,
    mountpoint_option,
    run_on_domain,
    timeout_option,
    transport_option,
)
from .options import channel_option
from .render import format_table

__all__ = [
    "before_freeze", "delete_with_record", "fsfreeze_check", "snapshot_table",
    "snapshots_with_records",
]  # fmt: skip

#: EXIT_CODES[10]: a check failed (here: a freeze is not expected to work).
EXIT_CHECK_FAILED = 10


async def before_freeze(
    session: Any, agent: AgentCommands, transport: str, mountpoints: list[str], channel: str
) -> None:
    """The cheap preflight of 'fsfreeze freeze': mountpoints the guest has, and one
    line about the dead-man's switch (a freeze left in place outlives any deadline)."""
    from gagent.host.freeze_findings import deadman_warning
    from gagent.host.snapshot_policy import check_mountpoints, preflight

    route = session.route(transport, channel)
    # as few round trips as it can: the freeze comes right after
    facts = await preflight(
        agent, route.describe(session.name), filesystems=bool(mountpoints), hooks=False
    )
    check_mountpoints(facts, session.name, mountpoints)
    line = deadman_warning(facts, session.name, None)
    if line:
        say(f"gagent: warning: {line}")


@click.command("check")
@domain_argument()
@mountpoint_option
@connect_option
@transport_option
@channel_option
@timeout_option(60.0)
@json_option
def fsfreeze_check(domain: str, mountpoints: tuple[str, ...], connect: str | None, transport: str,
                   channel: str, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Preflight: would a freeze of DOMAIN work? Every finding with its fix.

    \b
    Asks the agent (nothing is frozen): its route and version, whether freeze,
    thaw and status are enabled, whether it is frozen already, the filesystems
    (loop devices on frozen parents, FUSE and network filesystems, read-only
    mounts, devices mounted twice), fsfreeze hooks, the dead-man's switch and
    SELinux's mode.  Exit codes: 0 a freeze is expected to work; 10 it is not
    (an error finding); 4 the deadline passed; 8 libvirt error (e.g. no such domain).
    """
    from gagent.errors import AgentUnavailable
    from gagent.host.freeze_findings import ERROR, Finding, assess, freeze_expected_to_work
    from gagent.host.session import open_domain
    from gagent.host.snapshot_policy import preflight

    async def run() -> Any:
        async with open_domain(domain, uri=connect) as session:
            try:
                route = session.route(transport, channel)
                async with session.agent(route=route) as agent:
                    facts = await preflight(agent, route.describe(session.name), full=True)
            except AgentUnavailable as exc:
                fix = exc.hint or "is qemu-ga running in the guest? ('gagent-guest check' there)"
                return session.name, None, [Finding("unreachable", ERROR, str(exc), fix)]
            thaw = session.thaw_command(channel)
            found = assess(facts, thaw_command=thaw, mountpoints=mountpoints)
            return session.name, facts, found

    name, facts, found = run_on_domain(run, domain, timeout)
    ok = freeze_expected_to_work(found)
    value = {
        "domain": name, "ok": ok, "findings": [asdict(f) for f in found],
        "route": facts.route if facts else None, "qga_version": facts.version if facts else None,
    }  # fmt: skip

    def human(_: Any) -> str:
        lines = []
        for f in found:
            lines.append(f"{f.severity:<8}{f.code}: {f.message}")
            if f.fix and f.severity != "info":
                lines.append(f"{'':8}fix: {f.fix}")
        verdict = "expected to work" if ok else "NOT expected to work"
        return "\n".join([*lines, f"{name}: a freeze is {verdict}"])

    Output(as_json).emit(value, human)
    if not ok:
        raise click.exceptions.Exit(EXIT_CHECK_FAILED)


# ------------------------------------------------------------ snapshot records


async def snapshots_with_records(domain: Any) -> list[dict[str, Any]]:
    """libvirt's snapshots of ``domain`` with gagent's consistency record of each, then
    the recorded ones libvirt keeps no metadata of (--no-metadata), oldest first."""
    from gagent.host.consistency import load_records
    from gagent.host.snapshot_list import list_snapshots

    records = load_records(domain.uuid)
    rows = []
    for s in await list_snapshots(domain):
        record = records.pop(s.name, None)
        disks = [{"target": d.target, "overlay": d.overlay} for d in s.disks]
        rows.append(_row(s.name, s.created, s.state, s.current, s.description, disks, record))
    for record in records.values():
        disks = [{"target": d.target, "overlay": d.overlay} for d in record.disks]
        rows.append(
            _row(record.snapshot, int(record.created), "no-metadata", False, "", disks, record)
        )
    return sorted(rows, key=lambda r: (r["created"] or 0, r["name"]))


def snapshot_table(rows: list[dict[str, Any]]) -> str:
    """'snapshot list' for people: one line a snapshot, its consistency in a column."""
    if not rows:
        return "(no snapshots)"
    lines = (
        (s["name"], _when(s["created"]), s["state"], "*" if s["current"] else "",
         s["consistency"], " ".join(f"{d['target']}={d['overlay']}" for d in s["disks"]) or "-")
        for s in rows
    )  # fmt: skip
    return format_table(["name", "created", "state", "current", "consistency", "overlays"], lines)


def _when(created: int | None) -> str:
    if created is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))


def _row(name: str, created: int | None, state: str, current: bool, description: str,
         disks: list[dict[str, Any]], record: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name, "created": created, "state": state, "current": current,
        "description": description, "disks": disks,
        "consistency": record.summary() if record else "-",
        "record": record.to_json() if record else None,
    }  # fmt: skip


async def delete_with_record(domain: Any, name: str, *, metadata_only: bool) -> str:
    """libvirt deletes the snapshot, then gagent its record; a --no-metadata snapshot has
    only the record (libvirt knows nothing to delete): that is forgotten."""
    from gagent.host.consistency import delete_record, load_records
    from gagent.host.snapshot_list import delete_snapshot

    record = load_records(domain.uuid).get(name)
    if record is not None and not record.metadata:
        delete_record(domain.uuid, name)
        return (
            f"forgot gagent's record of snapshot {name} of {domain.name} (libvirt kept no "
            "metadata of it; its overlay files stay in use)"
        )
    message = await delete_snapshot(domain, name, metadata_only=metadata_only)
    delete_record(domain.uuid, name)
    return message
