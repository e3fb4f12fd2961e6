"""The store, on SQLite AND on a real PostgreSQL server: every rscan conflict scenario in the
three modes, migrations, one transaction per scan, concurrent scans, list/show/diff."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime

import pytest

from gagent.host.inventory import (
    AgentData,
    Guest,
    HypervisorReport,
    Mode,
    ScanResult,
    Store,
    StoreError,
)
from gagent.host.inventory.backends import NoInventory, open_backend
from gagent.host.inventory.store import LATEST_VERSION


def guest(name: str, hv: str, cpu: int = 2, memory: int = 2048, **kw) -> Guest:
    return Guest(
        "kvm",
        name,
        hv,
        kw.pop("id", None),
        cpu,
        memory,
        [],
        [],
        f"uuid-{name}-{hv}",
        kw.pop("state", "shut off"),
        **kw,
    )


def result(*guests: Guest, down: tuple[str, ...] = ()) -> ScanResult:
    """A scan that reached the guests' hypervisors (in order of appearance) and failed ``down``."""
    hvs = list(dict.fromkeys(g.hypervisor for g in guests))
    reports = [HypervisorReport(f"test:///{h}.xml", h, ok=True, domains=1) for h in hvs]
    reports += [HypervisorReport(f"test:///{h}.xml", h, error="unreachable") for h in down]
    return ScanResult(list(guests), reports)


def stored(store: Store) -> dict[str, tuple[str, int | None]]:
    return {g.name: (g.hypervisor, g.cpu) for g in store.guests()}


def conflicts(applied) -> list[tuple[str, str, str, str | None]]:
    return [(c.name, c.first, c.second, c.written) for c in applied.plan.conflicts]


@pytest.fixture
def store(db_target):
    with Store.open(db_target) as s:
        yield s


# ------------------------------------------------------------------ --write


def test_write_scenario_1_same_name_on_two_hypervisors_not_stored(store):
    applied = store.apply_scan(
        result(guest("kvm1", "h1", cpu=1), guest("kvm1", "h2", cpu=2)), Mode.WRITE
    )
    assert stored(store) == {"kvm1": ("h2", 2)}  # the last found, in the given order
    assert conflicts(applied) == [("kvm1", "h1", "h2", "h2")]


def test_write_scenario_2_stored_for_a_found_on_b_is_not_overwritten(store):
    store.apply_scan(result(guest("kvm1", "h1", cpu=1)), Mode.WRITE)
    applied = store.apply_scan(result(guest("kvm1", "h2", cpu=8)), Mode.WRITE)
    assert stored(store) == {"kvm1": ("h1", 1)}
    assert conflicts(applied) == [("kvm1", "h1", "h2", "h1")]


def test_write_updates_the_stored_one_and_reports_the_other(store):
    store.apply_scan(result(guest("kvm1", "h1", cpu=1)), Mode.WRITE)
    applied = store.apply_scan(
        result(guest("kvm1", "h1", cpu=4), guest("kvm1", "h2", cpu=8)), Mode.WRITE
    )
    assert stored(store) == {"kvm1": ("h1", 4)}
    assert conflicts(applied) == [("kvm1", "h1", "h2", "h1")]


# ----------------------------------------------------------------- --update


def test_update_scenario_1_same_name_on_two_hypervisors_not_stored(store):
    applied = store.apply_scan(
        result(guest("kvm1", "h1"), guest("kvm1", "h2"), guest("kvm2", "h1")), Mode.UPDATE
    )
    assert stored(store) == {}
    assert conflicts(applied) == [("kvm1", "h1", "h2", None)]


def test_update_scenario_2_updates_the_one_with_the_same_hypervisor(store):
    store.apply_scan(result(guest("kvm1", "h1", cpu=1)), Mode.WRITE)
    applied = store.apply_scan(
        result(guest("kvm1", "h1", cpu=4), guest("kvm1", "h2", cpu=8), guest("kvm9", "h2")),
        Mode.UPDATE,
    )
    assert stored(store) == {"kvm1": ("h1", 4)}  # kvm9 is not stored: -u does not add
    assert conflicts(applied) == [("kvm1", "h1", "h2", "h1")]


