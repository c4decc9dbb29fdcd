"""Structured answers (output.schema), repairs, and judge turns that feed routing."""

from __future__ import annotations

import pytest

import dlg

from .routing_support import market

SCHEMA = {"type": "object", "properties": {"sections": {"type": "array",
                                                        "items": {"type": "string"}}},
          "required": ["sections"]}
MODE = {"name": "s", "turns": [
    {"id": "plan", "role": "planner", "prompt": "Plan it.", "output": {"schema": SCHEMA}},
    {"id": "write", "role": "writer",
     "prompt": "Write {{ turns.plan.data.sections | join(', ') }}."}]}


def test_a_structured_answer_is_parsed_and_templates_read_it(recorder):
    model = recorder(['Here you go:\n```json\n{"sections": ["intro", "end"]}\n```', "done"])
    d = dlg.run_sync(MODE, model=model, store=None)
    assert d.status == "completed"
    assert d.turns[0].data == {"sections": ["intro", "end"]}
    assert "matching this JSON Schema" in d.turns[0].prompt
    assert d.turns[1].prompt.endswith("Write intro, end.")
    assert d.to_dict()["turns"][0]["data"] == {"sections": ["intro", "end"]}


def test_a_wrong_answer_gets_a_repair_request(recorder):
    model = recorder(['{"sections": "not a list"}', '{"sections": ["a"]}', "done"])
    d = dlg.run_sync(MODE, model=model, store=None)
    assert d.turns[0].data == {"sections": ["a"]}
    repair = model.calls[1][0]
    assert "does not match the schema (['sections']: 'not a list' is not of type 'array')" \
        in repair[-1].content
    assert d.turns[0].usage.total > 0


def test_an_answer_that_never_matches_fails_the_turn_clearly(recorder):
    model = recorder(["no json here", "still none"])
    d = dlg.run_sync(MODE, model=model, store=None)
    assert d.status == "failed"
    assert d.turns[0].error == ("the answer does not match the turn's output schema after 1 "
                                "repair(s): the answer holds no JSON object")


@pytest.mark.parametrize("turns, message", [
    ([{"id": "a", "role": "A", "prompt": "x", "output": {"schema": {"type": "nonsense"}}}],
     "output.schema of turn 'a' is not a valid JSON Schema"),
    ([{"id": "j", "role": "J", "prompt": "x", "scores": ["b"]},
      {"id": "b", "role": "B", "prompt": "y"}],
     "turn 'j' scores 'b', which is not a turn that has run by then"),
    ([{"id": "a", "role": "A", "prompt": "x", "output": {"schema": {
        "type": "object", "patternProperties": {"^x": {}},
        "properties": {"inner": {"unevaluatedProperties": False}}}}}],
     "output.schema of turn 'a' cannot be used: it uses unevaluatedProperties and "
     "patternProperties together"),
])
def test_bad_structured_declarations_are_mode_errors(turns, message):
    with pytest.raises(dlg.ModeError, match=message):
        dlg.load_mode({"name": "bad", "turns": turns})


PATTERNS = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "patternProperties": {"^x_": {"type": "integer"}}, "additionalProperties": False}


@pytest.mark.parametrize(("answer", "problem"), [
    ('{"code": "ABC", "x_n": 3}', None),
    ('{"code": "abc"}', "['code']: 'abc' does not match '^[A-Z]{3}$'"),
    ('{"code": "ABC", "x_n": "three"}', "['x_n']: 'three' is not of type 'integer'"),
    ('{"code": "ABC", "other": 1}', "the object: properties not allowed here: 'other' (the "
                                    "schema names no such property and no pattern matches)"),
])
def test_patterns_in_an_output_schema_check_answers_as_json_schema_says(answer, problem):
    from dlg.running.structured import parse

    data, why = parse(answer, PATTERNS)
    assert why == problem and (data is None) == (problem is not None)


