"""The stores that keep dialogues in tables (``dlg.records.tables``): the default
``sqlite`` store, and the ``postgres`` store against a real server (Debian's package) on
127.0.0.1. Every test runs on both."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import dlg

MODE = {"name": "pair", "inputs": {"topic": {"default": "x"}},
        "turns": [{"id": "a", "role": "A", "prompt": "TURN a {{ topic }}"},
                  {"id": "b", "role": "B", "prompt": "TURN b {{ topic }}"}]}




@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def pg(request, monkeypatch):
    """An open store of each kind, chosen as users choose it (``DLG_STORE``)."""
    monkeypatch.setenv("DLG_STORE", request.param)
    if request.param == "postgres":
        monkeypatch.setenv("DLG_POSTGRES_URL", request.getfixturevalue("pg_url"))
    from dlg.records.store import open_store

    store = open_store()
    yield store
    store.close()


def test_dialogues_are_saved_listed_resumed_and_deleted(pg):
    d = dlg.run_sync(MODE, model="echo", topic="trains")
    assert d.status == "completed"
    saved = dlg.load_dialogue(d.id)
    assert saved.turn("b").response == d.turn("b").response
    assert saved.metadata == d.metadata
    (row,) = [s for s in dlg.list_dialogues() if s["id"] == d.id]
    assert row["turns_completed"] == 2 and row["inputs"] == {"topic": "trains"}
    record = pg.load(d.id)
    assert record["mode_document"]["name"] == "pair"
    # a dialogue cut short after one turn resumes from the store
    cut = dlg.Orchestrator(model="echo")
    loaded, half = cut.start(MODE, {"topic": "boats"})
    half.turns[0].status, half.turns[0].response = "completed", "kept"
    half.started_at = 1.0
    pg.save({**half.to_dict(), "mode_document": loaded.to_dict()})
    import anyio

    resumed = anyio.run(lambda: dlg.resume(half.id, model="echo"))
    assert resumed.status == "completed" and resumed.turn("a").response == "kept"
    assert pg.delete(d.id) and pg.load(d.id) is None and not pg.delete(d.id)


def test_text_a_json_column_would_refuse_is_kept(pg):
    record = {"id": "nul", "mode": "m", "mode_hash": "h", "status": "completed",
              "created_at": "2026-11-30T00:00:00Z", "turns": [
                  {"id": "a", "status": "completed", "response": "a\x00b \ud7ff"}]}
    pg.save(record)
    assert pg.load("nul")["turns"][0]["response"] == "a\x00b \ud7ff"


def test_leases_are_exclusive_across_connections(pg):
    from dlg.records.store import open_store

    other = open_store()
    try:
        mine = {"token": "a", "host": "elsewhere", "pid": 1, "expires": 9e18}
        theirs = {"token": "b", "host": "elsewhere", "pid": 2, "expires": 9e18}
        assert pg.acquire("d1", mine, lambda held: True) is None
        assert other.acquire("d1", theirs, lambda held: True)["token"] == "a"
        other.release("d1", "b")  # not theirs to release
        assert other.acquire("d1", theirs, lambda held: True)["token"] == "a"
        pg.release("d1", "a")
        assert other.acquire("d1", theirs, lambda held: True) is None
    finally:
        other.close()


def test_batches_are_kept(pg):
    result = dlg.batch_sync(MODE, [{"topic": "a"}, {"topic": "b"}], model="echo",
                            batch_id="pgb")
    assert result.ok
    assert pg.load_batch("pgb")["rows"] == [{"topic": "a"}, {"topic": "b"}]
    again = dlg.batch_sync(MODE, [{"topic": "a"}, {"topic": "b"}], model="echo",
                           batch_id="pgb")
    assert all(i.skipped for i in again.items)


def test_learned_statistics_stay_exact_under_concurrent_workers(pg):
    """Four processes each record 25 scores for the same (task, model) at once: the
    store's statistics count all 100 (none lost to a race)."""
    script = textwrap.dedent("""
        from dlg.records.store import open_store
        from dlg.running.routing.learning import record_quality
        store = open_store()
        for i in range(25):
            record_quality(store, "Explain", "m1", float(i % 10))
    """)
    env = dict(os.environ)  # the store chosen, and where it is
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    stats = dlg.Orchestrator().routing_stats()
    (models,) = [m for t, m in stats.items() if t.lower() == "explain"]
    assert models["m1"].n == 100


