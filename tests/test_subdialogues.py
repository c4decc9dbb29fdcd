"""Sub-dialogues: ``spawn`` on a turn (the seed's SC2.3)."""

from __future__ import annotations

import anyio
import pytest

import dlg
from tests.subdialogue_support import CHILD, PARENT, SUBTOPICS, Tree


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "tree.yaml").write_text(PARENT)
    (tmp_path / "explore.yaml").write_text(CHILD)
    return tmp_path / "tree.yaml"


def test_seed_sc2_3_a_turn_spawns_sub_dialogues_that_merge_back(tree):
    model = Tree(calls=[])
    d = dlg.Orchestrator(model=model).run_sync(tree, topic="Explain AGI risks")
    assert d.status == "completed"
    assert len(d.subdialogues) == 3
    assert all(sub.depth == d.depth + 1 for sub in d.subdialogues)
    assert all(sub.status == "completed" for sub in d.subdialogues)
    assert {sub.inputs["topic"] for sub in d.subdialogues} == set(SUBTOPICS)
    # results merge back: the next turn reads each child's answer, in the plan's order
    assert d.turn("merge").prompt == (
        "TURN merge [alpha: answer to TURN sum alpha][beta: answer to TURN sum beta]"
        "[gamma: answer to TURN sum gamma]")
    # children inherit context: the parent template variable
    assert "TURN look alpha (parent alpha)" in model.calls
    entries = d.turn("split").metadata["subdialogues"]
    assert [e["item"] for e in entries] == SUBTOPICS
    assert all(e["status"] == "completed" and e["turns"] == 2 for e in entries)
    # saved as linked records, and loaded back as a tree
    saved = dlg.load_dialogue(d.id)
    assert [c.id for c in saved.subdialogues] == [e["id"] for e in entries]
    child = saved.subdialogues[0]
    assert child.parent_id == d.id and child.depth == 1
    assert child.metadata["parent"]["turn"] == "split"
    assert "answer to SPLIT" not in child.metadata["parent"]["transcript"]
    assert '"subtopics"' in child.metadata["parent"]["transcript"]


def test_hook_turn_progress(tree):
    from dlg import hookimpl
    from dlg.plugin_manager import build_plugin_manager

    seen = []

    class Watch:
        @hookimpl
        def turn_progress(self, dialogue, turn):
            saved = dlg.load_dialogue(dialogue.id).turn(turn.id)
            seen.append((turn.status, saved.data, len(saved.metadata["subdialogues"])))

    pm = build_plugin_manager()
    pm.register(Watch(), name="watch")
    d = dlg.Orchestrator(model=Tree(calls=[]), plugin_manager=pm).run_sync(tree, topic="t")
    assert d.status == "completed"
    # saved by the built-in saver (an observer, called before plugins) before children ran
    assert seen == [("running", {"subtopics": SUBTOPICS}, 3)]


def test_children_run_at_most_concurrency_at_once(tree):
    for limit in (1, 2, 3):
        tree.write_text(PARENT.replace("concurrency: 3", f"concurrency: {limit}"))
        model = Tree(calls=[], latency=0.05)
        d = dlg.Orchestrator(model=model, store=None).run_sync(tree, topic="t")
        assert d.status == "completed"
        assert model.peak == limit


def test_max_children_and_the_depth_limit(tmp_path):
    mode = tmp_path / "deep.yaml"
    mode.write_text(
        "name: deep\ninputs: {topic: {required: true}}\nmax_depth: 1\nturns:\n"
        "  - id: split\n    role: Planner\n    prompt: 'LIST {{ topic }}'\n"
        "    spawn: {mode: self, max_children: 3}\n")
    model = Tree(calls=[], subtopics=["a", "b", "c", "d"])
    d = dlg.Orchestrator(model=model, store=None).run_sync(mode, topic="x")
    assert d.status == "completed"
    split = d.turn("split")
    assert len(d.subdialogues) == 3 and split.metadata["spawn_left_out"] == 2
    # without an output schema the items are the answer's lines, bullets taken off
    assert [c.inputs["topic"] for c in d.subdialogues] == ["Subtopics:", "a", "b"]
    for child in d.subdialogues:  # at max_depth a spawning turn answers without spawning
        assert child.depth == 1 and child.subdialogues == []
        assert child.turn("split").metadata["spawn"].startswith("not spawned: depth 1")


