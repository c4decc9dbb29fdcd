"""Routing benchmark: a simulated market of models with hidden quality per task.

    python bench/bench_routing.py            # 5 seeds
    python bench/bench_routing.py --quick    # 2 seeds

Six models with the catalog's real prices (dlg/plugins/catalog.json) answer three-turn
dialogues (hypothesis, critique, summary). Each model has a hidden quality per task that
its catalog prior does not reveal (here each task's best model is a cheaper one); a judge
scores each answer at that quality plus noise, and the score is fed back as a rating.
Routing policies, each over 100 dialogues after the learned router's 100 dialogues of
learning:

- oracle: the model with the best hidden quality for each task;
- always-best: the highest catalog prior, always (claude-opus-4-1);
- always-cheapest: the cheapest model, always;
- random: a model drawn at random per turn;
- capabilities: dlg's capabilities router (catalog priors, balanced preference);
- learned: dlg's learned router, fed the judge's scores.

Printed: mean quality (and as a share of the oracle's) and cost per dialogue (and as a
share of always-best's), and the learned router's first 10 dialogues against its last
100. Targets: learned >= 95% of oracle quality at <= 50% of always-best cost; > 10%
better than its first 10 dialogues.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from typing import Any

os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ["DLG_DATA_DIR"] = tempfile.mkdtemp(prefix="dlg-bench-routing-")
os.environ["DLG_NO_CACHE"] = "1"

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import dlg

TASKS = ("hypothesis", "critique", "summary")
# hidden quality per task (0-1): the market's truth, unknown to the routers. It disagrees
# with the catalog's priors on purpose: each task's best model is a cheaper one, which is
# the case learning exists for (where the priors are right, the capabilities router is
# already near the oracle and there is little to learn)
HIDDEN = {
    "anthropic:claude-opus-4-1": (0.80, 0.78, 0.70),
    "anthropic:claude-sonnet-4-5": (0.78, 0.80, 0.72),
    "xai:grok-4": (0.76, 0.74, 0.68),
    "google:gemini-2.5-flash": (0.70, 0.92, 0.75),
    "openai:gpt-5-mini": (0.93, 0.72, 0.74),
    "xai:grok-3-mini": (0.60, 0.65, 0.93),
}
MODE = {"name": "market", "inputs": {"topic": {}}, "turns": [
    {"id": task, "role": task, "requires": ["reasoning"], "prompt": f"{task}: {{{{ topic }}}}"}
    for task in TASKS]}


class Market(BaseChatModel):
    """A scripted model answering at the market's token counts (400 out)."""

    dlg_label: str = "m"

    @property
    def _llm_type(self) -> str:
        return "market"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = max(1, sum(len(str(m.content)) for m in messages) // 4 + 600)
        out = min(400, kwargs.get("max_tokens") or 400)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(
            content=f"{self.dlg_label} answers", usage_metadata={
                "input_tokens": prompt, "output_tokens": out,
                "total_tokens": prompt + out}))])


def judge(rng: random.Random, model: str, task: str) -> float:
    return min(1.0, max(0.0, rng.gauss(HIDDEN[model][TASKS.index(task)], 0.05)))


PINNED = {**MODE, "participants": {t: {} for t in TASKS},
          "turns": [{**turn, "participant": turn["id"]} for turn in MODE["turns"]]}


