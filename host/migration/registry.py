"""Which checks run: the built-ins, then plugins, then a directory of external checks."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .checks_domain import fsfreeze, guest_agent, hostdevs, name_uuid, networks, snapshots, storage
from .checks_host import cpu, free_memory, hypervisor_type, hypervisor_version, libvirt_version
from .external import discover
from .framework import Check, select
from .plugins import load_plugins

__all__ = ["BUILTIN_CHECKS", "collect_checks"]

BUILTIN_CHECKS: tuple[Check, ...] = (
    libvirt_version,
    hypervisor_type,
    hypervisor_version,
    cpu,
    free_memory,
    storage,
    networks,
    name_uuid,
    hostdevs,
    fsfreeze,
    guest_agent,
    snapshots,
)


def collect_checks(
    *,
    checks_dir: str | os.PathLike[str] | None = None,
    plugins: bool = True,
    skip: Iterable[str] = (),
) -> list[Check]:
    """Built-ins, entry-point plugins (unless ``plugins=False``), ``checks_dir``; minus ``skip``."""
    checks = list(BUILTIN_CHECKS)
    if plugins:
        checks += load_plugins()
    if checks_dir is not None:
        checks += discover(checks_dir)
    return select(checks, skip)
