"""One pass of mode errors: the schema's (shape) and the checks of meaning, together.

The checks of meaning run on the parts of a document whose shape is right, so a user
who fixes what ``--all-errors`` lists does not get a second batch. A check of meaning
that crashes on a malformed part would be hidden by the loader's safety net, so these
tests turn the net off.
"""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlg
from dlg.cli import cli
from dlg.errors import MAX_SHOWN, Problem
from dlg.language import loader
from tests.test_properties import modes


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loader, "SAFETY_NET", False)


def validate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["modes", "validate", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_shape_and_meaning_errors_are_listed_together_by_line(write_mode):
    write_mode(
        "name: x\n"
        "timeout: fast\n"
        "participants: {alice: null}\n"
        "turns:\n"
        "  - {id: a, role: [r], prompt: 'hi {{ topik }}'}\n"
        "  - {id: b, role: r, promt: hi, participant: alise, context_from: [a, ghost]}\n")
    code, output = validate("--all-errors", "mode.yaml")
    assert code == 2
    assert output == (
        "mode.yaml:2:10: $.timeout: expected a number, got a string\n"
        "mode.yaml:5: $.turns[0].prompt: prompt of turn 'a' uses 'topik', which is not an "
        "input or a dialogue variable\n"
        "  hint: inputs: none; declare it under 'inputs'\n"
        "mode.yaml:5:19: $.turns[0].role: expected a string, got a list\n"
        "mode.yaml:6:22: $.turns[1].promt: unknown key 'promt'\n"
        "  hint: did you mean 'prompt'?\n"
        "mode.yaml:6:22: $.turns[1]: a turn needs a 'prompt' (or a 'prompt_file')\n"
        "mode.yaml:6:46: $.turns[1].participant: turn 'b' names participant 'alise', which "
        "the mode does not declare\n"
        "  hint: did you mean 'alice'?\n"
        "mode.yaml:6:71: $.turns[1].context_from[1]: context_from names turn 'ghost', which "
        "does not exist\n"
        "Error: 1 of 1 mode(s) invalid\n")


def test_what_names_a_malformed_part_is_not_reported_again(write_mode):
    write_mode("name: x\ninputs: {topic: 5}\nparticipants: {alice: 5}\nturns:\n"
               "  - {id: 'a b', role: r, prompt: hi}\n"
               "  - {id: c, role: r, participant: alice, prompt: \"{{ topic }} {{ turns['a b'] }}"
               "\"}\n")
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode("mode.yaml", use_cache=False)
    assert [(p.line, p.path) for p in info.value.problems] == [
        (2, "$.inputs.topic"), (3, "$.participants.alice"), (5, "$.turns[0].id")]


def test_a_malformed_list_item_keeps_the_others_numbered(write_mode):
    # the null turn is reported; 'c' still reads turn 3 (itself, an error) and 'b' (fine)
    write_mode("name: x\nturns:\n  - null\n  - {id: b, role: r, prompt: hi}\n"
               "  - {id: c, role: r, prompt: hi, context_from: [b, 3, 7]}\n")
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode("mode.yaml", use_cache=False)
    assert [(p.line, p.path, p.message) for p in info.value.problems] == [
        (3, "$.turns[0]", "expected a mapping, got null"),
        (5, "$.turns[2].context_from[1]", "turn 'c' cannot read itself"),
        (5, "$.turns[2].context_from[2]", "turn 7 does not exist (this mode has 3 turns)"),
    ]


def test_an_error_in_a_parent_is_reported_at_the_parents_file_and_line(write_mode):
    write_mode("name: base\ntimeout: soon\nturns:\n  - {id: a, role: r, prompt: hi}\n"
               "  - {id: b, role: r, prompt: '{{ turns.zz }}'}\n", "base.yaml")
    write_mode("extends: base.yaml\nname: child\nmax_turns: many\n"
               "overrides:\n  a: {participant: nobody}\n")
    code, output = validate("--all-errors", "mode.yaml")
    assert code == 2
    assert output == (
        "mode.yaml:3:12: $.max_turns: expected a whole number, got a string\n"
        "mode.yaml:5:20: $.overrides.a.participant: turn 'a' names participant 'nobody', "
        "which the mode does not declare\n"
        "  hint: declared: none; add it under 'participants'\n"
        "base.yaml:2:10: $.timeout: expected a number, got a string\n"
        "base.yaml:5: $.turns[1].prompt: prompt of turn 'b' reads turn 'zz', which does not "
        "exist\n"
        "Error: 1 of 1 mode(s) invalid\n")


def test_inheritance_problems_do_not_stop_the_other_checks(write_mode):
    write_mode("name: base\nturns:\n  - {id: a, role: r, prompt: hi}\n", "base.yaml")
    write_mode("extends: base.yaml\nname: child\nremove: [nope]\n"
               "overrides:\n  zz: {role: x}\n  a: {prompt: '{{ nothing }}'}\n")
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode("mode.yaml", use_cache=False)
    assert [p.message for p in info.value.problems] == [
        "turn or phase 'nope' does not exist in the parent mode",
        "turn 'zz' does not exist in the parent mode",
        "prompt of turn 'a' uses 'nothing', which is not an input or a dialogue variable",
    ]


@pytest.mark.long  # about 4 s on a busy machine
def test_ten_thousand_errors_print_the_first_ones_and_a_count(write_mode):
    # 5,000 unknown keys (shape) and 5,000 turns that do not exist (meaning)
    bad_keys = "".join(f"    bad{i}: 1\n" for i in range(5_000))
    refs = ", ".join(f"ghost{i}" for i in range(5_000))
    write_mode(f"name: x\nturns:\n  - id: a\n    role: r\n    prompt: hi\n{bad_keys}"
               f"  - {{id: b, role: r, prompt: hi, context_from: [{refs}]}}\n")
    code, output = validate("--all-errors", "mode.yaml")
    assert code == 2
    lines = output.splitlines()
    assert lines[0] == "mode.yaml:6:5: $.turns[0].bad0: unknown key 'bad0'"
    assert lines[-2] == (f"... and {10_000 - MAX_SHOWN:,} more errors (only the first "
                         f"{MAX_SHOWN} are shown)")
    assert sum(line.startswith("mode.yaml:") for line in lines) == MAX_SHOWN


def test_the_same_problem_found_twice_is_listed_once():
    found = Problem("unknown key 'x'", file="m.yaml", path="$.x", line=2, column=1)
    other = Problem("later", file="m.yaml", path="$.y", line=1, column=1)
    parent = Problem("in the parent", file="base.yaml", path="$", line=1, column=1)
    assert loader._in_order([parent, found, other, found], ["m.yaml", "base.yaml"]) == [
        other, found, parent]


# -- generated modes: shape and meaning errors mixed --------------------------------------

SHAPE = st.sampled_from([
    ("role", ["r"], "expected a string"),
    ("settings", "hot", "expected a mapping"),
    ("timeout", "soon", "expected a number"),
    ("on_error", "explode", "is not one of"),
    ("promptt", "hi", "unknown key 'promptt'"),
])
MEANING = st.sampled_from([
    ("context_from", ["ghost_turn"], "which does not exist"),
    ("participant", "nobody_here", "which the mode does not declare"),
    ("prompt", "{{ no_such_input }}", "which is not an input or a dialogue variable"),
])


def _turns(data):
    return data.get("turns") or [t for p in data["phases"] for t in p["turns"]]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modes(), SHAPE, MEANING, st.integers(0, 100), st.integers(0, 100))