def test_a_turn_is_saved_as_its_row_and_ls_counts_from_the_rows(pg):
    """While a dialogue's own fields stay as they were, the saver writes a finished turn's
    row alone (``save_rows``); ``list()`` counts completed turns, tokens and cost from the
    rows, so ``dlg ls`` is right about a dialogue that is running or was killed."""
    calls = []
    for name in ("save", "save_turn", "save_rows", "save_turns"):
        method = getattr(pg, name)

        def spy(*args, _name=name, _method=method):
            calls.append(_name)
            return _method(*args)

        setattr(pg, name, spy)
    three = {**MODE, "turns": [*MODE["turns"], {"id": "c", "role": "C", "prompt": "TURN c"}]}
    d = dlg.run_sync(three, model="echo", store=pg)
    # the whole record when it starts, then each turn's row, the header when it ends
    assert calls == ["save", "save_rows", "save_rows", "save_rows", "save_turns"]
    (row,) = [s for s in pg.list() if s["id"] == d.id]
    assert (row["turns"], row["turns_completed"], row["total_tokens"]) == (
        3, 3, d.metrics.total_tokens)

    # a dialogue killed after its first turn: the header says "running", nothing done
    record = {"id": "cut", "mode": "m", "mode_hash": "h", "status": "running",
              "created_at": "2026-11-30T00:00:00Z", "metrics": {"total_tokens": 0},
              "turns": [{"id": t, "status": "pending"} for t in "abc"]}
    pg.save(record)
    pg.save_rows("cut", [{"id": "a", "status": "completed", "cost_usd": 0.25,
                          "usage": {"prompt": 3, "completion": 4, "total": 7}}])
    (row,) = [s for s in pg.list() if s["id"] == "cut"]
    assert (row["status"], row["turns"], row["turns_completed"], row["total_tokens"],
            row["total_cost_usd"]) == ("running", 3, 1, 7, 0.25)
    assert [t["status"] for t in pg.load("cut")["turns"]] == ["completed", "pending",
                                                              "pending"]
    # a header that lists turns it has no row of (a loop's next round, as an earlier dlg
    # saved it, killed then): listed as loading it gives it, not as the header counts
    header = {**{k: v for k, v in record.items() if k != "turns"},
              "turn_ids": [*"abc", "b@2", "c@2"], "turn_statuses": ["completed", *["pending"] * 4]}
    pg.save_turn(header, None)
    (row,) = [s for s in pg.list() if s["id"] == "cut"]
    assert len(pg.load("cut")["turns"]) == 3
    assert (row["status"], row["turns"], row["turns_completed"]) == ("running", 3, 1)
    # a whole record drops the rows of turns it no longer has (a mode changed on resume)
    pg.save({**record, "turns": [{"id": "a", "status": "completed"}]})
    (row,) = [s for s in pg.list() if s["id"] == "cut"]
    assert (row["turns"], row["turns_completed"], row["total_tokens"]) == (1, 1, 0)
    # once a dialogue has ended, its last save wrote the header: that is what is listed
    # (its rows are not summed again: `dlg ls` stays quick on a store of many dialogues)
    pg.save({**record, "status": "completed", "metrics": {"total_tokens": 5},
             "turns": [{"id": "a", "status": "completed"}]})
    pg.save_rows("cut", [{"id": "a", "status": "failed", "usage": {"total": 99}}])
    (row,) = [s for s in pg.list() if s["id"] == "cut"]
    assert (row["status"], row["turns_completed"], row["total_tokens"]) == ("completed", 1, 5)


