"""Every built-in check on real libvirt connections: test-driver hosts described by files.

hosts/source.xml and hosts/dest.xml are libvirt test-driver node files (two
hosts with different CPUs, networks, pools and domains); test:///default is
libvirt's built-in test host (3 MiB free, network 'default', no 'prod').  What
the test driver cannot answer (compareHypervisorCPU, qemuAgentCommand) must
come out as a WARNING that says so; file-based test hosts report 0 bytes free.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gagent.errors import HostError
from gagent.host.migration import (
    BUILTIN_CHECKS,
    MigrationOptions,
    Status,
    gather_context,
    run_checks,
    run_migration,
)
from gagent.host.virt import open_hypervisor

HOSTS = Path(__file__).parent / "hosts"
SOURCE = f"test://{HOSTS / 'source.xml'}"
DEST = f"test://{HOSTS / 'dest.xml'}"
DEFAULT = "test:///default"

S, W, F = Status.SUCCESS, Status.WARNING, Status.FAIL
NAMES = [c.name for c in BUILTIN_CHECKS]

# domain, destination, options -> status of each built-in check, in BUILTIN_CHECKS order:
# libvirt-version, hypervisor-type, hypervisor-version, cpu, free-memory, storage,
# networks, name-uuid, hostdev, fsfreeze, guest-agent, snapshots
EXPECTED = [
    ("web", DEST, MigrationOptions(), [S, S, S, W, F, S, S, S, S, W, W, S]),
    ("web", DEFAULT, MigrationOptions(), [S, S, S, W, S, F, F, S, S, W, W, S]),
    ("db", DEST, MigrationOptions(), [S, S, S, F, F, F, F, S, F, S, W, W]),
    ("db", DEST, MigrationOptions(copy_storage=True), [S, S, S, F, F, S, F, S, F, S, W, W]),
    ("legacy", DEST, MigrationOptions(), [S, S, S, S, F, S, S, F, S, S, W, S]),
    ("balloon", DEFAULT, MigrationOptions(), [S, S, S, S, W, S, S, S, S, S, W, S]),
    ("cold", DEST, MigrationOptions(), [S, S, S, S, F, S, S, S, S, S, S, S]),
]


async def _report(domain: str, dest_uri: str, options: MigrationOptions):
    source = await open_hypervisor(SOURCE)
    destination = await open_hypervisor(dest_uri)
    try:
        ctx = await gather_context(source, destination, domain, options)
        return await run_checks(ctx, BUILTIN_CHECKS, check_timeout=10)
    finally:
        await source.close()
        await destination.close()


@pytest.mark.parametrize(
    ("domain", "dest_uri", "options", "expected"),
    EXPECTED,
    ids=[
        f"{d}-{u.rsplit('/', 1)[-1]}{'-copy' if o.copy_storage else ''}" for d, u, o, _ in EXPECTED
    ],
)
async def test_builtin_checks_on_test_driver_hosts(domain, dest_uri, options, expected):
    report = await _report(domain, dest_uri, options)
    got = {o.name: o.status for o in report.outcomes}
    assert got == dict(zip(NAMES, expected, strict=True)), {
        o.name: o.message for o in report.outcomes
    }


async def test_messages_say_what_the_test_driver_cannot_do():
    report = await _report("web", DEST, MigrationOptions())
    messages = {o.name: o.message for o in report.outcomes}
    assert messages["cpu"] == (
        "cannot compare CPUs: not supported by the destination's TEST driver "
        "(the guest's CPU: pentium3)"
    )
    assert messages["free-memory"] == "the destination has 0 B free, the domain uses 1.0 MiB"
    assert "virDomainQemuAgentCommand" in messages["guest-agent"]
    assert messages["networks"] == "all present on the destination: network prod, bridge br0"


async def test_failures_name_the_culprits():
    report = await _report("db", DEST, MigrationOptions())
    messages = {o.name: o.message for o in report.outcomes}
    assert messages["cpu"] == (
        "the destination cannot run test/x86_64 guests (it offers: test/i686)"
    )
    assert messages["storage"].startswith(
        "not found in any storage pool of the destination: vda (/local/db.img)"
    )
    assert messages["networks"] == (
        "on the destination: network backup is not defined; bridge br9 does not exist"
    )
    assert messages["hostdev"].startswith(
        "host devices passed through cannot migrate: pci 0000:03:00.0"
    )
    assert messages["snapshots"].startswith("1 snapshot(s) with libvirt metadata (before-upgrade)")
    legacy = await _report("legacy", DEST, MigrationOptions())
    (clash,) = [o for o in legacy.outcomes if o.name == "name-uuid"]
    assert clash.message == (
        "the destination already has a domain with the same name legacy "
        "(domain legacy, UUID de570000-0000-4000-8000-000000000001)"
    )


async def test_the_test_driver_cannot_migrate_and_says_so():
    source = await open_hypervisor(SOURCE)
    destination = await open_hypervisor(DEST)
    try:
        ctx = await gather_context(source, destination, "web", MigrationOptions(live=True))
        with pytest.raises(HostError, match="not supported by the connection driver"):
            await run_migration(ctx)
    finally:
        await source.close()
        await destination.close()
