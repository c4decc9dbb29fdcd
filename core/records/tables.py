"""A base for stores that keep dialogues in SQL tables (the ``sqlite`` and ``postgres``
store plugins): what they share, written once.

A dialogue is a header row (the record without its turns, plus its ``summary`` for
``dlg ls``) and one row per turn, with the turn's status, tokens and cost beside its JSON
so ``list()`` sums them for a dialogue that has not ended. Saving after a turn writes that
turn's row, and the header only when the dialogue's own fields changed (``save_rows``),
in one transaction. Modes are
kept once per content hash. Leases and learned-routing statistics are read and written
inside one transaction, under a lock named by the row, so processes sharing the database
never take one dialogue twice or lose an update. Everything is kept as JSON text: any
text a model writes (NUL included) comes back as it was.

A subclass gives the connection: ``_transaction(*locks)`` (a context manager for one
write transaction holding the named locks, yielding ``execute(sql, params)``) and
``_reading()`` (the same for reads). SQL is written with ``?`` placeholders; a driver
that wants another style translates it in ``execute``.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, cast

from dlg.language.limits import is_text
from dlg.records.batch_headers import batch_header, batch_row
from dlg.records.store import RowWrites, split_record

__all__ = ["ADDED_COLUMNS", "INDEXES", "SCHEMA", "TableStore"]

SCHEMA = [
    # ``batch``, ``batch_row``: the batch and row a dialogue ``BATCH-NNNNN`` without a
    # parent would be (``_batch_row``), else null and -1: counted if the batch has that
    # row (a null row: written by an earlier dlg, filled in when the store is next opened)
    "CREATE TABLE IF NOT EXISTS dlg_dialogues (id text PRIMARY KEY, header text NOT NULL, "
    "summary text NOT NULL, created_at text NOT NULL DEFAULT '', status text, batch text, "
    "batch_row integer)",
    # the columns ``list()`` sums come before the turn's JSON: reading them then skips it
    "CREATE TABLE IF NOT EXISTS dlg_turns (dialogue_id text NOT NULL, turn_id text NOT NULL, "
    "status text, tokens integer, cost double precision, body text NOT NULL, "
    "PRIMARY KEY (dialogue_id, turn_id))",
    "CREATE TABLE IF NOT EXISTS dlg_modes (hash text PRIMARY KEY, document text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dlg_leases (dialogue_id text PRIMARY KEY, lease text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dlg_quality (task text NOT NULL, model text NOT NULL, "
    "stats text NOT NULL, PRIMARY KEY (task, model))",
    # a batch's mode, when it was made and its number of rows beside its record: listing
    # the batches (``batch_headers``) reads these, not every batch's rows
    "CREATE TABLE IF NOT EXISTS dlg_batches (id text PRIMARY KEY, record text NOT NULL, "
    "mode_name text, created_at double precision, row_count integer)",
]

_UPSERT_HEADER = (
    "INSERT INTO dlg_dialogues (id, header, summary, created_at, status, batch, batch_row) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET header = excluded.header, "
    "summary = excluded.summary, status = excluded.status, batch = excluded.batch, "
    "batch_row = excluded.batch_row")
_UPSERT_TURN = (
    "INSERT INTO dlg_turns (dialogue_id, turn_id, body, status, tokens, cost) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dialogue_id, turn_id) DO UPDATE SET "
    "body = excluded.body, status = excluded.status, tokens = excluded.tokens, "
    "cost = excluded.cost")
# columns added since the tables were first made (an earlier dlg's tables get them): the
# turn's status, tokens and cost, which ``list()`` sums, the dialogue's status, and the
# batch row it is
ADDED_COLUMNS = {"dlg_turns": (("status", "text"), ("tokens", "integer"),
                               ("cost", "double precision")),
                 "dlg_dialogues": (("status", "text"), ("batch", "text"),
                                   ("batch_row", "integer")),
                 "dlg_batches": (("mode_name", "text"), ("created_at", "double precision"),
                                 ("row_count", "integer"))}
# what counting a batch's rows reads (``batch_headers``): its dialogues' rows, statuses
# and ids, from the index alone (not the rows, which hold the records)
INDEXES = ["CREATE INDEX IF NOT EXISTS dlg_dialogues_batch ON dlg_dialogues "
           "(batch, batch_row, status, id)"]
# what ``list()`` reads: each summary, and for a dialogue that has not ended (its header,
# written again when it ends, was not rewritten after each turn) what its turn rows say:
# how many there are, how many completed, their tokens and cost
_SUMS = (
    "SELECT d.id, d.summary, t.done, t.tokens, t.cost, t.saved FROM dlg_dialogues d "
    "LEFT JOIN (SELECT dialogue_id, COUNT(*) AS saved, "
    "SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS done, "
    "SUM(tokens) AS tokens, SUM(cost) AS cost FROM dlg_turns WHERE dialogue_id IN ("
    "SELECT id FROM dlg_dialogues WHERE status IS NULL OR status IN ('running', 'pending')) "
    "GROUP BY dialogue_id) t ON t.dialogue_id = d.id ORDER BY d.created_at DESC")
# a batch's dialogues are BATCH-NNNNN, NNNNN one of its rows (0 to row_count - 1), without
# a parent: each dialogue's ``batch`` and ``batch_row``, written with it; a sub-dialogue,
# or any other id that merely looks like one of a batch's rows, is none of them
_OF_BATCH = ("FROM dlg_batches b JOIN dlg_dialogues d ON d.batch = b.id "
             "AND d.batch_row < b.row_count")
_BATCH_STATUSES = f"SELECT b.id, d.status, COUNT(*) {_OF_BATCH} GROUP BY b.id, d.status"
_BATCH_RUNNING = f"SELECT b.id, d.id {_OF_BATCH} WHERE d.status = 'running'"
# the turns of those dialogues, found by their key (CROSS JOIN: SQLite joins in this
# order, rather than read every turn and look its dialogue's row up)
_BATCH_TOTALS = ("SELECT b.id, SUM(t.tokens), SUM(t.cost) FROM dlg_batches b CROSS JOIN "
                 "dlg_dialogues d CROSS JOIN dlg_turns t WHERE d.batch = b.id AND "
                 "d.batch_row < b.row_count AND t.dialogue_id = d.id GROUP BY b.id")

Execute = Callable[[str, tuple[Any, ...]], Any]


_encode = json.JSONEncoder(ensure_ascii=False).encode  # one encoder: json.dumps makes one a call
_encode_ascii = json.JSONEncoder().encode
_fast: Callable[..., bytes] | None
try:  # installed with langsmith (langchain-core's dependency) wherever it has wheels
    from orjson import OPT_NON_STR_KEYS
    from orjson import dumps as _fast
except ImportError:  # pragma: no cover - a platform without orjson
    _fast = None


def dumps(value: Any) -> str:
    """``value`` as JSON text, as ``json`` writes it (keys that are not strings become
    strings). orjson writes the same in a tenth of the time (each saved turn is one
    encoding); what it refuses (text with lone surrogates, integers past 64 bits, more
    than 254 levels) goes to ``json``, which writes a lone surrogate as its ``\\udXXX``
    escape (UTF-8 cannot hold it; reading gives it back). The differences: a NaN or
    infinite number, which JSON cannot hold, is written as null (``json`` writes ``NaN``,
    which other JSON readers, PostgreSQL's included, refuse); datetimes, UUIDs, enums and
    dataclasses, which ``json`` refuses (the save failed), are written as orjson writes
    them (ISO text, text, their value, a mapping) and read back as such."""
    if _fast is not None:
        try:
            return _fast(value, option=OPT_NON_STR_KEYS).decode()
        except TypeError:
            pass
    text = _encode(value)
    return text if is_text(text) else _encode_ascii(value)  # a lone surrogate: escaped


def _facts(turn: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A turn's status, tokens and cost, for the columns ``list()`` sums."""
    usage = turn.get("usage")
    tokens = usage.get("total") if isinstance(usage, dict) else None
    cost = turn.get("cost_usd")
    return (turn.get("status") if isinstance(turn.get("status"), str) else None,
            tokens if type(tokens) is int else None,
            float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool)
            else None)


