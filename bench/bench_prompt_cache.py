"""Prompt caches: how much of a dialogue's input a provider's prefix cache reads, and what
that does to the input bill.

    python bench/bench_prompt_cache.py [--seeds 20] [--quick]

Two local servers on 127.0.0.1 cache as the providers do (tests/cache_servers.py):
OpenAI's automatic caching (a prefix of 1,024 tokens or more, in steps of 128, that an
earlier request sent) and Anthropic's breakpoints (a prefix read only where a
``cache_control`` breakpoint, or one of the 20 blocks before it, ends at one cached
before; 1,024 tokens at least; at most 4 breakpoints). A token is a word there, for
every client alike.

The model's answers are made up by the server: 120 to 320 words a turn (drawn per seed
and turn; the built-in modes ask for 120 to 250 words), in paragraphs. Every client gets
the same answers for the same seed and turn.

Workloads: a 10-turn debate (two sides in turn, each turn reading all the earlier
ones), and the built-in modes debate, podcast, loop, pipeline, detective and panel.
Clients, in the same run:

- ``dlg -> openai``: dlg on ``openai:gpt-4.1`` (its layout; a ``prompt_cache_key`` per
  dialogue, which one local server cannot show the effect of: it holds every prefix);
- ``dlg -> anthropic``: dlg on ``anthropic:claude-sonnet-4-5`` (its breakpoints);
- ``dlg -> anthropic, top-level cache_control``: dlg's layout with Anthropic's automatic
  caching instead (one breakpoint at the end of the request; what ``?cache=true`` did);
- ``LangChain history -> openai / anthropic``: the layout of a plain LangChain loop
  (LangGraph's and AutoGen's too): the chat history as messages, system, then each
  turn's request and answer, with Anthropic's top-level breakpoint (10-turn debate only).

Printed per workload and client: the share of input tokens read from the cache (mean
and spread over seeds); beside it the bound no cache can pass, the share of input
that repeats a prefix of an earlier request (the newest answer and the turn's own
request are always new), and the share of it the providers' rules let a cache read
(none of a prefix under 1,024 tokens; OpenAI's in 128-token steps): no layout that
sends the same tokens reads more than that; the input cost with caching over the input
cost of the same tokens without it (gpt-4.1: $2.00 in, $0.50 cached; claude-sonnet-4-5:
$3.00 in, $0.30 read, $3.75 written), and the input cost itself, so a layout that sends more tokens
(the history one resends each earlier request) is seen to.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("DLG_DATA_DIR", tempfile.mkdtemp(prefix="dlg-bench-cache-"))
os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-real")
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench-not-real")

from cache_servers import CachingAnthropic, CachingOpenAI

import dlg

PRICES = {"openai": (2.0, 0.5, 2.0), "anthropic": (3.0, 0.3, 3.75)}  # in, read, written
WORDS = tuple(" ".join((
    "tide moon harbour current evidence claim reason example cost benefit risk model",
    "data policy market energy water coast storm record measure study trend source",
    "argument premise doubt answer question history future city river island plan",
    "budget price value trade labour science method theory test result error margin",
)).split(" "))

SYSTEM = ('You are taking part in a structured debate on the motion: "{{ topic }}".\n'
          "Speak as your role, argue in good faith, and engage with what was actually said.")
ASKS = ["Open the case FOR the motion. State your thesis and your three strongest arguments.",
        "Open the case AGAINST the motion. Answer the proposition's strongest argument.",
        "Defend the proposition against the opposition's two most damaging points.",
        "Rebut the defense: name the claim it rests on that is weakest.",
        "Bring new evidence for the motion that neither side has used yet.",
        "Answer that evidence: what does it not show?",
        "Say where you have changed your mind, if anywhere, and why.",
        "Say where you have changed your mind, if anywhere, and why.",
        "Close the case FOR the motion in your strongest terms.",
        "Close the case AGAINST the motion in your strongest terms."]
DEBATE10 = {"name": "debate10", "system": SYSTEM, "inputs": {"topic": {"required": True}},
            "participants": {"pro": None, "con": None},
            "turns": [{"id": f"t{i + 1}", "role": "Proposition" if i % 2 == 0 else "Opposition",
                       "participant": "pro" if i % 2 == 0 else "con", "prompt": ask}
                      for i, ask in enumerate(ASKS)]}
MODES = ["debate", "podcast", "loop", "pipeline", "detective", "panel"]


class Answers:
    """The server's answers: for a seed, the n-th call of a dialogue gets the same text
    whichever client asks. Calls are told apart by how many answers the request holds
    already (dlg's transcript headers, or the history's assistant messages)."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, body: dict[str, Any]) -> str:
        n = 0
        for m in body.get("messages") or []:
            text = m["content"] if isinstance(m["content"], str) else "".join(
                b.get("text", "") for b in m["content"])
            if m.get("role") == "user":
                n += text.count("\n### ") + text.startswith("### ")
            n += m.get("role") == "assistant"
        rng = random.Random(self.seed * 1000 + n)
        words = [rng.choice(WORDS) for _ in range(rng.randint(120, 320))]
        paragraphs = [" ".join(words[i:i + 60]) for i in range(0, len(words), 60)]
        return "\n\n".join(p.capitalize() + "." for p in paragraphs)


MINIMUM, STEP = 1024, 128  # the providers' rules: no prefix shorter; OpenAI's steps


def by_the_rules(shared: int, provider: str) -> int:
    """The most of a ``shared`` prefix a cache may read by the provider's rules: none
    under the minimum; OpenAI's in whole steps (Anthropic's wherever a breakpoint is)."""
    if shared < MINIMUM:
        return 0
    return shared - (shared - MINIMUM) % STEP if provider == "openai" else shared