def test_a_failed_child_fails_the_turn_and_resume_continues_only_that_child(tree):
    d = dlg.Orchestrator(model=Tree(calls=[], broken="TURN sum beta"),
                         retry=dlg.RetryPolicy(attempts=1)).run_sync(tree, topic="t")
    assert d.status == "failed"
    split = d.turn("split")
    assert split.status == "failed" and "1 of 3 sub-dialogues did not complete" in split.error
    statuses = {e["item"]: e["status"] for e in split.metadata["subdialogues"]}
    assert statuses == {"alpha": "completed", "beta": "failed", "gamma": "completed"}

    fixed = Tree(calls=[])
    resumed = anyio.run(lambda: dlg.resume(d.id, model=fixed))
    assert resumed.status == "completed"
    # the split was not paid again, nor alpha, gamma or beta's first turn
    assert fixed.calls[:1] == ["### Look\nanswer to TURN look beta (parent beta)\n\n"
                               "TURN sum beta"]
    assert len(fixed.calls) == 2 and fixed.calls[1].startswith("TURN merge [alpha")
    assert [c.status for c in resumed.subdialogues] == ["completed"] * 3


def test_a_child_can_be_resumed_on_its_own(tree):
    d = dlg.Orchestrator(model=Tree(calls=[], broken="TURN sum gamma"),
                         retry=dlg.RetryPolicy(attempts=1)).run_sync(tree, topic="t")
    gamma = next(c for c in d.subdialogues if c.inputs["topic"] == "gamma")
    fixed = Tree(calls=[])
    child = anyio.run(lambda: dlg.resume(gamma.id, model=fixed))
    assert child.status == "completed" and len(fixed.calls) == 1
    # the parent then finds it ended, and pays only for its own last turn
    parent = anyio.run(lambda: dlg.resume(d.id, model=fixed))
    assert parent.status == "completed" and len(fixed.calls) == 2


def test_children_share_the_parents_budget_and_a_resume_keeps_to_it(tree):
    from dlg.models.catalog import ModelRegistry

    registry = ModelRegistry.load()
    registry.add({"models": {"tree": {"price": {"input": 1000, "output": 1000}}}}, "test")
    # each call costs $0.01 (10 tokens at $1000 per million), but reserves its worst case
    # first (about $0.12), and the turns to come are held a cheapest finish: $0.40 for
    # a tree of 26 calls runs out inside the children, which wait for each other's
    # reservations rather than stop at once
    tree.with_name("explore.yaml").write_text(CHILD + "".join(
        f'  - {{id: more{k}, role: More, prompt: "TURN more {{{{ topic }}}}"}}\n'
        for k in range(6)))
    d = dlg.Orchestrator(model=Tree(calls=[]), registry=registry, max_cost=0.4).run_sync(
        tree, topic="t")

    def spent(dialogue):
        # total_cost_usd counts the sub-dialogues (as their parent's turn recorded them)
        own = dialogue.own_cost_usd + sum(c.total_cost_usd for c in dialogue.subdialogues)
        assert dialogue.total_cost_usd == pytest.approx(own)
        return dialogue.total_cost_usd

    assert d.status == "cost_limited" and spent(d) <= 0.4
    assert d.turn("split").status == "pending"
    assert any(c.status == "cost_limited" for c in d.subdialogues)
    assert "ran out in" in d.metadata["stopped"]["reason"]
    for child in d.subdialogues:
        assert 0 < child.metadata["budget_limit"] <= 0.4
    # resumed with a larger limit, the whole tree (what was spent before included) counts
    model = Tree(calls=[])
    again = anyio.run(lambda: dlg.resume(d.id, model=model, registry=registry,
                                         max_cost=100))
    assert again.status == "completed"
    assert again.metadata["budget"]["max_cost"] == 100
    assert again.metadata["budget"]["spent"] == pytest.approx(
        spent(dlg.load_dialogue(again.id)))
    assert spent(again) > spent(d)


