"""A dialogue store on a PostgreSQL server: ``DLG_STORE=postgres`` with
``DLG_POSTGRES_URL=postgresql://user@host/db`` (or ``--store postgres``).

For dialogues run on several machines (``dlg batch --executor ray``) that save to one
place. Tables (``dlg_`` prefixed) are made on first use. A dialogue is a header row and a
row per turn; saving a turn writes that turn and the header in one transaction. Leases
and learned-routing statistics are read and written under a transaction-scoped advisory
lock, so workers on several machines never lose an update. Records are stored as JSON
text (``json`` columns would refuse some text a model may write, such as NUL).
Needs ``psycopg`` (``pip install 'dlg-orchestrator[postgres]'``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any

from dlg.hookspecs import hookimpl
from dlg.records.store import split_record, with_summary

SCHEMA = """
CREATE TABLE IF NOT EXISTS dlg_dialogues (
    id text PRIMARY KEY, header text NOT NULL, summary text NOT NULL,
    created_at text NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS dlg_turns (
    dialogue_id text NOT NULL, turn_id text NOT NULL, body text NOT NULL,
    PRIMARY KEY (dialogue_id, turn_id));
CREATE TABLE IF NOT EXISTS dlg_modes (hash text PRIMARY KEY, document text NOT NULL);
CREATE TABLE IF NOT EXISTS dlg_leases (dialogue_id text PRIMARY KEY, lease text NOT NULL);
CREATE TABLE IF NOT EXISTS dlg_quality (
    task text NOT NULL, model text NOT NULL, stats text NOT NULL,
    PRIMARY KEY (task, model));
CREATE TABLE IF NOT EXISTS dlg_batches (id text PRIMARY KEY, record text NOT NULL);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class PostgresStore:
    name = "postgres"

    def __init__(self, url: str | None = None, path: Any = None):
        import psycopg

        url = url or os.environ.get("DLG_POSTGRES_URL")
        if not url:
            raise ValueError("set DLG_POSTGRES_URL (postgresql://user@host:port/database) "
                             "to use the postgres store")
        self._conn = psycopg.connect(url, autocommit=True)
        self._lock = threading.Lock()  # one connection, used from worker threads too
        with self._lock, self._conn.transaction():
            # two workers starting at once must not race to create the tables
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('dlg_schema'))")
            self._conn.execute(SCHEMA)

    def _write(self, header: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        header = dict(header)
        mode_document = header.pop("mode_document", None)
        with self._lock, self._conn.transaction():
            if mode_document is not None:
                self._conn.execute(
                    "INSERT INTO dlg_modes (hash, document) VALUES (%s, %s) "
                    "ON CONFLICT (hash) DO NOTHING",
                    (header["mode_hash"], _dumps(mode_document)))
            self._conn.execute(
                "INSERT INTO dlg_dialogues (id, header, summary, created_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "header = EXCLUDED.header, summary = EXCLUDED.summary",
                (header["id"], _dumps(header), _dumps(header["summary"]),
                 str(header.get("created_at") or "")))
            for turn in turns:
                self._conn.execute(
                    "INSERT INTO dlg_turns (dialogue_id, turn_id, body) VALUES (%s, %s, %s) "
                    "ON CONFLICT (dialogue_id, turn_id) DO UPDATE SET body = EXCLUDED.body",
                    (header["id"], turn["id"], _dumps(turn)))

    def save(self, record: dict[str, Any]) -> None:
        """Save a whole dialogue record."""
        self._write(*split_record(record))

    def save_turn(self, header: dict[str, Any], turn: dict[str, Any] | None) -> None:
        self._write(with_summary(header), [turn] if turn is not None else [])

    def load(self, dialogue_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT header FROM dlg_dialogues WHERE id = %s",
                                     (dialogue_id,)).fetchone()
            if row is None:
                return None
            header = json.loads(row[0])
            bodies: dict[str, str] = dict(self._conn.execute(
                "SELECT turn_id, body FROM dlg_turns WHERE dialogue_id = %s",
                (dialogue_id,)).fetchall())
            mode = self._conn.execute("SELECT document FROM dlg_modes WHERE hash = %s",
                                      (header.get("mode_hash"),)).fetchone()
        turns = [json.loads(bodies[t]) for t in header.pop("turn_ids", []) if t in bodies]
        for key in ("summary", "turn_statuses"):
            header.pop(key, None)
        if mode is not None:
            header["mode_document"] = json.loads(mode[0])
        return {**header, "turns": turns}

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, summary FROM dlg_dialogues ORDER BY created_at DESC").fetchall()
        out = []
        for dialogue_id, text in rows:
            try:
                found = json.loads(text)
                if not isinstance(found, dict):
                    raise TypeError("the summary is not a mapping")
                out.append(found)
            except Exception as exc:  # one bad row must not hide the others
                out.append({"id": dialogue_id, "status": "unreadable",
                            "error": f"{type(exc).__name__}: {exc}", "mode": None,
                            "turns": 0, "turns_completed": 0})
        return out

    def delete(self, dialogue_id: str) -> bool:
        with self._lock, self._conn.transaction():
            gone = self._conn.execute("DELETE FROM dlg_dialogues WHERE id = %s",
                                      (dialogue_id,)).rowcount
            self._conn.execute("DELETE FROM dlg_turns WHERE dialogue_id = %s", (dialogue_id,))
            self._conn.execute("DELETE FROM dlg_leases WHERE dialogue_id = %s",
                               (dialogue_id,))
        return bool(gone)

    def save_batch(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO dlg_batches (id, record) VALUES (%s, %s) "
                "ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                (record["id"], _dumps(record)))

    def load_batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT record FROM dlg_batches WHERE id = %s",
                                     (batch_id,)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def acquire(self, dialogue_id: str, lease: dict[str, Any], is_live: Any
                ) -> dict[str, Any] | None:
        """Write ``lease`` unless another live one is there (returned); atomic across
        every process and machine using the database."""
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"lease:{dialogue_id}",))
            row = self._conn.execute("SELECT lease FROM dlg_leases WHERE dialogue_id = %s",
                                     (dialogue_id,)).fetchone()
            if row is not None:
                held = json.loads(row[0])
                if held.get("token") != lease["token"] and is_live(held):
                    return held
            self._conn.execute(
                "INSERT INTO dlg_leases (dialogue_id, lease) VALUES (%s, %s) "
                "ON CONFLICT (dialogue_id) DO UPDATE SET lease = EXCLUDED.lease",
                (dialogue_id, _dumps(lease)))
        return None

    def release(self, dialogue_id: str, token: str) -> None:
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"lease:{dialogue_id}",))
            row = self._conn.execute("SELECT lease FROM dlg_leases WHERE dialogue_id = %s",
                                     (dialogue_id,)).fetchone()
            if row is not None and json.loads(row[0]).get("token") == token:
                self._conn.execute("DELETE FROM dlg_leases WHERE dialogue_id = %s",
                                   (dialogue_id,))

    def update_quality(self, task: str, model: str, update: Any) -> dict[str, Any]:
        """Replace the (task, model) statistics by ``update(old or None)``, atomically
        across every worker using the database."""
        with self._lock, self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"quality:{task}\x1f{model}",))
            row = self._conn.execute(
                "SELECT stats FROM dlg_quality WHERE task = %s AND model = %s",
                (task, model)).fetchone()
            new = update(json.loads(row[0]) if row is not None else None)
            self._conn.execute(
                "INSERT INTO dlg_quality (task, model, stats) VALUES (%s, %s, %s) "
                "ON CONFLICT (task, model) DO UPDATE SET stats = EXCLUDED.stats",
                (task, model, _dumps(new)))
        return new

    def quality(self, task: str | None = None) -> dict[Any, Any]:
        with self._lock:
            if task is not None:
                rows = self._conn.execute(
                    "SELECT model, stats FROM dlg_quality WHERE task = %s", (task,)).fetchall()
                return {m: json.loads(s) for m, s in rows}
            rows = self._conn.execute("SELECT task, model, stats FROM dlg_quality").fetchall()
        return {(t, m): json.loads(s) for t, m, s in rows}

    def close(self) -> None:
        self._conn.close()

    def __del__(self) -> None:  # a store dropped without close(): let the server go
        conn = getattr(self, "_conn", None)
        if conn is not None and not conn.closed:
            with contextlib.suppress(Exception):  # the interpreter may be shutting down
                conn.close()


@hookimpl
def register_stores(register):
    register("postgres", PostgresStore)
