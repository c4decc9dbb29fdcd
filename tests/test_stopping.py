"""Stopping early: until.condition, until.similarity and max_turns."""

from __future__ import annotations

import re

import pytest

import dlg


def test_until_a_condition_over_a_judges_score(recorder):
    model = recorder(["draft one", '{"score": 6}', "draft two", '{"score": 9}', "never"])
    turns = []
    for round_ in (1, 2, 3):
        turns += [{"id": f"draft{round_}", "role": "Draft", "prompt": "Write."},
                  {"id": f"judge{round_}", "role": "Judge", "prompt": "Judge.",
                   "scores": [f"draft{round_}"]}]
    mode = {"name": "u", "turns": turns,
            "until": {"condition": "turns.judge2 and turns.judge2.data.score >= 8"}}
    d = dlg.Orchestrator(model=model).run_sync(mode)
    assert d.status == "converged"
    assert [t.status for t in d.turns] == ["completed"] * 4 + ["pending"] * 2
    assert d.metadata["stopped"]["reason"].startswith("until: turns.judge2")
    assert d.metadata["stopped"]["at"] == "judge2" and d.convergence_detected_at == 4
    assert dlg.load_dialogue(d.id).status == "converged"


def test_until_answers_stop_changing():
    mode = {"name": "sim", "until": {"similarity": 0.95}, "turns": [
        {"id": f"t{i}", "role": "Refine", "prompt": "Say the same thing again.",
         "context_from": "none"} for i in range(5)]}
    d = dlg.run_sync(mode, model="echo", store=None)
    assert d.status == "converged"
    assert [t.status for t in d.turns] == ["completed", "completed", "pending", "pending",
                                           "pending"]
    assert "'Refine' answered 1.00 alike twice" in d.metadata["stopped"]["reason"]


def test_max_turns_and_a_stop_after_the_last_turn_is_completed():
    mode = {"name": "m", "max_turns": 2, "turns": [
        {"id": f"t{i}", "role": f"R{i}", "prompt": "x"} for i in range(3)]}
    d = dlg.run_sync(mode, model="echo", store=None)
    assert d.status == "max_turns" and d.turns[2].status == "pending"
    mode["max_turns"] = 3
    assert dlg.run_sync(mode, model="echo", store=None).status == "completed"


def test_a_bad_condition_is_a_mode_error():
    with pytest.raises(dlg.ModeError, match="until"):
        dlg.load_mode({"name": "b", "until": {"condition": "turns.x >"},
                       "turns": [{"id": "x", "role": "X", "prompt": "y"}]})


def test_the_cli_reports_a_dialogue_that_stopped_by_design_as_done(tmp_path):
    """``max_turns`` (or ``until``) ending a dialogue is what the mode asked for: exit 0,
    as batches count it. A stop that is not (a budget) exits 1 with its reason, never
    "None"."""
    from click.testing import CliRunner

    from dlg.cli import cli

    mode = tmp_path / "short.yaml"
    mode.write_text("name: short\nmax_turns: 2\nturns:\n"
                    + "".join(f"  - {{id: t{i}, role: R, prompt: p{i}}}\n" for i in range(3)))
    done = CliRunner().invoke(cli, ["run", str(mode), "-m", "echo", "--no-save"])
    assert done.exit_code == 0, done.output
    assert "max_turns: 2/3 turns" in done.stderr
    prices = tmp_path / "prices.yaml"
    prices.write_text("models:\n  echo:\n    price: {input: 1000, output: 1000}\n")
    limited = CliRunner(env={"DLG_REGISTRY": str(prices)}).invoke(
        cli, ["run", str(mode), "-m", "echo", "--no-save", "--max-cost", "0.00001"])
    assert limited.exit_code == 1
    assert "Error: dialogue cost_limited: $" in limited.stderr, limited.stderr
    assert "None" not in limited.stderr