# -------------------------------------------------------------------- --new


def test_new_adds_only_names_not_stored(store):
    store.apply_scan(result(guest("kvm1", "h1", cpu=1)), Mode.WRITE)
    applied = store.apply_scan(result(guest("kvm1", "h1", cpu=4), guest("kvm2", "h1")), Mode.NEW)
    assert stored(store) == {"kvm1": ("h1", 1), "kvm2": ("h1", 2)}  # kvm1 not updated
    assert conflicts(applied) == []


def test_new_stored_for_a_found_on_b_is_not_added(store):
    store.apply_scan(result(guest("kvm1", "h1", cpu=1)), Mode.WRITE)
    applied = store.apply_scan(result(guest("kvm1", "h2", cpu=8)), Mode.NEW)
    assert stored(store) == {"kvm1": ("h1", 1)}
    assert conflicts(applied) == [("kvm1", "h1", "h2", "h1")]


def test_new_same_name_on_two_hypervisors_adds_the_last(store):
    applied = store.apply_scan(result(guest("kvm1", "h1"), guest("kvm1", "h2")), Mode.NEW)
    assert stored(store) == {"kvm1": ("h2", 2)}
    assert conflicts(applied) == [("kvm1", "h1", "h2", "h2")]


# --------------------------------------------------------- reads and agents


def test_list_and_show_keep_the_whole_guest(store):
    data = AgentData(
        version="7.2",
        os="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0",
        hostname="kvm1.example",
        interfaces=[{"name": "eth0", "mac": "52:54:00:aa:00:01", "addresses": ["10.0.0.5/24"]}],
        filesystems=[],
        users=[],
    )
    g = guest("kvm1", "h1", id=41, state="running").with_agent("ok", data)
    store.apply_scan(result(g, guest("kvm2", "h2"), guest("kvm3", "h2")), Mode.WRITE)
    assert [x.name for x in store.guests(hypervisor="h2")] == ["kvm2", "kvm3"]
    assert [x.name for x in store.guests()] == ["kvm1", "kvm2", "kvm3"]
    info = store.show("kvm1")
    assert info is not None
    assert Guest.from_json(info) == g
    assert info["last_seen"]["hypervisors"] == ["h1"]
    assert store.show("nope") is None


@pytest.mark.parametrize("manager", ["OpenStack nova", None])
def test_show_says_which_scan_wrote_the_guest_and_when(store, manager):
    """scan_id and updated_at are the guests table's own columns, whatever columns a later
    schema version added before them (schema v3's manager once shifted them)."""
    first = store.apply_scan(result(guest("kvm1", "h1", manager=manager)), Mode.WRITE)
    before = datetime.fromisoformat(store.scans()[-1]["finished_at"])
    second = store.apply_scan(result(guest("kvm1", "h1", cpu=4, manager=manager)), Mode.WRITE)
    info = store.show("kvm1")
    assert info is not None
    assert (info["manager"], info["cpu"]) == (manager, 4)
    assert info["scan_id"] == second.scan_id != first.scan_id
    assert before <= datetime.fromisoformat(info["updated_at"])
    assert info["last_seen"] == {"scan_id": second.scan_id, "hypervisors": ["h1"]}


def test_hypervisors_are_the_ones_guests_are_stored_for(store):
    assert store.hypervisors() == []
    store.apply_scan(result(guest("a", "h2"), guest("b", "h1"), guest("c", "h2")), Mode.WRITE)
    assert store.hypervisors() == ["h1", "h2"]


# ------------------------------------------------------- reading creates nothing


