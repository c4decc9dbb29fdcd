"""Convergence benchmark: does stopping a refinement loop early keep the final answer?

    python bench/bench_convergence.py [--seeds 20] [--quick]

Every dialogue runs the ``loop`` mode's shape through the real kernel: grounding and
questions, then at most 8 rounds of probe and refinement, then a consolidation. A
scripted model's refinement is an answer of 10 claims (sentences). From round to round
some claims are revised (a new sentence) and, in every round, words are reworded (a
word swapped for its synonym with probability 0.08 each): the same claims, other words,
as a real model rewords an answer it does not change. So no two rounds are byte-identical,
and a stop can lose a revision still to come.

**Same final answer** is honest: the claims of the stopped run's consolidation (each
sentence with synonyms folded) equal the claims the full 8-round run ends with. Rewording
is not a different answer; any revised claim is.

Six workload kinds, each drawn fresh per seed:

- settle early: revisions in rounds 2-3 (it settles at 2 or 3), then rewording only;
- settle late: 1-3 revisions a round until round 5-7, then rewording only;
- gradual drift: one claim revised every round, to the end;
- plateau then revision: revisions in round 2, 1-3 rounds of rewording, a real
  revision of 3-4 claims, then rewording only;
- oscillation: 3 claims flip between two versions each round until round 4-6, then stay;
- never settles: 4-6 claims revised every round.

Compared in the same run: never stop (8 rounds), fixed k rounds, the stop dlg had
(``similarity: 0.9``, hashing embeddings, one stable round), the new ``patience`` and
``min_rounds`` over several thresholds (the trade-off curve), a judge turn (a scripted
judge that tells rewording from revision but is wrong 10% of the time; its turns
counted), and an idealised paraphrase-blind embedding (synonyms folded before hashing:
an upper bound for what real embeddings can add, not a real model).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ["DLG_NO_CACHE"] = "1"

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import dlg

ROUNDS = 8
CLAIMS = 10
REWORD = 0.08
JUDGE_ERROR = 0.10
SYNONYMS = [("big", "large"), ("fast", "quick"), ("shows", "reveals"), ("rise", "increase"),
            ("drop", "decline"), ("cause", "driver"), ("strong", "robust"), ("small", "minor"),
            ("often", "frequently"), ("clear", "evident"), ("early", "initial"),
            ("main", "primary"), ("risk", "hazard"), ("cost", "expense"), ("goal", "aim"),
            ("help", "aid"), ("effect", "impact"), ("rare", "uncommon"), ("key", "central"),
            ("need", "requirement")]
FOLD = {b: a for a, b in SYNONYMS}
NOUNS = ["tides", "wages", "soil", "prices", "traffic", "rainfall", "voters", "markets",
         "forests", "schools", "bridges", "rivers", "clinics", "harbours", "farms", "grids",
         "mines", "ports", "orchards", "cities", "valleys", "engines", "fisheries", "roads"]
VERBS = ["shapes", "limits", "tracks", "follows", "drives", "shifts", "weakens", "anchors"]
KINDS = ["settle early", "settle late", "gradual drift", "plateau then revision",
         "oscillation", "never settles"]


def fold(text: str) -> str:
    return " ".join(FOLD.get(w, w) for w in text.split())


def claims(text: str) -> tuple[str, ...]:
    """What an answer says: its sentences with synonyms folded (rewording ignored)."""
    return tuple(fold(s.strip()) for s in text.split(".") if s.strip()
                 and not s.strip().startswith(("Final account", "Answer")))


def new_claim(rng: random.Random) -> list[str]:
    a, b = rng.sample(SYNONYMS, 2)
    n1, n2 = rng.sample(NOUNS, 2)
    return [a[0], n1, rng.choice(VERBS), "the", b[0], n2, "near", rng.choice(NOUNS)]


def workload(kind: str, rng: random.Random) -> list[str]:
    """The refinement of rounds 1..ROUNDS (index 0 is round 1)."""
    state = [new_claim(rng) for _ in range(CLAIMS)]
    schedule: list[int] = [0] * (ROUNDS + 1)  # revisions in round n (n >= 2)
    flips: dict[int, list[list[str]]] = {}
    if kind == "settle early":
        for n in range(2, rng.randint(2, 3) + 1):
            schedule[n] = rng.randint(3, 5)
    elif kind == "settle late":
        for n in range(2, rng.randint(5, 7) + 1):
            schedule[n] = rng.randint(1, 3)
    elif kind == "gradual drift":
        schedule = [0, 0] + [1] * (ROUNDS - 1)
    elif kind == "plateau then revision":
        schedule[2] = rng.randint(2, 4)
        schedule[min(ROUNDS, 3 + rng.randint(1, 3))] = rng.randint(3, 4)
    elif kind == "oscillation":
        until = rng.randint(4, 6)
        for slot in rng.sample(range(CLAIMS), 3):
            flips[slot] = [state[slot], new_claim(rng)]
        schedule = [-until] * (ROUNDS + 1)
    elif kind == "never settles":
        schedule = [0, 0] + [rng.randint(4, 6) for _ in range(ROUNDS - 1)]
    texts = []
    for n in range(1, ROUNDS + 1):
        if schedule[n] > 0:
            for slot in rng.sample(range(CLAIMS), schedule[n]):
                state[slot] = new_claim(rng)
        elif flips and n <= -schedule[n]:
            for slot, versions in flips.items():
                state[slot] = versions[n % 2]
        for sentence in state:  # rewording: the same claims, other words
            for i, word in enumerate(sentence):
                pair = next((p for p in SYNONYMS if word in p), None)
                if pair and rng.random() < REWORD:
                    sentence[i] = pair[1] if word == pair[0] else pair[0]
        texts.append(". ".join(" ".join(s) for s in state) + ".")
    return texts


class Scripted(BaseChatModel):
    """Answers the loop's turns from a workload; judges like a careful but fallible reader."""

    texts: list[str]
    judge_seed: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-refinement"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        if prompt.startswith("REFINE"):
            text = self.texts[int(prompt.split()[1]) - 1]
        elif "JUDGE " in prompt:
            n = int(prompt.split("JUDGE ", 1)[1].split(":")[0])
            now = claims(self.texts[n - 1])
            same = n > 1 and claims(self.texts[n - 2]) == now
            if random.Random(self.judge_seed * 100 + n).random() < JUDGE_ERROR:
                same = not same
            text = '{"converged": %s}' % ("true" if same else "false")
        elif prompt.startswith("CONSOLIDATE"):
            text = "Final account. " + prompt.split("\n", 1)[1]
        else:
            text = f"Answer on {prompt[:40]}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class Folded:
    """The idealised paraphrase-blind embedding: synonyms folded, then hashed."""

    def __init__(self) -> None:
        from dlg.plugins.hashing_embeddings import HashingEmbeddings

        self._inner = HashingEmbeddings()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._inner.embed_documents([fold(t) for t in texts])

    def embed_query(self, text: str) -> list[float]:
        return self._inner.embed_query(fold(text))


