"""The default dialogue store: one SQLite database in the user's data directory.

``DLG_DATA_DIR`` (or the ``path`` option: the database file, or a folder to keep
``dialogues.sqlite3`` in) moves it; the default is ``dialogues.sqlite3`` in the user data
dir (``~/.local/share/dlg`` on Linux). The tables are ``dlg.records.tables``'s, shared
with the ``postgres`` store. The database runs in WAL mode: each save is one transaction
that a killed process leaves either done or not done, and readers (``dlg ls`` in another
terminal) never wait for a writer. Writers in several processes take turns
(``BEGIN IMMEDIATE``, waiting up to a minute).

``synchronous`` (or ``DLG_SQLITE_SYNCHRONOUS``): ``normal`` (the default) survives any
crash of the process, but the machine's own crash or a power cut can undo the last
saves (the database stays whole); ``full`` flushes every save to the disk before the
next turn starts, so those survive too, at the cost of a disk flush per turn.

Dialogues saved by earlier versions in the ``diskcache`` store's folder
(``dialogues/`` beside the database) are copied in the first time the database is
opened there; the folder is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlg.plugin import SCHEMA, Execute, StoreError, TableStore, data_dir, hookimpl, process

if TYPE_CHECKING:  # imported when a store opens: every plugin module loads at start-up
    import sqlite3

FILENAME = "dialogues.sqlite3"
_IMPORTED = "imported:diskcache"
_META = "CREATE TABLE IF NOT EXISTS dlg_meta (key text PRIMARY KEY, value text NOT NULL)"


def _wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL. Switching takes an exclusive lock that SQLite does
    not wait for, so another process opening the database at the same moment is waited
    out here."""
    import sqlite3
    import time

    deadline = time.monotonic() + 60.0
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


SYNCHRONOUS = ("normal", "full")


def _synchronous(value: str | None) -> str:
    """The ``synchronous`` setting asked for: the argument, else the environment."""
    given = value if value is not None else os.environ.get("DLG_SQLITE_SYNCHRONOUS")
    chosen = (given or "normal").strip().lower()
    if chosen not in SYNCHRONOUS:
        where = "synchronous" if value is not None else "DLG_SQLITE_SYNCHRONOUS"
        raise StoreError(f"{where}={given!r} is not a setting of the sqlite store: "
                         f"use {' or '.join(SYNCHRONOUS)}")
    return chosen


class SqliteStore(TableStore):
    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 synchronous: str | None = None):
        self.synchronous = _synchronous(synchronous)
        default = path is None
        where = Path(path) if path is not None else data_dir()
        if default or where.is_dir():
            where = where / FILENAME
        where.parent.mkdir(parents=True, exist_ok=True)
        self.path = where
        # one connection, used from worker threads too; re-entered by the operations
        # grouped in one ``transaction()``
        self._lock = threading.RLock()
        self._pid = -1
        self._conn: sqlite3.Connection | None = None
        import sqlite3

        try:
            self._connection()
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"...
            from dlg.plugin import StoreError

            raise StoreError(f"cannot open the dialogue store 'sqlite' at {where}: "
                             f"{exc} (move the file away, or DLG_DATA_DIR or --store choose "
                             "another)") from None
        old = where.parent / "dialogues"
        if default and (old / "cache.db").is_file():
            self._import_diskcache(old)

    def _connection(self) -> sqlite3.Connection:
        # a connection must not cross a fork: a child process (a Ray or batch worker
        # started by fork) opens its own
        if self._conn is None or self._pid != process.pid():
            import sqlite3

            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                   check_same_thread=False)
            _wal(conn)
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            # in one write transaction: two connections creating the tables at once
            # would otherwise fail at once with "database is locked" (SQLite does not
            # wait for a lock a reader wants to upgrade)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in (*SCHEMA, _META):
                    conn.execute(statement)
                self._upgrade(conn.execute, lambda table: {
                    row[1] for row in conn.execute(f"PRAGMA table_info({table})")})
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a BEGIN that failed has nothing to undo
                    conn.execute("ROLLBACK")
                conn.close()
                raise
            self._conn, self._pid = conn, process.pid()
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, *locks: str) -> Iterator[Execute]:
        # BEGIN IMMEDIATE takes the database's write lock: it serialises every writer,
        # so the named locks need nothing more
        with self._lock:
            conn = self._connection()
            if conn.in_transaction:  # inside ``transaction()``: it commits
                yield conn.execute
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn.execute
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _write_one(self, sql: str, params: tuple[Any, ...]) -> None:
        # outside a transaction a write statement is one: it takes the write lock when
        # it starts, as BEGIN IMMEDIATE does, and commits when it ends
        with self._lock:
            self._connection().execute(sql, params)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Execute]:
        with self._lock:  # one snapshot for the reads of one operation
            conn = self._connection()
            if conn.in_transaction:
                yield conn.execute
                return
            conn.execute("BEGIN")
            try:
                yield conn.execute
            finally:
                conn.execute("COMMIT")

    def _import_diskcache(self, folder: Path) -> None:
        with self._reading() as execute:
            if execute("SELECT 1 FROM dlg_meta WHERE key = ?", (_IMPORTED,)).fetchone():
                return
        from dlg.plugins.diskcache_store import DiskcacheStore

        old = DiskcacheStore(folder)
        try:
            self.import_from(old)
        finally:
            old.close()
        with self._transaction() as execute:
            execute("INSERT INTO dlg_meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO NOTHING", (_IMPORTED, str(folder)))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == process.pid():
                self._conn.close()
            self._conn = None


@hookimpl
def register_stores(register):
    register("sqlite", SqliteStore)
