"""``dlg batch`` and ``dlg.batch``: one mode on many inputs, resumable as a whole."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import anyio
import pytest
from click.testing import CliRunner
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import dlg
from dlg.cli import cli
from dlg.records.store import open_store
from tests.conftest import prompt_text

MODE = {"name": "pair", "inputs": {"topic": {"required": True}},
        "turns": [{"id": "a", "role": "A", "prompt": "TURN a {{ topic }}"},
                  {"id": "b", "role": "B", "prompt": "TURN b {{ topic }}"}]}
TOPICS = ["cars", "trains", "bikes", "boats", "planes"]
# its first turn fails (dividing by zero as its prompt renders) for a topic of 4 letters
FAILS_ON_BOOM = {**MODE, "turns": [
    {"id": "a", "role": "A", "prompt": "TURN a {{ topic }} {{ 1 // (topic | length - 4) }}"},
    MODE["turns"][1]]}


class Counting(FakeListChatModel):
    """Answers every call; fails the prompts that name a topic in ``broken``."""

    broken: list[str] = []
    seen: list[str] = []

    async def ainvoke(self, messages, *args, **kwargs):
        text = prompt_text(messages)
        self.seen.append(text.splitlines()[-1])
        if any(b in text for b in self.broken):
            raise ValueError("this topic breaks the model")
        return await super().ainvoke(messages, *args, **kwargs)


def test_a_batch_runs_every_row_concurrently_and_saves_each_dialogue():
    model = Counting(responses=["ok"], seen=[])
    result = dlg.batch_sync(MODE, [{"topic": t} for t in TOPICS], model=model,
                            concurrency=3, batch_id="b1")
    assert result.ok and result.id == "b1"
    assert [i.dialogue_id for i in result.items] == [f"b1-{n:05d}" for n in range(5)]
    assert {i.status for i in result.items} == {"completed"}
    assert result.totals["dialogues"] == 5 and result.totals["turns"] == 10
    assert result.totals["statuses"] == {"completed": 5}
    assert len(model.seen) == 10
    saved = dlg.load_dialogue("b1-00003")
    assert saved.inputs == {"topic": "boats"} and saved.status == "completed"


def test_a_batch_is_resumable_as_a_whole():
    broken = Counting(responses=["ok"], seen=[], broken=["trains", "TURN b planes"])
    first = anyio.run(lambda: dlg.Orchestrator(
        model=broken, retry=dlg.RetryPolicy(attempts=1)).batch(
            MODE, [{"topic": t} for t in TOPICS], batch_id="b2"))
    assert not first.ok
    assert [i.status for i in first.items] == ["completed", "failed", "completed",
                                               "completed", "failed"]
    assert "this topic breaks the model" in first.items[1].error
    fixed = Counting(responses=["ok"], seen=[])
    again = anyio.run(lambda: dlg.Orchestrator(model=fixed).batch(
        MODE, [{"topic": t} for t in TOPICS], batch_id="b2"))
    assert again.ok
    assert [i.skipped for i in again.items] == [True, False, True, True, False]
    # only what had not completed ran: trains (both turns) and planes' second turn
    assert sorted(fixed.seen) == ["TURN a trains", "TURN b planes", "TURN b trains"]


def test_a_resumed_batch_reports_its_ended_dialogues_without_loading_them(monkeypatch):
    from dlg.plugins.sqlite_store import SqliteStore

    broken = Counting(responses=["ok"], seen=[], broken=["trains"])
    first = anyio.run(lambda: dlg.Orchestrator(
        model=broken, retry=dlg.RetryPolicy(attempts=1)).batch(
            MODE, [{"topic": t} for t in TOPICS], batch_id="b5"))
    loaded: list[str] = []
    load = SqliteStore.load
    monkeypatch.setattr(SqliteStore, "load",
                        lambda self, ref: loaded.append(ref) or load(self, ref))
    again = anyio.run(lambda: dlg.Orchestrator(model=Counting(responses=["ok"], seen=[])).batch(
        MODE, [{"topic": t} for t in TOPICS], batch_id="b5"))
    assert again.ok and loaded == ["b5-00001"]  # only the one that had not ended
    for kept, before in zip(again.items, first.items, strict=True):
        if kept.skipped:  # its figures are the ones its run reported
            assert kept.to_dict() == {**before.to_dict(), "skipped": True}
    assert [i.skipped for i in again.items] == [True, False, True, True, True]


def test_a_batch_resumes_on_the_mode_it_was_given(tmp_path):
    # the saved dialogue names a mode file that is gone, and the copy saved with it
    # cannot find the template it includes: the batch's own mode, the same one, is used
    (tmp_path / "part.j2").write_text("TURN b {{ topic }}")
    path = tmp_path / "pair.json"
    path.write_text(json.dumps({**MODE, "turns": [
        MODE["turns"][0], {"id": "b", "role": "B", "prompt": "{% include 'part.j2' %}"}]}))
    mode = dlg.load_mode(path)
    broken = Counting(responses=["ok"], seen=[], broken=["TURN b trains"])
    rows = [{"topic": "cars"}, {"topic": "trains"}]
    first = anyio.run(lambda: dlg.Orchestrator(
        model=broken, retry=dlg.RetryPolicy(attempts=1)).batch(mode, rows, batch_id="b3"))
    assert [i.status for i in first.items] == ["completed", "failed"]
    path.rename(tmp_path / "moved.json")
    fixed = Counting(responses=["ok"], seen=[])
    again = anyio.run(lambda: dlg.Orchestrator(model=fixed).batch(mode, rows, batch_id="b3"))
    assert again.ok, [i.error for i in again.items]
    assert fixed.seen == ["TURN b trains"]


@pytest.mark.parametrize(("text", "where", "says"), [
    ('topic\n"cars, fast\n', 2, "unexpected end of data"),  # a quote left open
    ('topic\ncars\nvans\n"bus"es\nbikes\n', 4, "',' expected after '\"'"),
    ("topic\n" + "x" * 200_000 + "\n", 2, "a .jsonl file holds inputs of any length"),
])
def test_a_broken_csv_file_is_a_clear_error_naming_its_line(tmp_path, text, where, says):
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(MODE))
    rows = tmp_path / "rows.csv"
    rows.write_text(text)
    ran = CliRunner().invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo"])
    assert ran.exit_code == 2, ran.output
    assert f"{rows}:{where}: not valid CSV" in ran.output and says in ran.output
    assert ran.exception is None or isinstance(ran.exception, SystemExit)


@pytest.mark.parametrize(("line", "says"), [
    ('{"topic": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"topic": ' + "[" * 100 + "]" * 100 + "}", "nested more than 64 levels deep"),
    ('{"topic": ' + "7" * 5000 + "}", "not a JSON object"),
])
def test_a_hostile_jsonl_line_is_a_clear_error_naming_its_line(tmp_path, line, says):
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(MODE))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "fine"}\n' + line + "\n")
    ran = CliRunner().invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo"])
    assert ran.exit_code == 2, ran.output
    assert f"{rows}:2: " in ran.output and says in ran.output
    assert ran.exception is None or isinstance(ran.exception, SystemExit)


def test_rows_that_do_not_fit_the_modes_inputs_are_refused_before_anything_runs():
    """A bad row failed alone after the others ran, and the batch then advised
    `--resume`, which failed the same way with the same advice."""
    model = Counting(responses=["ok"], seen=[])
    rows = [{"topic": "x"}, {"topik": "y"}, {}, {"topic": "z", "n": "many"}]
    with pytest.raises(dlg.InputError) as info:
        dlg.batch_sync({**MODE, "inputs": {**MODE["inputs"], "n": {"type": "integer"}}},
                       rows, model=model, store=None)
    assert str(info.value) == (
        "the inputs do not fit mode 'pair' (nothing ran):\n"
        "  'topik' (row 2 of 4) is not one of its inputs\n"
        "  'topic', which it needs, is missing from rows 2 and 3 of 4\n"
        "  row 4: input 'n' of mode 'pair' must be an integer, got 'many'\n"
        "  mode 'pair' reads: topic (required), n (an integer)\n"
        "  hint: is 'topik' meant to be 'topic'?")
    assert model.seen == []


def test_a_batch_with_a_wrong_column_says_so_and_never_advises_resume(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("subject\ncars\ntrains\n")
    ran = CliRunner().invoke(cli, ["batch", "debate", "--inputs", str(rows), "-m", "echo",
                                   "--id", "wrong"], catch_exceptions=False)
    assert ran.exit_code == 2
    assert ran.output == (
        "Error: the inputs do not fit mode 'debate' (nothing ran):\n"
        "  'subject' (every row) is not one of its inputs\n"
        "  'topic', which it needs, is missing from every row\n"
        "  mode 'debate' reads: topic (required: The motion under debate)\n"
        "  hint: is 'subject' meant to be 'topic'?\n")
    again = CliRunner().invoke(cli, ["batch", "--resume", "wrong"], catch_exceptions=False)
    assert again.exit_code == 2
    assert "--resume" not in again.output  # nothing was saved to resume


@pytest.mark.parametrize(("rows", "says"), [
    ([{"topic": "a"}, "b"], "row 1 of the inputs is str: each row is a mapping of input "
                            "names to values"),
    ([{1: "x"}], "row 0 of the inputs: input names are text, not int (1)"),
    ([{"topic": object()}], "row 0 of the inputs: 'topic' is object, which a batch cannot "
                            "save: give text, a number"),
    ([{"topic": "x"}, {"topic": float("nan")}], "row 1 of the inputs: $.topic: nan is not a "
                                                "finite number"),
])
def test_rows_given_from_python_are_checked_before_anything_runs(rows, says):
    """They used to fail as a TypeError, or as a store error about saving the batch."""
    model = Counting(responses=["ok"], seen=[])
    with pytest.raises(dlg.InputError) as caught:
        dlg.batch_sync(MODE, rows, model=model)
    assert str(caught.value).startswith(says)
    assert model.seen == []


def test_a_model_that_cannot_run_fails_the_batch_before_any_row(tmp_path):
    """It used to fail every row with the same error, one line of the summary each."""
    with pytest.raises(dlg.ModelError, match=r"unknown echo option\(s\) \['nope'\]"):
        dlg.batch_sync(MODE, [{"topic": t} for t in TOPICS], model="echo?nope=1")
    assert dlg.list_dialogues() == []
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "a"}\n{"topic": "b"}\n')
    ran = CliRunner().invoke(cli, ["batch", "debate", "--inputs", str(rows), "-m", "echo?nope=1"])
    assert ran.exit_code == 2 and ran.output.count("unknown echo option") == 1


def test_the_cli_reads_jsonl_and_csv_prints_a_summary_and_resumes(tmp_path):
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(MODE))
    rows = tmp_path / "rows.csv"
    rows.write_text("topic\ncars\n\"trains, fast\"\n")
    runner = CliRunner()
    ran = runner.invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo",
                              "--id", "cb"])
    assert ran.exit_code == 0, ran.output
    assert "cb-00001" in ran.output and "trains, fast" in ran.output
    assert "total: 2 dialogues (2 completed) · 4 turns" in ran.output
    assert "[2/2] cb-0000" in ran.output  # progress, one line per dialogue
    again = runner.invoke(cli, ["batch", "--resume", "cb", "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output[again.output.index("{"):])
    assert data["totals"]["statuses"] == {"completed": 2}
    assert all(i["skipped"] for i in data["items"])
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"topic": "a"}\nnot json\n')
    bad = runner.invoke(cli, ["batch", str(mode), "--inputs", str(jsonl), "-m", "echo"])
    assert bad.exit_code != 0 and f"{jsonl}:2: not a JSON object" in bad.output
    assert "Traceback" not in bad.output
    missing = runner.invoke(cli, ["batch", "--resume", "nope"])
    assert missing.exit_code == 2 and "no saved batch 'nope'" in missing.output


def test_a_failed_batch_exits_non_zero_and_says_how_to_continue(tmp_path):
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(FAILS_ON_BOOM))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "a"}\n{"topic": "boom"}\n')
    ran = CliRunner().invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo",
                                   "--id", "fb", "-q"])
    assert ran.exit_code == 1
    assert "1 of 2 dialogues did not end; `dlg batch --resume fb` continues them" in ran.output


def test_an_unknown_executor_is_a_clear_error():
    with pytest.raises(dlg.DlgError, match="'nowhere' is not a known executor"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="echo", executor="nowhere",
                       store=None)


def test_hook_register_executors():
    from dlg import hookimpl
    from dlg.plugin_manager import build_plugin_manager
    from dlg.running.batches.run import LocalExecutor

    ran = []

    class Recording(LocalExecutor):
        async def __call__(self, mode, items, **kwargs):
            ran.append([i.dialogue_id for i in items])
            await super().__call__(mode, items, **kwargs)

    class Plugin:
        @hookimpl
        def register_executors(self, register):
            register("recording", Recording)

    pm = build_plugin_manager()
    pm.register(Plugin(), name="recording")
    result = anyio.run(lambda: dlg.Orchestrator(model="echo", store=None,
                                                plugin_manager=pm).batch(
        MODE, [{"topic": "x"}, {"topic": "y"}], batch_id="rx", executor="recording"))
    assert result.ok and ran == [["rx-00000", "rx-00001"]]


def test_the_cli_puts_what_is_loaded_out_of_the_collectors_way(monkeypatch):
    """``dlg batch`` freezes the objects loaded before its dialogues start (full
    collections then walk the dialogues' objects only); ``DLG_GC_FREEZE=0`` turns it
    off."""
    import gc

    from dlg.cli.collector import freeze_heap as _freeze_heap

    assert gc.get_freeze_count() == 0
    monkeypatch.setenv("DLG_GC_FREEZE", "0")
    _freeze_heap()
    assert gc.get_freeze_count() == 0
    monkeypatch.setenv("DLG_GC_FREEZE", "1")
    try:
        _freeze_heap()
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_the_cli_starts_a_batch_with_the_collector_held_and_its_models_made(
        tmp_path, monkeypatch):
    """``dlg batch`` holds the collector off while it starts up, makes its models (the
    provider's package imported) before it freezes what it loaded, collects nothing
    before the freeze, and turns collections on again; also when it fails first."""
    import gc

    from dlg.models.pool import ModelPool

    seen: list[str] = []
    monkeypatch.setenv("DLG_GC_FREEZE", "1")
    monkeypatch.setattr(gc, "isenabled", lambda: True)
    for name in ("disable", "enable", "freeze", "collect"):
        monkeypatch.setattr(gc, name, lambda *a, name=name: seen.append(name))
    made = ModelPool.get

    def get(self, spec):
        seen.append(f"model {spec}")
        return made(self, spec)

    monkeypatch.setattr(ModelPool, "get", get)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "a"}\n')
    (tmp_path / "pair.json").write_text(json.dumps(MODE))
    ran = CliRunner().invoke(cli, ["batch", str(tmp_path / "pair.json"), "--inputs",
                                   str(rows), "-m", "echo", "-q"])
    assert ran.exit_code == 0, ran.output
    assert seen[:4] == ["disable", "model echo", "freeze", "enable"]
    assert "collect" not in seen
    seen.clear()
    bad = CliRunner().invoke(cli, ["batch", str(tmp_path / "pair.json"), "--inputs",
                                   str(rows), "-m", "nosuch:model", "-q"])
    assert bad.exit_code != 0 and "'nosuch:model' is not a known model" in bad.output
    assert seen == ["disable", "enable"]


# -- a batch's max total cost -----------------------------------------------------------

PRICED = {**MODE, "settings": {"max_tokens": 20}}  # echo: about $0.02 a dialogue


@pytest.fixture
def priced_echo(tmp_path, monkeypatch):
    """The echo model at $1,000 a million tokens (it reports its usage in words)."""
    registry = tmp_path / "prices.yaml"
    registry.write_text("models:\n  echo:\n    price: {input: 1000, output: 1000}\n")
    monkeypatch.setenv("DLG_REGISTRY", str(registry))


def _spent(batch_id: str, rows: int) -> float:
    """What the batch's dialogues spent in all, as saved."""
    total = 0.0
    for i in range(rows):
        with contextlib.suppress(dlg.DialogueNotFoundError):
            total += dlg.load_dialogue(f"{batch_id}-{i:05d}").total_cost_usd
    return total


def test_a_batch_never_spends_past_its_max_total_cost_and_resumes_within_it(
        priced_echo, tmp_path):
    rows = [{"topic": f"t{i}"} for i in range(40)]
    first = dlg.batch_sync(PRICED, rows, model="echo", concurrency=4, batch_id="tc",
                           max_total_cost=0.5)
    done = first.totals["statuses"].get("completed", 0)
    assert 10 <= done < 40 and not first.ok  # it ran out part-way
    assert first.totals["max_total_cost"] == 0.5
    assert _spent("tc", 40) == pytest.approx(first.totals["cost_usd"])
    assert first.totals["cost_usd"] <= 0.5 + 1e-9
    stopped = [i for i in first.items if i.status == "cost_limited"]
    assert stopped and all("the batch's $0.5 max total cost" in i.error for i in stopped)
    assert sum(i.spent_usd for i in first.items) == pytest.approx(first.totals["cost_usd"])
    shown = CliRunner().invoke(cli, ["show", done_id := next(
        i.dialogue_id for i in first.items if i.status == "completed")])
    assert "within the batch's $0.5 max total cost)" in shown.output, shown.output
    assert dlg.load_dialogue(done_id).export("markdown").count("within the batch's") == 1
    # again with the same limit: what the first run spent counts, so little more is
    again = dlg.batch_sync(PRICED, rows, model="echo", concurrency=4, batch_id="tc",
                           max_total_cost=0.5)
    assert _spent("tc", 40) <= 0.5 + 1e-9
    assert sum(i.spent_usd for i in again.items) <= 0.5 - first.totals["cost_usd"] + 1e-9
    # from the CLI, with more to spend: the limit is kept with the batch unless given
    runner = CliRunner()
    kept = runner.invoke(cli, ["batch", "--resume", "tc", "--json", "-q"])
    assert kept.exit_code == 1
    assert json.loads(kept.output[kept.output.index("{"):kept.output.rindex("}") + 1]
                      )["totals"]["max_total_cost"] == 0.5
    more = runner.invoke(cli, ["batch", "--resume", "tc", "--max-total-cost", "2"])
    assert more.exit_code == 0, more.output
    last_line = [line for line in more.output.splitlines() if line.startswith("[40/40]")]
    spent_now = 0.8 - first.totals["cost_usd"] - sum(i.spent_usd for i in again.items)
    assert last_line[0].endswith(f"this run ${spent_now:.4f} of $2")  # the progress lines
    assert "max total cost $2: $0.80000 spent" in more.output
    assert _spent("tc", 40) == pytest.approx(0.8)  # 40 dialogues, each paid for once
    last = runner.invoke(cli, ["batch", "--resume", "tc", "--json", "-q"])
    assert last.exit_code == 0  # the raised limit is the one kept
    assert json.loads(last.output)["totals"]["max_total_cost"] == 2


def test_a_dialogue_of_a_batch_resumed_on_its_own_keeps_to_the_batchs_total(priced_echo):
    """``dlg resume ID`` of one of a batch's dialogues counts what the whole batch spent:
    it used to run on its own, with no limit, past the batch's total."""
    rows = [{"topic": f"t{i}"} for i in range(8)]
    first = dlg.batch_sync(PRICED, rows, model="echo", concurrency=2, batch_id="rs",
                           max_total_cost=0.1)
    stopped = [i for i in first.items if i.status == "cost_limited" and i.turns]
    assert stopped, [(i.status, i.turns) for i in first.items]
    spent = _spent("rs", 8)
    assert spent <= 0.1 + 1e-9
    resumed = CliRunner().invoke(cli, ["resume", stopped[0].dialogue_id, "-q"])
    assert resumed.exit_code == 1, resumed.output
    assert "the batch's $0.1 max total cost" in resumed.output, resumed.output
    assert _spent("rs", 8) <= 0.1 + 1e-9  # nothing past the total
    assert dlg.load_dialogue(stopped[0].dialogue_id).status == "cost_limited"
    # with the total raised for the batch, the same dialogue finishes
    more = dlg.batch_sync(PRICED, rows, model="echo", batch_id="rs", max_total_cost=1)
    assert more.ok and _spent("rs", 8) <= 1


def test_a_spent_batch_starts_nothing_more(priced_echo):
    rows = [{"topic": f"t{i}"} for i in range(6)]
    first = dlg.batch_sync(PRICED, rows[:2], model="echo", batch_id="sp")
    spent = first.totals["cost_usd"]
    assert spent > 0
    result = dlg.batch_sync(PRICED, rows, model="echo", batch_id="sp", max_total_cost=spent)
    left = [i for i in result.items if not i.skipped]
    assert len(left) == 4 and all(i.status == "cost_limited" for i in left)
    assert all(i.error.startswith("not started: the batch's $") for i in left)
    assert sum(i.spent_usd for i in result.items) == 0
    with pytest.raises(dlg.DialogueNotFoundError):  # never started, so never saved
        dlg.load_dialogue("sp-00005")


def test_a_dialogues_own_max_cost_still_holds_within_the_batchs(priced_echo):
    result = dlg.batch_sync(PRICED, [{"topic": "a"}, {"topic": "b"}], model="echo",
                            max_cost=0.05, max_total_cost=10)
    for item in result.items:  # one turn fits its own $0.05, the second does not
        assert item.status == "cost_limited" and item.turns == 1, item
        assert ("left of $0.05 cannot pay for turn 'b' on any of its models: its least "
                "worst case, on echo, is $") in item.error


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "lots"])
def test_a_bad_max_total_cost_is_refused_before_anything_runs(value):
    with pytest.raises(dlg.DlgError, match="max_total_cost must be"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="echo", max_total_cost=value)
    bad = CliRunner().invoke(cli, ["batch", "pair", "--inputs", "x.jsonl",
                                   "--max-total-cost", "0"])
    assert bad.exit_code == 2 and "--max-total-cost" in bad.output


