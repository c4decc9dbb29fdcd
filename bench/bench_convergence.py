"""Convergence benchmark: does stopping a refinement loop early keep the final answer?

    python bench/bench_convergence.py [--seeds 20] [--quick] [--visible 0.8]
        [--false-alarm 0.1] [--judge-error 0.1] [--variant signal] [--only TEXT]
        [--gguf-embeddings FILE.gguf]

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

The probe (the loop's critique turn) is where a plateau can show its cause. The workload
makes it, independently of any stop rule: every later change of the claims (a revision
or a flip in round m) has a cause that is visible with probability ``--visible`` (0.8,
drawn once per change), and a visible cause is an objection in every probe from the
round after the change before it up to round m - 1 (raised, not yet addressed). Any
other probe raises a spurious objection with probability ``--false-alarm`` (0.1). A
second variant, "no
signal", makes every cause invisible (only the spurious objections remain): the plateau
then looks exactly like a settled answer, to the probe too.

Compared in the same run: never stop (8 rounds), fixed k rounds, the stop dlg had
(``similarity: 0.9``, hashing embeddings, one stable round), ``patience`` and
``min_rounds`` over several thresholds (the trade-off curve), a judge turn every round,
``until.confirm`` (the same judge, asked only at a candidate stop: when similarity has
held ``patience`` rounds; it can veto), and an idealised paraphrase-blind embedding
(synonyms folded before hashing: an upper bound for what real embeddings can add, not a
real model), and ``until.unless`` reading the probe (no judge: the stop is vetoed while
the probe objects), with hashing or the idealised embedding. ``--gguf-embeddings`` adds
a real embedding model run offline (a GGUF file's mean-pooled states through llama.cpp).
The judge reads the probe and the last two refinements: it says
"converged" when the claims did not change and the probe raised no objection, and is
wrong 10% of the time; its turns are counted.
"""

from __future__ import annotations

import argparse
import os
import random
import re
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
FALSE_ALARM = 0.10
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


def probes(texts: list[str], rng: random.Random, visible: float,
           false_alarm: float = FALSE_ALARM) -> list[str]:
    """The probe of rounds 1..ROUNDS: an objection when a later change of the claims has
    a visible cause (raised after the change before it, until the change addresses it),
    else a spurious objection with probability ``false_alarm``, else none."""
    changes = [m for m in range(2, ROUNDS + 1) if claims(texts[m - 1]) != claims(texts[m - 2])]
    shown = {m for m in changes if rng.random() < visible}
    out = []
    for n in range(1, ROUNDS + 1):
        cause = next((m for m in changes if m > n), None)  # the next change
        raised = cause in shown and n not in changes
        spurious = rng.random() < false_alarm
        out.append(f"Objection: claim {rng.randint(1, CLAIMS)} is not yet supported."
                   if raised or spurious else "No new objection.")
    return out


class Scripted(BaseChatModel):
    """Answers the loop's turns from a workload; judges like a careful but fallible reader."""

    texts: list[str]
    probes: list[str]
    judge_seed: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-refinement"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        probe = re.search(r"PROBE \w+ round (\d+)$", prompt)
        if prompt.startswith("REFINE"):
            text = self.texts[int(prompt.split()[1]) - 1]
        elif probe:
            text = self.probes[int(probe.group(1)) - 1]
        elif "JUDGE " in prompt:
            n = int(prompt.split("JUDGE ", 1)[1].split(":")[0])
            now = claims(self.texts[n - 1])
            same = n > 1 and claims(self.texts[n - 2]) == now
            same = same and "Objection:" not in prompt.split("JUDGE ", 1)[1]
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


