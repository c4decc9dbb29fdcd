"""The default store: where it lives, what it copies in from the store it replaced, and
what its last save of a dialogue writes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import hypothesis
import pytest
from click.testing import CliRunner
from hypothesis import strategies as st

import dlg
from dlg import hookimpl
from dlg.cli import cli
from dlg.plugins.sqlite_store import SqliteStore

PAIR = {"name": "pair", "turns": [{"id": "a", "role": "A", "prompt": "first"},
                                  {"id": "b", "role": "B", "prompt": "second"}]}


def test_dialogues_of_the_older_diskcache_store_are_copied_in_once(monkeypatch):
    monkeypatch.setenv("DLG_STORE", "diskcache")
    old = dlg.run_sync(PAIR, model="echo")
    dlg.batch_sync(PAIR, [{}], model="echo", batch_id="oldbatch")
    dlg.Orchestrator().rate(old.id, "a", 7)
    learned = dlg.Orchestrator().routing_stats()
    assert learned
    monkeypatch.delenv("DLG_STORE")

    listing = CliRunner().invoke(cli, ["ls"], catch_exceptions=False)
    assert listing.exit_code == 0 and old.id in listing.output
    assert os.path.isfile(os.path.join(os.environ["DLG_DATA_DIR"], "dialogues.sqlite3"))
    copied = dlg.load_dialogue(old.id)
    assert copied.to_dict() == old.to_dict() | {"metrics": copied.to_dict()["metrics"]}
    store = SqliteStore()
    assert store.load_batch("oldbatch")["rows"] == [{}]
    assert dlg.Orchestrator().routing_stats() == learned
    # copied once: what is deleted here stays deleted, and the old folder is untouched
    assert store.delete(old.id)
    store.close()
    assert old.id not in CliRunner().invoke(cli, ["ls"], catch_exceptions=False).output
    monkeypatch.setenv("DLG_STORE", "diskcache")
    assert dlg.load_dialogue(old.id).status == "completed"


def test_path_is_a_folder_or_a_file(tmp_path):
    in_folder = SqliteStore(tmp_path)
    assert in_folder.path == tmp_path / "dialogues.sqlite3"
    as_file = SqliteStore(tmp_path / "sub" / "mine.db")
    assert as_file.path.is_file()
    in_folder.close()
    as_file.close()


def test_processes_creating_the_database_at_once_all_save(tmp_path):
    """Four processes open a database that does not exist yet, at the same moment:
    none fails with "database is locked", and all four dialogues are kept."""
    script = textwrap.dedent("""
        import sys
        from dlg.plugins.sqlite_store import SqliteStore
        store = SqliteStore(sys.argv[1])
        n = sys.argv[2]
        store.save({"id": "d" + n, "mode": "m", "mode_hash": "h", "status": "completed",
                    "created_at": "2026-11-30T00:00:0" + n + "Z",
                    "turns": [{"id": "a", "status": "completed", "response": n}]})
    """)
    path = str(tmp_path / "shared.sqlite3")
    procs = [subprocess.Popen([sys.executable, "-c", script, path, str(n)])
             for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = SqliteStore(path)
    assert [s["id"] for s in store.list()] == ["d3", "d2", "d1", "d0"]
    assert store.load("d2")["turns"][0]["response"] == "2"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_the_last_save_keeps_changes_made_after_a_turn_was_saved():
    """A plugin that changes a turn after the store saved it (in ``turn_finished``,
    after the saver) still has its change kept: the dialogue's last save writes every
    turn that changed since it was written, and only those."""
    written = []

    class Tagger:
        @hookimpl
        def turn_finished(self, dialogue, turn):
            turn.metadata = {**(turn.metadata or {}), "tagged": turn.id}

    pm = dlg.get_plugin_manager()
    pm.register(Tagger())
    store = SqliteStore()
    save_turns = store.save_turns

    def spy(header, turns):
        written.append([t["id"] for t in turns])
        save_turns(header, turns)

    store.save_turns = spy  # type: ignore[method-assign]
    d = dlg.run_sync(PAIR, model="echo", store=store)
    saved = dlg.load_dialogue(d.id)
    assert [t.metadata.get("tagged") for t in saved.turns] == ["a", "b"]
    assert written == [["a", "b"]]
    # when nothing changed after the turns were saved, the last save writes the header
    pm.unregister(name=pm.get_name(next(p for p in pm.get_plugins() if isinstance(p, Tagger))))
    written.clear()
    d = dlg.run_sync(PAIR, model="echo", store=store)
    assert written == [[]]
    assert dlg.load_dialogue(d.id).status == "completed"
    store.close()


def test_the_last_save_keeps_a_change_made_inside_a_turns_metadata():
    """A change made in place to a nested value of a turn's metadata after the turn was
    saved (here by the next turn's ``turn_finished``; a spawning turn's sub-dialogue
    entries are updated so) is kept by the last save, and so is one made in place
    inside the dialogue's own metadata."""

    class Nester:
        @hookimpl
        def turn_started(self, dialogue, turn):
            turn.metadata = {**(turn.metadata or {}), "nested": {"seen": []}}

        @hookimpl
        def turn_finished(self, dialogue, turn):
            for before in dialogue.turns:  # in place: the same dicts and lists
                if before is not turn and "nested" in (before.metadata or {}):
                    before.metadata["nested"]["seen"].append(turn.id)
            dialogue.metadata.setdefault("nested", {"turns": []})["turns"].append(turn.id)

    pm = dlg.get_plugin_manager()
    pm.register(Nester(), name="nester")
    try:
        store = SqliteStore()
        d = dlg.run_sync(PAIR, model="echo", store=store)
    finally:
        pm.unregister(name="nester")
    saved = dlg.load_dialogue(d.id)
    assert [t.metadata["nested"] for t in saved.turns] == [{"seen": ["b"]}, {"seen": []}]
    assert saved.metadata["nested"] == {"turns": ["a", "b"]}
    store.close()