def run_policy(policy: str, dialogues: int, seed: int, pool: dict[str, Market],
               learn_first: int = 0) -> dict[str, list[float]]:
    """Quality and cost per dialogue: ``learn_first`` learning dialogues, then
    ``dialogues`` measured ones (all of them are returned, in order)."""
    rng = random.Random(seed)
    registry = dlg.ModelRegistry.load()
    cheapest = min(HIDDEN, key=lambda m: registry.get(m).cost_per_million)
    routed = policy in ("capabilities", "learned")
    router = f"learned?seed={seed}" if policy == "learned" else "capabilities"
    # a store of its own per run: what one run learned must not help the next
    from dlg.records.store import open_store

    store = open_store("diskcache", path=tempfile.mkdtemp(prefix=f"{policy}-{seed}-"))
    orchestrator = dlg.Orchestrator(pool=pool, router=router, registry=registry,
                                    store=store) if routed else None
    out: dict[str, list[float]] = {"quality": [], "cost": []}
    for i in range(learn_first + dialogues):
        if orchestrator is not None:
            d = orchestrator.run_sync(MODE, topic=f"t{i}")
            picks = {t.id: t.metadata["routing"]["pool_name"] for t in d.turns}
        else:
            if policy == "oracle":
                picks = {t: max(HIDDEN, key=lambda m, t=t: HIDDEN[m][TASKS.index(t)])
                         for t in TASKS}
            elif policy == "always-best":
                picks = {t: "anthropic:claude-opus-4-1" for t in TASKS}
            elif policy == "always-cheapest":
                picks = {t: cheapest for t in TASKS}
            else:
                picks = {t: rng.choice(list(HIDDEN)) for t in TASKS}
            d = dlg.Orchestrator(models={t: pool[m] for t, m in picks.items()},
                                 registry=registry, store=None).run_sync(PINNED, topic=f"t{i}")
        scores = {t.id: judge(rng, picks[t.id], t.id) for t in d.turns}
        if policy == "learned":
            for turn_id, score in scores.items():
                orchestrator.rate(d.id, turn_id, score)  # type: ignore[union-attr]
        out["quality"].append(statistics.mean(scores.values()))
        out["cost"].append(d.total_cost_usd)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seeds = [1, 2] if args.quick else [1, 2, 3, 4, 5]
    pool = {name: Market(dlg_label=name) for name in HIDDEN}
    rows: dict[str, list[tuple[float, float]]] = {}
    first1, first10, last100 = [], [], []
    for seed in seeds:
        for policy in ("oracle", "always-best", "always-cheapest", "random", "capabilities"):
            r = run_policy(policy, 100, seed, pool)  # nothing to learn: measured at once
            rows.setdefault(policy, []).append((statistics.mean(r["quality"]),
                                                statistics.mean(r["cost"])))
        learned = run_policy("learned", 100, seed, pool, learn_first=100)
        first1.append(learned["quality"][0])
        first10.append(statistics.mean(learned["quality"][:10]))
        last100.append(statistics.mean(learned["quality"][100:]))
        rows.setdefault("learned", []).append((statistics.mean(learned["quality"][100:]),
                                               statistics.mean(learned["cost"][100:])))
    oracle_q = statistics.mean(q for q, _ in rows["oracle"])
    best_c = statistics.mean(c for _, c in rows["always-best"])
    print(f"{'policy':<16} {'quality':>8} {'of oracle':>10} {'$/dialogue':>11} "
          f"{'of always-best':>15}")
    for policy, values in rows.items():
        q = statistics.mean(v for v, _ in values)
        c = statistics.mean(v for _, v in values)
        print(f"{policy:<16} {q:>8.3f} {q / oracle_q:>10.1%} {c:>11.5f} {c / best_c:>15.1%}")
    learned_q = statistics.mean(q for q, _ in rows["learned"])
    learned_c = statistics.mean(c for _, c in rows["learned"])
    gain = statistics.mean(last100) / statistics.mean(first10) - 1
    print()
    start = statistics.mean(first1)
    print(f"learned: first dialogue (no scores yet) {start:.3f}; first 10 dialogues "
          f"{statistics.mean(first10):.3f}; dialogues 101-200 {statistics.mean(last100):.3f} "
          f"({gain:+.1%} on the first 10, {statistics.mean(last100) / start - 1:+.1%} on the "
          "first)")
    checks = [
        ("learned >= 95% of oracle quality", learned_q / oracle_q >= 0.95),
        ("learned <= 50% of always-best cost", learned_c / best_c <= 0.50),
        ("learned > 10% better than its first 10 dialogues", gain > 0.10),
    ]
    for name, ok in checks:
        print(f"{'ok    ' if ok else 'MISSED'} {name}")
    sys.exit(0)


if __name__ == "__main__":
    main()
