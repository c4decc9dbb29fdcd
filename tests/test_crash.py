"""Crash safety for real: a `dlg run` process killed with SIGKILL, then `dlg resume`."""

from __future__ import annotations

import random
import re

import pytest

from .crash_support import LOOP_CALLS, MODE, install, one_round

pytestmark = pytest.mark.slow
TURNS = [t["id"] for p in MODE["phases"] for t in p["turns"]]


# one seed by default (6 to 7 s each on a busy 2-core machine); the others are marked long
@pytest.mark.parametrize("seed", [1, *(pytest.param(s, marks=pytest.mark.long)
                                       for s in (2, 3, 4, 5))])
def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path, seed, monkeypatch):
    env = install(tmp_path)
    monkeypatch.setenv("DLG_DATA_DIR", env["DLG_DATA_DIR"])
    outcome = one_round(tmp_path, env, random.Random(seed))
    assert outcome["saved"], "the dialogue was saved before the kill"
    assert outcome["resume_code"] == 0, outcome["resume_stderr"]
    assert outcome["status"] == "completed"
    assert outcome["turn_ids"] == TURNS  # none lost, none duplicated
    assert set(outcome["statuses"].values()) == {"completed"}
    assert all(outcome["responses"][t] == f"answer to TURN {t}" for t in TURNS)
    # a turn saved as completed before the kill is never paid for again
    assert outcome["repaid"] == []
    # and resume paid only for what was missing
    assert sorted(outcome["calls_after_resume"]) == sorted(
        t for t in TURNS if t not in outcome["done_at_kill"])


# long (7 to 8 s each on a busy 2-core machine): the quick case of a kill inside a
# sub-dialogue by default is the loop-in-a-sub-dialogue test below
@pytest.mark.long
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_inside_a_sub_dialogue_then_resume_repays_nothing(tmp_path, seed,
                                                                   monkeypatch):
    from .crash_support import CHILD_CALLS, install_tree, kill_inside_a_child

    env = install_tree(tmp_path)
    monkeypatch.setenv("DLG_DATA_DIR", env["DLG_DATA_DIR"])
    out = kill_inside_a_child(tmp_path, env, random.Random(seed))
    assert out["resume_code"] == 0, out["resume_stderr"]
    parent = out["parent"]
    assert parent.status == "completed"
    assert [c.status for c in parent.subdialogues] == ["completed"] * 3
    lines = out["lines"]
    # the spawning turn was paid once, before the kill; no finished child turn again
    assert sum(1 for x in lines if x.startswith("SPLIT")) == 1
    assert not [x for x in out["after"] if x in out["done_at_kill"]]
    # and every child turn and the merge were paid for, once each in the end
    assert sorted(set(lines) - {"SPLIT t"}) == sorted([*CHILD_CALLS, "TURN merge alpha "
                                                       "beta gamma"])
    assert all(lines.count(c) <= 2 for c in CHILD_CALLS)  # at most once more if in flight


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.long)])
def test_sigkill_inside_a_batch_then_resume_the_batch(tmp_path, seed, monkeypatch):
    import json

    from .crash_support import kill_a_batch

    env = install(tmp_path)
    monkeypatch.setenv("DLG_DATA_DIR", env["DLG_DATA_DIR"])
    out = kill_a_batch(tmp_path, env, random.Random(seed))
    assert out["code"] == 0, out["stderr"]
    summary = json.loads(out["stdout"])
    assert summary["totals"]["statuses"] == {"completed": 6}
    assert summary["totals"]["turns"] == 18
    # nothing finished before the kill was paid for again; everything ran in the end
    assert out["done_at_kill"], "some turns had finished before the kill"
    assert not [x for x in out["after"] if x in out["done_at_kill"]]
    expected = {f"TURN {t} t{i}" for i in range(6) for t in "abc"}
    assert set(out["lines"]) == expected


def test_sigkill_in_the_first_turn_leaves_a_dialogue_to_resume(tmp_path, monkeypatch):
    """A dialogue is saved when it starts: killed while its first turn is in flight, it
    was listed as running, is listed as interrupted, and resumes from the start."""
    from .crash_support import kill_in_flight

    env = install(tmp_path)
    monkeypatch.setenv("DLG_DATA_DIR", env["DLG_DATA_DIR"])
    out = kill_in_flight(tmp_path, env, "crashy", "TURN a")
    top = out["id"]
    assert out["listed_running"] == {top: "running"}
    assert out["listed_killed"] == {top: "interrupted"}
    at_kill = out["at_kill"][top]
    assert at_kill.status == "running" and at_kill.mode == "crashy"
    assert [t.id for t in at_kill.turns] == TURNS
    assert {t.status for t in at_kill.turns} == {"pending"}
    assert out["resume_code"] == 0, out["resume_stderr"]
    assert out["final"].status == "completed"
    assert [t.response for t in out["final"].turns] == [f"answer to TURN {t}" for t in TURNS]
    assert out["before"] == [] and sorted(out["after"]) == sorted(f"TURN {t}" for t in TURNS)