def test_the_last_save_keeps_a_value_changed_from_none_to_nan_inside_a_turns_metadata(
        tmp_path):
    """orjson prints a NaN as null, as it prints None: the saver's print of a turn whose
    metadata went from None to NaN after its save was unchanged, and the last save
    skipped it (the diskcache store, which writes NaN, kept None)."""
    from dlg.plugins.diskcache_store import DiskcacheStore

    class Scorer:
        @hookimpl
        def turn_started(self, dialogue, turn):
            turn.metadata = {**(turn.metadata or {}), "score": None}

        @hookimpl
        def turn_finished(self, dialogue, turn):
            for before in dialogue.turns:  # in place, after that turn was saved
                if before is not turn and before.metadata:
                    before.metadata["score"] = float("nan")

    pm = dlg.get_plugin_manager()
    pm.register(Scorer(), name="scorer")
    store = DiskcacheStore(tmp_path)
    try:
        d = dlg.run_sync(PAIR, model="echo", store=store)
    finally:
        pm.unregister(name="scorer")
    scores = [t["metadata"]["score"] for t in store.load(d.id)["turns"]]
    assert scores[0] != scores[0] and scores[1] is None  # NaN, as in memory
    store.close()


def test_a_turn_saved_after_a_change_inside_the_dialogues_metadata_rewrites_the_header():
    """The dialogue's metadata changed in place between two turns (a nested value): the
    second turn's save writes the header too, so a kill then loses nothing."""

    class Marker:
        @hookimpl
        def turn_started(self, dialogue, turn):
            dialogue.metadata.setdefault("marks", {"at": []})["at"].append(turn.id)

    pm = dlg.get_plugin_manager()
    pm.register(Marker(), name="marker")
    store = SqliteStore()
    headers = []
    save_rows = store.save_rows

    def spy(dialogue_id, turns):
        headers.append(json.loads(store._connection().execute(
            "SELECT header FROM dlg_dialogues WHERE id = ?", (dialogue_id,)).fetchone()[0]))
        save_rows(dialogue_id, turns)

    store.save_rows = spy  # type: ignore[method-assign]
    try:
        d = dlg.run_sync(PAIR, model="echo", store=store)
    finally:
        pm.unregister(name="marker")
    assert d.metadata["marks"] == {"at": ["a", "b"]}
    assert headers == []  # each turn's save wrote the header: its metadata had changed
    store.close()


