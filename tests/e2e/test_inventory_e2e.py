"""``gagent inventory scan`` against the harness's real libvirt daemon and real guest:
the rscan columns from the real domain XML, the agent columns from the guest's own qemu-ga."""

from __future__ import annotations

import json

import pytest

from gagent.host.cli import cli, main
from gagent.host.cli.inventory import inventory_group

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(cli.commands, "inventory", inventory_group)


def test_scan_with_agent_data(main_domain, shut_off_domain, guest_kernel_release, tmp_path, capsys):
    db = str(tmp_path / "inventory.sqlite3")
    # the daemon's URI has no host part (qemu:///system?socket=...): name it
    code = main(["inventory", "scan", f"e2ehv={main_domain.uri}", "-w", "--db", db,
                 "--agent-timeout", "30", "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["hypervisors"][0]["ok"] is True
    guests = {g["name"]: g for g in report["guests"]}

    running = guests[main_domain.name]
    assert (running["type"], running["hypervisor"], running["state"]) == (
        "qemu",
        "e2ehv",
        "running",
    )
    assert running["id"] == main_domain.dom.ID()
    assert (running["cpu"], running["memory"]) == (2, 512)
    assert running["uuid"] == main_domain.dom.UUIDString()
    assert [d["source"] for d in running["disks"]] == [str(main_domain.data_disk.resolve())]
    assert running["agent_status"] == "ok", running["agent_error"]
    agent = running["agent"]
    assert agent["hostname"] == main_domain.hostname
    assert agent["kernel"] == guest_kernel_release
    assert agent["os"]
    assert agent["version"].startswith("7.2.")
    addresses = {i["name"]: i["addresses"] for i in agent["interfaces"]}
    assert "127.0.0.1/8" in addresses["lo"]
    data = [fs for fs in agent["filesystems"] if fs["mountpoint"] == "/data"]
    assert len(data) == 1 and data[0]["type"] == "ext4"
    assert 0 <= data[0]["used_bytes"] <= data[0]["total_bytes"]
    assert agent["users"] is not None or any("guest-get-users" in m for m in agent["missing"])

    off = guests[shut_off_domain.name]
    assert (off["state"], off["id"], off["agent"], off["agent_status"]) == (
        "shut off", None, None, "not running",
    )  # fmt: skip

    # stored: list and show give the same guest back, agent data included
    assert main(["inventory", "list", "--db", db, "--json"]) == 0
    listed = {g["name"]: g for g in json.loads(capsys.readouterr().out)}
    assert listed[main_domain.name] == running
    assert main(["inventory", "show", main_domain.name, "--db", db]) == 0
    shown = capsys.readouterr().out
    assert main_domain.hostname in shown and "/data" in shown and "127.0.0.1/8" in shown
