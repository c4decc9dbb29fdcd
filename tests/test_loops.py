"""Refinement loops: ``repeat`` on a phase, each round recorded and resumable."""

from __future__ import annotations

import re

import pytest

import dlg
from tests.conftest import prompt_text

SCORE = {"type": "object", "properties": {"score": {"type": "number"}},
         "required": ["score"]}


def refine_mode(until: dict, max_rounds: int = 4) -> dict:
    return {"name": "refine", "inputs": {"topic": {"default": "tides"}}, "structure": "mixed",
            "phases": [
                {"id": "start", "turns": [{"id": "draft", "role": "Draft",
                                           "prompt": "Draft {{ topic }}."}]},
                {"id": "improve", "repeat": {"max_rounds": max_rounds, "until": until},
                 "turns": [
                     {"id": "review", "role": "Review", "output": {"schema": SCORE},
                      "context_from": ["draft", "revise"],
                      "prompt": "Round {{ round }}. Score the newest text: "
                                "{{ turns.revise if turns.revise else turns.draft }}"},
                     {"id": "revise", "role": "Revise", "context_from": ["draft", "revise"],
                      "prompt": "Improve: {{ turns.revise if turns.revise else turns.draft }}"},
                 ]},
                {"id": "end", "turns": [{"id": "final", "role": "Final",
                                         "context_from": ["revise"],
                                         "prompt": "Publish {{ turns.revise }}"}]},
            ]}


def test_a_loop_runs_until_the_score_holds_and_later_turns_read_the_last_round(recorder):
    model = recorder(["v1", '{"score": 5}', "v2", '{"score": 9}', "v3", "published"])
    d = dlg.Orchestrator(model=model).run_sync(refine_mode({"score": 8}))
    assert d.status == "completed"
    assert [t.id for t in d.turns] == ["draft", "review", "revise", "review@2", "revise@2",
                                       "final"]
    assert [t.round for t in d.turns] == [1, 1, 1, 2, 2, 1]
    assert d.metadata["loops"]["improve"] == {
        "rounds": 2, "status": "converged", "reason": "'review' scored 9 (until.score 8)"}
    prompts = [prompt_text(m) for m, _ in model.calls]
    assert prompts[1].startswith("Round 1. Score the newest text: v1")
    assert prompts[2] == "Improve: v1"
    assert prompts[3].startswith("Round 2. Score the newest text: v2")  # reads round 1
    assert prompts[4] == "Improve: v2"  # a turn reads its own previous round
    assert prompts[5] == "Publish v3"  # after the loop: the latest round
    saved = dlg.load_dialogue(d.id)
    assert [t.id for t in saved.turns] == [t.id for t in d.turns]
    assert saved.turn("revise@2").round == 2 and saved.latest("revise").text == "v3"


def test_a_loop_that_never_converges_stops_at_max_rounds(recorder):
    answers = ["v0"] + [x for i in range(3) for x in ('{"score": 1}', f"v{i + 1}")] + ["p"]
    d = dlg.Orchestrator(model=recorder(answers), store=None).run_sync(
        refine_mode({"score": 8}, max_rounds=3))
    assert d.status == "completed"
    assert d.metadata["loops"]["improve"]["status"] == "max_rounds"
    assert [t.id for t in d.turns][-3:] == ["review@3", "revise@3", "final"]


def test_a_loop_converges_when_answers_stop_changing():
    mode = {"name": "sim", "structure": "mixed", "phases": [{
        "id": "again", "repeat": {"max_rounds": 6, "until": {"similarity": 0.95}},
        "turns": [{"id": "say", "role": "Say", "prompt": "Say the same thing again.",
                   "context_from": "none"}]}]}
    d = dlg.run_sync(mode, model="echo", store=None)
    assert d.status == "completed"
    assert [t.id for t in d.turns] == ["say", "say@2"]
    assert "rounds 1 and 2" in d.metadata["loops"]["again"]["reason"]