def test_reading_a_missing_sqlite_file_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with pytest.raises(NoInventory) as default:
        Store.open(read_only=True)
    assert str(default.value) == (
        f"no inventory database at {tmp_path}/data/gagent/inventory.sqlite3 yet: "
        "store a scan there with 'gagent inventory scan -w URI'"
    )
    typo = tmp_path / "typo.sqlite3"
    with pytest.raises(NoInventory, match=f"scan -w URI --db {typo}'$"):
        Store.open(typo, read_only=True)
    assert list(tmp_path.iterdir()) == []  # not even the default file's folder


@pytest.mark.parametrize(
    ("content", "refusal"),
    [
        (b"", "no inventory in {path} yet: store a scan there with "
              "'gagent inventory scan -w URI --db {path}'"),
        (b"not a database at all\n" * 100,
         "{path} is not an inventory database (not SQLite): check --db"),
    ],
)  # fmt: skip
def test_reading_an_empty_or_foreign_file_refuses_and_leaves_it_alone(tmp_path, content, refusal):
    path = tmp_path / "inv.sqlite3"
    path.write_bytes(content)
    with pytest.raises(NoInventory) as refused:
        Store.open(path, read_only=True)
    assert str(refused.value) == refusal.format(path=path)
    assert path.read_bytes() == content


def test_reading_a_foreign_sqlite_database_refuses_it(tmp_path):
    path = tmp_path / "other.sqlite3"
    subprocess.run(
        [sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(path)!r}).execute("
         "'CREATE TABLE other (x)')"],
        check=True, timeout=60,
    )  # fmt: skip
    content = path.read_bytes()
    with pytest.raises(NoInventory, match=r"is not an inventory database \(other tables\)"):
        Store.open(path, read_only=True)
    assert path.read_bytes() == content


def test_reading_an_empty_database_refuses_and_creates_no_schema(db_target):
    with pytest.raises(
        NoInventory, match=r"^no inventory (database at|in) .*store a scan there with"
    ):
        Store.open(db_target, read_only=True)
    with Store(open_backend(db_target)) as store:
        assert store.version() == 0  # no schema_version table: nothing was migrated


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_schema_is_read_as_it_is_and_not_migrated(db_target, version):
    """After an upgrade of gagent, list/show read the inventory at once: the later
    columns read as their defaults; the next writing command migrates it."""
    with Store(open_backend(db_target)) as old:
        old.migrate(up_to=version)
        old.backend.execute(
            "INSERT INTO scans (started_at, finished_at, mode) VALUES ('t', 't', 'write')"
        )
        old.backend.execute(
            "INSERT INTO guests (name, hypervisor, type, cpu, memory, state, nics, disks,"
            " scan_id, updated_at) VALUES ('kvm1', 'h1', 'kvm', 2, 2048, 'running', '[]',"
            " '[]', 1, 't')"
        )
    with Store.open(db_target, read_only=True) as store:
        (g,) = store.guests()
        assert (g.name, g.agent, g.agent_status, g.manager) == ("kvm1", None, "skipped", None)
        shown = store.show("kvm1")
        assert shown is not None and (shown["scan_id"], shown["updated_at"]) == (1, "t")
    with Store(open_backend(db_target)) as store:
        assert store.version() == version  # reading changed nothing


def test_a_read_only_store_reads_and_cannot_write(db_target):
    with Store.open(db_target) as store:
        store.apply_scan(result(guest("kvm1", "h1")), Mode.WRITE)
    with Store.open(db_target, read_only=True) as store:
        assert stored(store) == {"kvm1": ("h1", 2)}
        assert store.diff().lines() == ["new      kvm1 on h1"]
        with pytest.raises(StoreError, match=r"read-only|readonly"):
            store.apply_scan(result(guest("kvm2", "h1")), Mode.WRITE)
    with Store.open(db_target) as store:
        assert stored(store) == {"kvm1": ("h1", 2)}