def test_generated_shape_and_meaning_errors_are_reported_together(
        data, shape, meaning, at_shape, at_meaning):
    turns = _turns(data)
    shape_turn, meaning_turn = turns[at_shape % len(turns)], turns[at_meaning % len(turns)]
    shape_turn[shape[0]] = shape[1]
    if meaning_turn is shape_turn and meaning[0] == shape[0]:
        # never one key with both kinds: put the meaning error on the next turn
        meaning_turn = turns[(at_meaning + 1) % len(turns)]
        if meaning_turn is shape_turn:
            return
    meaning_turn[meaning[0]] = meaning[1]
    if meaning[0] == "prompt":
        meaning_turn.pop("prompt_file", None)
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode(data)
    messages = [p.message for p in info.value.problems]
    assert any(shape[2] in m for m in messages), messages
    assert any(meaning[2] in m for m in messages), messages


GARBAGE = st.sampled_from([
    None, True, 0, -1, 2.5, "", "x", "{{ nope }}", "{% for %}", [], {}, [None], [1, "a"],
    {"id": "zz"}, [{"id": 1}], {"turns": []}, ["ghost"], [{"id": "q", "role": 1}],
])


def _places(node, path=()):
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_places(v, (*path, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_places(v, (*path, i)))
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modes(), st.lists(st.tuples(st.integers(0, 10_000), GARBAGE,
                                   st.sampled_from(["set", "key"])), min_size=1, max_size=4))
