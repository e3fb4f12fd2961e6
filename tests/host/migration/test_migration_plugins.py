"""Plugins: checks registered by an installed distribution under gagent.migration_checks.

The test installs nothing: it writes a tiny distribution (a module and its
.dist-info with entry_points.txt) into tmp_path and puts that on sys.path,
which is all importlib.metadata looks at.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
from migration_fakes import make_context

from gagent.host.migration import (
    BUILTIN_CHECKS,
    ENTRY_POINT_GROUP,
    Severity,
    Status,
    collect_checks,
    load_plugins,
    run_checks,
)

MODULE = """
from gagent.host.migration import Check, CheckResult, Severity, check


@check("backup-recent", "a backup of the domain ran today")
async def backup_recent(ctx):
    if ctx.facts.name == "vm1":
        return CheckResult.fail("no backup of vm1 today", last="yesterday")
    return CheckResult.success("backed up")


@check("maintenance-window", "inside the maintenance window", severity=Severity.ADVISORY)
async def window(ctx):
    return CheckResult.fail("outside the window")


def more_checks():
    async def run(ctx):
        return CheckResult.success("dest is " + ctx.destination.uri)

    return [Check("dest-known", "the destination is in the inventory", run)]


NOT_A_CHECK = 42
"""

ENTRY_POINTS = f"""
[{ENTRY_POINT_GROUP}]
backup = gagent_demo_checks:backup_recent
window = gagent_demo_checks:window
inventory = gagent_demo_checks:more_checks
broken = gagent_demo_checks_missing:whatever
wrong = gagent_demo_checks:NOT_A_CHECK
"""


@pytest.fixture
def demo_distribution(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "gagent_demo_checks-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "gagent_demo_checks.py").write_text(MODULE)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gagent-demo-checks\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("gagent_demo_checks", None)


def test_plugins_are_loaded_from_entry_points(demo_distribution):
    checks = {c.name: c for c in load_plugins()}
    assert set(checks) == {
        "backup-recent",
        "maintenance-window",
        "dest-known",
        "plugin:broken",
        "plugin:wrong",
    }
    assert checks["backup-recent"].origin == (
        "plugin backup = gagent_demo_checks:backup_recent (gagent-demo-checks)"
    )
    assert checks["maintenance-window"].severity is Severity.ADVISORY


async def test_plugin_checks_run_and_broken_plugins_fail_without_breaking_the_run(
    demo_distribution,
):
    checks = collect_checks()
    assert [c.name for c in checks[: len(BUILTIN_CHECKS)]] == [c.name for c in BUILTIN_CHECKS]
    plugins = checks[len(BUILTIN_CHECKS) :]
    report = await run_checks(make_context(), plugins)
    got = {o.name: (o.status, o.message) for o in report.outcomes}
    assert got["backup-recent"] == (Status.FAIL, "no backup of vm1 today")
    assert got["maintenance-window"] == (Status.WARNING, "outside the window")
    assert got["dest-known"] == (Status.SUCCESS, "dest is fake:///destination")
    status, message = got["plugin:broken"]
    assert status is Status.FAIL
    assert message.startswith("the plugin could not be loaded: ModuleNotFoundError")
    assert got["plugin:wrong"] == (
        Status.FAIL,
        "the plugin could not be loaded: TypeError: expected a Check or a list of Checks, got int",
    )


def test_plugins_can_be_left_out_and_skipped(demo_distribution):
    assert [c.name for c in collect_checks(plugins=False)] == [c.name for c in BUILTIN_CHECKS]
    names = [c.name for c in collect_checks(skip=["backup-recent", "cpu"])]
    assert "backup-recent" not in names and "cpu" not in names and "dest-known" in names
