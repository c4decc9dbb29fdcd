"""A dialogue store on a PostgreSQL server: ``DLG_STORE=postgres`` with
``DLG_POSTGRES_URL=postgresql://user@host/db`` (or ``--store postgres``).

For dialogues run on several machines (``dlg batch --executor ray``) that save to one
place. The tables are ``dlg.records.tables``'s (shared with the ``sqlite`` store), made
on first use. Leases and learned-routing statistics are read and written under a
transaction-scoped advisory lock, so workers on several machines never lose an update.
Records are stored as JSON text (``json`` columns would refuse some text a model may
write, such as NUL).
Needs ``psycopg`` (``pip install 'dlg-orchestrator[postgres]'``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from typing import Any

from dlg.plugin import SCHEMA, Execute, TableStore, hookimpl


class PostgresStore(TableStore):
    name = "postgres"

    def __init__(self, url: str | None = None, path: Any = None):
        import psycopg

        url = url or os.environ.get("DLG_POSTGRES_URL")
        if not url:
            raise ValueError("set DLG_POSTGRES_URL (postgresql://user@host:port/database) "
                             "to use the postgres store")
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:  # a malformed URL, a server that refuses or is not there
            from dlg.plugin import StoreError, redact

            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(f"cannot open the dialogue store 'postgres' at {redact(url)}: "
                             f"{redact(reason)} (DLG_POSTGRES_URL, or --store, chooses "
                             "another)") from None
        # one connection, used from worker threads too; re-entered by the operations
        # grouped in one ``transaction()`` (psycopg nests them as savepoints)
        self._lock = threading.RLock()
        # two workers starting at once must not race to create the tables
        with self._transaction("dlg_schema") as execute:
            for statement in SCHEMA:
                execute(statement, ())
            self._upgrade(execute, lambda table: {row[0] for row in execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = current_schema()", (table,)).fetchall()})

    def _execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        return self._conn.execute(_placeholders(sql), params)

    @contextlib.contextmanager
    def _transaction(self, *locks: str) -> Iterator[Execute]:
        # transaction-scoped advisory locks: held until it commits or rolls back, by
        # whichever process on whichever machine took them first
        with self._lock, self._conn.transaction():
            for name in locks:
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
            yield self._execute

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Execute]:
        with self._lock, self._conn.transaction():  # one snapshot for one operation
            yield self._execute

    def close(self) -> None:
        self._conn.close()

    def __del__(self) -> None:  # a store dropped without close(): let the server go
        conn = getattr(self, "_conn", None)
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):  # the interpreter may be shutting down
                conn.close()


@functools.lru_cache(maxsize=64)
def _placeholders(sql: str) -> str:
    """The tables' SQL (``?`` placeholders) in psycopg's style (``%s``)."""
    return sql.replace("?", "%s")


@hookimpl
def register_stores(register):
    register("postgres", PostgresStore)
