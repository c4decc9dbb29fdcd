"""Reliability: 100 dialogues with 10% of model calls failing at random.

    python bench/bench_reliability.py [--dialogues 100] [--rate 0.1] [--seed 1]

Failures are 80% transient (HTTP 503, retried on the same model) and 20% fatal (HTTP
400, which moves to the participant's fallback model). Targets: 0 failed dialogues;
transient failures recovered without falling back >= 95%; the substitutions counted.
"""

from __future__ import annotations

import argparse
import random

import anyio

import dlg


class HTTPStatusError(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status_code = status


def flaky_model(rng: random.Random, rate: float, counts: dict[str, int]):
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class Flaky(BaseChatModel):
        dlg_label: str = "flaky"

        @property
        def _llm_type(self) -> str:
            return "flaky"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            counts["calls"] += 1
            if rng.random() < rate:
                transient = rng.random() < 0.8
                counts["transient" if transient else "fatal"] += 1
                raise HTTPStatusError(503 if transient else 400)
            message = AIMessage(content="ok", usage_metadata={
                "input_tokens": 5, "output_tokens": 1, "total_tokens": 6})
            return ChatResult(generations=[ChatGeneration(message=message)])

    return Flaky()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    counts = {"calls": 0, "transient": 0, "fatal": 0}
    base = dlg.load_mode("debate").to_dict()
    for spec in base["participants"].values():
        spec["fallbacks"] = ["echo"]
    mode = dlg.load_mode(base)
    # a model that sometimes fails stays in service: no cool-down in this measurement
    from dlg.models.resilience import cooldowns

    cooldowns.threshold = 10**9
    orchestrator = dlg.Orchestrator(model=flaky_model(rng, args.rate, counts),
                                    retry=dlg.RetryPolicy(base_delay=0.001))

    async def run_all():
        return [await orchestrator.run(mode, topic=f"t{i}") for i in range(args.dialogues)]

    dialogues = anyio.run(run_all)
    failed = sum(1 for d in dialogues if d.status != "completed")
    turns = [t for d in dialogues for t in d.turns]
    substitutions = sum(1 for t in turns if t.replaced)
    # An episode is a turn whose call to a model failed transiently; it is recovered when
    # a retry on the same model answered. When a later attempt on that model failed
    # fatally, the fatal error (not the transient one) caused the fallback: such episodes
    # are counted apart. Per attempt, an unrecovered episode weighs as many failures as
    # it had attempts; that figure is printed too.
    episodes, fatal_after, attempts_all, attempts_ok = 0, 0, 0, 0
    recovered = 0
    for t in turns:
        by_model: dict[str, list[dict]] = {}
        for a in t.attempts or []:
            by_model.setdefault(a["model"], []).append(a)
        for model, tries in by_model.items():
            if not any(a["transient"] for a in tries):
                continue
            n = sum(1 for a in tries if a["transient"])
            if t.model != model and any(not a["transient"] for a in tries):
                fatal_after += 1
                continue
            episodes += 1
            attempts_all += n
            if t.model == model:
                recovered += 1
                attempts_ok += n
    rate = recovered / episodes if episodes else 1.0
    print(f"dialogues: {len(dialogues)}, turns: {len(turns)}, model calls: {counts['calls']}")
    print(f"injected failures: {counts['transient'] + counts['fatal']} "
          f"({(counts['transient'] + counts['fatal']) / counts['calls']:.1%} of calls; "
          f"{counts['transient']} transient, {counts['fatal']} fatal)")
    print(f"failed dialogues: {failed}  (target 0) {'ok' if failed == 0 else 'MISSED'}")
    print(f"substitutions (turns answered by a fallback): {substitutions}")
    print(f"transient failures recovered on the same model: {recovered}/{episodes} calls = "
          f"{rate:.1%}  (target >= 95%) {'ok' if rate >= 0.95 else 'MISSED'}")
    print(f"  per failed attempt: {attempts_ok}/{attempts_all} = "
          f"{(attempts_ok / attempts_all if attempts_all else 1):.1%}; left out: {fatal_after} "
          "calls whose retry then failed fatally")

if __name__ == "__main__":
    main()
