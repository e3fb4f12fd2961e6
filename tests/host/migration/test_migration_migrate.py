"""The migration call: option -> flag mapping, progress from the job info, failures."""

from __future__ import annotations

import libvirt
import pytest
import trio
from migration_fakes import FakeDomain, make_context

from gagent.errors import HostError
from gagent.host.migration import MigrationOptions, flags_for, run_migration
from gagent.host.virt import JobProgress, migration_flags


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (MigrationOptions(), 0),
        (MigrationOptions(live=True), libvirt.VIR_MIGRATE_LIVE),
        (MigrationOptions(persistent=True), libvirt.VIR_MIGRATE_PERSIST_DEST),
        (MigrationOptions(undefine_source=True), libvirt.VIR_MIGRATE_UNDEFINE_SOURCE),
        (MigrationOptions(copy_storage=True), libvirt.VIR_MIGRATE_NON_SHARED_DISK),
        (
            MigrationOptions(live=True, persistent=True, undefine_source=True),
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
        ),
    ],
)
def test_options_map_to_libvirt_flags(options, expected):
    assert flags_for(options) == expected
    assert migration_flags(copy_storage=True, live=True) == (
        libvirt.VIR_MIGRATE_NON_SHARED_DISK | libvirt.VIR_MIGRATE_LIVE
    )


def test_job_progress_from_libvirt_job_info():
    info = [1, 1500, 2000, 1000, 400, 600, 0, 0, 0, 0, 0, 0]
    assert JobProgress.from_libvirt(info) == JobProgress("bounded", 1500, 2000, 1000, 400, 600)


async def test_migration_calls_migrate3_with_the_flags_and_reports_progress(autojump_clock):
    steps = [
        JobProgress("bounded", 500, 0, 1000, 100, 900),
        JobProgress("bounded", 1000, 0, 1000, 600, 400),
        JobProgress("bounded", 1500, 0, 1000, 950, 50),
    ]
    domain = FakeDomain(migrate_seconds=1.8, progress=list(steps))
    ctx = make_context(domain=domain, options=MigrationOptions(live=True, persistent=True))
    seen: list[JobProgress] = []
    result = await run_migration(
        ctx, uri="tcp://10.0.0.2", on_progress=seen.append, poll_interval=0.5
    )
    assert domain.migrations == [
        {
            "destination": "fake:///destination",
            "flags": libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST,
            "uri": "tcp://10.0.0.2",
        }
    ]
    assert seen[:3] == steps and len(seen) == 3  # polled at 0.5, 1.0, 1.5 s
    assert result.domain == "vm1" and result.destination == "fake:///destination"
    assert result.seconds == pytest.approx(1.8)


async def test_a_failed_migration_raises_the_host_error_itself():
    domain = FakeDomain(migrate_error=HostError("migrating vm1: unable to connect", code=38))
    with pytest.raises(HostError, match="unable to connect"):
        await run_migration(make_context(domain=domain), on_progress=lambda _p: None)


async def test_a_cancelled_migration_aborts_the_libvirt_job(autojump_clock):
    domain = FakeDomain(migrate_seconds=100)
    with trio.move_on_after(3):
        await run_migration(make_context(domain=domain))
    assert domain.aborted == 1
