"""Crash safety for real: a `dlg run` process killed with SIGKILL, then `dlg resume`."""

from __future__ import annotations

import random

import pytest

from .crash_support import MODE, install, one_round

pytestmark = pytest.mark.slow
TURNS = [t["id"] for p in MODE["phases"] for t in p["turns"]]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
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


@pytest.mark.parametrize("seed", [1, 2])
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