ANY_OBJECT = {"type": "object"}
DEEP = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize(("answer", "data"), [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('Sure:\n```\n{"a": 1}\n```\nFill in {name} as you like.', {"a": 1}),
    ('```python\nprint({1})\n```\nthen:\n```json\n{"a": 1}\n```', {"a": 1}),
    ('The answer is {"a": {"b": [1, 2]}}. Done.', {"a": {"b": [1, 2]}}),
    ('{"a": 1', None),  # cut off: not closed for it
    ("no json here", None),
    (DEEP, None),  # too deep for Python's parser: no answer, not a RecursionError
    ("x" * 200_000 + '{"a": 1}', None),  # past MAX_ANSWER: not read
])
def test_the_json_in_an_answer_is_found_where_models_put_it(answer, data):
    from dlg.running.structured import MAX_ANSWER, parse

    assert MAX_ANSWER == 200_000
    found, why = parse(answer, ANY_OBJECT)
    assert found == data
    assert why == (None if data is not None else "the answer holds no JSON object")


@pytest.mark.slow
def test_a_pattern_that_backtracks_for_hours_cannot_stop_the_event_loop(tmp_path):
    """``^(a|aa)+$`` on forty ``a`` and a ``!``: Python's ``re`` (which jsonschema uses)
    backtracks for hours, on the event loop. The answer is checked within a deadline and
    the turn fails saying why; run in a process of its own, so the old behaviour fails
    this test instead of hanging the suite. The deadline is cut to 0.05 s there: each of
    the turn's checks waits it out, and the regex module overshoots it under load."""
    import json
    import subprocess
    import sys

    script = tmp_path / "slow.py"
    script.write_text(
        "import dlg, json\n"
        "import dlg.running.answer_schema as checking\n"
        "checking.PATTERN_SECONDS = 0.05  # the deadline is what is tested, not its length\n"
        "from langchain_core.language_models.fake_chat_models import FakeListChatModel\n"
        "answer = json.dumps({'code': 'a' * 40 + '!'})\n"
        "mode = {'name': 'p', 'turns': [{'id': 'a', 'role': 'A', 'prompt': 'go', 'output': "
        "{'schema': {'type': 'object', 'properties': {'code': {'type': 'string', "
        "'pattern': '^(a|aa)+$'}}}}}]}\n"
        "d = dlg.run_sync(mode, model=FakeListChatModel(responses=[answer] * 3), store=None)\n"
        "print(json.dumps([d.status, d.error]))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    status, error = json.loads(done.stdout)
    assert status == "failed"
    assert error.endswith("matching the schema's pattern '^(a|aa)+$' took more than 0.05 s")


def test_a_judge_turn_rates_the_models_it_judges(recorder):
    models, registry = market({"cheap": {"capabilities": ["analysis"], "quality": 70,
                                         "price": {"input": 1, "output": 1}}})
    judge = recorder(['{"score": 9, "reason": "clear"}'])
    mode = {"name": "j", "participants": {"judge": None}, "turns": [
        {"id": "draft", "role": "Draft", "requires": ["analysis"], "prompt": "Write."},
        {"id": "verdict", "role": "Verdict", "participant": "judge", "prompt": "Judge it.",
         "scores": ["draft"]}]}
    orchestrator = dlg.Orchestrator(pool=models, registry=registry, models={"judge": judge})
    d = orchestrator.run_sync(mode)
    assert d.turns[1].data == {"score": 9, "reason": "clear"}
    stats = orchestrator.routing_stats()["draft"]["cheap"]
    assert stats.n == 1 and stats.mean == pytest.approx(0.9)
    assert dlg.load_dialogue(d.id).turns[1].metadata["rated"] == {"draft": 9}
    from dlg.records.store import open_store
    from dlg.running.routing.learning import rating_history

    (kept,) = rating_history(open_store(None))  # the viewer's routing page lists it
    assert {k: kept[k] for k in ("task", "model", "score", "dialogue", "turn", "by")} == {
        "task": "draft", "model": "cheap", "score": 0.9, "dialogue": d.id, "turn": "draft",
        "by": "judge"}
