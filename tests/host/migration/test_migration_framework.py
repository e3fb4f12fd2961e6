"""The framework: concurrent runner, timeouts and errors as FAIL, severity, policy, memo."""

from __future__ import annotations

import pytest
import trio
from migration_fakes import make_context

from gagent.errors import UsageError
from gagent.host.migration import (
    Check,
    CheckResult,
    Decision,
    Report,
    Severity,
    Status,
    check,
    decide,
    run_checks,
)
from gagent.host.migration.framework import Outcome, select


def _sleeper(name: str, seconds: float, status: Status = Status.SUCCESS) -> Check:
    async def run(_ctx):
        await trio.sleep(seconds)
        return CheckResult(status, f"{name} slept {seconds}")

    return Check(name, f"sleeps {seconds}s", run)


async def test_checks_run_concurrently_and_report_in_check_order(autojump_clock):
    ctx = make_context()
    checks = [_sleeper("slow", 3), _sleeper("fast", 1), _sleeper("mid", 2)]
    start = trio.current_time()
    report = await run_checks(ctx, checks, check_timeout=10)
    assert trio.current_time() - start == pytest.approx(3)  # not 6: concurrent
    assert [o.name for o in report.outcomes] == ["slow", "fast", "mid"]
    assert report.verdict is Status.SUCCESS
    assert report.domain == "vm1"
    assert report.destination_uri == "fake:///destination"


async def test_a_check_over_its_timeout_is_a_fail_and_the_others_finish(autojump_clock):
    report = await run_checks(
        make_context(), [_sleeper("stuck", 1000), _sleeper("ok", 1)], check_timeout=5
    )
    stuck, ok = report.outcomes
    assert stuck.status is Status.FAIL
    assert stuck.message == "the check timed out after 5s"
    assert ok.status is Status.SUCCESS
    assert report.verdict is Status.FAIL


async def test_an_erroring_check_is_a_fail_with_the_reason_never_a_crash():
    @check("boom", "raises")
    async def boom(_ctx):
        raise RuntimeError("the disk caught fire")

    @check("wrong", "returns something else")
    async def wrong(_ctx):
        return "SUCCESS"

    report = await run_checks(make_context(), [boom, wrong])
    assert [(o.status, o.message) for o in report.outcomes] == [
        (Status.FAIL, "the check could not run: RuntimeError: the disk caught fire"),
        (Status.FAIL, "the check returned str, not a CheckResult"),
    ]


async def test_advisory_fail_is_a_warning_but_an_advisory_error_stays_a_fail(autojump_clock):
    @check("adv", "advisory", severity=Severity.ADVISORY)
    async def adv(_ctx):
        return CheckResult.fail("not great", why="because")

    @check("adv-broken", "advisory but broken", severity=Severity.ADVISORY)
    async def adv_broken(_ctx):
        raise ValueError("bug")

    slow = _sleeper("adv-slow", 100)
    slow = Check(slow.name, slow.description, slow.run, Severity.ADVISORY)
    report = await run_checks(make_context(), [adv, adv_broken, slow], check_timeout=1)
    first, second, third = report.outcomes
    assert first.status is Status.WARNING
    assert first.details["why"] == "because" and "advisory" in first.details
    assert second.status is Status.FAIL
    assert third.status is Status.FAIL


def _report(*statuses: Status) -> Report:
    outcomes = [
        Outcome(f"c{i}", "d", Severity.CRITICAL, "builtin", s, f"m{i}", {}, 0.0)
        for i, s in enumerate(statuses)
    ]
    return Report("vm1", "a", "b", outcomes)


def test_policy_any_fail_stops_even_with_warnings_allowed():
    report = _report(Status.SUCCESS, Status.WARNING, Status.FAIL)
    asked = []
    assert decide(report, allow_warnings=True, confirm=asked.append) is Decision.REFUSE_FAIL
    assert asked == []


def test_policy_warnings_stop_a_non_interactive_run_unless_allowed():
    report = _report(Status.SUCCESS, Status.WARNING)
    assert decide(report) is Decision.REFUSE_WARNINGS
    assert decide(report, allow_warnings=True) is Decision.PROCEED
    assert decide(_report(Status.SUCCESS)) is Decision.PROCEED


def test_policy_asks_once_listing_the_warnings():
    report = _report(Status.WARNING, Status.SUCCESS, Status.WARNING)
    asked: list[list[str]] = []

    def answer(yes: bool):
        def confirm(warnings):
            asked.append([o.name for o in warnings])
            return yes

        return confirm

    assert decide(report, confirm=answer(False)) is Decision.REFUSE_WARNINGS
    assert decide(report, confirm=answer(True)) is Decision.PROCEED
    assert asked == [["c0", "c2"], ["c0", "c2"]]


def test_report_json_and_counts():
    report = _report(Status.SUCCESS, Status.WARNING)
    data = report.to_json()
    assert data["verdict"] == "WARNING"
    assert data["counts"] == {"SUCCESS": 1, "WARNING": 1, "FAIL": 0}
    assert data["checks"][1] == {
        "name": "c1",
        "description": "d",
        "severity": "critical",
        "origin": "builtin",
        "status": "WARNING",
        "message": "m1",
        "details": {},
        "seconds": 0.0,
    }


def test_skipping_an_unknown_check_is_a_usage_error():
    checks = [_sleeper("a", 0), _sleeper("b", 0)]
    assert [c.name for c in select(checks, ["a"])] == ["b"]
    with pytest.raises(UsageError, match="no check named zzz"):
        select(checks, ["zzz"])


async def test_memo_computes_once_for_concurrent_callers(autojump_clock):
    ctx = make_context()
    calls = []

    async def compute():
        calls.append(1)
        await trio.sleep(1)
        return 42

    results = []
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(lambda: _append(results, ctx.memo("k", compute)))
    assert results == [42, 42, 42]
    assert len(calls) == 1


async def _append(results, awaitable):
    results.append(await awaitable)


async def test_memo_recomputes_when_the_computing_task_was_cancelled(autojump_clock):
    ctx = make_context()
    calls = []

    async def compute():
        calls.append(1)
        await trio.sleep(5)
        return "done"

    results = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancelled_after, 1, ctx, compute)
        await trio.sleep(0.1)
        nursery.start_soon(lambda: _append(results, ctx.memo("k", compute)))
    assert results == ["done"]
    assert len(calls) == 2


async def _cancelled_after(seconds, ctx, compute):
    with trio.move_on_after(seconds):
        await ctx.memo("k", compute)


async def test_details_that_are_not_json_are_kept_as_text():
    @check("odd", "odd details")
    async def odd(_ctx):
        return CheckResult.success("fine", when={1, 2}.__class__, items=(1, 2))

    (outcome,) = (await run_checks(make_context(), [odd])).outcomes
    assert outcome.details == {"when": "<class 'set'>", "items": [1, 2]}