def test_no_meaning_check_crashes_on_a_malformed_part(data, edits):
    data = copy.deepcopy(data)
    for where, value, how in edits:
        places = [p for p in _places(data) if p]
        path = places[where % len(places)]
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        value = json.loads(json.dumps(value))
        if how == "key" and isinstance(parent, dict):
            parent[["unknown", "turns", "phases", "structure", "extends", "repeat",
                    "output", "scores", "until", "prompt_file"][where % 10]] = value
        else:
            parent[path[-1]] = value
    try:
        dlg.load_mode(data)
    except dlg.ModeError as exc:
        assert exc.problems
        assert all(p.message and p.path.startswith("$") for p in exc.problems)


def test_dlg_run_lists_both_kinds_of_error_and_exits_2(write_mode):
    write_mode("name: x\ntimeout: fast\nturns:\n"
               "  - {id: a, role: r, prompt: hi, context_from: [ghost]}\n")
    result = CliRunner().invoke(cli, ["run", "mode.yaml", "-t", "x", "-m", "echo", "-q",
                                      "--all-errors"], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.output == (
        "Error: mode.yaml:2:10: $.timeout: expected a number, got a string\n"
        "mode.yaml:4:49: $.turns[0].context_from[0]: context_from names turn 'ghost', which "
        "does not exist\n")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modes(), SHAPE, st.integers(0, 100), st.integers(0, 100))
def test_generated_errors_in_a_parent_are_reported_at_the_parents_file(
        tmp_path_factory, data, shape, at_shape, at_child):
    folder = tmp_path_factory.mktemp("chain")
    turns = _turns(data)
    turns[at_shape % len(turns)][shape[0]] = shape[1]
    (folder / "base.yaml").write_text(json.dumps(data, indent=1), encoding="utf-8")
    target = turns[at_child % len(turns)]["id"]
    (folder / "child.yaml").write_text(
        f"extends: base.yaml\nname: child\noverrides:\n  {target}: {{participant: nobody}}\n",
        encoding="utf-8")
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode(folder / "child.yaml", use_cache=False)
    problems = info.value.problems
    in_parent = [p for p in problems if p.file and p.file.endswith("base.yaml")]
    in_child = [p for p in problems if p.file and p.file.endswith("child.yaml")]
    assert any(shape[2] in p.message and p.line for p in in_parent), problems
    assert any("names participant 'nobody'" in p.message and p.line == 4
               for p in in_child), problems
    assert problems == in_child + in_parent  # the mode first, then its parent, by line


def test_a_turn_number_written_as_a_float_is_that_turn(write_mode):
    # JSON Schema counts 1.0 as an integer, so the schema lets it through
    write_mode(json.dumps({"name": "x", "turns": [
        {"id": "a", "role": "r", "prompt": "hi"},
        {"id": "b", "role": "r", "prompt": "{{ turns.a }}", "context_from": [1.0]}]}),
        "mode.json")
    assert dlg.load_mode("mode.json", use_cache=False).turn("b").context_from == ("a",)


def test_extends_a_name_too_long_for_the_file_system_is_a_mode_error(write_mode):
    write_mode("name: x\nextends: " + "x" * 300 + "\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert output.startswith("mode.yaml:2:10: $.extends: 'extends': 'xxx")
    assert "is not a known mode and not a file" in output