def test_a_lease_is_released_only_by_its_own_token(tmp_path):
    """Taking a free lease and letting one's own go are one statement each in the usual
    case; a token that is another's (a prefix of it, a wildcard, its upper case) lets
    nothing go, and a lease this object did not write (another dlg's JSON spacing) is
    still released by its token."""
    store = SqliteStore(tmp_path)
    mine = {"token": "ab12" * 8, "host": "h", "pid": 1, "expires": 0}
    assert store.acquire("d1", mine, lambda held: True) is None
    assert store.acquire("d1", {**mine, "token": "cd"}, lambda held: True) == mine
    for other in ("cd", "ab12", "%", "_" * 32, mine["token"].upper()):
        store.release("d1", other)
        assert store.leases(["d1"]) == {"d1": mine}, other
    store.release("d1", mine["token"])
    assert store.leases(["d1"]) == {}
    with store._transaction() as execute:  # as json.dumps writes it: spaces
        execute("INSERT INTO dlg_leases VALUES ('d2', ?)", (json.dumps(mine),))
    store.release("d2", mine["token"])
    assert store.leases(["d2"]) == {}
    store.close()


def test_a_database_made_before_the_turn_columns_is_upgraded(tmp_path):
    """Tables made by an earlier dlg (turn rows without their status, tokens and cost)
    get the columns, filled in from each turn's JSON; a damaged row stays listed."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE dlg_dialogues (id text PRIMARY KEY, header text NOT NULL, "
                 "summary text NOT NULL, created_at text NOT NULL DEFAULT '')")
    conn.execute("CREATE TABLE dlg_turns (dialogue_id text NOT NULL, turn_id text NOT "
                 "NULL, body text NOT NULL, PRIMARY KEY (dialogue_id, turn_id))")
    summary = {"id": "old", "mode": "m", "status": "completed", "turns": 2,
               "turns_completed": 2, "total_tokens": 9, "total_cost_usd": 0.5}
    header = {"id": "old", "mode": "m", "mode_hash": "h", "status": "completed",
              "turn_ids": ["a", "b"]}
    conn.execute("INSERT INTO dlg_dialogues VALUES ('old', ?, ?, '2026')",
                 (json.dumps(header), json.dumps(summary)))
    for turn_id, cost, tokens in (("a", 0.25, 4), ("b", 0.25, 5)):
        conn.execute("INSERT INTO dlg_turns VALUES ('old', ?, ?)", (turn_id, json.dumps(
            {"id": turn_id, "status": "completed", "cost_usd": cost,
             "usage": {"total": tokens}})))
    conn.execute("INSERT INTO dlg_turns VALUES ('old', 'zz', 'not json')")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    (row,) = store.list()
    assert (row["turns"], row["turns_completed"], row["total_tokens"],
            row["total_cost_usd"]) == (2, 2, 9, 0.5)
    assert [t["id"] for t in store.load("old")["turns"]] == ["a", "b"]
    with store._reading() as execute:  # the dialogue's status, from its summary
        assert execute("SELECT status FROM dlg_dialogues", ()).fetchall() == [("completed",)]
    store.close()
    assert SqliteStore(path).list() == [row]  # once: the second opening changes nothing


def test_batches_saved_before_their_header_columns_are_listed(tmp_path):
    """A batch table made by an earlier dlg (the record alone) gets the mode, creation
    time and row count columns, filled in from each record, so it is listed."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE dlg_batches (id text PRIMARY KEY, record text NOT NULL)")
    conn.execute("INSERT INTO dlg_batches VALUES ('old', ?)", (json.dumps(
        {"id": "old", "mode_name": "m", "created_at": 5.0, "rows": [{}, {}, {}]}),))
    conn.execute("INSERT INTO dlg_batches VALUES ('bad', 'not json')")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    headers = {h["id"]: h for h in store.batch_headers()}
    assert (headers["old"]["mode"], headers["old"]["created_at"],
            headers["old"]["rows"]) == ("m", 5.0, 3)
    assert headers["bad"]["rows"] == 0 and headers["bad"]["mode"] is None
    store.close()