def _json_or_none(text: str) -> dict[str, Any] | None:
    """A JSON object kept in a row, or None for a damaged one (``load`` reports those)."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _batch_row(summary: dict[str, Any]) -> tuple[str | None, int]:
    """The batch and row a dialogue would be, from its summary: ``BATCH-NNNNN`` without
    a parent (``batch_row``); (None, -1) for any other (a sub-dialogue named so too)."""
    found = None if summary.get("parent") else batch_row(str(summary.get("id")))
    return found if found is not None else (None, -1)


def _batch_columns(record: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A batch record's mode name, creation time and number of rows, for its columns."""
    mode = record.get("mode_name") or record.get("mode")
    created = record.get("created_at")
    rows = record.get("rows")
    return (mode if isinstance(mode, str) else None,
            float(created) if isinstance(created, int | float)
            and not isinstance(created, bool) else None,
            len(rows) if isinstance(rows, builtins.list) else None)


def _unreadable(dialogue_id: str, exc: BaseException) -> dict[str, Any]:
    return {"id": dialogue_id, "status": "unreadable", "error": f"{type(exc).__name__}: {exc}",
            "mode": None, "turns": 0, "turns_completed": 0}


class TableStore(RowWrites):
    """The store operations, on tables reached through ``_transaction``/``_reading``."""

    def _transaction(self, *locks: str) -> AbstractContextManager[Execute]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Execute]:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        """Group operations into one transaction: all of them are written, or none (the
        saver claims a new dialogue and writes it in one)."""
        return self._transaction()

    # dialogues

    def _write(self, header: dict[str, Any], turns: list[dict[str, Any]],
               whole: bool = False) -> None:
        """Write the header and ``turns`` in one transaction; ``whole``: they are all the
        dialogue's turns, so rows of any other turn are dropped."""
        with self._transaction() as execute:
            if whole:  # before writing: a new dialogue has no rows to drop
                execute("DELETE FROM dlg_turns WHERE dialogue_id = ?", (header["id"],))
            self._write_header(execute, header)
            self._write_turns(execute, header["id"], turns)

    def _write_one(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement in a transaction of its own (inside ``transaction()``, part of
        that one). A store where a lone statement is a transaction already says so by
        overriding this."""
        with self._transaction() as execute:
            execute(sql, params)

    def save(self, record: dict[str, Any]) -> None:
        """Save a whole dialogue record (turns it no longer has are dropped)."""
        self._write(*split_record(record), whole=True)

    def save_rows(self, dialogue_id: str, turns: list[dict[str, Any]]) -> None:
        """Save turns of a dialogue whose header has not changed since it was written:
        ``list()`` counts completed turns, tokens and cost from the turn rows."""
        if len(turns) == 1:  # the usual case, a turn just finished: one statement
            turn = turns[0]
            self._write_one(_UPSERT_TURN, (dialogue_id, turn["id"], dumps(turn),
                                           *_facts(turn)))
            return
        with self._transaction() as execute:
            self._write_turns(execute, dialogue_id, turns)

    @staticmethod
    def _write_header(execute: Execute, header: dict[str, Any]) -> None:
        header = dict(header)
        mode_document = header.pop("mode_document", None)
        if mode_document is not None:  # stored once per mode version, not per save
            execute("INSERT INTO dlg_modes (hash, document) VALUES (?, ?) "
                    "ON CONFLICT (hash) DO NOTHING",
                    (header["mode_hash"], dumps(mode_document)))
        status = header.get("status")
        execute(_UPSERT_HEADER, (header["id"], dumps(header), dumps(header["summary"]),
                                 str(header.get("created_at") or ""),
                                 status if isinstance(status, str) else None,
                                 *_batch_row(header["summary"])))

    @staticmethod
    def _write_turns(execute: Execute, dialogue_id: str, turns: list[dict[str, Any]]
                     ) -> None:
        for turn in turns:
            execute(_UPSERT_TURN, (dialogue_id, turn["id"], dumps(turn), *_facts(turn)))

    def _upgrade(self, execute: Execute, columns: Callable[[str], set[str]]) -> None:
        """Tables made by an earlier dlg (``columns(table)``: the columns a table has): add
        the columns made since (``ADDED_COLUMNS``), filled in from the JSON kept; then the
        indexes on them (``INDEXES``)."""
        self._add_columns(execute, columns)
        for statement in INDEXES:
            execute(statement, ())
        # the dialogues an earlier dlg wrote since (one still running on this store writes
        # no batch columns): found from the index alone, and only theirs are read
        for (dialogue_id,) in execute("SELECT id FROM dlg_dialogues WHERE batch_row IS NULL",
                                      ()).fetchall():
            found = execute("SELECT summary FROM dlg_dialogues WHERE id = ?",
                            (dialogue_id,)).fetchone()
            summary = found[0] if found is not None else ""  # deleted meanwhile: none
            execute("UPDATE dlg_dialogues SET batch = ?, batch_row = ? WHERE id = ?",
                    (*_batch_row({**(_json_or_none(summary) or {}), "id": dialogue_id}),
                     dialogue_id))

    def _add_columns(self, execute: Execute, columns: Callable[[str], set[str]]) -> None:
        for table, added in ADDED_COLUMNS.items():
            have = columns(table)
            missing = [(name, kind) for name, kind in added if name not in have]
            if not missing:
                continue
            for name, kind in missing:
                execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}", ())
            if table == "dlg_turns":
                rows = execute("SELECT dialogue_id, turn_id, body FROM dlg_turns",
                               ()).fetchall()
                for dialogue_id, turn_id, body in rows:
                    found = _json_or_none(body)
                    execute("UPDATE dlg_turns SET status = ?, tokens = ?, cost = ? "
                            "WHERE dialogue_id = ? AND turn_id = ?",
                            (*(_facts(found) if found is not None else (None, None, None)),
                             dialogue_id, turn_id))
            elif table == "dlg_batches":
                for batch_id, text in execute("SELECT id, record FROM dlg_batches",
                                              ()).fetchall():
                    execute("UPDATE dlg_batches SET mode_name = ?, created_at = ?, "
                            "row_count = ? WHERE id = ?",
                            (*_batch_columns(_json_or_none(text) or {}), batch_id))
            else:
                for dialogue_id, summary in execute("SELECT id, summary FROM dlg_dialogues",
                                                    ()).fetchall():
                    found = _json_or_none(summary) or {}
                    status = found.get("status")
                    execute("UPDATE dlg_dialogues SET status = ?, batch = ?, batch_row = ? "
                            "WHERE id = ?", (status if isinstance(status, str) else None,
                                             *_batch_row({**found, "id": dialogue_id}),
                                             dialogue_id))

    def load(self, dialogue_id: str) -> dict[str, Any] | None:
        with self._reading() as execute:
            row = execute("SELECT header FROM dlg_dialogues WHERE id = ?",
                          (dialogue_id,)).fetchone()
            if row is None:
                return None
            header = json.loads(row[0])
            bodies: dict[str, str] = dict(execute(
                "SELECT turn_id, body FROM dlg_turns WHERE dialogue_id = ?",
                (dialogue_id,)).fetchall())
            mode = execute("SELECT document FROM dlg_modes WHERE hash = ?",
                           (header.get("mode_hash"),)).fetchone()
        turns = [json.loads(bodies[t]) for t in header.pop("turn_ids", []) if t in bodies]
        for key in ("summary", "turn_statuses", "turn_models"):
            header.pop(key, None)
        if mode is not None:
            header["mode_document"] = json.loads(mode[0])
        return {**header, "turns": turns}

    def headers(self, dialogue_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The saved headers (records without their turns: status, error, metrics...) of
        those of ``dialogue_ids`` that are saved, read in a few queries: a batch that
        resumes reports its ended dialogues from these instead of loading each."""
        out: dict[str, dict[str, Any]] = {}
        # a damaged one is loaded, and reported, alone
        for dialogue_id, found in self._json_by_id(
                "SELECT id, header FROM dlg_dialogues WHERE id IN ", dialogue_ids):
            if found is not None:
                out[dialogue_id] = found
        return out

    def list(self) -> list[dict[str, Any]]:
        """Summaries, newest first. For a dialogue still running (or killed while it
        ran), completed turns, tokens and cost are counted from its turn rows: a turn's
        save writes its row, not always the header. A row that cannot be read is listed
        as ``unreadable`` with the reason, and does not hide the others."""
        with self._reading() as execute:
            rows = execute(_SUMS, ()).fetchall()
        out = []
        for dialogue_id, text, done, tokens, cost, saved in rows:
            try:
                found = json.loads(text)
                if not isinstance(found, dict):
                    raise TypeError("the summary is not a mapping")
            except Exception as exc:  # one bad row must not hide the others
                out.append(_unreadable(dialogue_id, exc))
                continue
            if done is not None:  # the turns' rows are newer than the header
                # the turns loading it gives: a header may list turns it has no row of (a
                # loop's next round, as an earlier dlg saved it), which loading drops
                found["turns"] = min(int(saved), found.get("turns") or int(saved))
                found["turns_completed"] = int(done)
                found["total_tokens"] = int(tokens or 0)
                found["total_cost_usd"] = round(float(cost or 0.0), 12)
            out.append(found)
        return out

    def delete(self, dialogue_id: str) -> bool:
        with self._transaction() as execute:
            gone = execute("DELETE FROM dlg_dialogues WHERE id = ?", (dialogue_id,)).rowcount
            execute("DELETE FROM dlg_turns WHERE dialogue_id = ?", (dialogue_id,))
            execute("DELETE FROM dlg_leases WHERE dialogue_id = ?", (dialogue_id,))
        return bool(gone)

    # batches (`dlg batch`): the mode, rows and options, by the batch's id

    def save_batch(self, record: dict[str, Any]) -> None:
        with self._transaction() as execute:
            execute("INSERT INTO dlg_batches (id, record, mode_name, created_at, row_count) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "record = excluded.record, mode_name = excluded.mode_name, "
                    "created_at = excluded.created_at, row_count = excluded.row_count",
                    (record["id"], dumps(record), *_batch_columns(record)))

    def delete_batch(self, batch_id: str) -> bool:
        """Forget a batch's record (its dialogues are deleted one by one, before)."""
        with self._transaction() as execute:
            gone = execute("DELETE FROM dlg_batches WHERE id = ?", (batch_id,)).rowcount
        return bool(gone)

    def load_batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._reading() as execute:
            row = execute("SELECT record FROM dlg_batches WHERE id = ?", (batch_id,)).fetchone()
        return json.loads(row[0]) if row is not None else None

    def batch_headers(self) -> builtins.list[dict[str, Any]]:
        """Every batch's header (``dlg.records.batch_headers``), newest first, read in four
        queries: neither a batch's rows nor its dialogues are loaded."""
        with self._reading() as execute:
            heads = execute("SELECT id, mode_name, created_at, row_count FROM dlg_batches "
                            "ORDER BY created_at DESC", ()).fetchall()
            statuses = execute(_BATCH_STATUSES, ()).fetchall()
            running = execute(_BATCH_RUNNING, ()).fetchall()
            totals = {b: (t, c) for b, t, c in execute(_BATCH_TOTALS, ()).fetchall()}
        out = {batch_id: batch_header(batch_id, mode, created, rows)
               for batch_id, mode, created, rows in heads}
        for batch_id, status, count in statuses:
            counts = out[batch_id]["statuses"]
            counts[str(status)] = counts.get(str(status), 0) + int(count)
        for batch_id, dialogue_id in running:
            out[batch_id]["running"].append(dialogue_id)
        for batch_id, (tokens, cost) in totals.items():
            out[batch_id]["tokens"] = int(tokens or 0)
            out[batch_id]["cost_usd"] = round(float(cost or 0.0), 12)
        return builtins.list(out.values())

    # leases (see ``dlg.records.store.Lease``)

    def acquire(self, dialogue_id: str, lease: dict[str, Any],
                is_live: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """Write ``lease`` unless another live one is there (returned); atomic across
        every process using the database."""
        text = dumps(lease)
        # what ``release`` deletes in one statement (a transaction rolled back after
        # this leaves a text that is not there: it then finds the row as before)
        written = self._lease_texts()
        with self._transaction(f"lease:{dialogue_id}") as execute:
            if execute("INSERT INTO dlg_leases (dialogue_id, lease) VALUES (?, ?) "
                       "ON CONFLICT (dialogue_id) DO NOTHING",
                       (dialogue_id, text)).rowcount == 1:
                written[(dialogue_id, lease["token"])] = text
                return None  # none was held (a new dialogue): one statement
            row = execute("SELECT lease FROM dlg_leases WHERE dialogue_id = ?",
                          (dialogue_id,)).fetchone()
            if row is not None:
                held = cast(dict[str, Any], json.loads(row[0]))  # json: a lease written here
                if held.get("token") != lease["token"] and is_live(held):
                    return held
            execute("INSERT INTO dlg_leases (dialogue_id, lease) VALUES (?, ?) "
                    "ON CONFLICT (dialogue_id) DO UPDATE SET lease = excluded.lease",
                    (dialogue_id, text))
            written[(dialogue_id, lease["token"])] = text
        return None

    def _lease_texts(self) -> dict[tuple[str, Any], str]:
        """(dialogue id, token) -> the lease's text as this object last wrote it."""
        found: dict[tuple[str, Any], str] | None = self.__dict__.get("_lease_texts_")
        if found is None:
            found = self.__dict__["_lease_texts_"] = {}
        return found

    def leases(self, dialogue_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The leases held on those of ``dialogue_ids`` that have one, read only (``dlg
        ls`` tells a dialogue running elsewhere from one whose process died)."""
        return {dialogue_id: found for dialogue_id, found in self._json_by_id(
            "SELECT dialogue_id, lease FROM dlg_leases WHERE dialogue_id IN ", dialogue_ids)
            if isinstance(found, dict)}

    def _json_by_id(self, select: str, ids: Sequence[str]
                    ) -> builtins.list[tuple[str, Any]]:
        """(id, its JSON column read, None if damaged) for the rows of ``ids``, ``select``
        (``SELECT id, json ... WHERE id IN ``) asked 500 ids at a time."""
        out: builtins.list[tuple[str, Any]] = []
        with self._reading() as execute:
            for start in range(0, len(ids), 500):
                chunk = tuple(ids[start:start + 500])
                rows = execute(f"{select}({', '.join('?' * len(chunk))})", chunk).fetchall()
                out.extend((row_id, _json_or_none(text)) for row_id, text in rows)
        return out

    def release(self, dialogue_id: str, token: str) -> None:
        with self._transaction(f"lease:{dialogue_id}") as execute:
            # the usual case in one statement: the lease is still the text this store
            # object last wrote with that token; any other case (renewed or taken over
            # since by another process, written by another object) as below
            text = self._lease_texts().pop((dialogue_id, token), None)
            if text is not None and execute(
                    "DELETE FROM dlg_leases WHERE dialogue_id = ? AND lease = ?",
                    (dialogue_id, text)).rowcount:
                return
            row = execute("SELECT lease FROM dlg_leases WHERE dialogue_id = ?",
                          (dialogue_id,)).fetchone()
            if row is not None and json.loads(row[0]).get("token") == token:
                execute("DELETE FROM dlg_leases WHERE dialogue_id = ?", (dialogue_id,))

    # quality statistics for learning routers: one row per (task, model)

    def update_quality(self, task: str, model: str,
                       update: Callable[[dict[str, Any] | None], dict[str, Any]]
                       ) -> dict[str, Any]:
        """Replace the (task, model) statistics by ``update(old or None)``, atomically
        across every process using the database."""
        with self._transaction(f"quality:{task}\x1f{model}") as execute:
            row = execute("SELECT stats FROM dlg_quality WHERE task = ? AND model = ?",
                          (task, model)).fetchone()
            new = update(json.loads(row[0]) if row is not None else None)
            execute("INSERT INTO dlg_quality (task, model, stats) VALUES (?, ?, ?) "
                    "ON CONFLICT (task, model) DO UPDATE SET stats = excluded.stats",
                    (task, model, dumps(new)))
        return new

    def quality(self, task: str | None = None) -> dict[Any, Any]:
        """One task's statistics by model, or every (task, model) pair's."""
        with self._reading() as execute:
            if task is not None:
                rows = execute("SELECT model, stats FROM dlg_quality WHERE task = ?",
                               (task,)).fetchall()
                return {m: json.loads(s) for m, s in rows}
            rows = execute("SELECT task, model, stats FROM dlg_quality", ()).fetchall()
        return {(t, m): json.loads(s) for t, m, s in rows}

    # for moving a store's contents into another (``import_from``)

    def import_from(self, other: Any) -> int:
        """Copy the dialogues, learned statistics and batches of another store object
        (one with ``list``, ``load`` and ``quality``, and perhaps ``batches``); returns
        how many dialogues were copied. What this store already has is kept as it is."""
        copied = 0
        with self._reading() as execute:
            have = {r[0] for r in execute("SELECT id FROM dlg_dialogues", ()).fetchall()}
        for found in other.list():
            dialogue_id = found.get("id")
            if found.get("status") == "unreadable" or dialogue_id in have:
                continue
            record = other.load(dialogue_id)
            if record is not None:
                self.save(record)
                copied += 1
        for (task, model), stats in other.quality().items():
            def keep(old: dict[str, Any] | None, stats: dict[str, Any] = stats
                     ) -> dict[str, Any]:
                return old or stats

            self.update_quality(task, model, keep)
        for batch in getattr(other, "batches", list)():
            if self.load_batch(batch["id"]) is None:
                self.save_batch(batch)
        return copied