def test_an_executor_that_cannot_keep_the_total_is_refused():
    async def plain(mode, items, *, concurrency, on_item=None, options=None):
        raise AssertionError("never called")

    with pytest.raises(dlg.DlgError, match="cannot keep a batch's max total cost"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="echo", executor=plain,
                       max_total_cost=1)


def test_dialogues_within_a_shared_budget_wait_for_what_others_hold():
    """Two dialogues' budgets within a batch's: the second waits for the first's
    reservation to come back instead of stopping, and neither passes either limit."""
    from dlg.models.catalog import ModelRegistry
    from dlg.running.budget import Budget

    registry = ModelRegistry.load()
    registry.add({"models": {"m": {"price": {"input": 1000, "output": 1000}}}}, "test")
    batch = Budget(0.1, registry, name="the batch's $0.1 max total cost")
    first = Budget(float("inf"), registry, within=batch)
    second = Budget(0.05, registry, within=batch)  # its own max_cost too
    held = first.reserve("m", 20, first.fit("m", 20, None))  # all that is left
    assert batch.left == pytest.approx(0) and second.left == pytest.approx(0)
    assert second.plan([("m", "m")], 20, 20) is None and second.others_hold()
    assert second.name == "the batch's $0.1 max total cost"
    woke = []

    async def main():
        async def wait():
            await second.settled()
            woke.append(second.plan([("m", "m")], 20, 20))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.01)
            assert not woke
            first.settle(held, 0.03)  # the answer cost less than its worst case

    anyio.run(main)
    assert woke == [("m", "m", 20)]
    assert batch.spent == pytest.approx(0.03) and batch.left == pytest.approx(0.07)
    assert second.left == pytest.approx(0.05) and second.name == ""  # its own binds now
    assert not second.others_hold()


