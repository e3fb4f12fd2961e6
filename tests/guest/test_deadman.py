"""The freeze dead-man's switch on this machine: the real fsfreeze hook arms the real daemon.

Nothing here freezes anything: the daemon's mount table is a file naming only
a temporary directory (FITHAW there answers EINVAL, "not frozen", which the
switch ignores), and its state lives in a temporary directory.  The real thaw
of a real freeze is proven in the guests (tests/e2e/test_e2e_deadman.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gagent.guest.deadman import DEFAULT_DEADLINE, freezable_mounts, read_config
from gagent.guest.deadman_check import check_deadman
from gagent.guest.report import Report
from gagent.guest.roots import Roots

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "packaging/fsfreeze/fsfreeze-hook"
#: How long a busy machine may take to start python and answer a signal.
PATIENCE = 60.0


class Guest:
    """A fake root: /etc/gagent/deadman.conf, /run/gagent/deadman, a mount table."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "etc/gagent/deadman.conf"
        self.state = root / "run/gagent/deadman"
        self.hooks = root / "etc/gagent/fsfreeze-hook.d"
        self.hooks.mkdir(parents=True)
        self.mountinfo = root / "mountinfo"
        data = root / "data"
        data.mkdir()
        self.mountinfo.write_text(f"36 35 254:1 / {data} rw,relatime - ext4 /dev/vda rw\n")
        self.daemon_pids: list[int] = []

    def configure(self, deadline: str) -> None:
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"GAGENT_FREEZE_DEADLINE={deadline}\nGAGENT_PYTHON={sys.executable}\n")

    def hook(self, arg: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "GAGENT_HOOK_DIR": str(self.hooks),
            "GAGENT_DEADMAN_CONF": str(self.conf),
            "GAGENT_DEADMAN_STATE": str(self.state),
            "GAGENT_DEADMAN_MOUNTINFO": str(self.mountinfo),
        }
        proc = subprocess.run(
            ["sh", str(HOOK), arg], env=env, capture_output=True, text=True, timeout=PATIENCE
        )
        pid = self.pid()
        if pid is not None and pid not in self.daemon_pids:
            self.daemon_pids.append(pid)
        return proc

    def pid(self) -> int | None:
        try:
            return int((self.state / "pid").read_text())
        except (OSError, ValueError):
            return None

    def read(self, name: str) -> str | None:
        try:
            return (self.state / name).read_text()
        except OSError:
            return None

    def wait_for(self, what, bound: float = PATIENCE):
        until = time.monotonic() + bound
        while time.monotonic() < until:
            value = what()
            if value:
                return value
            time.sleep(0.05)
        pytest.fail(f"not within {bound} s: {what}")

    def report(self) -> Report:
        report = Report("org.gagent.agent.0")
        check_deadman(report, Roots.under(self.root))
        return report


@pytest.fixture
def guest(tmp_path):
    g = Guest(tmp_path)
    yield g
    for pid in g.daemon_pids:  # only the daemons this test started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_config_deadline(tmp_path):
    conf = tmp_path / "deadman.conf"
    assert read_config(conf).deadline == DEFAULT_DEADLINE == 60  # no file: the default
    conf.write_text("# comment\nGAGENT_FREEZE_DEADLINE=5\n")
    assert read_config(conf).deadline == 5 and read_config(conf).source == str(conf)
    conf.write_text('GAGENT_FREEZE_DEADLINE="0"\n')
    assert read_config(conf).deadline == 0
    conf.write_text("GAGENT_FREEZE_DEADLINE=soon\n")
    assert read_config(conf).deadline == DEFAULT_DEADLINE


def test_freezable_mounts_are_block_filesystems_once_each():
    mountinfo = (
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        "23 22 0:21 / /proc rw - proc proc rw\n"
        "24 22 0:22 / /run rw - tmpfs tmpfs rw\n"
        "25 22 254:2 / /my\\040data rw - xfs /dev/vdb rw\n"
        "26 22 254:2 /sub /again rw - xfs /dev/vdb rw\n"  # a bind mount of the same fs
        "27 22 0:40 / /home rw - btrfs /dev/vdc rw\n"  # btrfs: anonymous device numbers
        "28 22 0:41 / /net rw - nfs4 srv:/x rw\n"
        "29 22 254:3 / /fuse rw - fuseblk /dev/vdd rw\n"
        "30 22 0:42 / /snap rw - overlay overlay rw\n"
    )
    assert freezable_mounts(mountinfo) == ["/", "/my data", "/home"]