def mode(repeat: dict[str, Any], judge: bool = False) -> dict[str, Any]:
    turns = [
        {"id": "probe", "role": "Probe", "context_from": ["refine"],
         "prompt": "PROBE {{ topic }} round {{ round }}"},
        {"id": "refine", "role": "Refinement", "context_from": ["probe"],
         "prompt": "REFINE {{ round }} after {{ turns.probe }}"}]
    if judge:
        turns.append({"id": "check", "role": "Judge", "context_from": ["refine"],
                      "prompt": "JUDGE {{ round }}: has the refinement stopped changing?",
                      "output": {"schema": {"type": "object", "required": ["converged"],
                                            "properties": {"converged": {"type": "boolean"}}}}})
    return {
        "name": "convergence-bench", "inputs": {"topic": {"default": "tides"}},
        "structure": "mixed",
        "phases": [
            {"id": "open", "turns": [
                {"id": "ground", "role": "Grounding", "prompt": "GROUND {{ topic }}"},
                {"id": "question", "role": "Questions", "prompt": "ASK about {{ topic }}"}]},
            {"id": "deepen", "repeat": repeat, "turns": turns},
            {"id": "close", "turns": [
                {"id": "consolidate", "role": "Consolidation", "context_from": ["refine"],
                 "prompt": "CONSOLIDATE\n{{ turns.refine }}"}]},
        ]}