@pytest.mark.slow
def test_a_postgres_schema_made_before_the_turn_columns_is_upgraded(pg_url):
    """The ``postgres`` store finds the columns of its own schema's ``dlg_turns`` (not
    another schema's) and adds the ones an earlier dlg did not make, filled in."""
    import json
    import uuid

    import psycopg

    from dlg.plugins.postgres_store import PostgresStore

    PostgresStore(pg_url).close()  # the current tables, in the default schema
    schema = f"old_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute("CREATE TABLE dlg_dialogues (id text PRIMARY KEY, header text NOT NULL, "
                     "summary text NOT NULL, created_at text NOT NULL DEFAULT '')")
        conn.execute("CREATE TABLE dlg_turns (dialogue_id text NOT NULL, turn_id text NOT "
                     "NULL, body text NOT NULL, PRIMARY KEY (dialogue_id, turn_id))")
        conn.execute("INSERT INTO dlg_dialogues VALUES ('old', %s, %s, '2026')", (
            json.dumps({"id": "old", "mode": "m", "turn_ids": ["a"]}),
            json.dumps({"id": "old", "turns": 1, "turns_completed": 0})))
        conn.execute("INSERT INTO dlg_turns VALUES ('old', 'a', %s)", (json.dumps(
            {"id": "a", "status": "completed", "cost_usd": 0.5, "usage": {"total": 3}}),))
    store = PostgresStore(f"{pg_url}?options=-csearch_path%3D{schema}")
    try:
        (row,) = store.list()  # the summary says "running" (no status): counted from rows
        assert (row["turns_completed"], row["total_tokens"], row["total_cost_usd"]) == (
            1, 3, 0.5)
    finally:
        store.close()


class _Spy:
    """A store whose calls are counted by name."""

    def __init__(self, store):
        self._store, self.calls = store, []

    def __getattr__(self, name):
        value = getattr(self._store, name)
        if callable(value):
            def spy(*args, **kwargs):
                self.calls.append(name)
                return value(*args, **kwargs)
            return spy
        return value


def test_batches_are_listed_from_their_headers_without_their_rows(pg):
    """A batch of 5,000 rows with nothing saved yet is listed (counted pending) beside a
    run one, and listing reads neither batch's record (its rows) nor any dialogue."""
    from dlg.records.batch_headers import batch_headers

    result = dlg.batch_sync(MODE, [{"topic": "a"}, {"topic": "b"}], model="echo",
                            batch_id="small")
    assert result.ok
    pg.save_batch({"id": "big", "mode_name": "solo", "created_at": 2e9,
                   "rows": [{"topic": str(i)} for i in range(5000)]})
    spy = _Spy(pg)
    reads: list[str] = []
    conn = getattr(getattr(pg, "_store", None), "_conn", None)
    if hasattr(conn, "set_trace_callback"):  # sqlite: every statement it runs
        conn.set_trace_callback(reads.append)
    try:
        headers = batch_headers(spy)
    finally:
        if hasattr(conn, "set_trace_callback"):
            conn.set_trace_callback(None)
    headers = [h for h in headers if h["id"] in ("big", "small")]  # a shared server: others
    assert [h["id"] for h in headers] == ["big", "small"]  # newest first
    big, small = headers
    assert big["rows"] == 5000 and big["statuses"] == {} and big["mode"] == "solo"
    assert small["rows"] == 2 and small["statuses"] == {"completed": 2}
    assert small["tokens"] == sum(i.tokens for i in result.items) > 0
    assert small["running"] == [] and small["mode"] == MODE["name"]
    assert spy.calls == ["batch_headers"]
    assert not [r for r in reads if "record" in r or "header" in r or "body" in r]


def test_a_batch_counts_its_rows_not_dialogues_whose_ids_look_like_them(pg):
    """A batch's dialogues are BATCH-NNNNN for its rows, without a parent: a sub-dialogue
    saved as ``sb-00002`` (a row not run yet), an id past the batch's rows and one whose
    row is not a number are none of its rows, in the store's headers and the fallback's."""
    from dlg.records.batch_headers import _fallback, batch_headers

    result = dlg.batch_sync(MODE, [{"topic": "a"}, {"topic": "b"}, {"topic": "c"}],
                            model="echo", batch_id="sb")
    assert result.ok
    assert pg.delete("sb-00002")  # a row not run yet: pending
    record = pg.load("sb-00001")
    for fake, parent in (("sb-00002", {"id": "sb-00000", "depth": 1}), ("sb-00007", None),
                         ("sb-0000x", None), ("sb-0000\u0661", None)):
        metadata = {**record["metadata"], **({"parent": parent} if parent else {})}
        pg.save({**record, "id": fake, "metadata": metadata, "status": "running"})
    for headers in (batch_headers(pg), _fallback(pg)):
        (sb,) = [h for h in headers if h["id"] == "sb"]
        assert sb["rows"] == 3 and sb["statuses"] == {"completed": 2}
        assert sb["running"] == []
        assert sb["tokens"] == sum(i.tokens for i in result.items[:2]) > 0