def test_diff_new_gone_moved_changed_and_unreachable_is_not_gone(store):
    store.apply_scan(
        result(guest("a", "h1"), guest("b", "h1"), guest("c", "h1"), guest("d", "h2")), Mode.WRITE
    )
    store.apply_scan(
        result(
            guest("a", "h1", cpu=4, memory=4096),
            guest("c", "h1"),
            guest("b", "h2"),
            guest("d", "h2"),
            guest("e", "h2"),
        ),
        Mode.WRITE,
    )
    diff = store.diff()
    assert diff.lines() == [
        "new      e on h2",
        "moved    b from h1 to h2",
        "changed  a on h1: cpu 2 -> 4, memory 2048 -> 4096",
    ]
    # h1 unreachable: its guests are not gone; d left h2
    store.apply_scan(result(guest("b", "h2"), guest("e", "h2"), down=("h1",)), Mode.WRITE)
    diff = store.diff()
    assert diff.lines() == ["gone     d from h2"]
    assert diff.previous == {"h2": diff.scan_id - 1}
    assert store.diff(1).previous == {"h1": None, "h2": None}  # the first scan: all new
    with pytest.raises(StoreError, match="no scan 99"):
        store.diff(99)


def test_diff_without_scans_says_what_to_do(store):
    with pytest.raises(StoreError, match="no scan is stored yet"):
        store.diff()


# ------------------------------------------------------- schema, atomicity


def test_migrations_from_version_1_keep_the_data(db_target):
    old = Store(open_backend(db_target))
    assert old.migrate(up_to=1) == 0 and old.version() == 1
    old.backend.execute(
        "INSERT INTO scans (started_at, finished_at, mode) VALUES ('t', 't', 'write')"
    )
    old.backend.execute(
        "INSERT INTO guests (name, hypervisor, type, cpu, memory, state, nics, disks, scan_id,"
        " updated_at) VALUES ('kvm1', 'h1', 'kvm', 2, 2048, 'running', '[]', '[]', 1, 't')"
    )
    old.close()
    with Store.open(db_target) as store:
        assert store.version() == LATEST_VERSION == 3
        (g,) = store.guests()
        assert (g.name, g.hypervisor, g.agent, g.agent_status) == ("kvm1", "h1", None, "skipped")
        assert g.manager is None


def test_a_newer_schema_is_refused(db_target):
    with Store.open(db_target) as store:
        store.backend.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this gagent"):
        Store.open(db_target)


def test_concurrent_first_opens_migrate_once(db_target):
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            Store.open(db_target).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(db_target) as store:
        assert store.version() == LATEST_VERSION


def test_a_failure_mid_scan_leaves_the_previous_state(store):
    store.apply_scan(result(guest("kvm1", "h1")), Mode.WRITE)

    def crash(step: str) -> None:
        if step == "written":
            raise RuntimeError("crash after the writes, before the commit")

    with pytest.raises(RuntimeError):
        store.apply_scan(
            result(guest("kvm1", "h1", cpu=8), guest("kvm2", "h1")), Mode.WRITE, on_step=crash
        )
    assert stored(store) == {"kvm1": ("h1", 2)}
    assert [s["id"] for s in store.scans()] == [1]
    store.apply_scan(result(guest("kvm2", "h1")), Mode.WRITE)  # the store still works
    assert sorted(stored(store)) == ["kvm1", "kvm2"]


KILLED_SCAN = """
import sys, time
from gagent.host.inventory import Guest, HypervisorReport, Mode, ScanResult, Store

def step(name):
    if name == "written":
        print("written", flush=True)
        time.sleep(60)

guests = [Guest("kvm", f"vm{i}", "h1", None, 8, 1, [], [], None, "shut off") for i in range(50)]
with Store.open(sys.argv[1]) as store:
    store.apply_scan(ScanResult(guests, [HypervisorReport("test:///h1.xml", "h1", ok=True)]),
                     Mode.WRITE, on_step=step)
"""