def test_the_hook_arms_and_the_switch_fires_after_the_deadline(guest):
    guest.configure("1")
    proc = guest.hook("freeze")
    assert proc.returncode == 0, proc.stderr
    armed = json.loads(guest.read("armed") or "null")  # acknowledged before the hook returned
    assert armed["deadline_s"] == 1 and armed["freeze"].startswith("qemu-ga-")
    assert armed["qga_pid"] == os.getpid()  # the hook's parent: qemu-ga, in a guest
    assert guest.pid() is not None
    report = guest.report()
    assert "deadman-armed" in report.codes("info"), report.to_text()

    fired = guest.wait_for(lambda: guest.read("fired"))
    [record] = [json.loads(line) for line in fired.splitlines()]
    assert record["freeze"] == armed["freeze"]
    assert record["fired_at"] - record["armed_at"] >= 1.0  # never before the deadline
    assert record["thawed"] == [] and record["errors"] == []  # nothing was frozen here
    assert guest.read("armed") is None
    report = guest.report()
    assert report.codes("warning") == ["deadman-fired"], report.to_text()
    text = report.to_text()
    assert armed["freeze"] in text and "1 s deadline" in text and "gagent thaw" in text
    assert report.facts["deadman"]["fired"] == [record]

    # the host's thaw reaches qemu-ga, whose thaw hook settles the firing
    assert guest.hook("thaw").returncode == 0
    guest.wait_for(lambda: "qga_thawed_at" in (guest.read("fired") or ""))
    report = guest.report()
    assert report.codes("warning") == [] and "deadman-fired" in report.codes("info")
    assert "qemu-ga was thawed at" in report.to_text()

    # the daemon stays resident and serves the next freeze
    pid = guest.pid()
    assert guest.hook("freeze").returncode == 0
    assert guest.pid() == pid
    guest.wait_for(lambda: len((guest.read("fired") or "").splitlines()) == 2)
    assert guest.report().codes("warning") == ["deadman-fired"]  # the new one is not settled


def test_thaw_disarms_the_switch(guest):
    guest.configure("30")
    assert guest.hook("freeze").returncode == 0
    armed = json.loads(guest.read("armed") or "null")
    assert guest.hook("thaw").returncode == 0
    guest.wait_for(lambda: guest.read("armed") is None)  # the disarm was taken
    assert guest.read("fired") is None
    last = json.loads(guest.read("last") or "null")
    assert last["freeze"] == armed["freeze"] and last["disarmed_at"] >= last["armed_at"]
    report = guest.report()
    assert report.codes("warning") == [] and "deadman-armed" not in report.codes()
    assert report.facts["deadman"]["deadline_s"] == 30
    assert report.facts["deadman"]["last_thawed"] == last


def test_a_failing_freeze_hook_arms_nothing(guest):
    guest.configure("30")
    bad = guest.hooks / "10-refuse"
    bad.write_text('#!/bin/sh\n[ "$1" != freeze ]\n')
    bad.chmod(0o755)
    assert guest.hook("freeze").returncode == 1
    assert guest.pid() is None and guest.read("armed") is None


def test_deadline_zero_turns_the_switch_off(guest):
    guest.configure("0")
    assert guest.hook("freeze").returncode == 0
    assert guest.pid() is None and guest.read("armed") is None  # no daemon was started
    assert guest.report().codes("info") == ["deadman-off"]


def test_a_switch_that_cannot_start_does_not_refuse_the_freeze(guest):
    guest.conf.parent.mkdir(parents=True, exist_ok=True)
    guest.conf.write_text("GAGENT_FREEZE_DEADLINE=30\nGAGENT_PYTHON=/bin/false\n")
    proc = guest.hook("freeze")
    assert proc.returncode == 0, proc.stderr  # the freeze goes on, unguarded (and logged)
    assert guest.pid() is None and guest.read("armed") is None
