"""``gagent inventory scan|list|show|diff`` end to end: test-driver hypervisors, a real store
(SQLite; the conflict scenarios also on a real PostgreSQL server), exit codes, output formats."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gagent.host.cli import cli, main
from gagent.host.cli.inventory import inventory_group
from gagent.host.inventory.testnode import NodeDomain, write_node

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inventory"))
from pgserver import find_pg_bindir, running_pg_server

BOGUS = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
# Runs the CLI with the inventory group registered (until host/cli/__init__.py does it).
RUN_CLI = (
    "import sys; from gagent.host.cli import cli, main; "
    "from gagent.host.cli.inventory import inventory_group; "
    "cli.add_command(inventory_group); sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(cli.commands, "inventory", inventory_group)


@pytest.fixture(scope="module")
def pg_server():
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    with running_pg_server(bindir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "inv.sqlite3")
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture
def node(tmp_path):
    def make(name: str, *domains: NodeDomain) -> str:
        return f"{name}={write_node(tmp_path / f'{name}.xml', domains)}"

    return make


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["inventory", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_scan_prints_rscans_table(capsys, node):
    h1 = node(
        "kvmhost1",
        NodeDomain(
            "kvm1", nics=[("br0", "52:54:00:00:00:01")], disks=["/install/vms/kvm1.hda.qcow2"]
        ),
        NodeDomain("kvm2", running=False, cpu=1, memory_mib=1024),
    )
    code, out, err = run(capsys, "scan", h1, "--no-agent")
    assert code == 0
    assert out.splitlines() == [
        "type   name   hypervisor   id   cpu   memory   nic                     disk",
        "test   kvm1   kvmhost1     1    2     2048     br0/52:54:00:00:00:01   "
        "/install/vms/kvm1.hda.qcow2",
        "test   kvm2   kvmhost1          1     1024",
    ]
    assert "scanned 1 hypervisor(s), 1 reached" in err


def test_write_conflicts_one_line_each_and_in_json(capsys, node, db):
    h1, h2 = node("h1", NodeDomain("kvm1", cpu=1)), node("h2", NodeDomain("kvm1", cpu=4))
    code, out, err = run(capsys, "scan", h1, h2, "-w", "--db", db)
    assert code == 0
    assert "conflict: kvm1 found on both h1 and h2: stored the one on h2 (the last found)\n" in err
    # scenario 2: stored for h2, found on h1 only
    code, out, _ = run(capsys, "scan", h1, "--write", "--db", db, "--json")
    report = json.loads(out)
    assert [c["message"] for c in report["conflicts"]] == [
        "conflict: kvm1 is stored for h2 but was found on h1: not overwritten"
    ]
    assert report["conflicts"][0]["hypervisors"] == ["h2", "h1"]
    assert report["store"]["updated"] == report["store"]["inserted"] == []
    code, out, _ = run(capsys, "list", "--db", db, "--json")
    assert [(g["name"], g["hypervisor"], g["cpu"]) for g in json.loads(out)] == [("kvm1", "h2", 4)]


def test_update_and_new_modes(capsys, node, db):
    h1, h2 = node("h1", NodeDomain("kvm1"), NodeDomain("kvm2")), node("h2", NodeDomain("kvm1"))
    code, _, err = run(capsys, "scan", h1, h2, "-u", "--db", db)
    assert code == 0
    assert "conflict: kvm1 found on both h1 and h2 and not stored: nothing written" in err
    assert run(capsys, "list", "--db", db, "--json")[1].strip() == "[]"
    _, _, err = run(capsys, "scan", h1, "-n", "--db", db)
    assert "2 added" in err
    _, _, err = run(capsys, "scan", h2, "-n", "--db", db)
    assert "conflict: kvm1 is stored for h1 but was found on h2: not added" in err


def test_one_mode_at_a_time(capsys, node, tmp_path):
    code, _, err = run(capsys, "scan", node("h1", NodeDomain("a")), "-w", "-u")
    assert code == 2 and "choose one of -w/--write, -u/--update, -n/--new" in err


def test_unreachable_hypervisor_is_summarised_and_exits_8(capsys, node, tmp_path):
    db = str(tmp_path / "inv.sqlite3")
    code, out, err = run(capsys, "scan", BOGUS, node("h1", NodeDomain("vm1")), "-w", "--db", db)
    assert code == 8
    assert "vm1" in out
    assert f"unreachable: {BOGUS}: cannot connect" in err
    assert "stored as scan 1" in err
    code, out, _ = run(capsys, "scan", BOGUS, "--json")
    assert code == 8
    (hv,) = json.loads(out)["hypervisors"]
    assert hv["ok"] is False and "/nonexistent/libvirt-sock" in hv["error"]


def test_json_and_csv_and_list_share_the_guest_shape(capsys, node, tmp_path):
    db = str(tmp_path / "inv.sqlite3")
    h1 = node("h1", NodeDomain("vm1", nics=[("br0", "52:54:00:00:00:01")], disks=["/d/vm1.img"]))
    _, out, _ = run(capsys, "scan", h1, "-w", "--db", db, "--format", "json")
    scanned = json.loads(out)["guests"]
    keys = {
        "type",
        "name",
        "hypervisor",
        "id",
        "cpu",
        "memory",
        "nics",
        "disks",
        "uuid",
        "state",
        "agent",
    }
    assert keys <= set(scanned[0]) and scanned[0]["agent"] is None
    assert scanned[0]["agent_status"] == "unavailable"  # running, but no channel
    _, out, _ = run(capsys, "list", "--db", db, "--json")
    assert json.loads(out) == scanned
    _, out, _ = run(capsys, "list", "--db", db, "--format", "csv")
    header, row = out.splitlines()
    assert header.startswith("type,name,hypervisor,id,cpu,memory,nic,disk,uuid,state,manager,agent")
    assert row.startswith("test,vm1,h1,1,2,2048,br0/52:54:00:00:00:01,/d/vm1.img,")


def test_the_manager_of_each_guest_is_kept_and_shown(capsys, node, tmp_path):
    """Guests whose XML carries nova's or KubeVirt's metadata show who manages them."""
    db = str(tmp_path / "inv.sqlite3")
    nova = "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/>"
    kubevirt = "<kubevirt xmlns='http://kubevirt.io'><uid>u</uid></kubevirt>"
    h1 = node(
        "h1",
        NodeDomain("instance-0000002a", metadata=nova),
        NodeDomain("default_vmi", metadata=kubevirt),
        NodeDomain("plain"),
    )
    code, out, err = run(capsys, "scan", h1, "-w", "--db", db, "--format", "json")
    assert code == 0, err
    managers = {g["name"]: g["manager"] for g in json.loads(out)["guests"]}
    assert managers == {
        "instance-0000002a": "OpenStack nova", "default_vmi": "KubeVirt", "plain": None,
    }  # fmt: skip
    _, out, _ = run(capsys, "list", "--db", db, "--format", "wide")
    header, *rows = out.splitlines()
    column = header.index("manager")
    assert {row.split()[1]: row[column:].split("   ")[0].strip() for row in rows} == {
        "instance-0000002a": "OpenStack nova", "default_vmi": "KubeVirt", "plain": "",
    }  # fmt: skip
    _, out, _ = run(capsys, "show", "instance-0000002a", "--db", db)
    assert re.search(r"^manager\s+OpenStack nova$", out, re.MULTILINE), out


def test_show_and_diff(capsys, node, tmp_path):
    db = str(tmp_path / "inv.sqlite3")
    run(
        capsys,
        "scan",
        node("h1", NodeDomain("a"), NodeDomain("b")),
        node("h2", NodeDomain("c")),
        "-w",
        "--db",
        db,
    )
    run(
        capsys,
        "scan",
        node("h1", NodeDomain("a", cpu=8)),
        node("h2", NodeDomain("c"), NodeDomain("b")),
        "-w",
        "--db",
        db,
    )
    code, out, _ = run(capsys, "diff", "--db", db)
    assert code == 0
    assert out.splitlines() == [
        "scan 2 against the previous scan of each hypervisor (h1: scan 1, h2: scan 1)",
        "moved    b from h1 to h2",
        "changed  a on h1: cpu 2 -> 8",
    ]
    _, out, _ = run(capsys, "diff", "--db", db, "--json")
    assert json.loads(out)["moved"] == [{"name": "b", "from": "h1", "to": "h2"}]
    code, out, _ = run(capsys, "show", "a", "--db", db)
    assert code == 0 and "hypervisor        h1" in out and "cpu               8" in out
    _, out, _ = run(capsys, "show", "b", "--db", db, "--json")
    assert json.loads(out)["hypervisor"] == "h1"  # stored for h1: -w does not move it
    assert json.loads(out)["last_seen"] == {"scan_id": 2, "hypervisors": ["h2"]}
    code, _, err = run(capsys, "show", "nope", "--db", db)
    assert code == 2 and "no guest named 'nope'" in err


def test_hosts_file_names_and_orders_hypervisors(capsys, tmp_path):
    a = write_node(tmp_path / "a.xml", [NodeDomain("kvm1")])
    b = write_node(tmp_path / "b.xml", [NodeDomain("kvm1")])
    hosts = tmp_path / "hosts"
    hosts.write_text(f"kvmhost2 {b}\nkvmhost1 {a}\n")
    _, _, err = run(
        capsys, "scan", "--hosts-file", str(hosts), "-w", "--db", str(tmp_path / "inv.sqlite3")
    )
    assert "found on both kvmhost2 and kvmhost1: stored the one on kvmhost1" in err


def _cli(*args: str, **kw) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RUN_CLI, "inventory", *args], **kw)


def test_progress_on_a_terminal_only(node):
    h1 = node("h1", NodeDomain("vm1"))
    primary, secondary = pty.openpty()
    try:
        proc = _cli("scan", h1, stdout=subprocess.PIPE, stderr=secondary)
        out, _ = proc.communicate(timeout=60)
        os.close(secondary)
        secondary = -1
        tty_err = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            tty_err += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert b"vm1" in out and b"\r" not in out
    assert b"scanning hypervisors" in tty_err and b"100%  1 of 1, 1 guests" in tty_err
    assert b"\r\nscanned 1 hypervisor(s)" in tty_err  # the progress line was ended
    piped = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "inventory", "scan", h1], capture_output=True, timeout=60
    )
    assert b"\r" not in piped.stderr and b"scanned 1 hypervisor(s)" in piped.stderr


@pytest.mark.parametrize("flag", [["--json"], ["--format", "json"]])
def test_json_scan_progress_is_json_lines_on_stderr(capsys, node, flag):
    h1, h2 = node("h1", NodeDomain("vm1")), node("h2", NodeDomain("vm2"), NodeDomain("vm3"))
    code, out, err = run(capsys, "scan", h1, h2, "--no-agent", *flag)
    assert code == 0, err
    assert len(json.loads(out)["guests"]) == 3  # stdout: the one result document
    events = [json.loads(line) for line in err.splitlines()]  # stderr: JSON lines only
    assert {event["event"] for event in events} == {"progress"}
    assert events[-1] == {"event": "progress", "what": "scanning hypervisors", "done": 2,
                          "total": 2, "unit": "hypervisors", "guests": 3, "agents_done": 0,
                          "agents_total": 0}  # fmt: skip


def test_two_scans_at_once_on_one_sqlite_file(tmp_path):
    db = str(tmp_path / "inv.sqlite3")
    nodes = []
    for name in ("h1", "h2"):
        uri = write_node(
            tmp_path / f"{name}.xml", [NodeDomain(f"{name}-vm{i}") for i in range(300)]
        )
        nodes.append(f"{name}={uri}")
    procs = [
        _cli(
            "scan",
            n,
            "-w",
            "--db",
            db,
            "--no-agent",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in nodes
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    listed = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "inventory", "list", "--db", db, "--json"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert len(json.loads(listed.stdout)) == 600


@pytest.mark.parametrize("argv", [("list",), ("show", "vm1"), ("diff",)])
def test_a_mistyped_db_is_refused_not_created(capsys, tmp_path, argv):
    typo = tmp_path / "inventroy.sqlite3"
    code = main(["inventory", *argv, "--db", str(typo)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        f"gagent: error: no inventory database at {typo}: check the path, or store a scan there "
        f"with 'gagent inventory scan -w URI --db {typo}'\n"
    )
    assert not typo.exists()


def test_show_names_the_scan_that_wrote_the_guest(capsys, node, tmp_path):
    db = str(tmp_path / "inv.sqlite3")
    nova = "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/>"
    h1 = node("h1", NodeDomain("instance-1", metadata=nova), NodeDomain("plain"))
    run(capsys, "scan", h1, "-w", "--db", db, "--no-agent")
    run(capsys, "scan", h1, "-w", "--db", db, "--no-agent")
    for name in ("instance-1", "plain"):
        code, out, err = run(capsys, "show", name, "--db", db, "--json")
        assert code == 0, err
        info = json.loads(out)
        assert info["scan_id"] == 2
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", info["updated_at"])
        _, out, _ = run(capsys, "show", name, "--db", db)
        assert re.search(rf"^written by scan\s+2 at {re.escape(info['updated_at'])}$", out, re.M)


def test_list_of_a_hypervisor_with_no_guest_names_the_stored_ones(capsys, node, tmp_path):
    db = str(tmp_path / "inv.sqlite3")
    hosts = [node(f"h{i}", NodeDomain(f"vm{i}")) for i in range(1, 8)]
    run(capsys, "scan", *hosts, "-w", "--db", db, "--no-agent")
    code, out, err = run(capsys, "list", "--db", db, "--hypervisor", "nosuch")
    assert (code, out) == (0, "")  # as an empty inventory: an empty answer, not an error
    assert err == (
        "no guest of hypervisor 'nosuch' is stored; stored: h1, h2, h3, h4, h5 and 2 more "
        "(gagent inventory list --hypervisor NAME)\n"
    )
    code, out, _ = run(capsys, "list", "--db", db, "--hypervisor", "nosuch", "--json")
    assert (code, out) == (0, "[]\n")
    code, out, _ = run(capsys, "list", "--db", db, "--hypervisor", "h3")
    assert code == 0 and out.splitlines()[1].split()[1:3] == ["vm3", "h3"]


@pytest.fixture
def no_default_db(tmp_path, monkeypatch):
    """$XDG_DATA_HOME in tmp_path, with no inventory in it; no configuration file's --db."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("GAGENT_CONFIG", os.devnull)
    return tmp_path / "data" / "gagent" / "inventory.sqlite3"