class Gguf:
    """A real embedding model run offline: a GGUF file's mean-pooled hidden states through
    llama.cpp (xllamacpp, dlg's ``local`` extra), each text embedded once per process."""

    path = ""
    _server: Any = None
    _seen: dict[str, list[float]] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in Gguf._seen]
        if missing:
            if Gguf._server is None:
                import xllamacpp

                params = xllamacpp.CommonParams()
                params.model.path = Gguf.path
                params.embedding = True
                params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
                params.n_ctx = 2048
                params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
                params.verbosity = -1
                Gguf._server = xllamacpp.Server(params)
            answer = Gguf._server.handle_embeddings({"input": missing})
            Gguf._seen.update(zip(missing, (d["embedding"] for d in answer["data"]),
                                  strict=True))
        return [Gguf._seen[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def mode(repeat: dict[str, Any], judge: bool = False) -> dict[str, Any]:
    turns = [
        {"id": "probe", "role": "Probe", "context_from": ["refine"],
         "prompt": "PROBE {{ topic }} round {{ round }}"},
        {"id": "refine", "role": "Refinement", "context_from": ["probe"],
         "prompt": "REFINE {{ round }} after {{ turns.probe }}"}]
    if judge:
        turns.append({"id": "check", "role": "Judge", "context_from": ["probe", "refine"],
                      "prompt": "JUDGE {{ round }}: has the refinement stopped changing, "
                                "with no objection left? The probe said: {{ turns.probe }}",
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


Plan = tuple[str, dict[str, Any], bool, str]  # label, repeat, judge turn, probe variant


def strategies(quick: bool, gguf: bool = False) -> list[Plan]:
    """(label, repeat, judge, variant) for every strategy the bench compares; the variant
    ("signal" or "no signal") matters only to strategies that read the probe. ``gguf``
    adds the rows of a real embedding model (``--gguf-embeddings``)."""
    out: list[Plan] = [
        ("never stop (8 rounds)", {"max_rounds": ROUNDS}, False, ""),
        ("old: similarity 0.9", {"max_rounds": ROUNDS, "until": {"similarity": 0.9}}, False,
         "")]
    out += [(f"fixed {k} rounds", {"max_rounds": k}, False, "") for k in (3, 4, 6)]
    thresholds = (0.9, 0.95) if quick else (0.85, 0.9, 0.95, 0.97)
    for threshold in thresholds:
        for patience in (1, 2, 3):
            if (threshold, patience) != (0.9, 1):
                out.append((f"similarity {threshold} patience {patience}", {
                    "max_rounds": ROUNDS,
                    "until": {"similarity": threshold, "patience": patience}}, False, ""))
    out.append(("similarity 0.95 patience 1 min_rounds 4", {
        "max_rounds": ROUNDS, "until": {"similarity": 0.95, "min_rounds": 4}}, False, ""))
    for patience in (1, 2, 3):
        out.append((f"idealised embedding patience {patience}", {
            "max_rounds": ROUNDS, "until": {"similarity": 0.999, "patience": patience,
                                            "embeddings": "folded"}}, False, ""))
    for variant in ("signal", "no signal"):
        for patience in (1, 2):
            out.append((f"judge every round patience {patience} ({variant})", {
                "max_rounds": ROUNDS, "until": {"judge": "check", "patience": patience}},
                True, variant))
        confirms = ((0.9, 1), (0.95, 1), (0.95, 2)) if quick else (
            (0.85, 1), (0.9, 1), (0.9, 2), (0.95, 1), (0.95, 2))
        for threshold, patience in confirms:
            out.append((f"confirm: similarity {threshold} patience {patience} ({variant})", {
                "max_rounds": ROUNDS, "until": {"similarity": threshold, "patience": patience,
                                                "confirm": "check"}}, True, variant))
        for patience in (1, 2):
            out.append((f"unless the probe objects: similarity 0.95 patience {patience} "
                        f"({variant})", {"max_rounds": ROUNDS, "until": {
                            "similarity": 0.95, "patience": patience,
                            "unless": "'Objection:' in turns.probe.text"}}, False, variant))
        for patience in (1, 2):
            out.append((f"unless the probe objects: idealised embedding patience {patience} "
                        f"({variant})", {"max_rounds": ROUNDS, "until": {
                            "similarity": 0.999, "embeddings": "folded", "patience": patience,
                            "unless": "'Objection:' in turns.probe.text"}}, False, variant))
        out.append((f"confirm: idealised embedding patience 1 ({variant})", {
            "max_rounds": ROUNDS, "until": {"similarity": 0.999, "embeddings": "folded",
                                            "confirm": "check"}}, True, variant))
    if gguf:
        for threshold in (0.995, 0.998):
            for patience in (1, 2):
                until = {"similarity": threshold, "patience": patience, "embeddings": "gguf"}
                out.append((f"GGUF embedding {threshold} patience {patience}",
                            {"max_rounds": ROUNDS, "until": until}, False, ""))
                out.append((f"unless the probe objects: GGUF embedding {threshold} patience "
                            f"{patience} (signal)", {"max_rounds": ROUNDS, "until": {
                                **until, "unless": "'Objection:' in turns.probe.text"}},
                            False, "signal"))
    return out


def select(plans: list[Plan], only: list[str], variant: str | None,
           judged_only: bool) -> list[Plan]:
    """The plans to run: never stop, and those whose label contains one of ``only`` (all
    when it is empty), of ``variant`` (or none) and, if ``judged_only``, reading the probe."""
    return [p for p in plans if p[0].startswith("never") or (
        (not judged_only or p[3]) and (not variant or p[3] in ("", variant))
        and (not only or any(text in p[0] for text in only)))]


def run(pm: Any, texts: list[str], said: list[str], repeat: dict[str, Any], judge: bool,
        seed: int) -> tuple[int, tuple[str, ...]]:
    model = Scripted(texts=texts, probes=said, judge_seed=seed)
    orchestrator = dlg.Orchestrator(model=model, plugin_manager=pm, store=None)
    d = orchestrator.run_sync(mode(repeat, judge))
    assert d.status == "completed", (d.status, d.error)
    return d.turns_completed, claims(d.turn("consolidate").text)


def frontier(points: dict[str, tuple[float, float]]) -> list[str]:
    """The labels no other strategy beats on both saving and the worst kind's same answer,
    most saving first."""
    keep = [a for a, (sa, ma) in points.items() if not any(
        (sb >= sa and mb >= ma) and (sb, mb) != (sa, ma) for sb, mb in points.values())]
    return sorted(keep, key=lambda label: -points[label][0])


def main() -> None:
    global JUDGE_ERROR
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer thresholds")
    parser.add_argument("--visible", type=float, default=0.8,
                        help="how often a change still to come shows in the probe (signal)")
    parser.add_argument("--judge-error", type=float, default=JUDGE_ERROR,
                        help="how often the judge answers wrongly")
    parser.add_argument("--false-alarm", type=float, default=FALSE_ALARM,
                        help="how often a probe with no cause to show objects all the same")
    parser.add_argument("--judged-only", action="store_true",
                        help="only the strategies that read the probe (and never stop)")
    parser.add_argument("--only", metavar="TEXT", action="append", default=[],
                        help="only the strategies whose label contains TEXT (repeatable; "
                             "never stop is always run)")
    parser.add_argument("--variant", choices=("signal", "no signal"),
                        help="only this probe variant's strategies (and those without one)")
    parser.add_argument("--gguf-embeddings", metavar="PATH",
                        help="also measure a real embedding model: this GGUF file, run "
                             "offline by llama.cpp (needs dlg's local extra; slow: about "
                             "0.5 s a text on 2 cores)")
    args = parser.parse_args()
    if args.gguf_embeddings:
        if not os.path.isfile(args.gguf_embeddings):
            parser.error(f"--gguf-embeddings: no file at {args.gguf_embeddings}")
        try:
            import xllamacpp  # noqa: F401
        except ImportError:
            parser.error("--gguf-embeddings needs xllamacpp: pip install 'dlg-orchestrator[local]'")
        Gguf.path = args.gguf_embeddings
    for name in ("visible", "false_alarm", "judge_error"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    JUDGE_ERROR = args.judge_error
    from dlg.hookspecs import hookimpl
    from dlg.plugin_manager import build_plugin_manager

    class Plugin:
        @hookimpl
        def register_embeddings(self, register: Any) -> None:
            register("folded", Folded)
            register("gguf", Gguf)

    pm = build_plugin_manager(autoload=False)
    pm.register(Plugin(), name="bench-folded")
    plans = select(strategies(args.quick, bool(args.gguf_embeddings)), args.only,
                   args.variant, args.judged_only)
    started = time.monotonic()
    # saved[label][kind] and same[label][kind]: one value per seed
    saved: dict[str, dict[str, list[float]]] = {p[0]: {k: [] for k in KINDS} for p in plans}
    same: dict[str, dict[str, list[float]]] = {p[0]: {k: [] for k in KINDS} for p in plans}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for kind in KINDS:
            texts = workload(kind, random.Random(f"{seed}-{kind}"))
            said = {variant: probes(texts, random.Random(f"{seed}-{kind}-probe"), visible,
                                    args.false_alarm)
                    for variant, visible in (("signal", args.visible), ("no signal", 0.0))}
            said[""] = said["signal"]  # read by no strategy without a judge
            full_turns, full = run(pm, texts, said[""], {"max_rounds": ROUNDS}, False, seed)
            for label, repeat, judge, variant in plans:
                turns, final = run(pm, texts, said[variant], repeat, judge, seed)
                saved[label][kind].append(1 - turns / full_turns)
                same[label][kind].append(float(final == full))
    print(f"{args.seeds} seeds x {len(KINDS)} workload kinds, loop of at most {ROUNDS} rounds "
          f"(19 turns), a change's cause visible in the probe {args.visible:.0%} of the time "
          f"(signal) or never (no signal), a spurious objection in {args.false_alarm:.0%} of "
          f"the other probes, judge wrong {JUDGE_ERROR:.0%} of the time, "
          f"{time.monotonic() - started:.0f} s\n")
    print("Turns saved against never stopping / same final answer, per kind "
          "(mean over seeds; saved also +- its standard deviation)\n")
    short = ["early", "late", "drift", "plateau", "oscill.", "never"]
    print(f"| strategy | {' | '.join(short)} | all six: saved | all six: same | min same |")
    print(f"| --- | {' | '.join('---' for _ in short)} | --- | --- | --- |")
    points: dict[str, tuple[float, float]] = {}
    for label, *_ in plans:
        cells = []
        for kind in KINDS:
            s, m = saved[label][kind], same[label][kind]
            cells.append(f"{statistics.mean(s):+.0%}±{statistics.pstdev(s):.0%} / "
                         f"{statistics.mean(m):.0%}")
        every = [statistics.mean(saved[label][k]) for k in KINDS]
        sames = [statistics.mean(same[label][k]) for k in KINDS]
        points[label] = (statistics.mean(every), min(sames))
        print(f"| {label} | {' | '.join(cells)} | {statistics.mean(every):.1%} | "
              f"{statistics.mean(sames):.1%} | {min(sames):.0%} |")
    print("\nTrade-off curve (no other strategy saves more with at least the same worst-kind "
          "same answer), one table per probe variant:\n")
    for variant in [args.variant] if args.variant else ("signal", "no signal"):
        seen = {label: points[label] for label, _, _, v in plans if v in ("", variant)}
        print(f"{variant}: " + "; ".join(
            f"{label} {seen[label][0]:.1%} saved / {seen[label][1]:.0%} min same"
            for label in frontier(seen)))
    print("\nTargets: same final answer >= 95% on every kind, turns saved >= 40% on settle "
          "early and >= 15% over the six kinds")
    for label, *_ in plans:
        sames = [statistics.mean(same[label][k]) for k in KINDS]
        early = statistics.mean(saved[label]["settle early"])
        overall = statistics.mean(statistics.mean(saved[label][k]) for k in KINDS)
        met = min(sames) >= 0.95 and early >= 0.40 and overall >= 0.15
        print(f"{'ok    ' if met else 'MISSED'} {label}: min same {min(sames):.0%}, "
              f"settle early saved {early:.0%}, all six saved {overall:.1%}")
    sys.exit(0)


if __name__ == "__main__":
    main()
