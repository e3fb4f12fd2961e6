"""What ``-v`` tells an operator about libvirt and snapshot work (INFO lines of the
``gagent.*`` loggers): connecting and connected (with libvirt's version), the domain found,
the agent route, each freeze and snapshot step, and each hypervisor of an inventory scan;
and that nothing of it runs or prints when logging is off.  Against libvirt's test driver,
and the fakes of test_snapshot.py / test_group_snapshot.py for the snapshot steps."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from fakeagent import fake_unix_socket
from test_freeze import FreezableFake
from test_group_snapshot import group_of
from test_snapshot import FakeDomain, FakeHypervisor, channel

from gagent.host import virt
from gagent.host.channel import GAGENT_CHANNEL
from gagent.host.cli import main
from gagent.host.group_snapshot import snapshot_group
from gagent.host.inventory import parse_targets, scan_hypervisors
from gagent.host.snapshot import take_snapshot
from gagent.host.virt import Unsupported, open_hypervisor

TEST_URI = "test:///default"
DEADLINE = 30


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]


def test_verbose_status_says_what_libvirt_did(capsys):
    code = main(["-v", "-c", TEST_URI, "status", "test"])
    err = capsys.readouterr().err
    assert code == 3, err  # running, and no agent channel in the test driver's domain
    assert f"gagent: INFO: gagent.virt: connecting to libvirt at {TEST_URI}" in err
    assert f"connected to {TEST_URI} (libvirt " in err
    assert f"found domain test on {TEST_URI} (UUID " in err
    main(["-c", TEST_URI, "status", "test"])
    assert "INFO" not in capsys.readouterr().err  # without -v: nothing


async def test_logging_off_costs_no_libvirt_call(monkeypatch, caplog):
    async def refuse(self: Any) -> int:
        raise AssertionError("libvirt's version was asked for with logging off")

    monkeypatch.setattr(virt.Hypervisor, "libvirt_version", refuse)
    caplog.set_level(logging.WARNING, logger="gagent")  # whatever an earlier test left
    with trio.fail_after(DEADLINE):
        async with await open_hypervisor(TEST_URI) as hv:
            assert await hv.lookup("test")


async def test_a_driver_without_its_version_still_connects(monkeypatch, caplog):
    async def unsupported(self: Any) -> int:
        raise Unsupported("getLibVersion is not supported")

    monkeypatch.setattr(virt.Hypervisor, "libvirt_version", unsupported)
    caplog.set_level(logging.INFO, logger="gagent")
    with trio.fail_after(DEADLINE):
        async with await open_hypervisor(TEST_URI):
            pass
    assert info_lines(caplog) == [
        f"connecting to libvirt at {TEST_URI}",
        f"connected to {TEST_URI}",
    ]


def test_dotted_version():
    assert virt.dotted_version(9_000_000) == "9.0.0"
    assert virt.dotted_version(10_002_003) == "10.2.3"


async def test_a_snapshot_logs_each_step(tmp_path: Path, caplog):
    path = str(tmp_path / "agent.sock")
    domain = FakeDomain(channels=channel(GAGENT_CHANNEL, path))
    caplog.set_level(logging.INFO, logger="gagent")
    with trio.fail_after(DEADLINE):
        async with fake_unix_socket(FreezableFake(), path):
            await take_snapshot(FakeHypervisor(domain), "vm1", "s1")
    steps = [
        re.sub(r" \(\d+ ms\)$", "", line)
        for line in info_lines(caplog)
        if line.startswith(("agent", "vm1"))
    ]
    assert steps == [
        "vm1 is running",
        f"agent route: domain vm1 via {path}",
        "vm1: snapshot s1, gagent-freeze",
        "vm1: guest-fsfreeze-freeze sent (all filesystems)",
        "vm1: froze 2 filesystem(s)",
        "vm1: snapshot s1 created",
        "vm1: thawed 2 filesystem(s)",
    ]


async def test_a_group_snapshot_logs_its_phases(tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="gagent")
    with trio.fail_after(DEADLINE):
        async with group_of(tmp_path, "db", "app") as (members, _, _):
            await snapshot_group(members, "g1", warn=print, store=tmp_path)
    lines = info_lines(caplog)
    prepared = lines.index("group g1: 2 member(s) prepared, freezing")
    frozen = lines.index("group g1: every freeze confirmed, taking the snapshots")
    assert prepared < lines.index("db: froze 2 filesystem(s)") < frozen
    assert frozen < lines.index("app: thawed 2 filesystem(s)")
    assert f"agent route: domain db via {tmp_path / 'db.sock'}" in lines


async def test_an_inventory_scan_logs_each_hypervisor(caplog):
    caplog.set_level(logging.INFO, logger="gagent")
    with trio.fail_after(DEADLINE):
        await scan_hypervisors(parse_targets([f"h1={TEST_URI}", "h2=test:///no/such.xml"]))
    lines = info_lines(caplog)
    assert any(line.startswith(f"h1 ({TEST_URI}): 1 domain(s) found in ") for line in lines)
    assert any(line.startswith("h1: 0 agent(s) asked, done in ") for line in lines), lines
    assert any(line.startswith("test:///no/such.xml: not scanned after ") for line in lines)
