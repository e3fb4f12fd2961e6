"""``gagent demo --json``: one JSON object of what the demo found (the local qemu-ga it
started, what that agent reported, libvirt's test:///default and the channel dry run),
with --json before or after the command.  The human output: test_domain_cli.py."""

from __future__ import annotations

import json
import os
import socket

import pytest

from gagent.host.cli import main


@pytest.mark.parametrize("argv", [["demo", "--json"], ["--json", "demo"]])
def test_demo_json_is_one_object_of_every_step(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    found = json.loads(out)
    assert set(found) == {"qemu_ga", "agent", "libvirt"}
    assert found["qemu_ga"]["pid"] > 0 and "guest-exec" in found["qemu_ga"]["blocked_rpcs"]
    assert not os.path.exists(found["qemu_ga"]["socket"])  # its temporary directory is gone
    agent = found["agent"]
    assert agent["hostname"] == socket.gethostname()
    assert agent["commands_enabled"] > 0 and agent["ping_ms"] >= 0
    assert agent["osinfo"]["kernel_release"] == os.uname().release
    assert any(fs["mountpoint"] == "/" for fs in agent["filesystems"])
    assert any(nic["name"] == "lo" for nic in agent["interfaces"])
    libvirt = found["libvirt"]
    assert libvirt["uri"] == "test:///default"
    assert libvirt["domains"] == [
        {"name": "test", "state": "running", "uuid": "6695eb01-f6a4-8304-79aa-97f2502e193f"}
    ]
    dry_run = libvirt["channel_add_dry_run"]
    assert dry_run["domain"] == "test" and "+    <channel type='unix'>" in dry_run["diff"]