def test_a_process_killed_mid_scan_leaves_the_previous_state(db_target, tmp_path):
    with Store.open(db_target) as store:
        store.apply_scan(result(guest("vm0", "h1")), Mode.WRITE)
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILLED_SCAN))
    proc = subprocess.Popen(
        [sys.executable, str(script), db_target], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
    with Store.open(db_target) as store:
        assert stored(store) == {"vm0": ("h1", 2)}
        assert len(store.scans()) == 1


def test_two_scans_at_once_lose_no_writes(db_target):
    """Scan A holds the write lock while B starts: B waits, then decides on A's commit."""
    a_locked = threading.Event()
    finished: dict[str, float] = {}
    outcome: dict[str, object] = {}

    def hold(step: str) -> None:
        if step == "locked":
            a_locked.set()
            time.sleep(0.5)
            finished["a_still_locked"] = time.monotonic()  # A holds the lock until its commit

    def run(name: str, scan: ScanResult, on_step=None) -> None:
        with Store.open(db_target) as s:
            outcome[name] = s.apply_scan(scan, Mode.WRITE, on_step=on_step)
            finished[name] = time.monotonic()

    Store.open(db_target).close()  # schema in place before the race
    a = threading.Thread(
        target=run, args=("a", result(guest("shared", "h1"), guest("a1", "h1")), hold)
    )
    b = threading.Thread(target=run, args=("b", result(guest("shared", "h2"), guest("b1", "h2"))))
    a.start()
    assert a_locked.wait(10)
    started_b = time.monotonic()
    b.start()
    a.join(20)
    b.join(20)
    assert set(outcome) == {"a", "b"}
    # B waited for A: it could not finish while A still held the lock (a comparison of the
    # two threads' own finish times would race on a busy machine: A's clock read comes
    # after its commit, when B may already run)
    assert finished["b"] > finished["a_still_locked"] > started_b
    with Store.open(db_target) as store:
        assert stored(store) == {"shared": ("h1", 2), "a1": ("h1", 2), "b1": ("h2", 2)}
        assert len(store.scans()) == 2
    assert conflicts(outcome["b"]) == [("shared", "h1", "h2", "h1")]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    with Store.open(tmp_path / "inv.sqlite3", busy_timeout=12.5) as store:
        assert store.backend.execute("PRAGMA journal_mode")[0][0] == "wal"
        assert store.backend.execute("PRAGMA busy_timeout")[0][0] == 12500


def test_default_path_follows_xdg_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with Store.open() as store:
        assert store.backend.path == tmp_path / "data" / "gagent" / "inventory.sqlite3"
    assert (tmp_path / "data" / "gagent" / "inventory.sqlite3").exists()


def test_unreachable_postgresql_is_a_store_error(tmp_path):
    pytest.importorskip("psycopg")
    with pytest.raises(StoreError, match="cannot open the inventory database") as caught:
        Store.open(f"postgresql://nobody:secret@/db?host={tmp_path}&connect_timeout=2")
    assert "secret" not in str(caught.value)
    assert "\n" not in str(caught.value)  # libpq adds a hint on a line of its own


_HOLD_WRITE_LOCK = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)  # rollback journal: a new file
    db.execute("CREATE TABLE IF NOT EXISTS other_writer (x)")
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO other_writer VALUES (1)")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
    """
)


def _writer_holding(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_sqlite_open_waits_out_another_writer_instead_of_failing_at_once(tmp_path):
    # While another connection holds a write lock, SQLite answers the switch to
    # WAL with "database is locked" at once (no busy handler): seen when two
    # scans created the same new file at the same moment.
    path = tmp_path / "inv.sqlite3"
    writer = _writer_holding(path, 0.5)
    try:
        backend = open_backend(path, busy_timeout=30)
        try:
            assert backend.execute("PRAGMA journal_mode")[0][0] == "wal"
            assert backend.execute("SELECT count(*) FROM other_writer") == [(1,)]
        finally:
            backend.close()
    finally:
        assert writer.wait(timeout=30) == 0


def test_sqlite_open_gives_up_on_a_writer_after_busy_timeout(tmp_path):
    path = tmp_path / "inv.sqlite3"
    writer = _writer_holding(path, 3)
    try:
        with pytest.raises(StoreError, match="database is locked"):
            open_backend(path, busy_timeout=0.3)
    finally:
        assert writer.wait(timeout=30) == 0