# kill points inside repeat loops: a turn in flight, with every call paid for before it
# saved (of the parallel loop, the other turn of its round too); in sub-dialogues that run
# the loop mode too. A few here, from rounds 2 and 3 (the last, which ``final`` reads);
# every one in the tests marked long
LOOP_POINTS = [pytest.param("TURN revise t 2", marks=pytest.mark.long), "TURN revise t 3",
               "TURN right t 2"]
CHILD_LOOP_CALLS = [re.sub(r" t\b", f" {s}", c) for s in ("alpha", "beta", "gamma")
                    for c in LOOP_CALLS]
TREE_CALLS = ["SPLIT x", *CHILD_LOOP_CALLS, "TURN merge alpha beta gamma"]


def _exactly_once(out: dict, calls: list[str]) -> None:
    """Every paid call is in the record once, nothing was paid twice, nothing is lost."""
    assert out["resume_code"] == 0, out["resume_stderr"]
    # the call killed in flight never answered: each call was paid for exactly once
    assert sorted(out["lines"]) == sorted(calls)
    assert not set(out["before"]) & set(out["after"])


@pytest.mark.parametrize("marker", LOOP_POINTS)
def test_sigkill_inside_a_loop_then_resume_pays_every_turn_once(tmp_path, monkeypatch,
                                                                 marker):
    _kill_in_a_loop(tmp_path, monkeypatch, marker)


@pytest.mark.long
@pytest.mark.parametrize("marker", LOOP_CALLS)
def test_sigkill_at_every_turn_of_a_loop_then_resume_pays_every_turn_once(
        tmp_path, monkeypatch, marker):
    _kill_in_a_loop(tmp_path, monkeypatch, marker)


def _kill_in_a_loop(tmp_path, monkeypatch, marker: str) -> None:
    from .crash_support import LOOP_TURNS, install_loops, kill_in_flight

    env = install_loops(tmp_path)
    monkeypatch.setenv("DLG_DATA_DIR", env["DLG_DATA_DIR"])
    out = kill_in_flight(tmp_path, env, "crashloop", marker, done=LOOP_CALLS.index(marker))
    _exactly_once(out, LOOP_CALLS)
    final = out["final"]
    assert final.status == "completed"
    assert [t.id for t in final.turns] == LOOP_TURNS
    assert {t.status for t in final.turns} == {"completed"}
    assert [t.response for t in final.turns] == [f"answer to {c}" for c in LOOP_CALLS]
    assert final.metadata["loops"] == {
        "improve": {"rounds": 3, "status": "max_rounds", "reason": "3 rounds (max_rounds 3)"},
        "fan": {"rounds": 2, "status": "max_rounds", "reason": "2 rounds (max_rounds 2)"}}
    # the record saved at the kill lost no turn: the one in flight is in it (unless it is
    # the first of its round: the round's records are saved with its first turn)
    (at_kill,) = out["at_kill"].values()
    saved = [t.id for t in at_kill.turns]
    assert saved == [t for t in LOOP_TURNS if t in saved]
    turn = LOOP_TURNS[LOOP_CALLS.index(marker)]
    assert turn in saved or turn.startswith(("review@", "left@"))


def _kill_in_a_tree(tmp_path, monkeypatch, marker: str) -> None:
    from .crash_support import install_loops, kill_in_flight

    env = install_loops(tmp_path)
    monkeypatch.setenv("DLG_DATA_DIR", env["DLG_DATA_DIR"])
    out = kill_in_flight(tmp_path, env, "crashlooptree", marker, ("--topic", "x"),
                         done=TREE_CALLS.index(marker), spawning=1)
    _exactly_once(out, TREE_CALLS)
    parent = out["final"]
    assert parent.status == "completed"
    assert [c.status for c in parent.subdialogues] == ["completed"] * 3
    for child in parent.subdialogues:
        assert len(child.turns) == len(LOOP_CALLS)
        assert {t.status for t in child.turns} == {"completed"}
        assert child.metadata["loops"]["improve"]["status"] == "max_rounds"


@pytest.mark.parametrize("marker", ["TURN revise beta 3"])
def test_sigkill_inside_a_loop_of_a_sub_dialogue_then_resume_pays_every_turn_once(
        tmp_path, monkeypatch, marker):
    _kill_in_a_tree(tmp_path, monkeypatch, marker)


@pytest.mark.long
@pytest.mark.parametrize("marker", TREE_CALLS)
def test_sigkill_at_every_turn_of_a_tree_of_loops_then_resume_pays_every_turn_once(
        tmp_path, monkeypatch, marker):
    _kill_in_a_tree(tmp_path, monkeypatch, marker)