def test_the_user_directories_are_platformdirs_own(monkeypatch, tmp_path):
    """``dlg.paths.user_dir`` reads the XDG variables itself on Linux (platformdirs is
    slow to import) and gives the same directories platformdirs would: the variable
    when it is an absolute path, else the default under the home directory."""
    import platformdirs

    from dlg.paths import data_dir, user_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DLG_DATA_DIR", raising=False)
    for settings in ({}, {"XDG_DATA_HOME": str(tmp_path / "d"), "XDG_CACHE_HOME": "rel",
                          "XDG_CONFIG_HOME": str(tmp_path / "c")}):
        for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        for kind in ("data", "cache", "config"):
            assert user_dir(kind) == Path(getattr(platformdirs, f"user_{kind}_dir")("dlg"))
        assert data_dir() == user_dir("data")


# -- the JSON the table stores write --------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text() | st.integers() | st.booleans(), inner, max_size=4),
    max_leaves=20)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(_json_values)
def test_saved_json_reads_back_as_json_would_write_it(value):
    # the quick encoder and json agree on everything JSON can hold: non-string keys
    # become strings, any text (NUL, lone surrogates, emoji) and any integer survive
    from dlg.records.tables import dumps

    assert json.loads(dumps(value)) == json.loads(json.dumps(value, ensure_ascii=False))


def test_what_the_quick_encoder_refuses_is_written_by_json():
    from dlg.records.tables import dumps

    deep: list = []
    for _ in range(400):  # more levels than orjson takes
        deep = [deep]
    for value in ({"t": "a\ud800b"}, 2 ** 70, deep):
        assert json.loads(dumps(value)) == value
    assert dumps({"cost": float("nan")}) in ('{"cost":null}', '{"cost": NaN}')


def test_synchronous_full_flushes_every_save(tmp_path, monkeypatch):
    """``normal`` by default; ``full`` (the argument or DLG_SQLITE_SYNCHRONOUS) makes
    SQLite flush each save to the disk, and dialogues run and read back as before."""
    def setting(store: SqliteStore) -> int:
        return store._connection().execute("PRAGMA synchronous").fetchone()[0]

    monkeypatch.delenv("DLG_SQLITE_SYNCHRONOUS", raising=False)
    assert setting(SqliteStore(tmp_path / "a")) == 1  # NORMAL
    assert setting(SqliteStore(tmp_path / "b", synchronous="FULL")) == 2
    monkeypatch.setenv("DLG_SQLITE_SYNCHRONOUS", "full")
    store = SqliteStore(tmp_path / "c")
    assert setting(store) == 2
    d = dlg.Orchestrator(model="echo", store=store).run_sync("debate", topic="x")
    assert store.load(d.id)["turns"][-1]["status"] == "completed"


def test_a_bad_synchronous_setting_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DLG_SQLITE_SYNCHRONOUS", "sometimes")
    result = CliRunner().invoke(cli, ["run", "debate", "-t", "x", "-m", "echo", "-q"])
    assert result.exit_code == 1, result.output
    assert "DLG_SQLITE_SYNCHRONOUS='sometimes' is not a setting of the sqlite store: " \
           "use normal or full" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(dlg.StoreError, match="synchronous='off'"):
        SqliteStore(tmp_path, synchronous="off")