@pytest.mark.parametrize("argv", [("list",), ("show", "vm1"), ("diff",)])
def test_reading_without_an_inventory_creates_none(capsys, no_default_db, argv):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == (
        f"gagent: error: no inventory database at {no_default_db} yet: store a scan there "
        "with 'gagent inventory scan -w URI'\n"
    )
    assert not no_default_db.parent.parent.exists()


@pytest.mark.parametrize("argv", [("list",), ("show", "vm1"), ("diff",)])
def test_reading_an_empty_file_refuses_it_unchanged(capsys, tmp_path, argv):
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    code, out, err = run(capsys, *argv, "--db", str(empty))
    assert (code, out) == (2, "")
    assert err == (
        f"gagent: error: no inventory in {empty} yet: store a scan there with "
        f"'gagent inventory scan -w URI --db {empty}'\n"
    )
    assert empty.stat().st_size == 0


def test_writing_creates_the_inventory_reading_needs(capsys, node, no_default_db, tmp_path):
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    h1 = node("h1", NodeDomain("vm1"))
    assert run(capsys, "scan", h1, "-w", "--no-agent")[0] == 0
    assert run(capsys, "scan", h1, "-n", "--no-agent", "--db", str(empty))[0] == 0
    for db in ([], ["--db", str(empty)]):
        code, out, err = run(capsys, "list", *db, "--json")
        assert code == 0, err
        assert [g["name"] for g in json.loads(out)] == ["vm1"]
    assert no_default_db.is_file()