def test_spawn_mistakes_fail_the_turn_with_a_clear_error(tmp_path):
    mode = tmp_path / "m.yaml"
    base = ("name: m\ninputs: {topic: {required: true}}\nturns:\n"
            "  - id: split\n    role: P\n    prompt: 'SPLIT {{ topic }}'\n    spawn: %s\n")
    cases = {
        "{mode: ../outside.yaml}": "is not a file inside",
        "{mode: no-such-mode}": "no-such-mode",
        "{mode: self, for_each: 'text.upper()'}": "gave str, not a list of items",
    }
    for spawn, message in cases.items():
        mode.write_text(base % spawn)
        d = dlg.Orchestrator(model=Tree(calls=[]), store=None).run_sync(mode, topic="x")
        assert d.status == "failed", spawn
        assert message in d.turn("split").error, (spawn, d.turn("split").error)
    with pytest.raises(dlg.ModeError, match="concurrency"):
        dlg.load_mode({"name": "m", "turns": [{"id": "a", "role": "A", "prompt": "p",
                                               "spawn": {"mode": "self", "concurrency": 0}}]})


def test_from_the_cli_run_show_and_export_draw_the_tree(tmp_path):
    from click.testing import CliRunner

    from dlg.cli import cli

    (tmp_path / "leaf.yaml").write_text(
        "name: leaf\ninputs: {topic: {required: true}}\n"
        "turns: [{id: look, role: Look, prompt: 'look at {{ topic }}'}]\n")
    mode = tmp_path / "fan.yaml"
    mode.write_text(
        "name: fan\ninputs: {topic: {required: true}}\nturns:\n"
        "  - id: split\n    role: Planner\n    prompt: '{{ topic }}'\n"
        "    spawn: {mode: leaf.yaml, for_each: 'text.split()[1:]'}\n"
        "  - id: merge\n    role: Merger\n"
        "    prompt: \"{% for s in turns.split.subdialogues %}{{ s.answer }}; {% endfor %}\"\n")
    runner = CliRunner()
    ran = runner.invoke(cli, ["run", str(mode), "--topic", "alpha beta", "--model", "echo"])
    assert ran.exit_code == 0, ran.output
    assert "↳ leaf [alpha] Look" in ran.output  # children's progress, indented
    (summary,) = [s for s in dlg.list_dialogues() if s["mode"] == "fan"]
    children = [s for s in dlg.list_dialogues() if s["mode"] == "leaf"]
    assert {s["parent"] for s in children} == {summary["id"]} and len(children) == 2
    assert "parent" not in summary
    assert runner.invoke(cli, ["ls"]).output.count("↳ leaf") == 2
    shown = runner.invoke(cli, ["show", summary["id"]])
    assert shown.exit_code == 0, shown.output
    assert "sub-dialogues of turn split:" in shown.output
    assert shown.output.count("└ ") == 2 and "· leaf · completed · 1 turns" in shown.output
    saved = dlg.load_dialogue(summary["id"])
    assert saved.turn("merge").response == "echo: echo: look at alpha; echo: look at beta;"
    child = saved.subdialogues[0]
    assert f"sub-dialogue of {summary['id']} (turn split" in runner.invoke(
        cli, ["show", child.id]).output
    html = runner.invoke(cli, ["export", summary["id"], "-f", "html"]).output
    assert '<div class="tree"><b>Sub-dialogues</b>' in html and "<b>beta</b>" in html
    markdown = runner.invoke(cli, ["export", summary["id"], "-f", "markdown"]).output
    assert f"- `{child.id}` (leaf, completed): alpha" in markdown


