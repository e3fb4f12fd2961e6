"""Pre-migration checks, then the migration (``gagent migrate-check`` / ``gagent migrate``).

Checks are built-ins (:data:`BUILTIN_CHECKS`), plugins registered under the
``gagent.migration_checks`` entry-point group, and executables in a directory
(see :mod:`.external`).  Write a plugin check like this::

    from gagent.host.migration import CheckResult, MigrationContext, Severity, check

    @check("backup-recent", "a backup of the domain ran today", severity=Severity.CRITICAL)
    async def backup_recent(ctx: MigrationContext) -> CheckResult:
        if await last_backup_age(ctx.facts.name) < 86400:
            return CheckResult.success("backed up today")
        return CheckResult.fail("no backup today: run one first")

Modules: ``framework`` (Check, results, concurrent runner, policy), ``context``
(what a check receives), ``domxml`` (the domain XML, parsed), ``checks_host``
and ``checks_domain`` (the built-ins), ``plugins``, ``external``,
``registry`` (which checks run) and ``migrate`` (migrate3 with progress).
"""

from __future__ import annotations

from ..domxml import DomainFacts, parse_domain
from .context import AgentProbe, MigrationContext, MigrationOptions, gather_context
from .framework import (
    Check,
    CheckResult,
    Decision,
    Outcome,
    Report,
    Severity,
    Status,
    check,
    decide,
    run_checks,
)
from .migrate import MigrationResult, flags_for, run_migration
from .plugins import ENTRY_POINT_GROUP, load_plugins
from .registry import BUILTIN_CHECKS, collect_checks

__all__ = [
    "BUILTIN_CHECKS",
    "ENTRY_POINT_GROUP",
    "AgentProbe",
    "Check",
    "CheckResult",
    "Decision",
    "DomainFacts",
    "MigrationContext",
    "MigrationOptions",
    "MigrationResult",
    "Outcome",
    "Report",
    "Severity",
    "Status",
    "check",
    "collect_checks",
    "decide",
    "flags_for",
    "gather_context",
    "load_plugins",
    "parse_domain",
    "run_checks",
    "run_migration",
]
