"""Rate limits: a batch against a local OpenAI-compatible server that enforces them.

    python bench/bench_rate_limits.py [--dialogues 60] [--requests 30] [--tokens 6000]
                                      [--window 1.0] [--latency 0.05]

The server (tests/servers.py ``LimitedOpenAI``) allows ``requests`` requests and
``tokens`` tokens (a word a token, prompt and answer) per fixed ``window`` of seconds and
answers after ``latency``; past a limit it sends a 429 with ``retry-after``,
``retry-after-ms`` and ``x-ratelimit-*`` headers, as OpenAI does. The issue's server
allowed 60 requests and 12,000 tokens per 6 seconds; the window is scaled down here so
the whole run stays under a minute (the same rates per window).

Each run is ``dialogues`` three-turn dialogues (each turn reads the ones before), on a
fresh server, in the same process run:

- ``dlg batch -c 4`` and ``dlg batch -c 20`` (``dlg.batch`` with the default policy);
- plain ``ChatOpenAI(max_retries=6)`` running the same three calls per dialogue, 20 at
  once (the client's own retry-on-429);
- ``ChatOpenAI`` with LangChain's ``InMemoryRateLimiter`` at the server's request rate.

Printed: dialogues failed, the share of requests refused (429), and the wall time
against the bound the limits set (the requests and tokens answered, over what a window
allows, times the window; the server's windows are fixed, so a run can end early in its
last window and come in under 1.00x). Targets for this item: 0 dialogues failed. (Pacing, which
would cut the 429s and the wall, is a later item.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ.setdefault("DLG_DATA_DIR", tempfile.mkdtemp(prefix="dlg-bench-rl-"))
os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-real")

import anyio
from servers import LimitedOpenAI

import dlg

REPLY = ("A considered answer that runs to a few dozen words so that the transcript grows "
         "with every turn and the tokens per window matter as much as the requests do in "
         "this workload, as they would with a real model.")
MODE = {"name": "three", "inputs": {"topic": {"required": True}},
        "participants": {"a": None, "b": None},
        "turns": [{"id": "open", "role": "Opening", "participant": "a",
                   "prompt": "Open a short debate on {{ topic }}."},
                  {"id": "reply", "role": "Reply", "participant": "b",
                   "prompt": "Answer the opening."},
                  {"id": "close", "role": "Closing", "participant": "a",
                   "prompt": "Close the debate."}]}
PROMPTS = ["Open a short debate on {topic}.", "Answer the opening.", "Close the debate."]


def server(args: argparse.Namespace) -> LimitedOpenAI:
    s = LimitedOpenAI(requests=args.requests, window=args.window, tokens=args.tokens,
                      reply=REPLY)
    s.script = [f"hang:{args.latency}"]
    return s


def spec(s: LimitedOpenAI) -> str:
    return f"openai-compatible:bench-model?base_url={s.base_url}"


async def run_dlg(s: LimitedOpenAI, rows: list[dict[str, str]], concurrency: int) -> int:
    result = await dlg.batch(MODE, rows, concurrency=concurrency, model=spec(s),
                             batch_id=f"rl-{concurrency}-{time.monotonic_ns()}")
    return sum(1 for i in result.items if i.status != "completed")


async def run_langchain(s: LimitedOpenAI, rows: list[dict[str, str]], concurrency: int,
                        limiter: Any) -> int:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="bench-model", base_url=s.base_url, max_retries=6,
                       rate_limiter=limiter)
    failed = 0
    lock = anyio.Semaphore(concurrency)

    async def dialogue(row: dict[str, str]) -> None:
        nonlocal failed
        async with lock:
            messages: list[Any] = []
            try:
                for prompt in PROMPTS:
                    messages.append(HumanMessage(content=prompt.format(**row)))
                    answer = await model.ainvoke(messages)
                    messages.append(AIMessage(content=answer.content))
            except Exception:
                failed += 1

    async with anyio.create_task_group() as tg:
        for row in rows:
            tg.start_soon(dialogue, row)
    return failed


async def measure(name: str, args: argparse.Namespace, go: Any) -> dict[str, Any]:
    rows = [{"topic": f"topic number {i}"} for i in range(args.dialogues)]
    with server(args) as s:
        started = time.monotonic()
        failed = await go(s, rows)
        wall = time.monotonic() - started
    sent = len(s.requests)
    tokens = sum(used[1] for used in s.used.values())  # of the requests answered
    bound = max(s.answered / args.requests,
                tokens / args.tokens if args.tokens else 0.0) * args.window
    return {"name": name, "failed": failed, "requests": sent,
            "refused": s.refused / max(1, sent), "wall": wall, "bound": bound}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=60)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=6000)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--only", choices=["dlg", "all"], default="all")
    args = parser.parse_args()

    from langchain_core.rate_limiters import InMemoryRateLimiter

    runs = [("dlg batch -c 4", lambda s, r: run_dlg(s, r, 4)),
            ("dlg batch -c 20", lambda s, r: run_dlg(s, r, 20))]
    if args.only == "all":
        runs += [("ChatOpenAI(max_retries=6), 20 at once",
                  lambda s, r: run_langchain(s, r, 20, None)),
                 ("ChatOpenAI + InMemoryRateLimiter, 20 at once",
                  lambda s, r: run_langchain(s, r, 20, InMemoryRateLimiter(
                      requests_per_second=args.requests / args.window,
                      check_every_n_seconds=0.01, max_bucket_size=1)))]
    with LimitedOpenAI(requests=10**6, window=60) as s:  # warm up: imports, mode loading
        await run_dlg(s, [{"topic": "warm-up"}], 1)
        await run_langchain(s, [{"topic": "warm-up"}], 1, None)
    print(f"{args.dialogues} three-turn dialogues; the server allows {args.requests} requests "
          f"and {args.tokens} tokens per {args.window:g}s window, answers after "
          f"{args.latency:g}s\n")
    print("| client, same workload | dialogues failed | 429 share | wall vs the limits' bound |")
    print("|---|---:|---:|---:|")
    for name, go in runs:
        row = await measure(name, args, go)
        print(f"| {row['name']} | {row['failed']} of {args.dialogues} | "
              f"{row['refused']:.0%} | {row['wall'] / row['bound']:.2f}x "
              f"({row['wall']:.1f}s / {row['bound']:.1f}s) |", flush=True)


if __name__ == "__main__":
    anyio.run(main)
