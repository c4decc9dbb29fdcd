"""Every kind of broken mode gets a located, one-screen error and exit code 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli


def validate(path, *extra):
    result = CliRunner().invoke(cli, ["modes", "validate", *extra, str(path)],
                                catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


CASES = {
    "bad_yaml": (
        "name: x\nturns:\n  - id: a\n    role: r\n   prompt: hi\n",
        "mode.yaml:5:4: $: invalid YAML: while parsing a block collection expected <block end>,"
        " but found '<block mapping start>'\n"
        "  hint: check the indentation of this line and the one before it\n",
    ),
    "unknown_key": (
        # the misspelt key first: the missing 'prompt' is what it causes
        "name: x\nturns:\n  - id: a\n    role: r\n    promt: hi\n",
        "mode.yaml:5:5: $.turns[0].promt: unknown key 'promt'\n"
        "  hint: did you mean 'prompt'?\n"
        "... and 1 more error (use --all-errors to see them all)\n",
    ),
    "wrong_type": (
        "name: x\ntimeout: fast\nturns: [{id: a, role: r, prompt: hi}]\n",
        "mode.yaml:2:10: $.timeout: expected a number, got a string\n",
    ),
    "dangling_context": (
        "name: x\nturns:\n  - {id: a, role: r, prompt: hi}\n"
        "  - {id: b, role: r, prompt: hi, context_from: [a, c]}\n",
        "mode.yaml:4:52: $.turns[1].context_from[1]: context_from names turn 'c', which does "
        "not exist\n",
    ),
    "later_context": (
        "name: x\nturns:\n  - {id: a, role: r, prompt: hi, context_from: [b]}\n"
        "  - {id: b, role: r, prompt: hi}\n",
        "mode.yaml:3:49: $.turns[0].context_from[0]: turn 'a' reads 'b', which has not run yet"
        " when 'a' runs\n",
    ),
    "parallel_sibling": (
        "name: x\nstructure: parallel\nturns:\n  - {id: a, role: r, prompt: hi}\n"
        "  - {id: b, role: r, prompt: hi, context_from: [a]}\n",
        "mode.yaml:5:49: $.turns[1].context_from[0]: turn 'b' runs in parallel with 'a' (phase"
        " 'main') and cannot read it\n  hint: move one of them to an earlier phase\n",
    ),
    "unknown_participant": (
        "name: x\nparticipants: {alice: null}\nturns:\n"
        "  - {id: a, role: r, participant: alise, prompt: hi}\n",
        "mode.yaml:4:35: $.turns[0].participant: turn 'a' names participant 'alise', which the "
        "mode does not declare\n  hint: did you mean 'alice'?\n",
    ),
    "unknown_variable": (
        "name: x\ninputs: {topic: {required: true}}\nturns:\n  - id: a\n    role: r\n"
        "    prompt: |\n      Hello\n      About {{ topik }}\n",
        "mode.yaml:8: $.turns[0].prompt: prompt of turn 'a' uses 'topik', which is not an input"
        " or a dialogue variable\n  hint: did you mean 'topic'?\n",
    ),
    "turn_not_run_yet": (
        "name: x\nturns:\n  - {id: a, role: r, prompt: '{{ turns.b }}'}\n"
        "  - {id: b, role: r, prompt: hi}\n",
        "mode.yaml:3: $.turns[0].prompt: prompt of turn 'a' reads turn 'b', which has not run "
        "yet when 'a' runs\n  hint: a turn can only read turns that finish before it starts\n",
    ),
    "template_syntax": (
        "name: x\nturns:\n  - {id: a, role: r, prompt: 'hi {% if %}'}\n",
        "mode.yaml:3: $.turns[0].prompt: prompt of turn 'a': template syntax error: Expected an"
        " expression, got 'end of statement block'\n",
    ),
    "duplicate_key": (
        "name: x\nname: y\nturns: [{id: a, role: r, prompt: hi}]\n",
        "mode.yaml:2:1: $: invalid YAML: while constructing a mapping found duplicate key "
        "\"name\" with value \"y\" (original value: \"x\")\n",
    ),
    "duplicate_turn": (
        "name: x\nturns:\n  - {id: a, role: r, prompt: hi}\n  - {id: a, role: r, prompt: hi}\n",
        "mode.yaml:4:10: $.turns[1].id: two turns are both called 'a'\n",
    ),
    "not_a_mapping": (
        "- just\n- a list\n",
        "mode.yaml:1:1: $: a mode must be a mapping of keys to values, but this document is a"
        " list\n",
    ),
    "no_turns": (
        "name: x\n",
        "mode.yaml:1:1: $: a mode needs 'turns' or 'phases' (or 'extends' to inherit them)\n",
    ),
    "bad_enum": (
        "name: x\nstructure: paralel\nturns: [{id: a, role: r, prompt: hi}]\n",
        "mode.yaml:2:12: $.structure: 'paralel' is not one of: sequential, parallel, mixed\n"
        "  hint: did you mean 'parallel'?\n",
    ),
    "reserved_input": (
        "name: x\ninputs: {turns: {}}\nturns: [{id: a, role: r, prompt: hi}]\n",
        "mode.yaml:2:10: $.inputs.turns: input 'turns' clashes with a name every template "
        "already has\n  hint: reserved: context, inputs, mode, parent, participant, "
        "participants, role, round, transcript, turn, turns\n",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_mode_reports_location_and_exits_2(case, write_mode):
    text, expected = CASES[case]
    write_mode(text)
    code, output = validate("mode.yaml")
    assert code == 2
    assert output == expected + "Error: 1 of 1 mode(s) invalid\n"


def test_all_errors_flag_shows_every_problem(write_mode):
    write_mode("name: x\nturns:\n  - id: a\n    role: r\n    promt: hi\n")
    code, output = validate("mode.yaml", "--all-errors")
    assert code == 2
    assert output == (
        "mode.yaml:5:5: $.turns[0].promt: unknown key 'promt'\n"
        "  hint: did you mean 'prompt'?\n"
        "mode.yaml:5:5: $.turns[0]: a turn needs a 'prompt' (or a 'prompt_file')\n"
        "Error: 1 of 1 mode(s) invalid\n"
    )


def test_a_misspelt_required_key_is_named_before_what_it_leaves_missing(write_mode):
    """'a turn needs a 'prompt'' (or 'missing required key 'role'') came first, at the
    turn's first line, and the misspelt key that causes it after, if at all."""
    write_mode("name: x\nturns:\n  - id: a\n    prompt: hi\n    rol: r\n"
               "  - id: b\n    role: r\n    promt: hi\n")
    code, output = validate("mode.yaml", "--all-errors")
    assert code == 2
    assert output == (
        "mode.yaml:5:5: $.turns[0].rol: unknown key 'rol'\n"
        "  hint: did you mean 'role'?\n"
        "mode.yaml:5:5: $.turns[0]: missing required key 'role'\n"
        "mode.yaml:8:5: $.turns[1].promt: unknown key 'promt'\n"
        "  hint: did you mean 'prompt'?\n"
        "mode.yaml:8:5: $.turns[1]: a turn needs a 'prompt' (or a 'prompt_file')\n"
        "Error: 1 of 1 mode(s) invalid\n"
    )


