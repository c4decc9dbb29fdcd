"""Adaptive dialogues benchmark (the seed's SC4.3): a converging loop against a fixed one.

    python bench/bench_adaptive.py [--workloads 20]

The ``loop`` mode's shape, with its middle as a refinement loop: grounding and questions,
then rounds of probe and refinement, then a consolidation. A scripted model's
refinements change for a few rounds and then stop changing (each workload converges at
a random round, 2 to 4). The **fixed** mode runs all 6 rounds; the **adaptive** one ends
the loop when the refinement stops changing (``until: {similarity: 0.9}``, the offline
``hashing`` embeddings). Printed: turns run by each, the adaptive one's saving (target
above 30%), and whether both consolidations are the same answer (they must be).
"""

from __future__ import annotations

import argparse
import os
import random
import sys

os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ["DLG_NO_CACHE"] = "1"

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import dlg

ROUNDS = 6
VOCABULARY = [
    "pressure gradients drive the flow through narrow channels",
    "feedback loops amplify small early differences over time",
    "energy budgets constrain how far the system can move",
    "sampling noise hides the signal until enough cases accumulate",
    "boundary conditions decide which of the solutions appears",
]


class Converging(BaseChatModel):
    """Refinement ``n`` says something new until round ``settle``; after that the same."""

    settle: int = 3

    @property
    def _llm_type(self) -> str:
        return "converging"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        if prompt.startswith("REFINE"):
            n = min(int(prompt.split()[1]), self.settle)
            text = f"Model {n}: " + " ".join([VOCABULARY[n % len(VOCABULARY)]] * 6)
        elif prompt.startswith("CONSOLIDATE"):
            text = "Final account. " + prompt.split("\n", 1)[1]
        else:
            text = f"Notes on: {prompt[:60]}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def mode(adaptive: bool) -> dict[str, Any]:
    until = {"until": {"similarity": 0.9, "turn": "refine"}} if adaptive else {}
    return {
        "name": "adaptive-loop" if adaptive else "fixed-loop",
        "inputs": {"topic": {"default": "tides"}},
        "structure": "mixed",
        "phases": [
            {"id": "open", "turns": [
                {"id": "ground", "role": "Grounding", "prompt": "GROUND {{ topic }}"},
                {"id": "question", "role": "Questions", "prompt": "ASK about {{ topic }}"}]},
            {"id": "deepen", "repeat": {"max_rounds": ROUNDS, **until}, "turns": [
                {"id": "probe", "role": "Probe", "context_from": ["refine"],
                 "prompt": "PROBE {{ turns.refine.text if turns.refine else topic }}"},
                {"id": "refine", "role": "Refinement", "context_from": ["probe"],
                 "prompt": "REFINE {{ round }} after {{ turns.probe }}"}]},
            {"id": "close", "turns": [
                {"id": "consolidate", "role": "Consolidation", "context_from": ["refine"],
                 "prompt": "CONSOLIDATE\n{{ turns.refine }}"}]},
        ]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(7)
    fixed_turns = adaptive_turns = same = 0
    for _ in range(args.workloads):
        model = Converging(settle=rng.randint(2, 4))
        fixed = dlg.run_sync(mode(False), model=model, store=None)
        adaptive = dlg.run_sync(mode(True), model=model, store=None)
        assert fixed.status == adaptive.status == "completed", (fixed.error, adaptive.error)
        fixed_turns += fixed.turns_completed
        adaptive_turns += adaptive.turns_completed
        same += fixed.turn("consolidate").text == adaptive.turn("consolidate").text
    saving = 1 - adaptive_turns / fixed_turns
    print(f"{args.workloads} workloads, refinements settle at round 2-4, loop of at most "
          f"{ROUNDS} rounds")
    print(f"{'fixed':<10} {fixed_turns:>6} turns")
    print(f"{'adaptive':<10} {adaptive_turns:>6} turns ({saving:.1%} fewer)")
    print(f"same final answer: {same}/{args.workloads}")
    print(f"{'ok    ' if saving > 0.30 else 'MISSED'} adaptive runs more than 30% fewer turns "
          f"({saving:.1%})")
    print(f"{'ok    ' if same == args.workloads else 'MISSED'} the same final answer every "
          "time")
    sys.exit(0)


if __name__ == "__main__":
    main()
