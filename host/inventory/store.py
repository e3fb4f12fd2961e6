"""The inventory store: guests by name, every scan's sightings, a versioned schema.

Tables (the same on SQLite and PostgreSQL):

``schema_version``    one row: the schema's version (see :data:`MIGRATIONS`)
``scans``             one row per stored scan (id, times, write mode)
``scan_hypervisors``  per scan, each hypervisor: reached or not (and why)
``sightings``         per scan, every guest found (all of them, conflicts included)
``guests``            the inventory: ONE row per guest name (as xCAT's node
                      tables), written according to the write mode

A scan is applied in ONE transaction under the store-wide write lock
(:meth:`Backend.begin_write`): the scan row, the sightings and the guests'
writes are committed together or not at all, so a crash mid-scan leaves the
previous state, and two scans at once are applied one after the other, each
deciding its conflicts on what the other committed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .backends import Backend, NoInventory, StoreError, is_postgresql, open_backend, redact
from .diff import Diff, Sighting, compute_diff
from .model import Guest
from .modes import Mode, Plan, plan_writes
from .rows import GUEST_COLUMNS, GUEST_FIELDS, UPDATED_FIELDS, guest_of, guest_values, row_by_name

if TYPE_CHECKING:
    from .scan import ScanResult  # the scan needs libvirt; the stored inventory does not

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Applied", "NoInventory", "Store", "StoreError"]

#: (version, what it does, statements); ``{serial}`` is the backend's auto-numbered key.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "scans, sightings and guests",
        [
            "CREATE TABLE scans (id {serial}, started_at TEXT NOT NULL,"
            " finished_at TEXT NOT NULL, mode TEXT NOT NULL)",
            "CREATE TABLE scan_hypervisors (scan_id BIGINT NOT NULL REFERENCES scans(id),"
            " uri TEXT NOT NULL, name TEXT, ok INTEGER NOT NULL, error TEXT,"
            " domains INTEGER NOT NULL, PRIMARY KEY (scan_id, uri))",
            "CREATE TABLE sightings (scan_id BIGINT NOT NULL REFERENCES scans(id),"
            " hypervisor TEXT NOT NULL, name TEXT NOT NULL, uuid TEXT, cpu INTEGER,"
            " memory INTEGER, state TEXT, PRIMARY KEY (scan_id, hypervisor, name))",
            "CREATE TABLE guests (name TEXT PRIMARY KEY, hypervisor TEXT NOT NULL,"
            " type TEXT NOT NULL, dom_id INTEGER, cpu INTEGER, memory INTEGER, uuid TEXT,"
            " state TEXT NOT NULL, nics TEXT NOT NULL, disks TEXT NOT NULL,"
            " scan_id BIGINT NOT NULL REFERENCES scans(id), updated_at TEXT NOT NULL)",
        ],
    ),
    (
        2,
        "guest-agent data; sightings by hypervisor",
        [
            "ALTER TABLE guests ADD COLUMN agent TEXT",
            "ALTER TABLE guests ADD COLUMN agent_status TEXT NOT NULL DEFAULT 'skipped'",
            "ALTER TABLE guests ADD COLUMN agent_error TEXT",
            "CREATE INDEX scan_hypervisors_by_name ON scan_hypervisors (name, scan_id)",
        ],
    ),
    (
        3,
        "who manages each guest (oVirt, nova, KubeVirt)",
        ["ALTER TABLE guests ADD COLUMN manager TEXT"],
    ),
]
LATEST_VERSION = MIGRATIONS[-1][0]
#: What a column added by a later migration reads as in an older inventory (else NULL),
#: as the migration's own DEFAULT fills it.
MISSING_COLUMN_DEFAULTS = {"agent_status": "'skipped'"}


@dataclass
class Applied:
    """What applying one scan did."""

    scan_id: int
    plan: Plan

    def to_json(self) -> dict[str, Any]:
        return {
            "scan_id": self.scan_id,
            "inserted": [g.name for g in self.plan.inserts],
            "updated": [g.name for g in self.plan.updates],
            "skipped": len(self.plan.skipped),
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Store:
    """An open inventory database (``Store.open(None)`` for the default SQLite file)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        #: How reads select a guest's columns: an older schema read as it is (read-only)
        #: lacks the later columns, which then read as their defaults.
        self._guest_columns = GUEST_COLUMNS

    @classmethod
    def open(
        cls,
        target: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = 30.0,
        read_only: bool = False,
    ) -> Store:
        """Open (create and migrate as needed) the inventory; ``read_only``: open it as it
        is, or raise :class:`NoInventory` when there is none there at the latest schema."""
        try:
            backend = open_backend(target, busy_timeout=busy_timeout, read_only=read_only)
        except NoInventory as exc:  # no such file
            fix = f"store a scan there with '{_scan_command(target)}'"
            raise NoInventory(
                f"{exc} yet: {fix}" if target is None else f"{exc}: check the path, or {fix}"
            ) from None
        store = cls(backend)
        try:
            if read_only:
                store._check_readable(target)
            else:
                store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- schema

    def version(self) -> int:
        if not self._has_version_table():
            return 0
        rows = self.backend.execute("SELECT version FROM schema_version")
        return int(rows[0][0]) if rows else 0

    def _check_readable(self, target: str | os.PathLike[str] | None) -> None:
        """An inventory at the latest schema is there: otherwise one line, with the command
        that makes one (a writing command creates, or migrates, the schema)."""
        where, scan = self.backend.where, _scan_command(target)
        try:
            found = self.version()
        except StoreError as exc:
            if "not a database" not in str(exc):
                raise
            raise NoInventory(
                f"{where} is not an inventory database (not SQLite): check --db"
            ) from None
        _check_known(found)
        if found == 0 and self.backend.kind == "sqlite" and _tables(self.backend):
            raise NoInventory(f"{where} is not an inventory database (other tables): check --db")
        if found == 0:
            raise NoInventory(f"no inventory in {where} yet: store a scan there with '{scan}'")
        if found < LATEST_VERSION:  # read as it is: the next writing command upgrades it
            present = self._guest_table_columns()
            self._guest_columns = ", ".join(
                f if f in present else f"{MISSING_COLUMN_DEFAULTS.get(f, 'NULL')} AS {f}"
                for f in GUEST_FIELDS
            )

    def _guest_table_columns(self) -> set[str]:
        if self.backend.kind == "sqlite":
            return {row[1] for row in self.backend.execute("PRAGMA table_info(guests)")}
        rows = self.backend.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'guests' AND table_schema = current_schema()"
        )
        return {row[0] for row in rows}

    def _has_version_table(self) -> bool:
        if self.backend.kind == "sqlite":
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            sql = (
                "SELECT 1 FROM information_schema.tables"
                " WHERE table_name = ? AND table_schema = current_schema()"
            )
        return bool(self.backend.execute(sql, ("schema_version",)))

    def migrate(self, *, up_to: int = LATEST_VERSION) -> int:
        """Bring the schema to ``up_to`` (one transaction); returns the version found."""
        found = self.version()
        if found == up_to:
            return found  # the common case: no lock taken
        _check_known(found)
        self._transaction(lambda: self._migrate_locked(up_to))
        return found

    def _migrate_locked(self, up_to: int) -> None:
        db = self.backend
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        rows = db.execute("SELECT version FROM schema_version")
        current = int(rows[0][0]) if rows else 0  # re-read: another process may have migrated
        _check_known(current)
        for version, _what, statements in MIGRATIONS:
            if current < version <= up_to:
                for sql in statements:
                    db.execute(sql.format(serial=db.serial))
        if rows:
            db.execute("UPDATE schema_version SET version = ?", (max(current, up_to),))
        else:
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (up_to,))

    def _transaction(self, body: Callable[[], Any], *, write: bool = True) -> Any:
        if write:
            self.backend.begin_write()
        else:
            self.backend.begin_read()
        try:
            value = body()
        except BaseException:
            self.backend.rollback()
            raise
        self.backend.commit()
        return value

    # ----------------------------------------------------------------- writes

    def apply_scan(
        self,
        result: ScanResult,
        mode: Mode | str,
        *,
        started_at: str | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> Applied:
        """Record the scan and write its guests per ``mode``, in ONE transaction.

        ``on_step`` (tests) is called with "locked", "recorded" and "written".
        """
        mode = Mode(mode)
        step = on_step or (lambda _name: None)
        started = started_at or _now()

        def body() -> Applied:
            db = self.backend
            step("locked")
            scan_id = int(
                db.execute(
                    "INSERT INTO scans (started_at, finished_at, mode) VALUES (?, ?, ?)"
                    " RETURNING id",
                    (started, _now(), mode.value),
                )[0][0]
            )
            db.executemany(
                "INSERT INTO scan_hypervisors (scan_id, uri, name, ok, error, domains)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (scan_id, h.uri, h.name, int(h.ok), h.error, h.domains)
                    for h in result.hypervisors
                ],
            )
            db.executemany(
                "INSERT INTO sightings (scan_id, hypervisor, name, uuid, cpu, memory, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (scan_id, g.hypervisor, g.name, g.uuid, g.cpu, g.memory, g.state)
                    for g in result.guests
                ],
            )
            step("recorded")
            stored = dict(db.execute("SELECT name, hypervisor FROM guests"))  # under the lock
            plan = plan_writes(result.guests, stored, mode)
            now = _now()
            if plan.inserts:
                db.executemany(
                    f"INSERT INTO guests ({GUEST_COLUMNS})"
                    f" VALUES ({', '.join('?' * len(GUEST_FIELDS))})",
                    [guest_values(GUEST_FIELDS, g, scan_id, now) for g in plan.inserts],
                )
            if plan.updates:
                db.executemany(
                    f"UPDATE guests SET {', '.join(f'{f} = ?' for f in UPDATED_FIELDS)}"
                    " WHERE name = ? AND hypervisor = ?",
                    [
                        (*guest_values(UPDATED_FIELDS, g, scan_id, now), g.name, g.hypervisor)
                        for g in plan.updates
                    ],
                )
            step("written")
            return Applied(scan_id, plan)

        return self._transaction(body)

    # ------------------------------------------------------------------ reads

    def guests(self, *, hypervisor: str | None = None) -> list[Guest]:
        sql = f"SELECT {self._guest_columns} FROM guests"
        params: tuple[Any, ...] = ()
        if hypervisor is not None:
            sql += " WHERE hypervisor = ?"
            params = (hypervisor,)
        rows = self.backend.execute(sql + " ORDER BY hypervisor, name", params)
        return [guest_of(row_by_name(row)) for row in rows]

    def hypervisors(self) -> list[str]:
        """The hypervisors guests are stored for."""
        rows = self.backend.execute("SELECT DISTINCT hypervisor FROM guests ORDER BY hypervisor")
        return [hv for (hv,) in rows]

    def show(self, name: str) -> dict[str, Any] | None:
        """A stored guest, when and by which scan it was written, and where the latest
        scan that saw the name found it (more than one hypervisor: a conflict)."""

        def body() -> dict[str, Any] | None:
            rows = self.backend.execute(
                f"SELECT {self._guest_columns} FROM guests WHERE name = ?", (name,)
            )
            if not rows:
                return None
            row = row_by_name(rows[0])
            seen = self.backend.execute(
                "SELECT hypervisor, scan_id FROM sightings WHERE name = ? AND scan_id ="
                " (SELECT max(scan_id) FROM sightings WHERE name = ?) ORDER BY hypervisor",
                (name, name),
            )
            return {
                **guest_of(row).to_json(),
                "scan_id": row["scan_id"],
                "updated_at": row["updated_at"],
                "last_seen": {
                    "scan_id": seen[0][1] if seen else None,
                    "hypervisors": [h for h, _ in seen],
                },
            }

        return self._transaction(body, write=False)

    def scans(self) -> list[dict[str, Any]]:
        rows = self.backend.execute(
            "SELECT id, started_at, finished_at, mode FROM scans ORDER BY id"
        )
        return [
            dict(zip(("id", "started_at", "finished_at", "mode"), r, strict=True)) for r in rows
        ]

    def diff(self, scan_id: int | None = None) -> Diff:
        """What scan ``scan_id`` (default: the latest) found changed since the previous scan
        of each hypervisor it reached."""
        return self._transaction(lambda: self._diff(scan_id), write=False)

    def _diff(self, scan_id: int | None) -> Diff:
        db = self.backend
        if scan_id is None:
            scan_id = db.execute("SELECT max(id) FROM scans")[0][0]
            if scan_id is None:
                raise StoreError("no scan is stored yet: run 'gagent inventory scan -w ...' first")
        elif not db.execute("SELECT 1 FROM scans WHERE id = ?", (scan_id,)):
            raise StoreError(f"no scan {scan_id} in the inventory")
        reached = [
            r[0]
            for r in db.execute(
                "SELECT name FROM scan_hypervisors WHERE scan_id = ? AND ok = 1 ORDER BY name",
                (scan_id,),
            )
        ]
        previous: list[Sighting] = []
        before: dict[str, int | None] = {}
        for hv in reached:
            prior = db.execute(
                "SELECT max(scan_id) FROM scan_hypervisors WHERE name = ? AND ok = 1"
                " AND scan_id < ?",
                (hv, scan_id),
            )[0][0]
            before[hv] = prior
            if prior is not None:
                previous += self._sightings(prior, hv)
        current = [s for hv in reached for s in self._sightings(scan_id, hv)]
        diff = compute_diff(previous, current)
        diff.scan_id, diff.previous = int(scan_id), before
        return diff

    def _sightings(self, scan_id: int, hypervisor: str) -> list[Sighting]:
        rows = self.backend.execute(
            "SELECT name, hypervisor, uuid, cpu, memory, state FROM sightings"
            " WHERE scan_id = ? AND hypervisor = ?",
            (scan_id, hypervisor),
        )
        return [Sighting(*row) for row in rows]


def _check_known(version: int) -> None:
    if version > LATEST_VERSION:
        raise StoreError(
            f"the inventory database has schema version {version}, newer than this gagent "
            f"knows ({LATEST_VERSION}): upgrade gagent"
        )


def _scan_command(target: str | os.PathLike[str] | None) -> str:
    """The command that creates (or upgrades) the inventory ``target`` names."""
    if target is None:
        return "gagent inventory scan -w URI"
    where = str(target)
    if is_postgresql(where):
        where = redact(where)
    return f"gagent inventory scan -w URI --db {where}"


def _tables(db: Backend) -> list[str]:
    return [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