def test_a_forked_child_opens_its_own_connection(tmp_path):
    """The store keeps the process id rather than asking the system at every save; a
    child made by ``os.fork`` still sees its own id and opens its own connection."""
    from dlg import process

    store = SqliteStore(tmp_path)
    parent = store._connection()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            ok = (process.pid() == os.getpid() and store._connection() is not parent
                  and store._pid == os.getpid())
            d = dlg.Orchestrator(model="echo", store=store).run_sync("debate", topic="x")
            os.write(write, f"{int(ok)} {d.id}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 200).decode().split()
    os.waitpid(child, 0)
    assert answer[0] == "1"
    assert store.load(answer[1])["status"] == "completed"
    assert store._connection() is parent


def test_tables_made_before_the_batch_row_columns_get_them_from_the_summaries(tmp_path):
    """``dlg_dialogues`` made before it kept the batch row each dialogue is gets the
    columns, filled in from the ids and summaries: a sub-dialogue saved then is no row."""
    from dlg.records.batch_headers import batch_headers

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE dlg_dialogues (id text PRIMARY KEY, header text NOT NULL, "
                 "summary text NOT NULL, created_at text NOT NULL DEFAULT '', status text)")
    for dialogue_id, parent in (("b-00000", None), ("b-00001", "b-00000")):
        summary = {"id": dialogue_id, "mode": "m", "status": "completed",
                   **({"parent": parent, "depth": 1} if parent else {})}
        conn.execute("INSERT INTO dlg_dialogues VALUES (?, '{}', ?, '2026', 'completed')",
                     (dialogue_id, json.dumps(summary)))
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    store.save_batch({"id": "b", "mode_name": "m", "created_at": 1.0, "rows": [{}, {}]})
    with store._reading() as execute:
        assert sorted(execute("SELECT id, batch, batch_row FROM dlg_dialogues",
                              ()).fetchall()) == [("b-00000", "b", 0), ("b-00001", None, -1)]
    (header,) = batch_headers(store)
    assert header["statuses"] == {"completed": 1}
    store.close()


def test_batch_rows_an_earlier_dlg_still_running_writes_are_counted_from_the_next_opening(
        tmp_path):
    """A dlg of the previous release still running a batch on a store this one upgraded
    writes its rows without their batch columns: the next opening of the store fills them
    in (they were never counted on the batch's page), and only theirs are read again."""
    from dlg.records.batch_headers import batch_headers

    path = tmp_path / "shared.sqlite3"
    store = SqliteStore(path)  # this dlg opened (and upgraded) the store
    store.save_batch({"id": "b", "mode_name": "m", "created_at": 1.0, "rows": [{}, {}]})
    dlg.run_sync(PAIR, model="echo", store=store)  # a dialogue of no batch
    old = sqlite3.connect(path)  # the earlier dlg's writer, as it upserts a dialogue
    for dialogue_id in ("b-00000", "b-00001"):
        summary = {"id": dialogue_id, "mode": "m", "status": "completed"}
        old.execute(
            "INSERT INTO dlg_dialogues (id, header, summary, created_at, status) VALUES "
            "(?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET header = excluded.header, "
            "summary = excluded.summary, status = excluded.status",
            (dialogue_id, json.dumps({"id": dialogue_id}), json.dumps(summary), "2026",
             "completed"))
    old.commit()
    old.close()
    store.close()
    store = SqliteStore(path)
    (header,) = batch_headers(store)
    assert header["statuses"] == {"completed": 2}
    with store._reading() as execute:  # none is left to be read again
        assert execute("SELECT COUNT(*) FROM dlg_dialogues WHERE batch_row IS NULL",
                       ()).fetchall() == [(0,)]
    store.close()
