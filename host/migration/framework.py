"""The pre-migration check framework: checks, results, the concurrent runner, the policy.

A :class:`Check` has a name, a description and a severity, and an async
``run(context)`` that answers a :class:`CheckResult`: SUCCESS, WARNING or FAIL
with a message and details.  :func:`run_checks` runs them all concurrently,
each under its own timeout; a check that raises or times out becomes a FAIL
with the reason, so one bad check never breaks the run.

Severity is what a FAIL of that check means: ``CRITICAL`` checks stop the
migration; an ``ADVISORY`` check's FAIL is reported as a WARNING.  A check
that errors or times out is a FAIL whatever its severity: nothing was checked.

The policy (:func:`decide`): any FAIL stops; WARNINGs stop unless allowed,
either up front (``allow_warnings``) or by a person asked once (``confirm``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from gagent.errors import UsageError

if TYPE_CHECKING:
    from .context import MigrationContext

__all__ = [
    "Check",
    "CheckResult",
    "Decision",
    "Outcome",
    "Report",
    "Severity",
    "Status",
    "check",
    "decide",
    "run_checks",
]


class Status(enum.Enum):
    SUCCESS = "SUCCESS"
    WARNING = "WARNING"
    FAIL = "FAIL"


class Severity(enum.Enum):
    CRITICAL = "critical"  # a FAIL stops the migration
    ADVISORY = "advisory"  # a FAIL is reported as a WARNING


@dataclass(frozen=True)
class CheckResult:
    """What a check found."""

    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, message: str, **details: Any) -> CheckResult:
        return cls(Status.SUCCESS, message, details)

    @classmethod
    def warning(cls, message: str, **details: Any) -> CheckResult:
        return cls(Status.WARNING, message, details)

    @classmethod
    def fail(cls, message: str, **details: Any) -> CheckResult:
        return cls(Status.FAIL, message, details)


CheckFunc = Callable[["MigrationContext"], Awaitable[CheckResult]]


@dataclass(frozen=True)
class Check:
    """One pre-migration check.  ``origin`` says where it came from (for the report)."""

    name: str
    description: str
    run: CheckFunc
    severity: Severity = Severity.CRITICAL
    origin: str = "builtin"


def check(
    name: str, description: str, *, severity: Severity = Severity.CRITICAL
) -> Callable[[CheckFunc], Check]:
    """Decorator: ``@check("backup-recent", "a backup ran today")`` makes a function a Check."""

    def wrap(func: CheckFunc) -> Check:
        return Check(name, description, func, severity)

    return wrap


@dataclass(frozen=True)
class Outcome:
    """One line of the report: the check and its result."""

    name: str
    description: str
    severity: Severity
    origin: str
    status: Status
    message: str
    details: dict[str, Any]
    seconds: float


@dataclass
class Report:
    domain: str
    source_uri: str
    destination_uri: str
    outcomes: list[Outcome]

    def with_status(self, status: Status) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is status]

    @property
    def failures(self) -> list[Outcome]:
        return self.with_status(Status.FAIL)

    @property
    def warnings(self) -> list[Outcome]:
        return self.with_status(Status.WARNING)

    @property
    def verdict(self) -> Status:
        """The worst status of all the checks (SUCCESS when there is none)."""
        if self.failures:
            return Status.FAIL
        return Status.WARNING if self.warnings else Status.SUCCESS

    def counts(self) -> dict[str, int]:
        return {s.value: len(self.with_status(s)) for s in Status}

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "source": self.source_uri,
            "destination": self.destination_uri,
            "verdict": self.verdict.value,
            "counts": self.counts(),
            "checks": [
                {
                    "name": o.name,
                    "description": o.description,
                    "severity": o.severity.value,
                    "origin": o.origin,
                    "status": o.status.value,
                    "message": o.message,
                    "details": o.details,
                    "seconds": round(o.seconds, 3),
                }
                for o in self.outcomes
            ],
        }


async def run_one(ctx: MigrationContext, chk: Check, check_timeout: float | None) -> Outcome:
    """Run one check under its timeout; every failure to run becomes a FAIL, never an error."""
    start = trio.current_time()
    answered = False  # did the check itself give a verdict?
    result = CheckResult.fail(
        f"the check timed out after {check_timeout or 0:g}s", timeout=check_timeout
    )
    with trio.move_on_after(check_timeout or float("inf")):
        try:
            answer = await chk.run(ctx)
        except Exception as exc:  # a broken check must not break the run
            result = CheckResult.fail(
                f"the check could not run: {type(exc).__name__}: {exc}",
                error=type(exc).__name__,
            )
        else:
            if isinstance(answer, CheckResult) and isinstance(answer.status, Status):
                result, answered = answer, True
            else:
                result = CheckResult.fail(
                    f"the check returned {type(answer).__name__}, not a CheckResult"
                )
    details = _jsonable(result.details) if isinstance(result.details, dict) else {}
    status = result.status
    if answered and status is Status.FAIL and chk.severity is Severity.ADVISORY:
        status = Status.WARNING
        details["advisory"] = "an advisory check: its FAIL is reported as a WARNING"
    return Outcome(
        name=chk.name,
        description=chk.description,
        severity=chk.severity,
        origin=chk.origin,
        status=status,
        message=str(result.message),
        details=details,
        seconds=trio.current_time() - start,
    )


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    """Details as plain JSON values (a plugin may put anything there): repr() the rest."""
    return json.loads(json.dumps(details, default=repr))


async def run_checks(
    ctx: MigrationContext, checks: Sequence[Check], *, check_timeout: float | None = 30.0
) -> Report:
    """Run ``checks`` concurrently, each under ``check_timeout`` s; outcomes in check order."""
    outcomes: list[Outcome | None] = [None] * len(checks)

    async def one(index: int, chk: Check) -> None:
        outcomes[index] = await run_one(ctx, chk, check_timeout)

    async with trio.open_nursery() as nursery:
        for index, chk in enumerate(checks):
            nursery.start_soon(one, index, chk)
    return Report(
        domain=ctx.facts.name,
        source_uri=ctx.source.uri,
        destination_uri=ctx.destination.uri,
        outcomes=[o for o in outcomes if o is not None],
    )


class Decision(enum.Enum):
    PROCEED = "proceed"
    REFUSE_FAIL = "refused: a check failed"
    REFUSE_WARNINGS = "refused: warnings not accepted"


def decide(
    report: Report,
    *,
    allow_warnings: bool = False,
    confirm: Callable[[list[Outcome]], bool] | None = None,
) -> Decision:
    """Any FAIL stops; WARNINGs stop unless allowed or confirmed (``confirm`` asks once)."""
    if report.failures:
        return Decision.REFUSE_FAIL
    warnings = report.warnings
    if not warnings or allow_warnings:
        return Decision.PROCEED
    if confirm is not None and confirm(warnings):
        return Decision.PROCEED
    return Decision.REFUSE_WARNINGS


def select(checks: Iterable[Check], skip: Iterable[str] = ()) -> list[Check]:
    """``checks`` without the names in ``skip`` (each of which must exist)."""
    checks = list(checks)
    skip = set(skip)
    unknown = skip - {c.name for c in checks}
    if unknown:
        known = ", ".join(sorted(c.name for c in checks))
        raise UsageError(f"no check named {', '.join(sorted(unknown))} (checks: {known})")
    return [c for c in checks if c.name not in skip]
