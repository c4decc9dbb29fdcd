"""The seed's adaptive examples as tests: SC2.4 (context management) and SC4.3 (runtime
mode modification). SC2.3 (sub-dialogues) is in test_subdialogues.py."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import dlg
from dlg.models.calls import estimate_tokens

SUBJECTS = ["bees and honey in the hive", "tax law for small companies",
            "railway timetables in winter", "the chemistry of bread baking"]


class Talker(BaseChatModel):
    """Long answers about the subject its prompt names; refinements settle at round 3."""

    @property
    def _llm_type(self) -> str:
        return "talker"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        if prompt.startswith("REFINE"):
            n = min(int(prompt.split()[1]), 3)
            text = f"Version {n}: " + " ".join([SUBJECTS[n]] * 8)
        else:
            subject = next((s for s in SUBJECTS if s in prompt), SUBJECTS[0])
            text = " ".join([f"On {subject}: this point matters."] * 12)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def test_seed_sc2_4_turn_5_reads_turns_1_2_4_compressed_below_30_percent():
    turns = [{"id": f"t{i}", "role": f"R{i}", "context_from": "none",
              "prompt": f"Talk about {SUBJECTS[i - 1]}."} for i in range(1, 5)]
    turns.append({"id": "t5", "role": "Beekeeper", "description": "bees and honey",
                  "context_from": [1, 2, 4], "context_compression": "relevant_only",
                  "max_context_tokens": 160, "prompt": "What about {{ transcript }}"})
    d = dlg.run_sync({"name": "sc24", "turns": turns}, model=Talker(), store=None)
    assert d.status == "completed"
    context = d.turn("t5").metadata["context"]
    assert context["turns"] == ["t1", "t2", "t4"]  # the seed: len(context.turns) == 3
    full = sum(estimate_tokens(t.text) for t in d.turns)  # the whole conversation
    assert context["tokens"] < 0.3 * full
    # each shortened; most of what is read is about bees, the turn's own subject
    assert context["excerpted"] == ["t1", "t2", "t4"]
    read = d.turn("t5").prompt
    assert read.count("bees and honey") > read.count("tax law") + read.count("railway")


def adaptive_loop(threshold: float | None) -> dict[str, Any]:
    until = {"until": {"similarity": threshold}} if threshold else {}
    return {"name": "adaptive", "max_turns": 10, "structure": "mixed", "phases": [
        {"id": "open", "turns": [{"id": "ground", "role": "Ground", "prompt": "Ground."}]},
        {"id": "deepen", "repeat": {"max_rounds": 12, **until}, "turns": [
            {"id": "refine", "role": "Refine", "context_from": "none",
             "prompt": "REFINE {{ round }}"}]},
        {"id": "close", "turns": [{"id": "final", "role": "Final", "context_from": [
            "refine"], "prompt": "Consolidate: {{ turns.refine }}"}]}]}


def test_seed_sc4_3_convergence_ends_the_loop_early_with_fewer_turns():
    fixed = dlg.run_sync(adaptive_loop(None), model=Talker(), store=None)
    adaptive = dlg.run_sync(adaptive_loop(0.85), model=Talker(), store=None)
    # without convergence the dialogue runs until max_turns stops it
    assert fixed.status == "max_turns" and fixed.turns_completed == 10
    # with it, the loop ends when the refinement stops changing (round 4 repeats round 3)
    assert adaptive.status == "completed" and adaptive.turns_completed <= 10
    loop = adaptive.metadata["loops"]["deepen"]
    assert loop["status"] == "converged" and loop["rounds"] == 4
    assert adaptive.turns_completed == 6  # ground, 4 refinements, final
    assert 1 - adaptive.turns_completed / fixed.turns_completed > 0.30
    assert adaptive.turn("final").text.startswith("On ")