def test_the_summary_of_a_large_batch_lists_only_what_did_not_end(tmp_path):
    rows = tmp_path / "rows.jsonl"
    lines = [json.dumps({"topic": f"t{i}"}) for i in range(60)] + [json.dumps({"topic": "boom"})]
    rows.write_text("\n".join(lines) + "\n")
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(FAILS_ON_BOOM))
    runner = CliRunner()
    ran = runner.invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo", "-q",
                              "--id", "big"])
    assert ran.exit_code == 1
    listed = [line for line in ran.output.splitlines() if line.startswith("big-")]
    assert listed == [line for line in listed if line.startswith("big-00060")] and listed
    assert "(60 more not listed: those that ended; --all lists every one" in ran.output
    assert "total: 61 dialogues (60 completed, 1 failed)" in ran.output
    every = runner.invoke(cli, ["batch", "--resume", "big", "-q", "--all"])
    assert sum(line.startswith("big-") for line in every.output.splitlines()) == 61


@pytest.mark.slow
def test_an_interrupted_batch_says_how_to_continue_and_continues(tmp_path):
    """Ctrl-C (a real SIGINT to a real `dlg batch`): exit 130 with the command that
    continues the batch, which then finishes every row. It used to say "Interrupted."
    alone, and a batch named by dlg could not be found again without `dlg ls`."""
    import os
    import signal
    import subprocess
    import sys

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"topic": "t{i}"}}\n' for i in range(6)))
    env = {**os.environ, "DLG_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlg", "batch", "debate", "--inputs", str(rows), "-c", "2",
         "-m", "echo?latency=0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    for line in proc.stderr:  # one line per dialogue as it ends: interrupt after the first
        if line.startswith("[1/6]"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    said = err.strip().splitlines()[-1]
    assert said.startswith("Interrupted; `dlg batch --resume batch-"), err
    batch_id = said.split("--resume ")[1].split("`")[0]
    again = subprocess.run([sys.executable, "-m", "dlg", "batch", "--resume", batch_id, "-q"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "6 dialogues (6 completed)" in again.stdout


@pytest.mark.parametrize(("name", "data"), [
    ("rows.csv", b"\xef\xbb\xbftopic\r\ncars\r\ntrains\r\n"),  # Excel's "CSV UTF-8"
    ("rows.jsonl", b'\xef\xbb\xbf{"topic": "cars"}\n{"topic": "trains"}\n'),
])
def test_an_inputs_file_that_starts_with_a_byte_order_mark_reads_as_it_looks(
        tmp_path, name, data):
    """The mark was read as part of the first column's name: every row failed with "mode
    'pair' has no input 'topic'", the mark invisible (or the JSONL file did not read)."""
    rows = tmp_path / name
    rows.write_bytes(data)
    result = dlg.batch_sync(MODE, str(rows), model="echo", store=None)
    assert [i.inputs for i in result.items] == [{"topic": "cars"}, {"topic": "trains"}]
    assert result.ok


# -- a batch's results in one document: dlg export --batch -------------------------------

def test_a_batchs_dialogues_export_as_one_jsonl_or_csv_document(priced_echo, tmp_path):
    rows = [{"topic": t} for t in ("cars", "trains", "bikes")]
    first = dlg.batch_sync(PRICED, rows[:2], model="echo", batch_id="ex")
    # run again on three rows with nothing left to spend: the third is never started
    dlg.batch_sync(PRICED, rows, model="echo", batch_id="ex",
                   max_total_cost=first.totals["cost_usd"])
    runner = CliRunner()
    lines = runner.invoke(cli, ["export", "--batch", "ex"])
    assert lines.exit_code == 0, lines.output
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["id"] for r in records] == ["ex-00000", "ex-00001"]  # row order
    assert [r["inputs"] for r in records] == rows[:2]
    assert records[0] == dlg.load_dialogue("ex-00000").to_dict()  # the full record
    assert "2 dialogues; 1 rows of the batch have none saved (never started)" in lines.stderr
    table = runner.invoke(cli, ["export", "--batch", "ex", "-f", "csv"])
    parsed = list(csv.reader(io.StringIO(table.stdout)))
    assert parsed[0][:5] == ["dialogue_id", "mode", "dialogue_status", "inputs", "turn"]
    assert [(r[0], r[5]) for r in parsed[1:]] == [
        ("ex-00000", "a"), ("ex-00000", "b"), ("ex-00001", "a"), ("ex-00001", "b")]
    assert json.loads(parsed[1][3]) == {"topic": "cars"}
    # into a folder: one document named by the batch, or a file a dialogue
    out = tmp_path / "out"
    out.mkdir()
    assert runner.invoke(cli, ["export", "--batch", "ex", "-o", str(out)]).exit_code == 0
    assert (out / "ex.jsonl").read_text() == lines.stdout
    assert runner.invoke(cli, ["export", "--batch", "ex", "-f", "markdown", "-o",
                               str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["ex-00000.md", "ex-00001.md", "ex.jsonl"]
    assert dlg.export_batch("ex") == lines.stdout  # the same from Python
    assert dlg.export_batch("ex", "csv", tmp_path / "t.csv") == tmp_path / "t.csv"
    assert (tmp_path / "t.csv").read_text() == table.stdout


def test_a_csv_export_does_not_hand_a_spreadsheet_a_formula():
    """A model's answer is hostile input: ``=HYPERLINK(...)`` in a cell runs in a
    spreadsheet. The jsonl export keeps it exact."""
    model = Counting(responses=["=HYPERLINK(\"http://x\")", "- a list item"], seen=[])
    dlg.batch_sync(MODE, [{"topic": "+cmd"}], model=model, batch_id="fx")
    parsed = list(csv.reader(io.StringIO(dlg.export_batch("fx", "csv"))))
    assert [r[15] for r in parsed[1:]] == ["'=HYPERLINK(\"http://x\")", "'- a list item"]
    assert json.loads(parsed[1][3]) == {"topic": "+cmd"}
    record = json.loads(dlg.export_batch("fx"))
    assert record["turns"][0]["response"] == "=HYPERLINK(\"http://x\")"


def test_exporting_a_batch_says_what_is_wrong():
    runner = CliRunner()
    unknown = runner.invoke(cli, ["export", "--batch", "nope"])
    assert unknown.exit_code == 2
    assert "no saved batch 'nope' in this store" in unknown.stderr
    neither = runner.invoke(cli, ["export"])
    assert neither.exit_code == 2 and "give a DIALOGUE_ID, or --batch BATCH" in neither.stderr
    both = runner.invoke(cli, ["export", "x", "--batch", "nope"])
    assert both.exit_code == 2
    dlg.batch_sync(MODE, [{"topic": "a"}], model="echo", batch_id="ok")
    to_stdout = runner.invoke(cli, ["export", "--batch", "ok", "-f", "markdown"])
    assert to_stdout.exit_code == 2
    assert "the markdown format writes one dialogue a file: give --out FOLDER" in (
        to_stdout.stderr)
    with pytest.raises(dlg.DlgError, match="writes one dialogue a file"):
        dlg.export_batch("ok", "markdown")


@pytest.mark.parametrize("store", ["sqlite", "diskcache"])
def test_deleting_a_batch_deletes_its_dialogues_and_the_batch(store):
    dlg.batch_sync(MODE, [{"topic": t} for t in TOPICS[:3]], model="echo", batch_id="rm",
                   store=store)
    dlg.run_sync(MODE, topic="kept", model="echo", store=store, dialogue_id="other")
    runner = CliRunner()
    result = runner.invoke(cli, ["rm", "--batch", "rm", "--store", store])
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted batch rm: 3 dialogues\n"
    assert [d["id"] for d in dlg.list_dialogues(store)] == ["other"]
    gone = runner.invoke(cli, ["export", "--batch", "rm", "--store", store])
    assert gone.exit_code == 2 and "no saved batch 'rm'" in gone.stderr


def test_rm_deletes_whole_ids_with_their_sub_dialogues():
    d = dlg.run_sync("dynamic", topic="Tabs or spaces?", model="echo")
    children = [c["id"] for c in dlg.list_dialogues() if c["id"] != d.id]
    assert len(children) >= 2
    runner = CliRunner()
    prefix = runner.invoke(cli, ["rm", d.id[:12]])  # a prefix could name the wrong one
    assert prefix.exit_code == 2
    assert f"no saved dialogue '{d.id[:12]}' (give its whole id" in prefix.stderr
    result = runner.invoke(cli, ["rm", d.id])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"deleted {d.id} and {len(children)} sub-dialogues\n"
    assert dlg.list_dialogues() == []
    nothing = runner.invoke(cli, ["rm"])
    assert nothing.exit_code == 2 and "give the DIALOGUE_IDs to delete" in nothing.stderr


def test_show_batch_tells_how_a_batch_stands_without_running_it(priced_echo):
    rows = [{"topic": f"t{i}"} for i in range(4)]
    first = dlg.batch_sync(PRICED, rows[:3], model="echo", batch_id="st",
                           max_total_cost=10)
    dlg.batch_sync(PRICED, rows, model="echo", batch_id="st",  # the fourth: never started
                   max_total_cost=first.totals["cost_usd"])
    runner = CliRunner()
    shown = runner.invoke(cli, ["show", "--batch", "st"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "batch st · mode pair · 4 dialogues"
    assert [line.split()[:2] for line in lines[3:7]] == [
        ["st-00000", "completed"], ["st-00001", "completed"], ["st-00002", "completed"],
        ["st-00003", "pending"]]
    assert "total: 4 dialogues (3 completed, 1 pending) · 6 turns" in shown.stdout
    assert f"max total cost ${first.totals['cost_usd']:g}: $" in shown.stdout
    assert "this run" not in shown.stdout and "wall" not in shown.stdout  # nothing ran
    data = json.loads(runner.invoke(cli, ["show", "--batch", "st", "--json"]).stdout)
    assert data["totals"]["cost_usd"] == pytest.approx(first.totals["cost_usd"])
    assert [i["status"] for i in data["items"]] == ["completed"] * 3 + ["pending"]
    assert runner.invoke(cli, ["show", "--batch", "nope"]).exit_code == 2


@pytest.mark.slow
def test_show_batch_counts_a_running_dialogue_from_its_turns(tmp_path):
    """A batch running in another process: its dialogues in flight show the turns they
    saved, not the header written when they started."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "slow"}\n')
    mode = tmp_path / "four.json"
    mode.write_text(json.dumps({**MODE, "turns": [
        {"id": f"t{i}", "role": "R", "prompt": "{{ topic }}"} for i in range(4)]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlg", "batch", str(mode), "--inputs", str(rows), "--id",
         "live", "-m", "echo?latency=0.6", "-q"], env=dict(os.environ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            item = dlg.batch_status("live").items[0] if any(
                d["id"] == "live-00000" for d in dlg.list_dialogues()) else None
            if item is not None and item.turns >= 2:
                break
            time.sleep(0.2)
        assert item is not None and item.status == "running" and 2 <= item.turns < 4, item
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_the_global_registry_option_reaches_batch_and_resume(tmp_path, monkeypatch):
    """``dlg --registry FILE batch`` ignored the file (every dialogue stopped
    cost_limited with 0 turns: the model's price is only in the file) where
    ``DLG_REGISTRY=FILE`` worked; so did ``dlg --registry FILE resume``. The batch keeps
    the file (by its absolute path) for ``--resume`` and for workers elsewhere."""
    monkeypatch.delenv("DLG_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prices.yaml").write_text(
        "models:\n  echo:priced:\n    price: {input: 1000, output: 1000}\n")
    (tmp_path / "pair.json").write_text(json.dumps(MODE))
    (tmp_path / "rows.jsonl").write_text('{"topic": "a"}\n{"topic": "b"}\n')
    runner = CliRunner()
    ran = runner.invoke(cli, ["--registry", "prices.yaml", "batch", "pair.json", "--inputs",
                              "rows.jsonl", "-m", "echo:priced", "--max-cost", "5", "--id",
                              "rb", "-q"])
    assert ran.exit_code == 0, ran.output
    assert "total: 2 dialogues (2 completed) · 4 turns" in ran.output
    assert all(dlg.load_dialogue(f"rb-0000{i}").total_cost_usd > 0 for i in (0, 1))
    options = open_store().load_batch("rb")["options"]
    assert options["registry"] == str(tmp_path / "prices.yaml")
    # what a worker elsewhere rebuilds its orchestrator from (the ray executor)
    assert dlg.Orchestrator(**options).registry.get("echo:priced").price_in == 1000
    # a dialogue stopped for want of a price resumes with the file given to resume
    stopped = runner.invoke(cli, ["run", "pair.json", "-t", "c", "-m", "echo:priced",
                                  "--max-cost", "5", "-q", "--format", "json"])
    assert stopped.exit_code == 1 and "cost_limited" in stopped.output
    dialogue_id = dlg.list_dialogues()[0]["id"]
    resumed = runner.invoke(cli, ["--registry", "prices.yaml", "resume", dialogue_id, "-q",
                                  "--no-stream"])
    assert resumed.exit_code == 0, resumed.output
    assert dlg.load_dialogue(dialogue_id).status == "completed"


def test_a_resumed_batch_counts_model_time_not_the_time_between_its_runs(tmp_path):
    """A row killed an hour ago and resumed now: its dialogue's wall time spans the hour
    between the runs; the batch's model time is what its models took, in both runs."""
    from dlg.records.stamps import from_iso, iso
    from dlg.records.store import load_dialogue

    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(MODE))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "cars"}\n{"topic": "trains"}\n')
    runner = CliRunner()
    ran = runner.invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo",
                              "--id", "mt", "-q"])
    assert ran.exit_code == 0, ran.output
    store = open_store()
    record = store.load("mt-00001")  # as a kill during its last turn, an hour ago, left it
    started = from_iso(record["started_at"])
    assert started is not None
    record.update(status="running", started_at=iso(started - 3600), ended_at=None)
    record["turns"][-1].update(status="pending", response=None, latency_seconds=None)
    store.save(record)
    again = runner.invoke(cli, ["batch", "--resume", "mt", "--json", "-q"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output[again.output.index("{"):])
    assert [i["skipped"] for i in data["items"]] == [True, False]
    dialogues = [load_dialogue(i["dialogue_id"]) for i in data["items"]]
    model = sum(d.metrics.total_model_seconds for d in dialogues)
    shown = runner.invoke(cli, ["batch", "--resume", "mt"])  # every row ended: as saved
    assert shown.exit_code == 0, shown.output
    assert f"model time {model:.2f}s" in shown.output
    assert data["totals"]["model_seconds"] == pytest.approx(model, abs=1e-3)
    assert data["items"][1]["model_seconds"] == pytest.approx(
        dialogues[1].metrics.total_model_seconds, abs=1e-4)
    assert data["totals"]["latency_seconds"] >= 3600  # the wall time spans the hour


def test_a_diskcache_batch_counts_its_rows_not_dialogues_whose_ids_look_like_them():
    """As ``test_table_stores``' test of the same name, on the ``diskcache`` store (its
    headers count ``list()``'s summaries): a sub-dialogue saved as a row not run yet, an
    id past the batch's rows and one whose row is not a number are none of its rows."""
    from dlg.records.batch_headers import batch_headers

    store = open_store("diskcache")
    result = dlg.batch_sync(MODE, [{"topic": t} for t in TOPICS[:3]], model="echo",
                            batch_id="sb", store="diskcache")
    assert store.delete("sb-00002")
    record = store.load("sb-00001")
    for fake, parent in (("sb-00002", {"id": "sb-00000", "depth": 1}), ("sb-00007", None),
                         ("sb-0000x", None), ("sb-0000\u0661", None)):
        metadata = {**record["metadata"], **({"parent": parent} if parent else {})}
        store.save({**record, "id": fake, "metadata": metadata, "status": "running"})
    (sb,) = batch_headers(store)
    assert sb["rows"] == 3 and sb["statuses"] == {"completed": 2} and sb["running"] == []
    assert sb["tokens"] == sum(i.tokens for i in result.items[:2]) > 0


def test_rows_past_99999_are_the_batch_s_rows_too():
    """``item_id`` pads a row to five digits, so row 100,000 is ``BATCH-100000``: the
    batch page's counts and a batch's saved total (``max_total_cost``) include it, and
    an id with a longer zero-padded row is still none of its rows."""
    from types import SimpleNamespace

    from dlg.records.batch_headers import batch_header, batch_row, count_dialogues
    from dlg.running.batches.cost import batch_of
    from dlg.running.batches.items import item_id

    assert batch_row(item_id("b", 7)) == ("b", 7)
    assert batch_row(item_id("b-x", 100_000)) == ("b-x", 100_000)
    assert batch_row("b-0100000") is None and batch_row("b-1234") is None
    header = batch_header("b", "m", None, 100_001)
    count_dialogues({"b": header}, [
        {"id": item_id("b", 100_000), "status": "completed", "total_tokens": 5},
        {"id": "b-0100000", "status": "completed", "total_tokens": 7},
        {"id": item_id("b", 100_001), "status": "completed", "total_tokens": 9}])
    assert header["statuses"] == {"completed": 1} and header["tokens"] == 5
    row = SimpleNamespace(id=item_id("b", 123_456), metadata={"budget": {"within": 1}})
    assert batch_of(row) == "b"