@pytest.mark.parametrize("command", [
    ["batch", "mode.yaml", "--inputs", "rows.jsonl", "-m", "echo", "--all-errors"],
    ["modes", "show", "mode.yaml", "--resolved", "--all-errors"],
])
def test_every_command_that_loads_a_mode_takes_all_errors(write_mode, tmp_path, command):
    """The count of further errors says "use --all-errors to see them all", which `dlg
    batch` and `dlg modes show --resolved` refused as no such option."""
    write_mode("name: x\nturns:\n  - id: a\n    role: r\n    promt: hi\n")
    (tmp_path / "rows.jsonl").write_text('{"topic": "x"}\n')
    result = CliRunner().invoke(cli, command, catch_exceptions=False)
    assert result.exit_code == 2
    assert result.output == (
        "Error: mode.yaml:5:5: $.turns[0].promt: unknown key 'promt'\n"
        "  hint: did you mean 'prompt'?\n"
        "mode.yaml:5:5: $.turns[0]: a turn needs a 'prompt' (or a 'prompt_file')\n")


def test_bad_json_reports_line_and_column(write_mode):
    write_mode('{"name": "x",\n "turns": [{"id": "a", "role": "r", "prompt": "hi",}]}\n',
               name="mode.json")
    code, output = validate("mode.json")
    assert code == 2
    assert output.startswith("mode.json:2:52: $: invalid JSON: Expecting property name")


