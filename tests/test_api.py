"""The Python API: run, run_sync, Orchestrator, ModeLoader, inputs, model binding."""

from __future__ import annotations

import json
import re

import pytest

import dlg


def test_run_sync_builtin_mode():
    d = dlg.run_sync("debate", topic="Should cities ban cars?", model="echo")
    assert d.status == "completed"
    assert [t.role for t in d.turns] == [
        "Proposition", "Opposition", "Defense", "Rebuttal", "Synthesis", "Verdict"]


async def test_langchain_models_per_participant(recorder):
    """The seed's SC1.1: any LangChain chat model works, one per participant."""
    models = {"proponent": recorder(["for"]), "opponent": recorder(["against"]),
              "moderator": recorder(["middle"]), "judge": recorder(["verdict"])}
    d = await dlg.Orchestrator(models=models).run("debate", topic="x")
    assert [t.response for t in d.turns] == ["for", "against", "for", "against", "middle",
                                             "verdict"]
    assert d.turns[0].model == "FakeListChatModel" or d.turns[0].model


def test_detective_json_mode_from_file(tmp_path):
    """The seed's SC4.1: a JSON mode written by hand loads and runs."""
    mode = {
        "name": "detective",
        "structure": "sequential",
        "inputs": {"topic": {"required": True}},
        "participants": {"grok": None, "claude": None},
        "turns": [
            {"id": "turn_1", "role": "hypothesis", "participant": "grok",
             "requires": ["reasoning"], "prompt": "Generate 3 hypotheses for: {{ topic }}"},
            {"id": "turn_2", "role": "evidence", "participant": "claude",
             "requires": ["analysis"],
             "prompt": "For each hypothesis, what evidence would support or refute it?\n\n"
                       "{{ turns.turn_1 }}"},
            {"id": "turn_3", "role": "examination", "participant": "claude", "prompt": "Rank."},
            {"id": "turn_4", "role": "challenge", "participant": "grok", "prompt": "Attack."},
            {"id": "turn_5", "role": "conclusion", "participant": "grok", "prompt": "Decide."},
        ],
    }
    path = tmp_path / "detective.json"
    path.write_text(json.dumps(mode, indent=2))
    loaded = dlg.ModeLoader.from_file(path)
    d = dlg.run_sync(loaded, topic="Who wrote Shakespeare?", model="echo")
    assert len(d.turns) == 5
    assert d.turns[0].role == "hypothesis"
    assert d.turns[0].requires == ("reasoning",)
    assert d.turns[1].prompt.endswith(d.turns[0].response)


def test_missing_required_input():
    with pytest.raises(dlg.InputError, match="mode 'debate' needs the input 'topic'"):
        dlg.run_sync("debate", model="echo")


def test_unknown_input():
    with pytest.raises(dlg.InputError, match="mode 'debate' has no input 'topix'"):
        dlg.run_sync("debate", topix="x", model="echo")


def test_input_types_are_coerced():
    d = dlg.run_sync("pipeline", topic="x", words="150", model="echo")
    assert d.inputs["words"] == 150
    with pytest.raises(dlg.InputError, match="input 'words' of mode 'pipeline' must be an"
                                              " integer, got 'many'"):
        dlg.run_sync("pipeline", topic="x", words="many", model="echo")


def test_unknown_model_is_caught_before_any_turn():
    with pytest.raises(dlg.UnknownModelError, match="'nope:x' is not a known model"):
        dlg.run_sync("debate", topic="x", model="nope:x")


@pytest.mark.parametrize(("options", "says"), [
    ({"model": 123}, "123 (given as model=) is not a model: give a model spec"),
    ({"participants": {"judge": 1.5}}, "1.5 (given for participant 'judge') is not a model"),
])
def test_a_model_that_is_not_one_is_refused_before_any_turn(options, says):
    """It used to fail the first turn with "AttributeError: 'int' object has no attribute
    'ainvoke'"."""
    with pytest.raises(dlg.ModelError, match=re.escape(says)):
        dlg.run_sync("debate", topic="x", **options)


def test_a_store_that_is_not_one_is_refused_before_any_turn(recorder):
    """It used to run the whole dialogue, then fail: "observer Saver failed in
    dialogue_finished: AttributeError: 'int' object has no attribute 'save'"."""
    model = recorder(["ok"])
    with pytest.raises(dlg.StoreError, match=r"store=123 is not a store: give a store's name"):
        dlg.run_sync("debate", topic="x", model=model, store=123)
    assert model.calls == []


def test_run_takes_a_pool_and_a_max_cost_as_dlg_run_does(tmp_path, monkeypatch):
    """``--pool`` and ``--max-cost`` from Python, without making an Orchestrator."""
    registry = tmp_path / "prices.yaml"  # echo at $1,000 a million tokens
    registry.write_text("models:\n  echo:\n    price: {input: 1000, output: 1000}\n")
    monkeypatch.setenv("DLG_REGISTRY", str(registry))
    mode = {"name": "two", "turns": [{"id": "a", "role": "A", "prompt": "hi " * 20},
                                     {"id": "b", "role": "B", "prompt": "again " * 20}]}
    free = dlg.run_sync(mode, router="capabilities", pool=["echo"], store=None,
                        constraints={"quality": "balanced"})
    assert free.status == "completed" and [t.model for t in free.turns] == ["echo", "echo"]
    one_turn = free.turns[0].cost_usd * 1.5  # enough for the first turn, not for both
    capped = dlg.run_sync(mode, router="capabilities", pool=["echo"], store=None,
                          max_cost=one_turn)
    assert capped.status == "cost_limited" and capped.total_cost_usd <= one_turn
    with pytest.raises(dlg.ModelError, match="given in the pool"):
        dlg.run_sync("debate", topic="x", pool=["echo", 3])