def test_loops_and_sub_dialogues_compose(tmp_path):
    """A child mode with a refinement loop, spawned from a turn inside a loop: every
    round spawns its own children, each child runs its own rounds."""
    (tmp_path / "leaf.yaml").write_text(
        "name: leaf\ninputs: {topic: {required: true}}\nstructure: mixed\nphases:\n"
        "  - id: again\n    repeat: {max_rounds: 2}\n"
        "    turns: [{id: look, role: Look, prompt: 'look at {{ topic }} {{ round }}'}]\n")
    mode = tmp_path / "outer.yaml"
    mode.write_text(
        "name: outer\ninputs: {topic: {required: true}}\nstructure: mixed\nphases:\n"
        "  - id: rounds\n    repeat: {max_rounds: 2}\n    turns:\n"
        "      - id: split\n        role: Planner\n        prompt: '{{ topic }}'\n"
        "        spawn: {mode: leaf.yaml, for_each: 'text.split()[1:]'}\n")
    d = dlg.Orchestrator(model="echo").run_sync(mode, topic="a b")
    assert d.status == "completed"
    assert [t.id for t in d.turns] == ["split", "split@2"]
    assert len(d.subdialogues) == 4  # two children in each round
    for child in d.subdialogues:
        assert [t.id for t in child.turns] == ["look", "look@2"]
        assert child.metadata["loops"]["again"]["status"] == "max_rounds"
    assert len(d.turn("split@2").metadata["subdialogues"]) == 2
    saved = dlg.load_dialogue(d.id)
    assert len(saved.subdialogues) == 4


def test_children_planned_in_this_run_are_not_looked_for_in_the_store(tree, monkeypatch):
    """A plan made in this run names children never saved: none is looked up (each look
    is a hop to a worker thread, which 64 children at once queued for); a resumed plan's
    children are."""
    from dlg.running.subdialogues import Children

    looked: list[str] = []
    reopen = Children._reopen_child

    def counting(self, dialogue_id):
        looked.append(dialogue_id)
        return reopen(self, dialogue_id)

    monkeypatch.setattr(Children, "_reopen_child", counting)
    d = dlg.Orchestrator(model=Tree(calls=[], broken="TURN sum beta"),
                         retry=dlg.RetryPolicy(attempts=1)).run_sync(tree, topic="t")
    assert d.status == "failed" and looked == []
    resumed = anyio.run(lambda: dlg.resume(d.id, model=Tree(calls=[])))
    assert resumed.status == "completed"
    assert sorted(looked) == sorted(e["id"] for e in d.turn("split").metadata["subdialogues"])


def test_children_inherit_the_parent_transcript_made_once_per_spawn(tmp_path, monkeypatch):
    """The parent's transcript a child inherits is made once for a turn's children, not
    once per child (it reads the whole parent); each child gets the same text, and one
    made again when a turn of the parent completes while children wait to start."""
    from types import SimpleNamespace

    from dlg.language import templates
    from dlg.records.record import TurnRecord
    from dlg.running.subdialogues import Spawner

    (tmp_path / "explore.yaml").write_text(CHILD)
    (tmp_path / "tree.yaml").write_text(PARENT.replace(
        "turns:\n  - id: split", "turns:\n  - {id: intro, role: Intro, prompt: 'INTRO'}\n"
        "  - id: split\n    context_from: []"))
    made = []
    real = templates.transcript
    monkeypatch.setattr(templates, "transcript",
                        lambda records, *a: made.append(tuple(r.id for r in records))
                        or real(records, *a))
    d = dlg.Orchestrator(model=Tree(calls=[]), store=None).run_sync(
        tmp_path / "tree.yaml", topic="t")
    assert d.status == "completed" and len(d.subdialogues) == 3
    texts = {c.metadata["parent"]["transcript"] for c in d.subdialogues}
    assert len(texts) == 1
    (text,) = texts
    assert text.startswith("### Intro\nanswer to INTRO\n\n### Planner\n")
    # one parent transcript for the three children (was one each)
    assert made.count(("intro", "merge")) == 1

    spawner = Spawner(open_child=None, reopen_child=None, execute=None, load_mode=None)
    parent = SimpleNamespace(id="p", turns=[
        TurnRecord(id="a", index=1, phase="p", role="A", status="completed",
                   response="one"),
        TurnRecord(id="b", index=2, phase="p", role="B", status="pending"),
        TurnRecord(id="s", index=3, phase="p", role="S", status="running",
                   response="plan")])
    first = spawner.inherited_text(parent, parent.turns[2])
    assert spawner.inherited_text(parent, parent.turns[2]) is first
    parent.turns[1].status, parent.turns[1].response = "completed", "two"
    assert spawner.inherited_text(parent, parent.turns[2]) == (
        "### A\none\n\n### B\ntwo\n\n### S\nplan")