def test_json_schema_errors_are_located_too(write_mode):
    write_mode('{"name": "x",\n "turns": [{"id": "a", "role": 5, "prompt": "hi"}]}\n',
               name="mode.json")
    code, output = validate("mode.json")
    assert code == 2
    assert output.startswith("mode.json:2:32: $.turns[0].role: expected a string, got a number")


def test_extends_cycle_is_detected(write_mode):
    write_mode("name: c1\nextends: ./c2.yaml\n", name="c1.yaml")
    write_mode("name: c2\nextends: ./c1.yaml\n", name="c2.yaml")
    code, output = validate("c1.yaml")
    assert code == 2
    assert output == (
        "c2.yaml:2:10: $.extends: 'extends' makes a cycle: c1.yaml -> c2.yaml -> c1.yaml\n"
        "Error: 1 of 1 mode(s) invalid\n"
    )


def test_self_extension_is_a_cycle(write_mode):
    write_mode("name: me\nextends: ./mode.yaml\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert "'extends' makes a cycle: mode.yaml -> mode.yaml" in output


def test_unknown_parent(write_mode):
    write_mode("name: x\nextends: debait\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert output.startswith(
        "mode.yaml:2:10: $.extends: 'extends': 'debait' is not a known mode and not a file\n"
        "  hint: did you mean 'debate'?")


def test_override_of_missing_turn(write_mode):
    write_mode("name: o\nextends: debate\noverrides:\n  verdikt: {prompt: x}\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert output == (
        "mode.yaml:4:12: $.overrides.verdikt: turn 'verdikt' does not exist in the parent mode\n"
        "  hint: did you mean 'verdict'?\n"
        "Error: 1 of 1 mode(s) invalid\n"
    )


def test_errors_in_parent_point_at_parent_file(write_mode):
    write_mode("name: p\nturns: [{id: a, role: r, prompt: '{{ nope }}'}]\n", name="p.yaml")
    write_mode("name: c\nextends: ./p.yaml\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert output.startswith("p.yaml:2: $.turns[0].prompt: prompt of turn 'a' uses 'nope'")


def test_errors_in_override_point_at_child_file(write_mode):
    write_mode("name: p\nturns: [{id: a, role: r, prompt: hi}]\n", name="p.yaml")
    write_mode("name: c\nextends: ./p.yaml\noverrides:\n  a: {prompt: '{{ nope }}'}\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert output.startswith(
        "mode.yaml:4: $.overrides.a.prompt: prompt of turn 'a' uses 'nope'")


def test_missing_prompt_file(write_mode):
    write_mode("name: x\nturns: [{id: a, role: r, prompt_file: nowhere.j2}]\n")
    code, output = validate("mode.yaml")
    assert code == 2
    assert "prompt_file 'nowhere.j2' not found" in output


def test_run_with_invalid_mode_exits_2_without_traceback(write_mode):
    write_mode("name: x\nturns: [{id: a, role: r, prompt: '{{ nope }}'}]\n")
    result = CliRunner().invoke(cli, ["run", "mode.yaml", "--model", "echo"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: mode.yaml:2: $.turns[0].prompt: prompt of turn 'a'")


def test_python_api_raises_mode_error_with_problems(write_mode):
    path = write_mode("name: x\ntimeout: -1\nturns: [{id: a, role: r, prompt: hi}]\n")
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.path) == (2, 10, "$.timeout")


def test_unknown_mode_name():
    result = CliRunner().invoke(cli, ["run", "debait", "--model", "echo"])
    assert result.exit_code == 2
    assert result.output == (
        "Error: <mode>: $: 'debait' is not a known mode and not a file\n"
        "  hint: did you mean 'debate'? `dlg modes list` shows the known modes; pass a path "
        "to run a file\n"
    )
