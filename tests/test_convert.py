"""`dlg modes convert`: the original specification's JSON format becomes a dlg mode."""

from __future__ import annotations

import json

from click.testing import CliRunner

import dlg
from dlg.cli import cli

SEED = {  # the seed's SC4.1 example
    "name": "detective", "structure": "sequential", "turns": 2,
    "prompts": {
        "turn_1": {"role": "hypothesis", "participant": "grok", "requires": ["reasoning"],
                   "template": "Generate 3 hypotheses for: {topic}"},
        "turn_2": {"role": "evidence", "participant": "claude", "requires": ["analysis"],
                   "template": "For each hypothesis, what evidence would support or refute "
                               "it?\n\n{turn_1}"},
    },
}
CHILD = {  # the seed's SC4.2 example, filled in
    "name": "detective-deep", "extends": "detective.yaml", "turns": 4,
    "overrides": {"turn_1": {"template": "Generate 5 hypotheses (not 3) for: {topic}"}},
    "additional_turns": {
        "turn_3": {"role": "refinement", "participant": "grok", "template": "Refine {turn_2}"},
        "turn_4": {"role": "meta-analysis", "participant": "claude",
                   "template": "Where is {turn_1} biased? Use {{braces}} literally."},
    },
}


def test_loading_the_seed_format_says_how_to_convert_it(tmp_path):
    path = tmp_path / "detective.json"
    path.write_text(json.dumps(SEED))
    result = CliRunner().invoke(cli, ["run", str(path), "--topic", "x", "--model", "echo"])
    assert result.exit_code == 2
    assert "written in the original specification's format" in result.output
    assert f"hint: `dlg modes convert {path}` writes it as a dlg mode" in result.output


def test_convert_parent_and_child_then_run_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "detective.json").write_text(json.dumps(SEED))
    (tmp_path / "deep.json").write_text(json.dumps(CHILD))
    runner = CliRunner()
    first = runner.invoke(cli, ["modes", "convert", "detective.json", "-o", "detective.yaml"],
                          catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "wrote detective.yaml: `dlg run detective.yaml` runs it" in first.stderr
    assert "participants claude, grok are declared without models" in first.stderr
    second = runner.invoke(cli, ["modes", "convert", "deep.json", "-o", "deep.yaml"],
                           catch_exceptions=False)
    assert second.exit_code == 0, second.output
    mode = dlg.load_mode(tmp_path / "detective.yaml")
    assert [t.role for t in mode.turns] == ["hypothesis", "evidence"]
    assert mode.turns[1].prompt.rstrip().endswith("{{ turns.turn_1 }}")
    assert mode.turns[1].context_from == ("turn_1",)
    d = dlg.run_sync(tmp_path / "deep.yaml", topic="Who wrote Shakespeare?", model="echo",
                     store=None)
    assert [t.role for t in d.turns] == ["hypothesis", "evidence", "refinement",
                                         "meta-analysis"]
    assert d.turns[0].prompt == "Generate 5 hypotheses (not 3) for: Who wrote Shakespeare?"
    assert d.turns[3].prompt.endswith("Use {braces} literally.")
    assert "echo: Generate 5 hypotheses" in d.turns[3].prompt


def test_convert_to_stdout_and_refuse_a_dlg_mode(tmp_path):
    (tmp_path / "detective.json").write_text(json.dumps(SEED))
    runner = CliRunner()
    out = runner.invoke(cli, ["modes", "convert", str(tmp_path / "detective.json")],
                        catch_exceptions=False)
    assert out.stdout.startswith("name: detective\n")
    refused = runner.invoke(cli, ["modes", "convert", "debate"])
    assert refused.exit_code == 2
    assert "is not in the original specification's format" in refused.output
