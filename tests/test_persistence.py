"""Saving after every turn; dlg ls/show/resume/export; the same from Python."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from click.testing import CliRunner

import dlg
from dlg import hookimpl
from dlg.cli import cli


def invoke(*args, **kw):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kw)


async def test_the_dialogue_is_saved_at_every_event():
    """What a crash would leave: the store holds every turn the moment it completes."""
    seen = []

    class Spy:
        @hookimpl
        def turn_started(self, dialogue, turn):
            saved = dlg.load_dialogue(dialogue.id)  # saved when it started
            seen.append((turn.id, saved.status, [t.status for t in saved.turns]))

    dlg.get_plugin_manager().register(Spy())
    d = await dlg.run("detective", topic="x", model="echo")
    # saved before its first turn runs, every turn pending
    assert seen[0] == ("hypotheses", "running", ["pending"] * len(d.turns))
    seen = [(turn_id, statuses) for turn_id, _, statuses in seen]
    # when each turn starts, every earlier turn is already saved as completed
    for i, (turn_id, statuses) in enumerate(seen[1:], 1):
        assert statuses[:i] == ["completed"] * i, (turn_id, statuses)
    saved = dlg.load_dialogue(d.id)
    assert saved.to_dict() == d.to_dict() | {"metrics": saved.to_dict()["metrics"]}
    assert saved.status == "completed"


def test_cli_ls_show_export():
    result = invoke("run", "panel", "-t", "Cars in cities", "-m", "echo", "-q")
    assert result.exit_code == 0, result.output
    (summary,) = dlg.list_dialogues()
    listing = invoke("ls").output.splitlines()
    assert listing[0].split() == ["id", "mode", "status", "turns", "tokens", "cost", "topic"]
    assert listing[1].startswith(f"{summary['id']}  panel           completed      4/4")
    assert listing[1].endswith("Cars in cities")
    shown = invoke("show", summary["id"][:15]).output
    lines = shown.splitlines()
    assert lines[0] == f"{summary['id']} · panel · completed"
    assert re.match(r" 1  technical\s+technologist\s+echo\s+completed\s+\d+\.\d\ds\s+\d+\s+\d+",
                    lines[4])
    assert re.search(r"^total: 4/4 turns · wall \d+\.\d\ds · model time", shown, re.M)
    assert "slowest turn: " in shown
    assert re.search(r"^event loop: longest block \d+ ms, \d+ blocks over 100 ms$", shown, re.M)
    data = json.loads(invoke("show", summary["id"], "--json").output)
    assert data["id"] == summary["id"] and len(data["turns"]) == 4


def test_resume_runs_only_what_is_missing(write_mode):
    path = write_mode("name: r\nparticipants: {p: null}\nturns:\n"
                      "  - {id: a, role: A, participant: p, prompt: a}\n"
                      "  - {id: b, role: B, participant: p, prompt: b}\n"
                      "  - {id: c, role: C, participant: p, prompt: c}\n")
    first = invoke("run", str(path), "-p", "p=echo?fail=always", "-q")
    assert first.exit_code == 1
    (saved,) = dlg.list_dialogues()
    record = dlg.load_dialogue(saved["id"])
    assert [t.status for t in record.turns] == ["failed", "pending", "pending"]
    # the failure was the model's: resume from Python with the participant rebound
    import anyio

    async def go():
        return await dlg.Orchestrator(models={"p": "echo"}).resume(saved["id"][:10])

    done = anyio.run(go)
    assert done.status == "completed" and done.id == saved["id"]
    assert [t.model for t in done.turns] == ["echo", "echo", "echo"]
    assert dlg.load_dialogue(saved["id"]).status == "completed"
    again = invoke("resume", saved["id"])
    assert again.stderr == f"dialogue {saved['id']} is already complete\n"


@pytest.mark.parametrize("turns", [1, 20])  # 20: a record written whole off the loop
async def test_a_resumed_dialogue_is_saved_running_before_its_first_resumed_turn(turns):
    """While its first resumed turn runs, another handle on the store (another process,
    `dlg ls`, the viewer) reads it as running, not as the failed dialogue it was."""
    import anyio
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from dlg.plugins.sqlite_store import SqliteStore

    mode = {"name": "many", "turns": [{"id": f"t{i}", "role": "A", "prompt": f"p{i}"}
                                      for i in range(turns)]}
    first = await dlg.run(mode, model="echo?fail=always")
    assert dlg.load_dialogue(first.id).status == "failed"
    called, release = anyio.Event(), anyio.Event()

    class Blocking(BaseChatModel):  # answers when the test lets it
        @property
        def _llm_type(self) -> str:
            return "blocking"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            raise NotImplementedError

        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            called.set()
            await release.wait()
            return ChatResult(generations=[ChatGeneration(message=AIMessage("done"))])

    done = []

    async def resume() -> None:
        done.append(await dlg.Orchestrator(model=Blocking()).resume(first.id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(resume)
        await called.wait()  # its first resumed turn is running, and blocked
        other = SqliteStore()  # a handle of its own on the same file
        seen = (other.load(first.id)["status"],
                [r["status"] for r in other.list() if r["id"] == first.id])
        release.set()
    assert seen == ("running", ["running"])
    assert done[0].status == "completed" and dlg.load_dialogue(first.id).status == "completed"


def test_resume_refuses_a_changed_mode_unless_forced(write_mode):
    path = write_mode("name: r\nturns:\n  - {id: a, role: A, prompt: one}\n"
                      "  - {id: b, role: B, prompt: two, timeout: 0.01}\n")
    invoke("run", str(path), "-m", "echo?latency=0.05", "-q")  # b times out: failed
    (saved,) = dlg.list_dialogues()
    path.write_text("name: r\nturns:\n  - {id: a, role: A, prompt: one}\n"
                    "  - {id: b, role: B, prompt: TWO}\n")
    refused = CliRunner().invoke(cli, ["resume", saved["id"]])
    assert refused.exit_code == 2
    assert re.fullmatch(
        rf"Error: mode 'r' has changed since dialogue {saved['id']} started \(content hash "
        r"[0-9a-f]{12} -> [0-9a-f]{12}\): pass --force to resume with the changed mode\n",
        refused.output)
    forced = invoke("resume", saved["id"], "--force", "-q")
    assert forced.exit_code == 0
    final = dlg.load_dialogue(saved["id"])
    assert final.status == "completed"
    assert final.turns[1].prompt.endswith("TWO")
    assert final.turns[0].prompt.endswith("one")  # kept, not re-run


def test_resume_continues_with_a_mode_given_when_its_own_is_not_where_it_was(tmp_path):
    # as on another machine: the mode's folder is elsewhere, and the copy saved with
    # the dialogue cannot find the template the mode includes
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "part.j2").write_text("PART {{ topic }}")
    text = ("name: r\ninputs: {topic: {}}\nturns:\n  - {id: a, role: A, prompt: one}\n"
            "  - {id: b, role: B, prompt: \"{% include 'part.j2' %}\", timeout: 0.01}\n")
    (folder / "r.yaml").write_text(text)
    invoke("run", str(folder / "r.yaml"), "--topic", "t", "-m", "echo?latency=0.05", "-q")
    (saved,) = dlg.list_dialogues()
    elsewhere = tmp_path / "elsewhere"
    folder.rename(elsewhere)
    lost = CliRunner().invoke(cli, ["resume", saved["id"], "-m", "echo"])
    assert lost.exit_code == 2 and "includes 'part.j2'" in lost.output
    resumed = invoke("resume", saved["id"], "-m", "echo", "-q",
                     "--mode", str(elsewhere / "r.yaml"))
    assert resumed.exit_code == 0, resumed.output
    final = dlg.load_dialogue(saved["id"])
    assert final.status == "completed" and final.turns[1].prompt.endswith("PART t")
    assert final.turns[0].model == "echo?latency=0.05"  # kept, not re-run
    # a mode given this way must be the same one, unless --force
    (elsewhere / "r.yaml").write_text(text.replace("one", "ONE"))
    with pytest.raises(dlg.DlgError, match=r"the mode given \('r', content hash [0-9a-f]{12}\) "
                       rf"is not the one dialogue {saved['id']} ran \('r', "):
        dlg.Orchestrator(model="echo").prepare_resume(saved["id"],
                                                      mode=elsewhere / "r.yaml")


def test_seed_sc5_3_resume_after_half_the_turns():
    """The seed's SC5.3: 5 of 10 turns done, the process gone; resume does the rest."""
    mode = {"name": "ten", "turns": [{"id": f"t{i}", "role": "R", "prompt": f"turn {i}",
                                      "on_error": "fail"} for i in range(10)]}
    import anyio

    stop_after = 5

    class Crash:
        count = 0

        @hookimpl
        def turn_finished(self, dialogue, turn):
            Crash.count += 1
            if Crash.count == stop_after:
                raise KeyboardInterrupt  # as abrupt as it gets inside the process

    pm = dlg.get_plugin_manager()
    plugin = Crash()
    pm.register(plugin)
    with pytest.raises(KeyboardInterrupt):
        dlg.run_sync(mode, model="echo", dialogue_id="ten-1")
    pm.unregister(plugin)
    assert dlg.load_dialogue("ten-1").turns_completed == 5
    resumed = anyio.run(lambda: dlg.resume("ten-1"))
    assert resumed.turns_completed == 10 and resumed.status == "completed"