def figures(usage: list[dict[str, int]], provider: str
            ) -> tuple[float, float, float, float, float]:
    """(cached share, shared-prefix share, input cost with caching / without, input cost
    with caching in $, the share the providers' rules allow of the shared prefixes)."""
    price_in, price_read, price_written = PRICES[provider]
    total = sum(u["input"] for u in usage)
    cached = sum(u["cached"] for u in usage)
    written = sum(u["written"] for u in usage)
    paid = ((total - cached - written) * price_in + cached * price_read
            + written * price_written) / 1e6
    shared = sum(u["shared"] for u in usage)
    allowed = sum(by_the_rules(u["shared"], provider) for u in usage)
    return (cached / total, shared / total, paid / (total * price_in / 1e6), paid,
            allowed / total)


def dlg_run(mode: Any, seed: int, provider: str, topcache: bool = False) -> list[dict]:
    """One dialogue through dlg; the server's usage of its calls (checked against what
    dlg recorded)."""
    server_type = CachingOpenAI if provider == "openai" else CachingAnthropic
    with server_type(answer=Answers(seed)) as server:
        if provider == "openai":
            model: Any = f"openai:gpt-4.1?base_url={server.base_url}"
        elif topcache:
            from langchain_anthropic import ChatAnthropic

            model = ChatAnthropic(model="claude-sonnet-4-5", base_url=server.base_url,
                                  max_retries=0, model_kwargs={"cache_control": {
                                      "type": "ephemeral"}})
        else:
            model = f"anthropic:claude-sonnet-4-5?base_url={server.base_url}"
        d = dlg.Orchestrator(model=model, store=None).run_sync(
            mode, inputs={"topic": f"coastal cities should retreat from the sea ({seed})"})
        if d.status != "completed":
            raise SystemExit(f"{getattr(mode, 'name', mode)}: {d.status}: {d.error}")
        recorded = sum(t.usage.cached for t in d.turns)
        if recorded != sum(u["cached"] for u in server.usage):
            raise SystemExit("dlg recorded other cached tokens than the server reported")
        return server.usage


def history_run(seed: int, provider: str) -> list[dict]:
    """The 10-turn debate as a plain LangChain loop keeps it: the chat history."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    server_type = CachingOpenAI if provider == "openai" else CachingAnthropic
    with server_type(answer=Answers(seed)) as server:
        if provider == "openai":
            from langchain_openai import ChatOpenAI

            model: Any = ChatOpenAI(model="gpt-4.1", base_url=server.base_url, max_retries=0)
        else:
            from langchain_anthropic import ChatAnthropic

            model = ChatAnthropic(model="claude-sonnet-4-5", base_url=server.base_url,
                                  max_retries=0, model_kwargs={"cache_control": {
                                      "type": "ephemeral"}})
        topic = f"coastal cities should retreat from the sea ({seed})"
        history: list[Any] = [SystemMessage(content=SYSTEM.replace("{{ topic }}", topic))]
        for ask in ASKS:
            history.append(HumanMessage(content=ask))
            history.append(AIMessage(content=model.invoke(history).content))
        return server.usage


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 seeds")
    args = parser.parse_args()
    seeds = range(5 if args.quick else args.seeds)
    started = time.perf_counter()
    rows: list[tuple[str, str, list[tuple[float, float, float, float, float]]]] = []

    def measure(workload: str, client: str, provider: str, run: Any) -> None:
        rows.append((workload, client, [figures(run(s), provider) for s in seeds]))

    measure("10-turn debate", "dlg -> openai", "openai",
            lambda s: dlg_run(DEBATE10, s, "openai"))
    measure("10-turn debate", "dlg -> anthropic", "anthropic",
            lambda s: dlg_run(DEBATE10, s, "anthropic"))
    measure("10-turn debate", "dlg -> anthropic, top-level cache_control", "anthropic",
            lambda s: dlg_run(DEBATE10, s, "anthropic", topcache=True))
    measure("10-turn debate", "LangChain history -> openai", "openai",
            lambda s: history_run(s, "openai"))
    measure("10-turn debate", "LangChain history -> anthropic", "anthropic",
            lambda s: history_run(s, "anthropic"))
    for name in MODES:
        mode = dlg.load_mode(name)
        measure(name, "dlg -> openai", "openai", lambda s, m=mode: dlg_run(m, s, "openai"))
        measure(name, "dlg -> anthropic", "anthropic",
                lambda s, m=mode: dlg_run(m, s, "anthropic"))

    print(f"prompt caches, {len(seeds)} seeds (mean ± sd), a token a word; "
          f"{time.perf_counter() - started:.0f} s")
    print()
    print("| workload | client | input read from the cache | bound: prefix shared with an "
          "earlier request | bound by the provider's rules (minimum, steps) | input cost, "
          "cached / uncached | input cost per dialogue |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for workload, client, results in rows:
        share, shared, ratio, paid, allowed = zip(*results, strict=True)
        print(f"| {workload} | {client} | {spread(list(share))} | {spread(list(shared))} "
              f"| {spread(list(allowed))} | {spread(list(ratio))} "
              f"| ${statistics.mean(paid):.5f} |")
    debate = next(r for r in rows if r[0] == "10-turn debate" and r[1] == "dlg -> openai")
    share = statistics.mean(r[0] for r in debate[2])
    print()
    print(f"target: >= 70% of a 10-turn debate's input read from the cache (dlg -> openai): "
          f"{share:.1%} ({'holds' if share >= 0.70 else 'misses'})")


if __name__ == "__main__":
    main()