@pytest.mark.parametrize(("options", "says"), [
    ({"max_cost": float("nan")}, "max_cost must be a finite number of dollars more than 0, "
                                 "not nan"),
    ({"max_cost": -1}, "max_cost must be a finite number of dollars more than 0, not -1"),
    ({"timeout": float("nan")}, "timeout must be a finite number of seconds more than 0"),
    ({"timeout": 0}, "timeout must be a finite number of seconds more than 0, not 0"),
])
def test_a_limit_that_limits_nothing_is_refused(options, says):
    """A NaN passes every comparison: max_cost=nan ran with no limit at all, and
    timeout=nan failed each turn with "deadline must not be NaN" and a warning."""
    with pytest.raises(dlg.InputError, match=re.escape(says)):
        dlg.run_sync("debate", topic="x", model="echo", store=None, **options)


@pytest.mark.parametrize(("args", "says"), [
    (["run", "debate", "-t", "x", "-m", "echo", "--max-cost", "nan"],
     "Invalid value for '--max-cost': 'nan' is not a finite number of dollars more than 0"),
    (["run", "debate", "-t", "x", "-m", "echo", "--timeout", "0"],
     "Invalid value for '--timeout': '0' is not a finite number of seconds more than 0"),
    (["models", "list", "--max-price", "nan"],
     "Invalid value for '--max-price': 'nan' is not a finite number of dollars of at least 0"),
])
def test_the_cli_refuses_such_limits_too(args, says):
    from click.testing import CliRunner

    from dlg.cli import cli

    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 2 and says in ran.output


@pytest.mark.parametrize("number", [".nan", ".inf", "1e400"])
def test_a_number_that_is_not_finite_in_a_mode_or_registry_is_an_error(tmp_path, number):
    mode = tmp_path / "m.yaml"
    mode.write_text(f"name: m\ntimeout: {number}\nturns: [{{id: a, role: A, prompt: hi}}]\n")
    with pytest.raises(dlg.ModeError, match=r"m\.yaml:2:10: \$\.timeout: .* is not a finite "
                                            "number"):
        dlg.load_mode(mode)
    registry = tmp_path / "r.yaml"
    registry.write_text(f"models:\n  echo:\n    price: {{input: {number}, output: 1}}\n")
    from dlg.models.catalog import load_registry_file

    with pytest.raises(dlg.ModelError, match=r"\$\.models\.echo\.price\.input: .* is not a "
                                             "finite number"):
        load_registry_file(registry)


def test_no_model_configured_uses_the_local_default_and_says_what_is_missing(
        tmp_path, monkeypatch):
    monkeypatch.setenv("DLG_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("DLG_LOCAL_MODEL", raising=False)
    with pytest.raises(dlg.ModelError, match=r"'local' cannot run: no local model file at "
                                              r".*: run `dlg models pull`"):
        dlg.run_sync("debate", topic="x")


def test_dlg_model_environment_variable(monkeypatch):
    monkeypatch.setenv("DLG_MODEL", "echo?words=3")
    d = dlg.run_sync("debate", topic="x")
    assert d.status == "completed"
    assert d.participants["judge"] == "echo?words=3"


def test_unknown_participant_binding():
    with pytest.raises(dlg.InputError, match="mode 'debate' has no participant 'juge'"):
        dlg.run_sync("debate", topic="x", model="echo", participants={"juge": "echo"})


def test_load_mode_returns_mode_objects():
    mode = dlg.load_mode("panel")
    assert isinstance(mode, dlg.Mode)
    assert mode.structure == "mixed"
    assert dlg.load_mode(mode) is mode
    assert dlg.ModeLoader.from_name("panel") == mode


def test_mode_cache_is_used_and_invalidated(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\nturns: [{id: a, role: A, prompt: one}]\n")
    assert dlg.load_mode(path).turn("a").prompt == "one"
    assert dlg.load_mode(path).turn("a").prompt == "one"  # from the cache
    path.write_text("name: m\nturns: [{id: a, role: A, prompt: two}]\n")
    assert dlg.load_mode(path).turn("a").prompt == "two"


def test_cache_notices_parent_change(tmp_path):
    parent = tmp_path / "p.yaml"
    parent.write_text("name: p\nturns: [{id: a, role: A, prompt: one}]\n")
    child = tmp_path / "c.yaml"
    child.write_text("name: c\nextends: ./p.yaml\n")
    assert dlg.load_mode(child).turn("a").prompt == "one"
    parent.write_text("name: p\nturns: [{id: a, role: A, prompt: two}]\n")
    assert dlg.load_mode(child).turn("a").prompt == "two"


def test_export_to_file(tmp_path):
    d = dlg.run_sync("detective", topic="x", model="echo")
    path = d.export("markdown", tmp_path / "out.md")
    text = path.read_text()
    assert text.startswith("# detective: x\n")
    assert "## 1. hypothesis (detective)" in text
    with pytest.raises(dlg.UnknownExporterError, match="'docx' is not a known export format"):
        d.export("docx")


def test_user_modes_directory(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("name: mine\nturns: [{id: a, role: A, prompt: hi}]\n")
    monkeypatch.setenv("DLG_MODES_PATH", str(tmp_path))
    assert dlg.run_sync("mine", model="echo").status == "completed"


def test_a_long_lived_orchestrator_does_not_keep_every_mode():
    orchestrator = dlg.Orchestrator(model="echo", store=None)
    for i in range(80):
        orchestrator.run_sync({"name": f"m{i}", "turns": [{"id": "a", "role": "A",
                                                            "prompt": "hi"}]})
    assert len(orchestrator.binder._bound) <= 64  # the bindings kept, per mode
