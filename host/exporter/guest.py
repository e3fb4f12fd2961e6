"""What one collection asks a guest's agent: read-only commands only.

Groups (each with its own interval, see :mod:`.poll`):

* ``agent``  guest-fsfreeze-status (timed: the round trip, and whether the guest is frozen)
* ``fs``     guest-get-fsinfo (size and used bytes per mountpoint)
* ``os``     guest-info, guest-get-osinfo, guest-get-host-name, guest-get-users, and the
             freeze dead-man's switch's files read with guest-file-open in mode ``r``

A command the guest lacks or disabled leaves its part unknown (no series);
while the guest is frozen its agent refuses all but a few commands, so the
parts it refused keep what was collected before the freeze.  A lost
connection or the deadline ends the whole exchange (the caller marks the
domain stale).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass

from gagent.commands import AgentCommands
from gagent.errors import (
    AgentError,
    CommandUnavailable,
    FrozenStateViolation,
    GuestFrozen,
    GuestIsFrozen,
)
from gagent.fs_types import FsfreezeStatus
from gagent.guest.deadman import CONFIG as DEADMAN_CONFIG
from gagent.guest.deadman import STATE_DIR as DEADMAN_STATE_DIR
from gagent.guest.deadman import parse_config
from gagent.transfer import copy_from_guest

from .cache import Deadman, Filesystem, GuestInfo

__all__ = ["AGENT_GROUPS", "DeadmanPaths", "collect"]

AGENT_GROUPS = ("agent", "fs", "os")
#: A dead-man's switch file larger than this is not read (its records are a few KiB).
DEADMAN_FILE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class DeadmanPaths:
    """Where the guest keeps its dead-man's switch (guest/deadman.py); tests move them."""

    config: str = DEADMAN_CONFIG
    state_dir: str = DEADMAN_STATE_DIR


class _Kept(Exception):
    """The guest refused this part while frozen: keep what was collected before."""


async def _part(call):
    """A part's value; None when the agent lacks or refused the command."""
    try:
        return await call()
    except (GuestIsFrozen, GuestFrozen, FrozenStateViolation) as exc:
        raise _Kept from exc
    except (CommandUnavailable, AgentError):
        return None


async def collect(
    agent: AgentCommands, groups: tuple[str, ...], deadman: DeadmanPaths = DeadmanPaths()
) -> dict[str, object]:
    """The cache fields these groups produce (fields left out: keep the cached value)."""
    data: dict[str, object] = {}
    if "agent" in groups:
        started = time.perf_counter()
        status = await agent.freeze_state()  # None: the guest cannot tell
        data["round_trip_seconds"] = time.perf_counter() - started
        data["frozen"] = None if status is None else status is FsfreezeStatus.FROZEN
        if status is FsfreezeStatus.FROZEN:
            return data  # the agent refuses the rest while frozen: keep what was collected
    if "fs" in groups:
        try:
            data["filesystems"] = _filesystems(await _part(agent.fsinfo))
        except _Kept:
            pass
    if "os" in groups:
        try:
            data["info"] = await _guest_info(agent)
            users = await _part(agent.users)
            data["users"] = None if users is None else len(users)
            data["deadman"] = await read_deadman(agent, deadman)
        except _Kept:
            pass
    return data


def _filesystems(found) -> tuple[Filesystem, ...] | None:
    if found is None:
        return None
    seen: dict[tuple[str, str], Filesystem] = {}
    for fs in found:
        if fs.total_bytes is None or fs.used_bytes is None:
            continue  # the agent could not stat it
        key = (fs.mountpoint, fs.type)
        seen.setdefault(key, Filesystem(fs.mountpoint, fs.type, fs.total_bytes, fs.used_bytes))
    return tuple(seen.values())


async def _guest_info(agent: AgentCommands) -> GuestInfo:
    info = await agent.info()
    osinfo = await _part(agent.osinfo)
    hostname = await _part(agent.host_name)
    return GuestInfo(
        os="" if osinfo is None else (osinfo.pretty_name or osinfo.name or ""),
        kernel="" if osinfo is None else (osinfo.kernel_release or ""),
        hostname=hostname or "",
        agent_version=info.version,
    )


async def _read_file(agent: AgentCommands, path: str) -> str | None:
    """A small guest file's text, or None when it cannot be read (absent, refused)."""
    buffer = io.BytesIO()
    try:
        await copy_from_guest(agent, path, buffer)
    except (GuestIsFrozen, GuestFrozen, FrozenStateViolation) as exc:
        raise _Kept from exc
    except (CommandUnavailable, AgentError):
        return None
    data = buffer.getvalue()
    return None if len(data) > DEADMAN_FILE_LIMIT else data.decode("utf-8", "replace")


async def read_deadman(agent: AgentCommands, paths: DeadmanPaths) -> Deadman | None:
    """The switch's state, or None when the guest has no readable switch configuration."""
    config = await _read_file(agent, paths.config)
    if config is None:
        return None
    deadline = parse_config(config, paths.config).deadline
    armed = await _read_file(agent, f"{paths.state_dir}/armed")
    fired_text = await _read_file(agent, f"{paths.state_dir}/fired") or ""
    fired = []
    for line in fired_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            fired.append(record)
    last = fired[-1].get("fired_at") if fired else None
    return Deadman(
        deadline_seconds=deadline,
        armed=bool(armed and armed.strip()),
        fired=len(fired),
        last_fired=float(last) if isinstance(last, (int, float)) else None,
    )