def test_a_condition_ends_a_loop_and_sees_the_round(recorder):
    mode = {"name": "c", "structure": "mixed", "phases": [{
        "id": "p", "repeat": {"max_rounds": 9, "until": {"condition": "round >= 3"}},
        "structure": "parallel",
        "turns": [{"id": "a", "role": "A", "prompt": "a{{ round }}"},
                  {"id": "b", "role": "B", "prompt": "b{{ round }}"}]}]}
    d = dlg.run_sync(mode, model="echo", store=None)
    assert [t.id for t in d.turns] == ["a", "b", "a@2", "b@2", "a@3", "b@3"]
    assert d.metadata["loops"]["p"]["status"] == "converged"


def _failing_in_round_2(recorder):
    """The refine mode (3 rounds at most) and a model whose round-2 revise fails: the
    dialogue stops there, with the rounds before it saved."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    mode = refine_mode({"score": 8}, max_rounds=3)
    mode["phases"][1]["turns"][1]["prompt"] = "Round {{ round }}: improve."
    bad = recorder(["v1", '{"score": 2}', "v2", '{"score": 3}'])

    class Failing(FakeListChatModel):
        async def ainvoke(self, messages, *args, **kwargs):
            if "Round 2: improve" in prompt_text(messages):
                raise ValueError("boom")
            return await bad.ainvoke(messages, *args, **kwargs)

    return mode, dlg.Orchestrator(model=Failing(responses=["x"]),
                                  retry=dlg.RetryPolicy(attempts=1))


def test_a_loop_resumes_in_the_round_it_stopped_without_rerunning_finished_rounds(recorder):
    mode, failing = _failing_in_round_2(recorder)
    d = failing.run_sync(mode)
    assert d.status == "failed"
    assert [t.status for t in d.turns] == ["completed", "completed", "completed",
                                           "completed", "failed", "pending"]
    resumed_model = recorder(["v3", '{"score": 4}', "v4", "done"])
    import anyio

    resumed = anyio.run(lambda: dlg.resume(d.id, model=resumed_model))
    assert resumed.status == "completed"
    assert len(resumed_model.calls) == 4  # revise@2, review@3, revise@3, final
    assert [t.id for t in resumed.turns] == ["draft", "review", "revise", "review@2",
                                             "revise@2", "review@3", "revise@3", "final"]
    assert resumed.metadata["loops"]["improve"]["status"] == "max_rounds"


def test_a_forced_resume_of_a_changed_mode_keeps_the_rounds_that_ran(recorder, tmp_path):
    """``--force`` on a mode that changed since: the loop's finished rounds are kept and it
    goes on in the round it was in; nothing that finished is paid for again."""
    import json

    import anyio

    mode, failing = _failing_in_round_2(recorder)
    path = tmp_path / "refine.json"
    path.write_text(json.dumps(mode))
    d = failing.run_sync(str(path))
    assert [t.id for t in d.turns if t.status == "completed"] == [
        "draft", "review", "revise", "review@2"]
    mode["phases"][2]["turns"][0]["prompt"] = "Publish it: {{ turns.revise }}"
    path.write_text(json.dumps(mode))  # the mode changed since

    resumed_model = recorder(["v3", '{"score": 4}', "v4", "done"])
    resumed = anyio.run(lambda: dlg.resume(d.id, model=resumed_model, force=True))
    assert resumed.status == "completed"
    assert len(resumed_model.calls) == 4  # revise@2, review@3, revise@3, final
    assert [t.id for t in resumed.turns] == ["draft", "review", "revise", "review@2",
                                             "revise@2", "review@3", "revise@3", "final"]
    assert [t.index for t in resumed.turns] == [1, 2, 3, 2, 3, 2, 3, 4]


def test_loop_mistakes_are_mode_errors():
    with pytest.raises(dlg.ModeError, match=r"repeat\.until\.turn of phase 'improve' "
                                            r"names 'nope'"):
        dlg.load_mode(refine_mode({"similarity": 0.9, "turn": "nope"}))
    mode = refine_mode({"score": 8})
    del mode["phases"][1]["turns"][0]["output"]
    with pytest.raises(dlg.ModeError, match="no turn of it has an output schema"):
        dlg.load_mode(mode)
    with pytest.raises(dlg.ModeError, match="cannot read itself"):
        dlg.load_mode({"name": "x", "turns": [{"id": "a", "role": "A", "prompt": "p",
                                                "context_from": ["a"]}]})
    with pytest.raises(dlg.ModeError, match="max_rounds"):
        dlg.load_mode({"name": "x", "structure": "mixed", "phases": [
            {"id": "p", "repeat": {"max_rounds": 0}, "turns": [
                {"id": "a", "role": "A", "prompt": "p"}]}]})


def test_a_loop_round_trips_and_is_inherited(tmp_path):
    mode = dlg.load_mode(refine_mode({"score": 8}))
    again = dlg.load_mode(mode.to_dict())
    assert again.content_hash == mode.content_hash and again.phase("improve").repeat
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nturns:\n  - {id: a, role: A, prompt: start}\n")
    child = tmp_path / "child.yaml"
    child.write_text(
        "name: child\nextends: parent.yaml\nadd:\n  - after: a\n    phase:\n"
        "      id: more\n      repeat: {max_rounds: 2}\n"
        "      turns: [{id: b, role: B, prompt: 'again {{ round }}'}]\n")
    loaded = dlg.load_mode(child)
    assert loaded.phase("more").repeat == {"max_rounds": 2}
    d = dlg.run_sync(child, model="echo", store=None)
    assert [t.id for t in d.turns] == ["a", "b", "b@2"]
    assert d.metadata["loops"]["more"]["status"] == "max_rounds"


def test_previous_in_a_loop_is_the_round_before(recorder):
    model = recorder(["a1", "b1", "a2", "b2"])
    mode = {"name": "prev", "structure": "mixed", "phases": [{
        "id": "p", "repeat": {"max_rounds": 2},
        "turns": [{"id": "a", "role": "A", "context_from": "previous", "prompt": "go"},
                  {"id": "b", "role": "B", "context_from": "previous", "prompt": "go"}]}]}
    dlg.Orchestrator(model=model, store=None).run_sync(mode)
    prompts = [prompt_text(m) for m, _ in model.calls]
    assert prompts[0] == "go"  # round 1: nothing before
    assert prompts[1] == "### A\na1\n\ngo"
    assert prompts[2] == "### B\nb1\n\ngo"  # round 2: the round before's last turn


def test_a_loop_record_matches_the_dialogue_schema_and_a_failing_continue_turn_ends_rounds(
        recorder):
    import json

    from jsonschema import Draft202012Validator

    from tests.conftest import ROOT

    mode = {"name": "c", "structure": "mixed", "phases": [{
        "id": "p", "repeat": {"max_rounds": 3},
        "turns": [{"id": "a", "role": "A", "prompt": "a{{ round }}"},
                  {"id": "b", "role": "B", "prompt": "{{ 1 // 0 }}", "on_error": "continue"}]}]}
    d = dlg.run_sync(mode, model="echo", store=None)
    assert d.status == "completed"
    assert [t.id for t in d.turns] == ["a", "b", "a@2", "b@2", "a@3", "b@3"]
    assert {t.status for t in d.turns[1::2]} == {"failed"}
    schema = json.loads((ROOT / "schemas" / "dialogue.schema.json").read_text())
    Draft202012Validator(schema).validate(json.loads(d.export("json")))


def test_a_resumed_loop_runs_a_turn_of_its_round_that_lost_its_record(recorder):
    """A record saved by a process killed in a round's second turn, by a dlg that saved a
    round's records only as each turn finished, has the round's first turn and not the
    second: the resumed round runs it, instead of closing without it."""
    import anyio

    from dlg.records.store import find_dialogue, open_store

    mode, failing = _failing_in_round_2(recorder)
    d = failing.run_sync(mode)
    store = open_store()
    record = find_dialogue(store, d.id)
    record["turns"] = [t for t in record["turns"] if t["id"] != "revise@2"]
    store.save(record)
    assert [t.id for t in dlg.load_dialogue(d.id).turns] == [
        "draft", "review", "revise", "review@2", "final"]

    resumed_model = recorder(["v3", '{"score": 4}', "v4", "done"])
    resumed = anyio.run(lambda: dlg.resume(d.id, model=resumed_model))
    assert resumed.status == "completed"
    assert prompt_text(resumed_model.calls[0][0]).endswith("Round 2: improve.")
    assert [t.id for t in resumed.turns] == ["draft", "review", "revise", "review@2",
                                             "revise@2", "review@3", "revise@3", "final"]
    assert resumed.metadata["loops"]["improve"]["status"] == "max_rounds"


def _say_again(until: dict, max_rounds: int = 6) -> dict:
    return {"name": "sim", "structure": "mixed", "phases": [{
        "id": "again", "repeat": {"max_rounds": max_rounds, "until": until},
        "turns": [{"id": "say", "role": "Say", "prompt": "Say the same thing again.",
                   "context_from": "none"}]}]}


def test_patience_wants_that_many_stable_rounds_in_a_row():
    d = dlg.run_sync(_say_again({"similarity": 0.95, "patience": 3}), model="echo",
                     store=None)
    assert [t.id for t in d.turns] == ["say", "say@2", "say@3", "say@4"]
    assert d.metadata["loops"]["again"]["reason"] == (
        "'say' answered 1.00 alike in rounds 3 and 4 (until.similarity 0.95), 3 rounds in "
        "a row (until.patience 3)")


def test_patience_restarts_when_an_answer_changes(recorder):
    model = recorder(["a b c d", "a b c d", "w x y z", "w x y z", "w x y z", "never"])
    d = dlg.run_sync(_say_again({"similarity": 0.95, "patience": 2}), model=model,
                     store=None)
    assert [t.text for t in d.turns] == ["a b c d", "a b c d", "w x y z", "w x y z",
                                         "w x y z"]
    assert d.metadata["loops"]["again"]["rounds"] == 5


def test_min_rounds_looks_at_until_only_from_that_round():
    d = dlg.run_sync(_say_again({"similarity": 0.95, "min_rounds": 4}), model="echo",
                     store=None)
    assert [t.id for t in d.turns][-1] == "say@4"
    assert d.metadata["loops"]["again"]["status"] == "converged"


CONVERGED = {"type": "object", "properties": {"converged": {"type": ["boolean", "string"]}},
             "required": ["converged"]}


def _judged(until: dict) -> dict:
    mode = refine_mode(until)
    mode["phases"][1]["turns"][0]["output"] = {"schema": CONVERGED}
    mode["phases"][1]["turns"][0]["id"] = "check"
    return mode


def test_a_judge_turn_says_when_the_loop_has_converged(recorder):
    model = recorder(["v1", '{"converged": false}', "v2", '{"converged": "yes"}', "v3",
                      "published"])
    d = dlg.run_sync(_judged({"judge": "check"}), model=model, store=None)
    assert [t.id for t in d.turns] == ["draft", "check", "revise", "check@2", "revise@2",
                                       "final"]
    assert d.metadata["loops"]["improve"] == {
        "rounds": 2, "status": "converged",
        "reason": "'check' judged it converged in round 2 (until.judge)"}


def _confirmed(until: dict) -> dict:
    mode = _say_again(until)
    mode["phases"][0]["turns"].append({
        "id": "check", "role": "Judge", "output": {"schema": CONVERGED},
        "context_from": ["say"], "prompt": "Has it stopped changing? {{ turns.say }}"})
    return mode


def test_a_confirm_turn_runs_only_at_a_candidate_stop_and_can_veto_it(recorder):
    model = recorder(["a b c d", "w x y z", "w x y z", '{"converged": false}', "w x y z",
                      '{"converged": true}', "never"])
    d = dlg.run_sync(_confirmed({"similarity": 0.95, "confirm": "check"}), model=model,
                     store=None)
    assert [(t.id, t.status) for t in d.turns] == [
        ("say", "completed"), ("check", "skipped"), ("say@2", "completed"),
        ("check@2", "skipped"), ("say@3", "completed"), ("check@3", "completed"),
        ("say@4", "completed"), ("check@4", "completed")]
    assert d.turn("check").metadata["skipped_by"] == "until.confirm"
    assert d.metadata["loops"]["again"] == {
        "rounds": 4, "status": "converged",
        "reason": "'say' answered 1.00 alike in rounds 3 and 4 (until.similarity 0.95), "
                  "confirmed by 'check' (until.confirm)"}


def test_a_confirm_turn_waits_for_patience_and_min_rounds(recorder):
    model = recorder(["a b c d"] * 4 + ['{"converged": true}', "never"])
    d = dlg.run_sync(_confirmed({"similarity": 0.95, "patience": 2, "min_rounds": 4,
                                 "confirm": "check"}), model=model, store=None)
    assert [t.id for t in d.turns if t.status == "completed"] == [
        "say", "say@2", "say@3", "say@4", "check@4"]
    assert d.metadata["loops"]["again"]["rounds"] == 4


def test_a_confirm_turn_confirms_a_score_of_the_turn_before_it(recorder):
    mode = refine_mode({"score": 8, "confirm": "check"})
    mode["phases"][1]["turns"].append({
        "id": "check", "role": "Judge", "output": {"schema": CONVERGED},
        "context_from": ["review"], "prompt": "Settled? {{ turns.review }}"})
    model = recorder(["draft", '{"score": 5}', "v1", '{"score": 9}', "v2",
                      '{"converged": true}', "published"])
    d = dlg.run_sync(mode, model=model, store=None)
    assert [(t.id, t.status) for t in d.turns][1:-1] == [
        ("review", "completed"), ("revise", "completed"), ("check", "skipped"),
        ("review@2", "completed"), ("revise@2", "completed"), ("check@2", "completed")]
    assert d.metadata["loops"]["improve"]["reason"] == (
        "'review' scored 9 (until.score 8), confirmed by 'check' (until.confirm)")


def test_unless_vetoes_a_stop_while_the_probe_still_objects(recorder):
    mode = _say_again({"similarity": 0.95, "unless": "'OPEN' in turns.probe.text"})
    mode["phases"][0]["turns"].insert(0, {"id": "probe", "role": "Probe",
                                          "prompt": "Anything open?", "context_from": "none"})
    model = recorder(["OPEN: x", "a b c d", "OPEN: y", "a b c d", "nothing", "a b c d",
                      "never", "never"])
    d = dlg.run_sync(mode, model=model, store=None)
    assert [t.id for t in d.turns] == ["probe", "say", "probe@2", "say@2", "probe@3", "say@3"]
    assert d.metadata["loops"]["again"]["reason"] == (
        "'say' answered 1.00 alike in rounds 2 and 3 (until.similarity 0.95)")


def test_a_confirm_turn_in_a_parallel_phase_is_a_mode_error():
    mode = _confirmed({"similarity": 0.9, "confirm": "check"})
    mode["phases"][0]["structure"] = "parallel"
    with pytest.raises(dlg.ModeError, match=re.escape(
            "repeat.until.confirm of phase 'again' needs its turns one after another, but the "
            "phase is parallel")):
        dlg.load_mode(mode)


def test_similarity_by_the_embeddings_a_plugin_registers(pm, recorder):
    from dlg.hookspecs import hookimpl

    class Meaning:  # every answer means the same: hashing would see different words
        def embed_documents(self, texts):
            return [[1.0, 0.0] for _ in texts]

        def embed_query(self, text):
            return [1.0, 0.0]

    class Plugin:
        @hookimpl
        def register_embeddings(self, register):
            register("meaning", Meaning)

    pm.register(Plugin(), name="meaning-embeddings")
    words = ["tides follow the moon", "the moon pulls the sea", "lunar gravity lifts water",
             "oceans answer the moon", "sea level tracks lunar pull", "moon and tide"]
    plain = dlg.run_sync(_say_again({"similarity": 0.9}), model=recorder(words), store=None)
    assert plain.metadata["loops"]["again"]["status"] == "max_rounds"
    named = dlg.run_sync(_say_again({"similarity": 0.9, "embeddings": "meaning"}),
                         model=recorder(words), store=None)
    assert [t.id for t in named.turns] == ["say", "say@2"]
    with pytest.raises(dlg.DlgError, match=r"'nosuch' is not a known embeddings "
                                           r"\(installed: hashing, meaning\)"):
        dlg.run_sync(_say_again({"similarity": 0.9, "embeddings": "nosuch"}),
                     model=recorder(words), store=None)


@pytest.mark.parametrize(("until", "message"), [
    ({"judge": "revise"}, "repeat.until.judge of phase 'improve' reads data.converged of "
                          "'revise', which has no output schema"),
    ({"judge": "reviw"}, "repeat.until.judge of phase 'improve' names 'reviw', which is not "
                         "one of its turns"),
    ({"score": 8, "min_rounds": 5}, "repeat.until.min_rounds of phase 'improve' is 5, more "
                                    "than its max_rounds 4"),
    ({"score": 8, "patience": 9}, "repeat.until.patience of phase 'improve' is 9, more than"),
    ({"score": 8, "patience": 0}, "repeat.until.patience: 0 is less than the minimum of 1"),
    ({"score": 8, "min_rounds": "2"},
     "repeat.until.min_rounds: expected a whole number, got a string"),
    ({"score": 8, "embeddings": ""}, "repeat.until.embeddings: '' should be non-empty"),
    ({"min_rounds": 2}, "repeat.until.min_rounds has nothing to apply to: repeat.until has "
                        "no similarity, score, judge or condition"),
    ({"condition": "round > 2", "patience": 2}, "repeat.until.patience has nothing to apply"),
    ({"condition": "round > 2", "confirm": "review"},
     "repeat.until.confirm has nothing to apply to: repeat.until has no similarity or score"),
    ({"similarity": 0.9, "confirm": "revise"}, "repeat.until.confirm of phase 'improve' reads "
                                               "data.converged of 'revise', which has no output"),
    ({"similarity": 0.9, "confirm": "reviw"}, "repeat.until.confirm of phase 'improve' names "
                                              "'reviw', which is not one of its turns"),
    ({"similarity": 0.9, "confirm": "review", "turn": "revise"},
     "repeat.until.confirm of phase 'improve' names 'review', which does not run after "
     "'revise', the turn it confirms"),
    ({"similarity": 0.9, "confirm": "review", "judge": "review"},
     "repeat.until.confirm of phase 'improve' and repeat.until.judge both name a judge"),
    ({"similarity": 0.9, "confirm": 3}, "repeat.until.confirm: expected"),
    ({"condition": "round ==", "similarity": 0.9},
     "repeat.until.condition of phase 'improve': template syntax error: unexpected"),
    ({"similarity": 0.9, "unless": "turns.review.text ==="},
     "repeat.until.unless of phase 'improve': template syntax error: unexpected '='"),
    ({"condition": "round > 2", "unless": "round < 2"},
     "repeat.until.unless has nothing to apply to: repeat.until has no similarity, score or "
     "judge"),
])
def test_new_until_mistakes_are_mode_errors(until, message):
    with pytest.raises(dlg.ModeError, match=re.escape(message)):
        dlg.load_mode(refine_mode(until))
