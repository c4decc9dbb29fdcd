"""Budgets benchmark: does a hard limit hold, stop and finish, under providers that do
not behave? Every scenario runs through the real kernel (scripted models, no network).

    python bench/bench_budgets.py            # 20 seeds (about 25 s)
    python bench/bench_budgets.py --seeds 40
    python bench/bench_budgets.py --only long-prompt --tiktoken-cache DIR

Per seed, drawn: prices (input $0.5-$5, output 4-6x input, per million tokens), answer
lengths, the limit, and what goes wrong. Scenarios:

- honest: usage within what was reserved, parallel phases and structured repairs; the
  target: never over the limit;
- over-report: the provider reports up to 3x the output tokens it was given room for;
  measured: the ledger against the limit, calls made after the limit was passed;
- billed-failures: half the attempts fail with a 500 after reaching the provider, which
  bills their input; measured: the provider's bill against the limit;
- sub-dialogues: a spawning turn's children under the parent's limit (the tree's
  ``total_cost_usd``);
- sc3.3: the seed's loop (8 turns) on a market without a cheap model, limit drawn in
  $0.10-$0.30, the router wanting the best model; measured: finished the 8 turns, against
  the cheapest plan (every turn on the cheapest model, which the market guarantees fits);
- batch: 40 debates started at once under a total drawn to pay for 8-20 of them;
  measured: dialogues finished against an oracle schedule (the real per-dialogue costs,
  cheapest first, as many as fit);
- long-prompt: one turn on ``openai:gpt-4`` with 8,000-20,000 characters of dlg's docs
  (prose, tables, code) as its prompt, billed as OpenAI does (its encoding's count plus
  3 a message and 3 for the reply), the limit drawn between 1.2x its real cost and 0.9x
  its worst case by the byte bound (so, by construction, the byte bound never fits and
  an exact count does); measured: finished with the byte bound and with the openai
  plugin's tokenizer (tiktoken's cl100k_base, read from tiktoken's cache: give the
  directory with ``--tiktoken-cache``, else the row is skipped), the reserved prompt
  bound against the bill, and how often four characters a token is below the bill;
- retries-long: a parallel phase of four turns and a closing one with prompts of
  1,000-3,000 words, two priced models (one the other's fallback), 40% of attempts a
  billed 500 and three attempts a model, usage honest (a prompt billed at up to its
  bytes, failed ones too, where the ledger charges a failure its estimate); measured: the
  providers' bill against the limit;
- wide-tiny: a parallel phase of 20 turns and a closing one under a limit of 1-3 turns'
  worst case (the turns wait for each other's reservations); measured: no hang (a
  120 s guard), never over, how many of the 21 turns ran.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DLG_HOME", tempfile.mkdtemp(prefix="dlg-bench-budgets-"))

import anyio

import dlg
from tests.routing_support import Scripted, market
from tests.subdialogue_support import CHILD, PARENT, Tree
from tests.test_budgets import Failing, OverReporting


class Billing(Failing):
    """Fails half its calls with a 500 after the provider read the prompt; keeps the
    provider's own bill (input of every attempt that reached it, and every answer)."""

    bill: float = 0.0
    price_in: float = 0.0
    price_out: float = 0.0
    rate: float = 0.5

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        rng = random.Random(f"{self.seed}-{self.calls}-fail")
        prompt = max(1, len(" ".join(str(m.content) for m in messages).encode()) // 4)
        if rng.random() < self.rate:
            self.calls += 1
            self.bill += prompt * self.price_in
            from tests.test_budgets import ServerError

            raise ServerError("the provider broke")
        out = Scripted._generate(self, messages, stop, run_manager, **kwargs)
        meta = out.generations[0].message.usage_metadata
        self.bill += meta["input_tokens"] * self.price_in + meta["output_tokens"] * self.price_out
        return out


def _prices(rng: random.Random) -> dict[str, float]:
    p_in = rng.uniform(0.5, 5)
    return {"input": p_in, "output": p_in * rng.uniform(4, 6)}


MIXED = {"name": "mixed", "structure": "mixed", "settings": {"max_tokens": 300}, "phases": [
    {"id": "open", "structure": "parallel", "turns": [
        {"id": f"o{k}", "role": "R", "prompt": "open " * 40} for k in range(3)]},
    {"id": "mid", "turns": [{"id": "judge", "role": "J", "prompt": "judge",
                             "output": {"schema": {"type": "object", "required": ["score"],
                                                   "properties": {"score": {"type": "number"}}}}}]},
    {"id": "end", "turns": [{"id": f"e{k}", "role": "R", "prompt": "close"} for k in range(3)]}]}
SIX = {"name": "six", "settings": {"max_tokens": 200},
       "turns": [{"id": f"t{k}", "role": "R", "prompt": "go " * 30} for k in range(6)]}


def _orch(model: Any, registry: Any, **kw: Any) -> dlg.Orchestrator:
    return dlg.Orchestrator(model=model, registry=registry, store=None,
                            retry=dlg.RetryPolicy(base_delay=0.0), **kw)


def honest(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    _, registry = market({"m": {"price": _prices(rng)}})
    model = Scripted(dlg_label="m", seed=seed, random_usage=True)
    limit = rng.uniform(0.002, 0.02)
    d = _orch(model, registry, max_cost=limit).run_sync(MIXED)
    # not whether it completes: the scripted judge never answers JSON, so the structured
    # turn fails, with or without a limit
    return {"over": float(d.total_cost_usd > limit + 1e-12),
            "ratio": d.total_cost_usd / limit}


def over_report(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    _, registry = market({"m": {"price": _prices(rng)}})
    model = OverReporting(dlg_label="m", factor=rng.uniform(1.0, 3.0))
    limit = rng.uniform(0.002, 0.01)
    d = _orch(model, registry, max_cost=limit).run_sync(SIX)
    ran, passed_at = 0, None
    spent = 0.0
    for t in d.turns:
        if t.status != "completed":
            continue
        ran += 1
        spent += t.cost_usd or 0.0
        if passed_at is None and spent > limit:
            passed_at = ran
    after = (ran - passed_at) if passed_at is not None else 0
    return {"over": float(d.total_cost_usd > limit + 1e-12),
            "ratio": d.total_cost_usd / limit, "calls_after": float(after)}


def billed_failures(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    prices = _prices(rng)
    _, registry = market({"m": {"price": prices}})
    model = Billing(dlg_label="m", seed=seed, failures=0, price_in=prices["input"] / 1e6,
                    price_out=prices["output"] / 1e6, completion=rng.randint(50, 200))
    limit = rng.uniform(0.0005, 0.003)
    d = _orch(model, registry, max_cost=limit).run_sync(SIX)
    return {"over": float(model.bill > limit + 1e-12), "ratio": model.bill / limit,
            "ledger_vs_bill": d.metadata["budget"]["spent"] / model.bill if model.bill else 1}


def subdialogues(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp())
    small = "settings: {max_tokens: 20}\n"  # a worst case near the real cost
    (folder / "tree.yaml").write_text(small + PARENT)
    (folder / "explore.yaml").write_text(small + CHILD)
    registry = dlg.ModelRegistry.load()
    registry.add({"models": {"tree": {"price": _prices(rng)}}}, "bench")
    limit = rng.uniform(0.0003, 0.003)
    d = _orch(Tree(calls=[]), registry, max_cost=limit).run_sync(folder / "tree.yaml",
                                                                  topic="t")
    return {"over": float(d.total_cost_usd > limit + 1e-12),
            "ratio": d.total_cost_usd / limit, "completed": float(d.status == "completed")}


def sc33(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    from tests.test_routing import MARKET

    entries = {k: {**v, "completion": rng.randint(200, 400)} for k, v in MARKET.items()
               if k != "mini"}
    models, registry = market(entries)
    limit = rng.uniform(0.101, 0.3)
    d = dlg.Orchestrator(pool=models, registry=registry, store=None, max_cost=limit,
                         constraints={"quality": "maximum"}).run_sync(
                             dlg.load_mode("loop"), topic="AI safety")
    return {"finished": float(d.turns_completed == 8), "over": float(
        d.total_cost_usd > limit + 1e-12), "used": d.total_cost_usd / limit}


def batch(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    models, registry = market({"m": {"capabilities": ["reasoning", "analysis"],
                                     "quality": 80, "price": _prices(rng),
                                     "completion": rng.randint(150, 400)}})
    mode = dlg.load_mode("debate")
    rows = [{"topic": "t" * rng.randint(1, 400)} for _ in range(40)]
    costs = sorted(_orch(models["m"], registry).run_sync(mode, **r).total_cost_usd
                   for r in rows)
    total = sum(costs[:rng.randint(8, 20)]) + costs[0] * rng.random()
    oracle, acc = 0, 0.0
    for c in costs:
        if acc + c > total:
            break
        acc, oracle = acc + c, oracle + 1
    result = anyio.run(lambda: _orch(models["m"], registry).batch(
        mode, rows, concurrency=40, max_total_cost=total))
    done = result.totals["statuses"].get("completed", 0)
    part = sum(1 for i in result.items if i.status == "cost_limited" and i.spent_usd > 0)
    return {"share": done / oracle, "part_done": float(part),
            "over": float(result.totals["cost_usd"] > total + 1e-9)}


class TokenBilled(Scripted):
    """An OpenAI-like provider: bills a prompt at its encoding's count of each message's
    text, plus 3 tokens a message and 3 for the reply (OpenAI's chat format)."""

    count: Any = None

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        out = Scripted._generate(self, messages, stop, run_manager, **kwargs)
        meta = out.generations[0].message.usage_metadata
        meta["input_tokens"] = sum(self.count(str(m.content)) + 3 for m in messages) + 3
        meta["total_tokens"] = meta["input_tokens"] + meta["output_tokens"]
        return out


_CORPUS: list[str] = []


def _excerpt(rng: random.Random) -> str:
    """8,000-20,000 characters from a random place in dlg's docs (prose, tables, code),
    without Jinja's braces."""
    if not _CORPUS:
        docs = sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))
        text = "\n\n".join(d.read_text(encoding="utf-8") for d in docs)
        _CORPUS.append(text.replace("{", "(").replace("}", ")").replace("%", " percent"))
    text = _CORPUS[0]
    n = rng.randint(8_000, 20_000)
    start = rng.randrange(len(text) - n)
    return text[start:start + n].strip()


def long_prompt(seed: int) -> dict[str, float] | None:
    """One turn on ``openai:gpt-4`` (cl100k_base) with a long excerpt of the docs as its
    prompt, billed by the real encoding; the limit drawn between 1.2x the real cost and
    0.9x the worst case by the byte bound. Run with the byte bound (as when the encoding
    is not in tiktoken's cache) and with the openai plugin's tokenizer. None when the
    encoding is not in tiktoken's cache (``--tiktoken-cache``)."""
    from dlg.plugins import openai_tokens

    count = openai_tokens.tokenizer("gpt-4", {})
    if count is None:
        return None
    rng = random.Random(seed)
    prices = _prices(rng)
    label = "openai:gpt-4"
    _, registry = market({label: {"price": prices}})
    prompt = _excerpt(rng)
    mode = {"name": "long", "settings": {"max_tokens": 100},
            "turns": [{"id": "t", "role": "R", "prompt": prompt}]}
    billed = count(prompt) + 6
    real = (billed * prices["input"] + 50 * prices["output"]) / 1e6
    worst = ((len(prompt.encode()) + 16) * prices["input"] + 64 * prices["output"]) / 1e6
    limit = rng.uniform(1.2 * real, 0.9 * worst)
    loaded = dict(openai_tokens._LOADED)
    openai_tokens._LOADED["cl100k_base"] = None  # as with nothing in tiktoken's cache
    try:
        plain = _orch(TokenBilled(dlg_label=label, count=count), registry,
                      max_cost=limit).run_sync(mode)
    finally:
        openai_tokens._LOADED.update(loaded)
    model = TokenBilled(dlg_label=label, count=count)
    counted = _orch(model, registry, max_cost=limit).run_sync(mode)
    reserved = counted.turns[0].metadata["budget"]["reserved"]
    bound = (reserved - 100 * prices["output"] / 1e6) / (prices["input"] / 1e6)
    return {"over": float(counted.total_cost_usd > limit + 1e-12),
            "used": counted.total_cost_usd / limit,
            "finished_bytes": float(plain.status == "completed"),
            "finished_tokenizer": float(counted.status == "completed"),
            "bound_vs_bill": bound / billed,
            "bytes_vs_bill": (len(prompt.encode()) + 16) / billed,
            "quarter_under": float(len(prompt) / 4 + 6 < billed)}


def _wide(width: int, words: int) -> dict[str, Any]:
    """A parallel phase of ``width`` turns with prompts of ``words`` words, then one
    closing turn."""
    return {"name": "wide", "structure": "mixed", "settings": {"max_tokens": 300},
            "phases": [{"id": "wide", "structure": "parallel", "turns": [
                {"id": f"w{k}", "role": "R", "prompt": f"w{k} " + "go " * words}
                for k in range(width)]},
                {"id": "close", "turns": [{"id": "end", "role": "R", "prompt": "sum up"}]}]}


def retries_long(seed: int) -> dict[str, float]:
    """Billed 500s (40%) on long prompts (1,000-3,000 words) with up to three attempts a
    model and a fallback, honest usage (a prompt billed at up to its bytes)."""
    from tests.test_budget_siblings import Honest

    rng = random.Random(seed)
    prices = {"big": _prices(rng), "small": _prices(rng)}
    _, registry = market({n: {"capabilities": ["analysis"], "price": p}
                          for n, p in prices.items()})
    models = {n: Honest(dlg_label=n, seed=seed, fail_rate=0.4, bills_bound=True,
                        price_in=p["input"], price_out=p["output"])
              for n, p in prices.items()}
    mode = _wide(4, rng.randint(1_000, 3_000))
    for phase in mode["phases"]:
        for turn in phase["turns"]:
            turn["requires"] = ["analysis"]
    limit = rng.uniform(0.005, 0.06)
    d = dlg.Orchestrator(pool=models, registry=registry, max_cost=limit, store=None,
                         retry=dlg.RetryPolicy(base_delay=0.0, attempts=3)).run_sync(mode)
    bill = sum(m.bill for m in models.values())
    return {"over": float(bill > limit + 1e-12), "ratio": bill / limit,
            "completed": float(d.status == "completed")}


def wide_tiny(seed: int) -> dict[str, float]:
    """A parallel phase of 20 turns under a limit of 1-3 turns' worst case: the turns
    wait for each other's reservations; measured: no hang, never over, turns run."""
    rng = random.Random(seed)
    _, registry = market({"m": {"price": _prices(rng)}})
    model = Scripted(dlg_label="m", seed=seed, random_usage=True)
    mode = _wide(20, 20)
    one = registry.get("m")
    worst = (200 * one.price_in + 300 * one.price_out) / 1e6
    limit = worst * rng.uniform(1.0, 3.0)
    with_guard = anyio.fail_after(120)  # only a hang comes near it

    async def go() -> Any:
        with with_guard:
            return await _orch(model, registry, max_cost=limit).run(mode)

    d = anyio.run(go)
    ran = sum(t.status == "completed" for t in d.turns)
    return {"over": float(d.total_cost_usd > limit + 1e-12),
            "ratio": d.total_cost_usd / limit, "turns_run": float(ran)}


SCENARIOS = {"honest": honest, "over-report": over_report,
             "billed-failures": billed_failures, "sub-dialogues": subdialogues,
             "sc3.3": sc33, "batch": batch, "long-prompt": long_prompt,
             "retries-long": retries_long, "wide-tiny": wide_tiny}


def _cell(values: list[float], pct: bool | int = False) -> str:
    m, sd = statistics.mean(values), statistics.pstdev(values)
    if pct is True:
        return f"{100 * m:.1f}±{100 * sd:.1f}%"
    digits = pct if type(pct) is int else 2
    return f"{m:.{digits}f}±{sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--only", help="run only this scenario")
    parser.add_argument("--tiktoken-cache", help="tiktoken's cache directory, for long-prompt "
                        "(TIKTOKEN_CACHE_DIR): the openai plugin reads cl100k_base there")
    args = parser.parse_args()
    if args.tiktoken_cache:
        os.environ["TIKTOKEN_CACHE_DIR"] = args.tiktoken_cache
    import logging

    logging.disable(logging.WARNING)
    started = time.perf_counter()
    print("| scenario | seeds | over the limit | spent / limit (max) | other |")
    print("| --- | --- | --- | --- | --- |")
    for name, fn in SCENARIOS.items():
        if args.only and name != args.only:
            continue
        found = [fn(seed) for seed in range(1, args.seeds + 1)]
        rows = [r for r in found if r is not None]
        if not rows:
            print(f"| {name} | 0 | - | - | skipped: cl100k_base is not in tiktoken's cache "
                  "(--tiktoken-cache DIR) |")
            continue
        over = sum(r["over"] for r in rows)
        ratio_key = "ratio" if "ratio" in rows[0] else ("used" if "used" in rows[0] else None)
        ratio = (f"{_cell([r[ratio_key] for r in rows])} "
                 f"({max(r[ratio_key] for r in rows):.2f})") if ratio_key else "-"
        other = []
        if "calls_after" in rows[0]:
            other.append(f"calls after the limit passed: {sum(r['calls_after'] for r in rows):.0f}")
        if "ledger_vs_bill" in rows[0]:
            other.append(f"ledger / provider's bill {_cell([r['ledger_vs_bill'] for r in rows])}")
        if "finished" in rows[0]:
            other.append(f"finished 8/8 turns: {sum(r['finished'] for r in rows):.0f}/{len(rows)}")
        if "turns_run" in rows[0]:
            other.append(f"turns run of 21 {_cell([r['turns_run'] for r in rows])}")
        if "completed" in rows[0]:
            other.append(f"completed: {sum(r['completed'] for r in rows):.0f}/{len(rows)}")
        if "finished_bytes" in rows[0]:
            other.append(f"finished: byte bound {sum(r['finished_bytes'] for r in rows):.0f}"
                         f"/{len(rows)}, tokenizer "
                         f"{sum(r['finished_tokenizer'] for r in rows):.0f}/{len(rows)}; "
                         f"prompt bound / billed: tokenizer "
                         f"{_cell([r['bound_vs_bill'] for r in rows], 3)} (min "
                         f"{min(r['bound_vs_bill'] for r in rows):.3f}), bytes "
                         f"{_cell([r['bytes_vs_bill'] for r in rows])}; chars/4 under "
                         f"the bill {sum(r['quarter_under'] for r in rows):.0f}/{len(rows)}")
        if "share" in rows[0]:
            other.append(f"finished / oracle {_cell([r['share'] for r in rows], True)} "
                         f"(min {100 * min(r['share'] for r in rows):.0f}%), part-done "
                         f"{_cell([r['part_done'] for r in rows])}")
        print(f"| {name} | {len(rows)} | {over:.0f} | {ratio} | {'; '.join(other)} |")
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
