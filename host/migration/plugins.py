"""Checks from other packages, registered under the ``gagent.migration_checks`` entry points.

A package adds checks by naming, in its metadata::

    [project.entry-points."gagent.migration_checks"]
    backup = "mypkg.checks:BACKUP_CHECK"

where the object is a :class:`~gagent.host.migration.Check` (e.g. made with
the ``@check(...)`` decorator), a list of them, or a function of no argument
returning either.  A plugin that fails to load does not break the run: it
shows up as a FAIL named ``plugin:NAME`` with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from .framework import Check, CheckResult

__all__ = ["ENTRY_POINT_GROUP", "load_plugins"]

ENTRY_POINT_GROUP = "gagent.migration_checks"


def _as_checks(obj: Any) -> list[Check]:
    if callable(obj) and not isinstance(obj, Check):
        obj = obj()
    if isinstance(obj, Check):
        return [obj]
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        items = list(obj)
        if all(isinstance(item, Check) for item in items):
            return items
    raise TypeError(f"expected a Check or a list of Checks, got {type(obj).__name__}")


def _broken(name: str, origin: str, reason: str) -> Check:
    async def run(_ctx: Any) -> CheckResult:
        return CheckResult.fail(f"the plugin could not be loaded: {reason}", error="load")

    return Check(f"plugin:{name}", f"plugin {name} (not loaded)", run, origin=origin)


def load_plugins(group: str = ENTRY_POINT_GROUP) -> list[Check]:
    """Every check the installed distributions register under ``group``."""
    found: list[Check] = []
    for entry in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        dist = getattr(entry.dist, "name", None)
        origin = f"plugin {entry.name} = {entry.value}" + (f" ({dist})" if dist else "")
        try:
            checks = _as_checks(entry.load())
        except Exception as exc:  # a broken plugin must not break the run
            found.append(_broken(entry.name, origin, f"{type(exc).__name__}: {exc}"))
            continue
        found.extend(dataclasses.replace(c, origin=origin) for c in checks)
    return found