def test_unknown_dialogue_id():
    result = CliRunner().invoke(cli, ["show", "nope"])
    assert result.exit_code == 2
    assert result.output == "Error: no saved dialogue 'nope' (`dlg ls` lists them)\n"


@pytest.mark.parametrize("ref", ["", None])
def test_an_empty_id_matches_no_dialogue(ref):
    """An empty prefix used to match every saved dialogue: with one saved, it loaded it
    (and None was a TypeError)."""
    dlg.run_sync("debate", topic="x", model="echo")
    with pytest.raises(dlg.DialogueNotFoundError, match="is not a dialogue id"):
        dlg.load_dialogue(ref)


def test_no_save_and_store_none():
    invoke("run", "detective", "-t", "x", "-m", "echo", "-q", "--no-save")
    dlg.run_sync("detective", topic="x", model="echo", store=None)
    assert dlg.list_dialogues() == []


def test_a_turns_row_and_a_records_metrics_keep_their_keys_in_order():
    """The rows a save writes are made without merged dicts and the metrics without the
    dataclass between (the saver's cost): the same keys, in the same order, with the
    optional ones (structured answer, round, time waited) last, and read back whole."""
    from dlg.records.record import Dialogue, TokenUsage, TurnRecord

    full = TurnRecord(id="t@2", index=1, role="R", phase="main", status="completed",
                      usage=TokenUsage(3, 4, cached=1), cost_usd=0.5, latency_seconds=0.25,
                      waited_seconds=1.23456, started_at=1.5, ended_at=2.25,
                      attempts=[{"error": "429"}], metadata={"k": {"n": 1}},
                      data={"a": [1]}, round=2, replaced=("m1",), requires=("t0",))
    row = full.to_dict()
    assert list(row)[-3:] == ["data", "round", "waited_seconds"]
    assert row["waited_seconds"] == 1.235 and row["started_at"].endswith(".500000Z")
    assert row["metadata"] == {"k": {"n": 1}} and row["metadata"] is not full.metadata
    assert TurnRecord.from_dict(row) == full.__class__(**{**_fields(full),
                                                          "waited_seconds": 1.235})
    plain = TurnRecord(id="t0", index=0, role="R", phase="main").to_dict()
    assert "data" not in plain and "round" not in plain and "waited_seconds" not in plain
    assert plain["attempts"] == [] and plain["metadata"] == {}
    d = Dialogue(id="d1", mode="m", mode_hash="h", inputs={}, turns=[full], started_at=1.0,
                 ended_at=3.0)
    metrics = d.to_dict()["metrics"]
    assert metrics == dataclasses.asdict(d.metrics)
    assert list(metrics) == [f.name for f in dataclasses.fields(d.metrics)]
    assert metrics["retries"] == 1 and metrics["substitutions"] == 1