def strategies(quick: bool) -> list[tuple[str, dict[str, Any], bool]]:
    """(label, repeat, judge) for every strategy the bench compares."""
    out: list[tuple[str, dict[str, Any], bool]] = [
        ("never stop (8 rounds)", {"max_rounds": ROUNDS}, False),
        ("old: similarity 0.9", {"max_rounds": ROUNDS, "until": {"similarity": 0.9}}, False)]
    out += [(f"fixed {k} rounds", {"max_rounds": k}, False) for k in (3, 4, 6)]
    thresholds = (0.9, 0.95) if quick else (0.85, 0.9, 0.95, 0.97)
    for threshold in thresholds:
        for patience in (1, 2, 3):
            if (threshold, patience) != (0.9, 1):
                out.append((f"similarity {threshold} patience {patience}", {
                    "max_rounds": ROUNDS,
                    "until": {"similarity": threshold, "patience": patience}}, False))
    for patience in (1, 2, 3):
        out.append((f"idealised embedding patience {patience}", {
            "max_rounds": ROUNDS, "until": {"similarity": 0.999, "patience": patience,
                                            "embeddings": "folded"}}, False))
    for patience in (1, 2):
        out.append((f"judge turn patience {patience}", {
            "max_rounds": ROUNDS, "until": {"judge": "check", "patience": patience}}, True))
    return out


def run(pm: Any, texts: list[str], repeat: dict[str, Any], judge: bool, seed: int
        ) -> tuple[int, tuple[str, ...]]:
    model = Scripted(texts=texts, judge_seed=seed)
    orchestrator = dlg.Orchestrator(model=model, plugin_manager=pm, store=None)
    d = orchestrator.run_sync(mode(repeat, judge))
    assert d.status == "completed", (d.status, d.error)
    return d.turns_completed, claims(d.turn("consolidate").text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer thresholds")
    args = parser.parse_args()
    from dlg.hookspecs import hookimpl
    from dlg.plugin_manager import build_plugin_manager

    class Plugin:
        @hookimpl
        def register_embeddings(self, register: Any) -> None:
            register("folded", Folded)

    pm = build_plugin_manager(autoload=False)
    pm.register(Plugin(), name="bench-folded")
    plans = strategies(args.quick)
    started = time.monotonic()
    # saved[label][kind] and same[label][kind]: one value per seed
    saved: dict[str, dict[str, list[float]]] = {p[0]: {k: [] for k in KINDS} for p in plans}
    same: dict[str, dict[str, list[float]]] = {p[0]: {k: [] for k in KINDS} for p in plans}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for kind in KINDS:
            texts = workload(kind, random.Random(f"{seed}-{kind}"))
            full_turns, full = run(pm, texts, {"max_rounds": ROUNDS}, False, seed)
            for label, repeat, judge in plans:
                turns, final = run(pm, texts, repeat, judge, seed)
                saved[label][kind].append(1 - turns / full_turns)
                same[label][kind].append(float(final == full))
    print(f"{args.seeds} seeds x {len(KINDS)} workload kinds, loop of at most {ROUNDS} rounds "
          f"(19 turns), {time.monotonic() - started:.0f} s\n")
    print("Turns saved against never stopping / same final answer, per kind "
          "(mean over seeds; saved also +- its standard deviation)\n")
    short = ["early", "late", "drift", "plateau", "oscill.", "never"]
    print(f"| strategy | {' | '.join(short)} | all six: saved | all six: same | min same |")
    print(f"| --- | {' | '.join('---' for _ in short)} | --- | --- | --- |")
    for label, _, _ in plans:
        cells = []
        for kind in KINDS:
            s, m = saved[label][kind], same[label][kind]
            cells.append(f"{statistics.mean(s):+.0%}±{statistics.pstdev(s):.0%} / "
                         f"{statistics.mean(m):.0%}")
        every = [statistics.mean(saved[label][k]) for k in KINDS]
        sames = [statistics.mean(same[label][k]) for k in KINDS]
        print(f"| {label} | {' | '.join(cells)} | {statistics.mean(every):.1%} | "
              f"{statistics.mean(sames):.1%} | {min(sames):.0%} |")
    print("\nTargets: same final answer >= 95% on every kind, turns saved >= 40% on settle "
          "early and >= 15% over the six kinds")
    for label, _, _ in plans:
        sames = [statistics.mean(same[label][k]) for k in KINDS]
        early = statistics.mean(saved[label]["settle early"])
        overall = statistics.mean(statistics.mean(saved[label][k]) for k in KINDS)
        met = min(sames) >= 0.95 and early >= 0.40 and overall >= 0.15
        print(f"{'ok    ' if met else 'MISSED'} {label}: min same {min(sames):.0%}, "
              f"settle early saved {early:.0%}, all six saved {overall:.1%}")
    sys.exit(0)


if __name__ == "__main__":
    main()
