"""The two databases under the inventory store: SQLite (default) and PostgreSQL.

Both offer the same small interface to :mod:`.store`: ``execute`` with ``?``
placeholders, explicit transactions, and :meth:`Backend.begin_write`, which
takes the store-wide write lock for the whole transaction, so two scans (two
processes, or two management nodes) are applied one after the other and
neither loses the other's writes:

* SQLite: WAL journal (readers never block the writer), ``BEGIN IMMEDIATE``
  (the write lock at the start, not at the first write: the scan's decisions
  are taken on what it read under the lock), and a busy timeout: a second
  scan waits for the first one's commit instead of failing.
* PostgreSQL (psycopg 3): a transaction-scoped advisory lock
  (``pg_advisory_xact_lock``), bounded by ``lock_timeout``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gagent.errors import GagentError

__all__ = [
    "Backend",
    "NoInventory",
    "StoreError",
    "default_db_path",
    "is_postgresql",
    "open_backend",
    "redact",
]

#: The advisory lock key every gagent inventory transaction that writes takes ("gagentinv").
_PG_LOCK_KEY = 0x6761_6765_6E74_696E


class StoreError(GagentError):
    """The inventory database failed or refused (locked too long, newer schema, no server...)."""


class NoInventory(StoreError):
    """A reading command found no inventory to read: no such file, or no gagent schema in it
    (reading creates and migrates nothing)."""


def default_db_path() -> Path:
    """``$XDG_DATA_HOME/gagent/inventory.sqlite3`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return Path(base) / "gagent" / "inventory.sqlite3"


def is_postgresql(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


class Backend:
    kind = "?"
    #: Where the database is, for messages (a path, or the URL without its password).
    where = "?"
    #: DDL for an auto-numbered primary key column.
    serial = "?"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def begin_read(self) -> None:
        self.execute("BEGIN")

    def begin_write(self) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def close(self) -> None:
        raise NotImplementedError


class SQLiteBackend(Backend):
    kind = "sqlite"
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: Path, busy_timeout: float, *, read_only: bool = False):
        self.path = path
        self.where = str(path)
        if read_only:
            self._open_read_only(busy_timeout)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self.conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = self._switch_to_wal(busy_timeout)
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the inventory database {path}: {exc}") from None
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode={mode})")

    def _open_read_only(self, busy_timeout: float) -> None:
        """The file as it is: not created (``mode=ro``), not switched to WAL, not migrated."""
        if not self.path.is_file():
            raise NoInventory(f"no inventory database at {self.path}")
        try:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self.conn = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the inventory database {self.path}: {exc}") from None

    def _switch_to_wal(self, busy_timeout: float) -> str:
        """``PRAGMA journal_mode = WAL``, retried while another writer holds the file.

        Switching needs the exclusive lock, and while another connection holds a
        write lock SQLite answers "database is locked" at once instead of calling
        the busy handler (it would deadlock): two scans creating the same new
        file at once hit this.  So it is retried until ``busy_timeout``.
        """
        deadline = time.monotonic() + busy_timeout
        pause = 0.01
        while True:
            try:
                return self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def begin_write(self) -> None:
        self.execute("BEGIN IMMEDIATE")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class PostgreSQLBackend(Backend):
    kind = "postgresql"
    serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

    def __init__(self, url: str, busy_timeout: float, *, read_only: bool = False):
        # psycopg 3 comes with gagent[postgresql]: a missing one is a ModuleNotFoundError
        # naming it, which the CLI turns into that advice (exit 14)
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.where = redact(url)
        try:
            self.conn = psycopg.connect(url, autocommit=True)
            self.conn.execute(f"SET lock_timeout = {int(busy_timeout * 1000)}")
            if read_only:  # the server itself then refuses any write of this session
                self.conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the inventory database {self.where}: {_one_line(exc)}"
            ) from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            cursor = self.conn.execute(sql.replace("?", "%s"), tuple(params))
            return cursor.fetchall() if cursor.description is not None else []
        except self._psycopg.Error as exc:
            raise StoreError(f"{self.where}: {_one_line(exc)}") from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])
        except self._psycopg.Error as exc:
            raise StoreError(f"{self.where}: {_one_line(exc)}") from None

    def begin_write(self) -> None:
        self.execute("BEGIN")
        self.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))

    def rollback(self) -> None:
        if self.conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


def _one_line(exc: BaseException) -> str:
    """libpq's messages run over several lines (a hint on the next): errors are one line."""
    return " ".join(str(exc).split())


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, userinfo = head.partition("//")
    return f"{scheme}//{userinfo.split(':', 1)[0]}:***@{tail}"


def open_backend(
    target: str | os.PathLike[str] | None, *, busy_timeout: float = 30.0, read_only: bool = False
) -> Backend:
    """A PostgreSQL URL (``postgresql://...``), a SQLite file path, or None (the default file).

    ``read_only``: nothing is created or changed (a missing SQLite file is :class:`NoInventory`).
    """
    if target is not None and is_postgresql(str(target)):
        return PostgreSQLBackend(str(target), busy_timeout, read_only=read_only)
    path = Path(target) if target is not None else default_db_path()
    return SQLiteBackend(path, busy_timeout, read_only=read_only)