@pytest.mark.parametrize(("stop", "status", "pending"), [
    ({"max_turns": 3}, "max_turns", ["x@2", "y@2"]),  # after a round, rounds left
    ({"max_turns": 2}, "max_turns", ["y"]),  # inside a round
    ({"until": {"condition": "turns.y"}}, "converged", ["x@2", "y@2"]),
])
def test_a_stop_inside_a_trailing_loop_is_recorded_with_its_reason(stop, status, pending):
    mode = {"name": "tl", "structure": "mixed", **stop, "phases": [
        {"id": "open", "turns": [{"id": "a", "role": "A", "prompt": "a"}]},
        {"id": "p", "repeat": {"max_rounds": 4}, "turns": [
            {"id": "x", "role": "X", "prompt": "x{{ round }}"},
            {"id": "y", "role": "Y", "prompt": "y{{ round }}"}]}]}
    d = dlg.run_sync(mode, model="echo")
    assert d.status == status
    assert [t.id for t in d.turns if t.status == "pending"] == pending
    done = len(d.turns) - len(pending)
    assert d.metadata["stopped"]["status"] == status and d.metadata["stopped"]["reason"]
    assert d.convergence_detected_at == (done if status == "converged" else None)
    assert d.metadata["loops"]["p"] == {
        "rounds": 1, "status": "stopped",
        "reason": f"the dialogue stopped ({status}: {d.metadata['stopped']['reason']})"}
    saved = dlg.load_dialogue(d.id)
    assert saved.status == status and saved.metadata["loops"] == d.metadata["loops"]
    if pending == ["x@2", "y@2"]:  # a resume continues the loop in its next round
        import anyio

        resumed = anyio.run(lambda: dlg.resume(d.id, model="echo"))
        assert resumed.turn("x@2").status == "completed"


def _refines(until: dict, n: int = 6) -> dict:
    return {"name": "sim", "until": until, "turns": [
        {"id": f"t{i}", "role": "Refine", "prompt": "Say the same thing again.",
         "context_from": "none"} for i in range(n)]}


def test_until_patience_wants_that_many_alike_answers_in_a_row(recorder):
    d = dlg.run_sync(_refines({"similarity": 0.95, "patience": 2}),
                     model=recorder(["a b", "a b", "c d", "c d", "c d", "e f"]), store=None)
    assert d.status == "converged"
    assert [t.status for t in d.turns] == ["completed"] * 5 + ["pending"]
    assert "'Refine' answered 1.00 alike 3 times" in d.metadata["stopped"]["reason"]


def test_until_min_turns_looks_at_until_only_after_that_many_turns():
    d = dlg.run_sync(_refines({"similarity": 0.95, "min_turns": 4}), model="echo",
                     store=None)
    assert d.status == "converged"
    assert [t.status for t in d.turns] == ["completed"] * 4 + ["pending"] * 2


def _judged(until: dict) -> dict:
    schema = {"type": "object", "properties": {"converged": {"type": "boolean"}},
              "required": ["converged"]}
    turns = []
    for i in range(3):
        turns += [{"id": f"draft{i}", "role": "Draft", "prompt": "Write."},
                  {"id": f"check{i}", "role": "Check", "prompt": "Converged?",
                   "output": {"schema": schema}}]
    return {"name": "j", "until": until, "turns": turns}


def test_until_judge_stops_when_the_judging_turn_says_so(recorder):
    model = recorder(["d1", '{"converged": false}', "d2", '{"converged": true}', "never"])
    d = dlg.run_sync(_judged({"judge": "check1"}), model=model, store=None)
    assert d.status == "converged"
    assert [t.status for t in d.turns] == ["completed"] * 4 + ["pending"] * 2
    assert d.metadata["stopped"]["reason"] == "'check1' judged it converged"


@pytest.mark.parametrize(("until", "message"), [
    ({"judge": "draft1"}, "until.judge names 'draft1', which is a turn without an output "
                          "schema"),
    ({"judge": "chek1"}, "until.judge names 'chek1', which is not a turn"),
    ({"similarity": 0.9, "patience": 0}, "$.until.patience: 0 is less than the minimum of 1"),
    ({"similarity": 0.9, "min_turns": 1.5}, "$.until.min_turns: expected a whole number"),
])
def test_until_mistakes_are_mode_errors(until, message):
    with pytest.raises(dlg.ModeError, match=re.escape(message)):
        dlg.load_mode(_judged(until))


@pytest.mark.parametrize(("until", "message"), [
    ({"condition": "true", "patience": 2}, "until.patience has nothing to apply to: until has "
                                           "no similarity or judge"),
    ({"judge": "check0", "embeddings": "hashing"}, "until.embeddings has nothing to apply "
                                                   "to: until has no similarity"),
    ({"min_turns": 3}, "until.min_turns has nothing to apply to"),
])
def test_until_options_with_nothing_to_apply_to_are_mode_errors(until, message):
    with pytest.raises(dlg.ModeError, match=re.escape(message)):
        dlg.load_mode(_judged(until))
