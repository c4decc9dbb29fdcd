"""A damaged, unwritable or full store: clear errors, the other dialogues still there."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

TWO = {"name": "two", "turns": [{"id": "a", "role": "A", "prompt": "hi"},
                                {"id": "b", "role": "B", "prompt": "again"}]}


def _damage(dialogue_id: str, header: str) -> None:
    """Overwrite a saved dialogue's header row behind dlg's back."""
    path = os.path.join(os.environ["DLG_DATA_DIR"], "dialogues.sqlite3")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE dlg_dialogues SET header = ?, summary = ? WHERE id = ?",
                   (header, header, dialogue_id))


def test_one_damaged_row_does_not_hide_the_others():
    good = dlg.run_sync(TWO, model="echo")
    bad = dlg.run_sync(TWO, model="echo")
    _damage(bad.id, "{not json")
    runner = CliRunner()
    listing = runner.invoke(cli, ["ls"], catch_exceptions=False)
    assert listing.exit_code == 0
    assert good.id in listing.output
    assert f"{bad.id}" in listing.output and "unreadable  (JSONDecodeError" in listing.output
    shown = runner.invoke(cli, ["show", bad.id])
    assert shown.exit_code == 1
    assert shown.output.startswith(f"Error: the 'sqlite' store could not read dialogue "
                                   f"{bad.id}: JSONDecodeError")
    assert runner.invoke(cli, ["show", good.id], catch_exceptions=False).exit_code == 0


def test_a_record_that_is_not_a_dialogue_is_a_clear_error():
    d = dlg.run_sync(TWO, model="echo")
    _damage(d.id, json.dumps({"id": d.id, "turn_ids": [], "summary": {}}))
    result = CliRunner().invoke(cli, ["resume", d.id])
    assert result.exit_code == 1
    assert f"Error: saved dialogue {d.id} is damaged and cannot be read: KeyError" in \
        result.output


def test_an_unusable_store_location_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DLG_DATA_DIR", str(blocker / "below"))
    result = CliRunner().invoke(cli, ["run", "debate", "--topic", "t", "--model", "echo"])
    assert result.exit_code == 1
    assert "Error: cannot open the dialogue store 'sqlite': " in result.output
    assert "Traceback" not in result.output
    assert "echo:" not in result.output  # said before the first turn, not after paying
    listing = CliRunner().invoke(cli, ["ls"])
    assert listing.exit_code == 1 and "cannot open the dialogue store" in listing.output


class _Counted:
    """A model that counts its calls."""

    dlg_label = "counted"

    def __init__(self):
        self.calls = 0

    async def ainvoke(self, messages, **kwargs):
        from langchain_core.messages import AIMessage

        self.calls += 1
        return AIMessage(content="answer")


@pytest.mark.parametrize("setting", ["DLG_DATA_DIR", "DLG_SQLITE_SYNCHRONOUS"])
def test_a_store_that_cannot_open_fails_the_run_before_any_model_is_paid(
        tmp_path, monkeypatch, setting):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    if setting == "DLG_DATA_DIR":
        monkeypatch.setenv("DLG_DATA_DIR", str(blocker / "below"))
    else:
        monkeypatch.setenv("DLG_SQLITE_SYNCHRONOUS", "sometimes")
    model = _Counted()
    with pytest.raises(dlg.StoreError, match=setting if setting != "DLG_DATA_DIR" else
                       "cannot open the dialogue store"):
        dlg.Orchestrator(model=model).run_sync(TWO)
    assert model.calls == 0
    # with the store open, the same orchestrator's dialogues are saved as before
    monkeypatch.delenv(setting)
    if setting == "DLG_DATA_DIR":
        monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    d = dlg.Orchestrator(model=model).run_sync(TWO)
    assert model.calls == 2 and dlg.load_dialogue(d.id).status == "completed"


def test_a_store_file_that_is_not_a_database_is_named(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dialogues.sqlite3").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    monkeypatch.setenv("DLG_DATA_DIR", str(data))
    ran = CliRunner().invoke(cli, ["ls"])
    assert ran.exit_code == 1 and "Traceback" not in ran.output
    assert ran.stderr.startswith(f"Error: cannot open the dialogue store 'sqlite' at "
                                 f"{data / 'dialogues.sqlite3'}: file is not a database")


@pytest.mark.parametrize(("url", "says"), [
    ("not-a-url", "at not-a-url: missing \"=\" after \"not-a-url\""),
    # nothing listens on port 1; the password is not shown
    ("postgresql://dlg:hunter2secret@127.0.0.1:1/dlg", "at postgresql://dlg:[REDACTED]@"),
])
def test_a_postgres_store_that_cannot_connect_says_where_and_which_setting(
        monkeypatch, url, says):
    pytest.importorskip("psycopg")
    monkeypatch.setenv("DLG_STORE", "postgres")
    monkeypatch.setenv("DLG_POSTGRES_URL", url)
    model = _Counted()
    with pytest.raises(dlg.StoreError) as caught:
        dlg.Orchestrator(model=model).run_sync(TWO)
    message = str(caught.value)
    assert message.startswith("cannot open the dialogue store 'postgres' " + says), message
    assert message.endswith("(DLG_POSTGRES_URL, or --store, chooses another)")
    assert "hunter2secret" not in message and model.calls == 0


@pytest.mark.slow
def test_a_full_disk_stops_the_run_cleanly_and_keeps_what_was_saved(tmp_path):
    """A real write limit (RLIMIT_FSIZE) on a real `dlg run` process."""
    first = dlg.run_sync(TWO, model="echo")
    script = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail instead
        limit = int(sys.argv[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        sys.argv = ["dlg", "run", "debate", "--topic", "t", "--model", "echo?words=4000",
                    "--quiet", "--no-stream"]
        from dlg.cli import main
        main()
    """)
    folder = os.environ["DLG_DATA_DIR"]
    biggest = max(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    limit = biggest + 100_000  # room to open the store, not for six long turns
    proc = subprocess.run([sys.executable, "-c", script, str(limit)], capture_output=True,
                          text=True, timeout=120, env=os.environ)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # where the limit bites (claiming the dialogue, its first or a later save) varies
    assert "Error: the 'sqlite' store could not " in proc.stderr
    assert "disk I/O error. The turns saved before are kept" in proc.stderr
    saved = {s["id"]: s for s in dlg.list_dialogues()}
    assert saved[first.id]["status"] == "completed"
    assert dlg.load_dialogue(first.id).turns[1].response


def test_an_unknown_store_is_bad_usage_with_a_suggestion():
    ran = CliRunner().invoke(cli, ["run", "debate", "-t", "x", "-m", "echo", "--store", "sqlit"])
    assert ran.exit_code == 2 and "Traceback" not in ran.output
    assert ran.stderr.endswith("Error: 'sqlit' is not a known store; did you mean 'sqlite'? "
                               "(installed: sqlite, diskcache, postgres)\n")
    assert dlg.list_dialogues() == []