def _fields(record):
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


async def test_a_store_that_does_nothing_gets_every_turn_at_once_without_a_thread():
    """What saving costs without a store's own work: each completed turn handed to the
    store as it completes, in order, on the event loop (no hop to a worker thread per
    save; the store is given open)."""
    import anyio.to_thread

    calls = []

    class Nothing:
        def save(self, record):
            calls.append(("save", [t["status"] for t in record["turns"]]))

        def save_turn(self, header, turn):
            calls.append(("save_turn", turn and turn["id"]))

        def save_turns(self, header, turns):
            calls.append(("save_turns", [t["id"] for t in turns]))

        def save_rows(self, dialogue_id, turns):
            calls.append(("save_rows", [t["id"] for t in turns]))

        def load(self, dialogue_id):
            return None

    hops = []
    real = anyio.to_thread.run_sync

    async def counted(fn, *args, **kw):
        hops.append(fn)
        return await real(fn, *args, **kw)

    store = Nothing()
    orchestrator = dlg.Orchestrator(model="echo", store=store)
    orchestrator.open_store()
    mode = dlg.load_mode({"name": "three", "turns": [
        {"id": f"t{i}", "role": "R", "prompt": f"turn {i}"} for i in range(3)]})
    anyio.to_thread.run_sync = counted
    try:
        d = await orchestrator.run(mode)
    finally:
        anyio.to_thread.run_sync = real
    assert d.status == "completed" and hops == []
    assert calls == [("save", ["pending"] * 3), ("save_rows", ["t0"]), ("save_rows", ["t1"]),
                     ("save_rows", ["t2"]), ("save_turns", [])]
