"""``dlg batch --executor ray``: a batch on a local Ray cluster, saving to a real
PostgreSQL server, as workers on several machines would."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

MODE = {"name": "pair", "inputs": {"topic": {"required": True}},
        "turns": [{"id": "a", "role": "A", "prompt": "TURN a {{ topic }}"},
                  {"id": "b", "role": "B", "prompt": "TURN b {{ topic }}"}]}




def test_a_batch_runs_on_ray_workers_and_saves_to_postgres(tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv("DLG_POSTGRES_URL", pg_url)
    monkeypatch.setenv("DLG_STORE", "postgres")
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(MODE))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"topic": f"t{i}"}) + "\n" for i in range(6)))
    runner = CliRunner()
    ran = runner.invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo",
                              "--executor", "ray", "-c", "2", "--id", "rb", "--json",
                              "--max-cost", "1"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.output[ran.output.index("{"):])
    assert summary["totals"]["statuses"] == {"completed": 6}
    assert summary["totals"]["turns"] == 12
    import os
    import socket

    workers = {i["worker"] for i in summary["items"]}
    assert all(w.startswith(socket.gethostname() + ":") for w in workers)
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # not in this process
    # the workers saved every dialogue to the one PostgreSQL store, with its budget
    saved = dlg.load_dialogue("rb-00004")
    assert saved.status == "completed" and saved.inputs == {"topic": "t4"}
    assert saved.metadata["budget"]["max_cost"] == 1
    assert not ray.is_initialized()  # the local cluster started for the batch is gone
    # the batch resumes as a whole from the store, on Ray again: nothing is run twice
    again = runner.invoke(cli, ["batch", "--resume", "rb", "--executor", "ray", "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output[again.output.index("{"):])
    assert all(i["skipped"] for i in data["items"])


def test_models_given_as_objects_cannot_go_to_ray_workers():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    with pytest.raises(dlg.DlgError, match="give models as specs"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model=FakeListChatModel(responses=["a"]),
                       executor="ray", store=None)


def test_a_literal_key_is_never_sent_to_workers():
    with pytest.raises(dlg.DlgError, match="holds a secret, which is never sent"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="openai:gpt-4o?api_key=sk-live-123456789",
                       executor="ray", store=None)
