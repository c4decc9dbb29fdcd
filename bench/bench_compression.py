"""Context compression benchmark: how much earlier text a 10-turn dialogue reads.

    python bench/bench_compression.py

A 10-turn sequential dialogue in which every turn reads every earlier one (the way the
``loop`` mode's later turns do), answered by a scripted model with about 150-token
answers on several subjects. For each strategy, the total tokens of earlier turns put
in front of the model over the dialogue (what ``turn.metadata["context"]`` records, or
the full transcript for ``none``), as a share of ``none``'s. Target (SC2.4): below 30%
with ``relevant_only`` or ``summary`` at ``max_context_tokens: 300`` (two answers).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ["DLG_NO_CACHE"] = "1"

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import dlg
from dlg.models.calls import estimate_tokens

SUBJECTS = ["bees and honey in the hive", "tax law for small companies",
            "railway timetables in winter", "the chemistry of bread baking",
            "orbits of the outer planets"]


class Writer(BaseChatModel):
    """Answers about the subject its prompt names, at length; summaries are short."""

    @property
    def _llm_type(self) -> str:
        return "writer"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        if prompt.startswith("Summarise"):
            text = "A summary: " + " ".join(prompt.split()[20:80])
        else:
            subject = next((s for s in SUBJECTS if s in prompt), SUBJECTS[0])
            text = " ".join([f"On {subject}: this point matters."] * 12)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def mode(strategy: str) -> dict[str, Any]:
    turns = [{"id": f"t{i}", "role": f"step {i}", "context_compression": strategy,
              "max_context_tokens": 300,
              "prompt": f"Continue on {SUBJECTS[i % len(SUBJECTS)]}.\n{{{{ transcript }}}}"}
             for i in range(10)]
    return {"name": f"ten-{strategy}", "turns": turns}


def context_tokens(d: Any) -> int:
    total = 0
    for i, t in enumerate(d.turns):
        info = (t.metadata or {}).get("context")
        if info:
            total += info["tokens"]
        else:
            total += sum(estimate_tokens(p.response or "") for p in d.turns[:i])
    return total


def main() -> None:
    full = None
    results = {}
    for strategy in ("none", "truncate", "relevant_only", "summary"):
        d = dlg.run_sync(mode(strategy), model=Writer(), store=None)
        assert d.status == "completed", d.error
        results[strategy] = context_tokens(d)
        full = full or results[strategy]
    print(f"{'strategy':<15} {'context tokens':>15} {'of none':>8}")
    for strategy, tokens in results.items():
        print(f"{strategy:<15} {tokens:>15,} {tokens / full:>8.1%}")
    for strategy in ("relevant_only", "summary"):
        share = results[strategy] / full
        print(f"{'ok    ' if share < 0.30 else 'MISSED'} {strategy} below 30% of the full "
              f"conversation ({share:.1%})")
    sys.exit(0)


if __name__ == "__main__":
    main()
