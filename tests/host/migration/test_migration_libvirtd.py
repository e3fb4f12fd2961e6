"""The checks and a real migration between two real libvirt daemons (QEMU driver, TCG).

Two private daemons from tests/harness/libvirtd (about 1 s each to start) play
two hosts.  libvirt refuses to migrate between hosts with the same host UUID,
so each daemon gets its own ``host_uuid`` in libvirtd.conf: the harness has no
option for that, so the test extends the template it writes (restored after).

Shown here: the test driver against QEMU (hypervisor-type FAIL, versions not
comparable, CPU FAIL: QEMU offers no 'test' guests); compareHypervisorCPU on a
real QEMU (Icelake-Server cannot be given by TCG: FAIL; qemu64 can: SUCCESS);
a domain migrating to the host it runs on (name-uuid FAIL, exit 10); and a
real live migration with ``gagent migrate`` (exit 0, the domain ends up
persistent on the destination and undefined on the source).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import libvirt
import pytest

from gagent.host.cli import cli, main
from gagent.host.cli import migrate as migrate_cli
from gagent.host.migration import BUILTIN_CHECKS, Status, gather_context, run_checks
from gagent.host.virt import open_hypervisor

QEMU = "/usr/bin/qemu-system-x86_64"
HOSTS = Path(__file__).parent / "hosts"


def qemu_domain(name: str, cpu_model: str = "qemu64") -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>48</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <cpu mode='custom' match='exact'><model>{cpu_model}</model></cpu>
  <devices>
    <emulator>{QEMU}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>"""


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    """Two private libvirtd (QEMU driver) with different host UUIDs: (uri_a, uri_b)."""
    if os.geteuid() != 0:
        pytest.skip("the private libvirtd needs root")
    if not os.access("/usr/sbin/libvirtd", os.X_OK) or not shutil.which(QEMU):
        pytest.skip("needs libvirtd and qemu-system-x86_64")
    from harness.libvirtd import daemon as harness

    template = harness._LIBVIRTD_CONF
    workdir = tmp_path_factory.mktemp("daemons")
    started = []
    try:
        for name in ("a", "b"):
            harness._LIBVIRTD_CONF = template + f'host_uuid = "{uuid.uuid4()}"\n'
            manager = harness.running_libvirtd(workdir / name)
            try:
                started.append((manager, manager.__enter__()))
            except harness.LibvirtdError as exc:
                pytest.fail(f"the private libvirtd did not start: {exc}")
            finally:
                harness._LIBVIRTD_CONF = template
        conn = libvirt.open(started[0][1].uri)
        for name, model in (("pmc-qemu64", "qemu64"), ("pmc-icelake", "Icelake-Server")):
            conn.defineXML(qemu_domain(name, model))
        conn.close()
        yield started[0][1].uri, started[1][1].uri
    finally:
        for manager, _daemon in reversed(started):
            manager.__exit__(None, None, None)


async def _report(source_uri: str, dest_uri: str, domain: str):
    source = await open_hypervisor(source_uri)
    destination = await open_hypervisor(dest_uri)
    try:
        ctx = await gather_context(source, destination, domain)
        report = await run_checks(ctx, BUILTIN_CHECKS, check_timeout=20)
    finally:
        await source.close()
        await destination.close()
    return {o.name: (o.status, o.message) for o in report.outcomes}


async def test_test_driver_to_qemu(daemons):
    got = await _report(f"test://{HOSTS / 'source.xml'}", daemons[0], "web")
    assert got["libvirt-version"][0] is Status.SUCCESS  # one libvirt install serves both
    assert got["hypervisor-type"] == (
        Status.FAIL,
        "different hypervisors: TEST on the source, QEMU on the destination: "
        "a domain cannot migrate between them",
    )
    status, message = got["hypervisor-version"]
    assert status is Status.WARNING and message.startswith("cannot compare versions")
    status, message = got["cpu"]
    assert status is Status.FAIL
    assert message.startswith("the destination cannot run test/i686 guests (it offers: qemu/")
    assert got["free-memory"][0] is Status.SUCCESS  # a real host has more than 2 MiB free


async def test_cpu_compared_by_a_real_qemu(daemons):
    source, dest = daemons
    icelake = await _report(source, dest, "pmc-icelake")
    assert icelake["cpu"] == (
        Status.FAIL,
        "the destination's CPU cannot provide the guest's CPU (Icelake-Server)",
    )
    assert icelake["hypervisor-type"][0] is Status.SUCCESS
    assert icelake["hypervisor-version"][0] is Status.SUCCESS
    qemu64 = await _report(source, dest, "pmc-qemu64")
    status, message = qemu64["cpu"]
    assert status is Status.SUCCESS and message.startswith("the destination provides")
    failed = {name for name, (status, _) in qemu64.items() if status is Status.FAIL}
    assert failed == set()


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(cli.commands, "migrate", migrate_cli.migrate)
    monkeypatch.setattr(migrate_cli, "_interactive", lambda: False)


def test_migrating_to_the_same_host_is_refused(daemons, registered, capsys):
    source, _ = daemons
    code = main(["migrate", "-c", source, "pmc-qemu64", source, "--no-plugins", "--live"])
    _, err = capsys.readouterr()
    assert code == 10
    assert err.startswith("gagent: not migrating: failed checks: name-uuid")
    conn = libvirt.open(source)
    try:
        assert conn.lookupByName("pmc-qemu64").isPersistent()
    finally:
        conn.close()


def test_a_real_live_migration(daemons, registered, capsys):
    source, dest = daemons
    src, dst = libvirt.open(source), libvirt.open(dest)
    try:
        dom = src.defineXML(qemu_domain("pmc-live"))
        dom.create()
        code = main(
            ["migrate", "-c", source, "pmc-live", dest, "--no-plugins", "--live",
             "--persistent", "--undefine-source", "--allow-warnings",
             "--migrate-uri", "tcp://127.0.0.1"]
        )  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 0, err
        assert out.splitlines()[-1].startswith(f"migrated pmc-live to {dest} in ")
        moved = dst.lookupByName("pmc-live")
        assert moved.isActive() and moved.isPersistent()
        assert "pmc-live" not in [d.name() for d in src.listAllDomains()]
        moved.destroy()
        moved.undefine()
    finally:
        src.close()
        dst.close()
