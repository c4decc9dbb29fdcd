"""Mode inheritance: extends, overrides, add, remove (the seed's SC4.2)."""

from __future__ import annotations

from importlib.resources import files

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

PARENT = """\
name: parent
inputs: {topic: {required: true}}
participants: {a: null, b: echo}
settings: {temperature: 0.5, max_tokens: 100}
turns:
  - {id: one, role: One, participant: a, prompt: "one {{ topic }}"}
  - {id: two, role: Two, participant: b, prompt: "two", settings: {temperature: 0.9}}
  - {id: three, role: Three, participant: a, prompt: "three"}
"""


def ids(mode):
    return [[t.id for t in p.turns] for p in mode.phases]


@pytest.fixture
def parent(write_mode):
    return write_mode(PARENT, name="parent.yaml")


def test_override_deep_merges_one_turn(parent, write_mode):
    child = write_mode("name: child\nextends: ./parent.yaml\noverrides:\n"
                       "  two: {settings: {max_tokens: 7}, role: Second}\n")
    mode = dlg.load_mode(child)
    two = mode.turn("two")
    assert two.role == "Second"
    assert two.settings == {"temperature": 0.9, "max_tokens": 7}
    assert two.prompt == "two"
    assert mode.name == "child"
    assert mode.inputs == dlg.load_mode(parent).inputs


def test_override_prompt_replaces_prompt_file(write_mode, tmp_path):
    (tmp_path / "p.j2").write_text("from file {{ topic }}")
    write_mode("name: p\ninputs: {topic: {}}\nturns: [{id: a, role: r, prompt_file: p.j2}]\n",
               name="p.yaml")
    assert dlg.load_mode(tmp_path / "p.yaml").turn("a").prompt == "from file {{ topic }}"
    child = write_mode("name: c\nextends: ./p.yaml\noverrides: {a: {prompt: inline}}\n")
    assert dlg.load_mode(child).turn("a").prompt == "inline"


def test_add_turns_before_and_after(parent, write_mode):
    child = write_mode("""\
name: child
extends: ./parent.yaml
add:
  - {before: one, turns: [{id: zero, role: Z, prompt: z}]}
  - {after: two, turns: [{id: two_b, role: T, prompt: t}]}
  - {at: end, turns: [{id: last, role: L, prompt: l}]}
""")
    assert ids(dlg.load_mode(child)) == [["zero", "one", "two", "two_b", "three", "last"]]


def test_add_parallel_phase_splits_sequential_phase(parent, write_mode):
    child = write_mode("""\
name: child
extends: ./parent.yaml
add:
  - after: one
    phase:
      id: fan
      structure: parallel
      turns:
        - {id: x, role: X, prompt: x}
        - {id: y, role: Y, prompt: y}
""")
    mode = dlg.load_mode(child)
    assert [(p.id, p.structure) for p in mode.phases] == [
        ("main", "sequential"), ("fan", "parallel"), ("main_2", "sequential")]
    assert ids(mode) == [["one"], ["x", "y"], ["two", "three"]]
    # default context: everything that finished before
    assert mode.turn("x").context_from == ("one",)
    assert mode.turn("two").context_from == ("one", "x", "y")
    assert [t.index for t in mode.turns] == [1, 2, 3, 4, 5]


def test_remove_turn_and_context_follows(parent, write_mode):
    child = write_mode("name: child\nextends: ./parent.yaml\nremove: [two]\n")
    mode = dlg.load_mode(child)
    assert ids(mode) == [["one", "three"]]
    assert mode.turn("three").context_from == ("one",)


def test_remove_unknown_turn_is_an_error(parent, write_mode):
    child = write_mode("name: child\nextends: ./parent.yaml\nremove: [tow]\n")
    with pytest.raises(dlg.ModeError) as info:
        dlg.load_mode(child)
    assert info.value.problems[0].message == (
        "turn or phase 'tow' does not exist in the parent mode")
    assert info.value.problems[0].hint == "did you mean 'two'?"


def test_child_structure_change(parent, write_mode):
    child = write_mode("name: child\nextends: ./parent.yaml\nstructure: parallel\n")
    mode = dlg.load_mode(child)
    assert mode.structure == "parallel"
    assert all(t.context_from == () for t in mode.turns)


def test_participants_and_settings_merge(parent, write_mode):
    child = write_mode("name: child\nextends: ./parent.yaml\n"
                       "participants: {a: 'echo?latency=0'}\nsettings: {max_tokens: 9}\n")
    mode = dlg.load_mode(child)
    assert mode.participants["a"].model == "echo?latency=0"
    assert mode.participants["b"].model == "echo"
    assert mode.settings == {"temperature": 0.5, "max_tokens": 9}


def test_three_level_chain(parent, write_mode):
    write_mode("name: mid\nextends: ./parent.yaml\nremove: [three]\n", name="mid.yaml")
    leaf = write_mode("name: leaf\nextends: ./mid.yaml\n"
                      "add: [{after: two, turns: [{id: four, role: F, prompt: f}]}]\n")
    mode = dlg.load_mode(leaf)
    assert ids(mode) == [["one", "two", "four"]]
    assert len(mode.extends_chain) == 2


def test_extends_builtin_by_name(write_mode):
    child = write_mode("name: short-debate\nextends: debate\nremove: [defense, rebuttal]\n")
    mode = dlg.load_mode(child)
    assert [t.id for t in mode.turns] == ["proposition", "opposition", "synthesis", "verdict"]
    # the verdict read the removed turns; its context is what is left
    assert mode.turn("verdict").context_from == ("proposition", "opposition", "synthesis")


def test_detective_deep_variant_is_under_ten_percent_of_parent():
    """The seed's SC4.2: a variant takes under 10% of its parent's lines."""

    def config_lines(name: str) -> list[str]:
        text = files("dlg.modes").joinpath(name).read_text()
        return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    parent, child = config_lines("detective.yaml"), config_lines("detective-deep.yaml")
    assert len(child) / len(parent) < 0.10, (len(child), len(parent))
    mode = dlg.load_mode("detective-deep")
    assert [t.id for t in mode.turns] == [
        "hypotheses", "evidence", "examination", "challenge", "refinement", "meta_analysis",
        "conclusion"]
    assert mode.inputs["hypotheses"].default == 5
    assert mode.inputs["hypotheses"].type == "integer"


def test_resolved_output_loads_back_to_the_same_mode(write_mode, tmp_path):
    result = CliRunner().invoke(cli, ["modes", "show", "detective-deep", "--resolved"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    path = write_mode(result.output, name="resolved.yaml")
    again = dlg.load_mode(path)
    original = dlg.load_mode("detective-deep")
    assert again.to_dict() == original.to_dict()


def test_resolved_json_output(tmp_path):
    import json

    result = CliRunner().invoke(cli, ["modes", "show", "panel", "--resolved", "--format",
                                      "json"], catch_exceptions=False)
    data = json.loads(result.output)
    assert data["structure"] == "mixed"
    assert [p["id"] for p in data["phases"]] == ["experts", "summary"]
