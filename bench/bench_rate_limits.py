"""Rate limits: batches against a local OpenAI-compatible server that enforces them.

    python bench/bench_rate_limits.py [--seeds 20] [--quick] [--dialogues 60]
                                      [--requests 30] [--tokens 6000] [--window 1.0]
                                      [--latency 0.05] [--only dlg|ray|ray-pacing|all]

The server (tests/servers.py ``LimitedOpenAI``) allows ``requests`` requests and
``tokens`` tokens (a word a token, prompt and answer) per fixed ``window`` of seconds and
answers after ``latency``; past a limit it sends a 429 with ``retry-after``,
``retry-after-ms`` and ``x-ratelimit-*`` headers (limits per minute), as OpenAI does. The
issue's server allowed 60 requests and 12,000 tokens per 6 seconds; the window is scaled
down here so that a run takes seconds (the same rates per window).

Each run is ``dialogues`` three-turn dialogues (each turn reads the ones before; each
seed draws the topics' lengths), on a fresh server, every client in the same process run:

- ``dlg batch -c 4`` and ``-c 20`` with the limits given (``?rpm=...&tpm=...``, what the
  server allows per minute), paced by ``dlg.models.pacing``;
- ``dlg batch -c 20`` with no limit given: learned from the answers' ``x-ratelimit-*``
  headers (one call in flight until the first answer states them);
- ``dlg batch --executor ray -c 4``: 4 Ray workers (processes) sharing one limit (the
  batch's actor holds its schedule), the limits given and learned; Ray is started once,
  before the runs, with 4 CPUs, and warmed up (a row is skipped, saying so, when ``ray``
  is not installed). Beside them, the same with each row set up from scratch on its
  worker and each settlement waited for (``before_task``: how the executor ran rows
  before its workers kept their set-up; and a limits actor started for each batch),
  limits given; and the same with each worker's pacing as it was before the first
  answer replaced the guessed answer size and settlements that give nothing back were
  no longer sent (``before_pacing_task``), limits given and learned;
- plain ``ChatOpenAI(max_retries=6)`` running the same three calls per dialogue, 20 at
  once (the client's own retry-on-429);
- ``ChatOpenAI`` with LangChain's ``InMemoryRateLimiter`` at the server's request rate.

Printed, mean and standard deviation over the seeds: dialogues failed (in all), the
share of requests refused (429), and the wall time against the bound the limits set (the
requests and tokens answered, over what a window allows, times the window; the server's
windows are fixed, so a client that bursts at the start of each window can end early in
its last one and come in under 1.00x). Targets: 0 dialogues failed; wall <= 1.10x the
bound; 429s <= 2% of requests.
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


def spec(s: LimitedOpenAI, limits: bool = False) -> str:
    given = ""
    if limits:  # what the server allows, per minute
        per_minute = 60 / s.window
        given = f"&rpm={round(s.limit * per_minute)}"
        if s.token_limit:
            given += f"&tpm={round(s.token_limit * per_minute)}"
    return f"openai-compatible:bench-model?base_url={s.base_url}{given}"


async def run_dlg(s: LimitedOpenAI, rows: list[dict[str, str]], concurrency: int,
                  limits: bool = False, executor: str = "local") -> int:
    from dlg.models.pacing import pacer
    from dlg.models.resilience import cooldowns, gate

    pacer.reset()  # each run learns afresh (the server's port is new each time anyway)
    gate.reset()
    cooldowns.reset()
    result = await dlg.batch(MODE, rows, concurrency=concurrency, model=spec(s, limits),
                             batch_id=f"rl-{concurrency}-{time.monotonic_ns()}",
                             executor=executor)
    return sum(1 for i in result.items if i.status != "completed")


async def _run_executor(s: LimitedOpenAI, rows: list[dict[str, str]], concurrency: int,
                        limits: bool, executor: Any, prefix: str) -> int:
    """``run_dlg`` with an executor class made for the orchestrator (a baseline's)."""
    from dlg.models.pacing import pacer
    from dlg.models.resilience import cooldowns, gate

    pacer.reset()
    gate.reset()
    cooldowns.reset()
    orchestrator = dlg.Orchestrator(model=spec(s, limits))
    result = await orchestrator.batch(MODE, rows, concurrency=concurrency,
                                      batch_id=f"{prefix}-{concurrency}-{time.monotonic_ns()}",
                                      executor=executor(orchestrator))
    return sum(1 for i in result.items if i.status != "completed")


async def run_ray_before(s: LimitedOpenAI, rows: list[dict[str, str]], concurrency: int,
                         limits: bool = False) -> int:
    """``run_dlg`` on Ray as it ran before its workers kept their set-up and the limits
    actor outlived the batch (the baseline)."""
    from dlg.plugins.ray_executor import RayExecutor

    class Before(RayExecutor):
        task = staticmethod(before_task)

        @staticmethod
        def limits(ray: Any, batch_id: str) -> Any:  # an actor of the batch's own
            from dlg.plugins.ray_executor import _Limits

            return ray.remote(_Limits).options(
                name=f"dlg-limits-{batch_id}-{os.getpid()}", num_cpus=0,
                get_if_exists=True).remote()

    return await _run_executor(s, rows, concurrency, limits, Before, "rb")


def before_task(mode_document: dict[str, Any], files: dict[str, str], item: dict[str, Any],
                options: dict[str, Any], store: Any, source: str | None = None,
                share: tuple[float, str] | None = None, limits: Any = None) -> dict[str, Any]:
    """The Ray executor's task before workers kept their set-up: each row makes its
    orchestrator, writes and loads its mode, opens its store and makes its models in an
    event loop of its own, and waits for each settlement with the limits actor."""
    import dataclasses
    import socket

    from dlg.plugin import BatchItem, Budget, Orchestrator, load_mode, pacer, run_item
    from dlg.plugins.ray_executor import _write_files

    class Awaited:
        def __init__(self, actor: Any):
            self.actor = actor

        async def reserve(self, key: str, rpm: Any, tpm: Any, tokens: int) -> float:
            return float(await self.actor.reserve.remote(key, rpm, tpm, tokens))

        async def settle(self, key: str, refund: int, future: float) -> None:
            await self.actor.settle.remote(key, refund, future)

    batch_item = BatchItem(**{k: item[k] for k in ("index", "inputs", "dialogue_id")})
    orchestrator = Orchestrator(store=store, **options)
    within = None if share is None else Budget(share[0], orchestrator.registry, name=share[1])
    with tempfile.TemporaryDirectory(prefix="dlg-mode-") as folder:
        _write_files(files, folder)
        mode = load_mode(mode_document, base_dir=folder if files else None)
        if source is not None:
            mode = dataclasses.replace(mode, source=source)
        pacer.share(None if limits is None else Awaited(limits))
        try:
            anyio.run(run_item, orchestrator, mode, batch_item, within)
        finally:
            pacer.share(None)
    batch_item.worker = f"{socket.gethostname()}:{os.getpid()}"
    return batch_item.to_dict()


async def run_ray_before_pacing(s: LimitedOpenAI, rows: list[dict[str, str]],
                                concurrency: int, limits: bool = False) -> int:
    """``run_dlg`` on Ray with each worker's pacing as it was before the first answer
    replaced the guessed answer size (the baseline): ``Limiter.release`` as it was."""
    from dlg.plugins.ray_executor import RayExecutor

    class Before(RayExecutor):
        task = staticmethod(before_pacing_task)

    return await _run_executor(s, rows, concurrency, limits, Before, "rp")


def before_pacing_task(*args: Any) -> dict[str, Any]:
    """The Ray executor's task with ``Limiter.release`` as it was, for the task."""
    from dlg.models.pacing import Limiter
    from dlg.plugins.ray_executor import _run_one

    now = Limiter.release
    Limiter.release = _release_before  # type: ignore[method-assign]
    try:
        return _run_one(*args)
    finally:
        Limiter.release = now  # type: ignore[method-assign]


async def _release_before(self: Any, reserved: int, ends: float, estimated: int,
                          counted: tuple[int, int] | None, refused: bool) -> None:
    """``dlg.models.pacing.Limiter.release`` before: the first answer moved the guessed
    answer size (256 tokens) a quarter of the way, every settlement was sent (one that
    gave nothing back included), and a slow start's call took no place in the schedule
    (an ``ends`` of ``-inf`` settles nothing here)."""
    from dlg.models.pacing import MAX_CONCURRENCY

    self._release()
    if self.probing and not refused:
        self.pacer.unlimited(self)
        return
    if counted is not None:
        prompt, completion = counted
        self.completion += (completion - self.completion) / 4
        if estimated > 0:
            seen = min(4.0, max(0.25, prompt / estimated))
            self.ratio += (seen - self.ratio) / 4
        if self.tpm:
            await self.pacer.store.settle(self.key, reserved - prompt - completion,
                                          ends - time.monotonic())
    if not refused and self.cwnd is not None:
        self.cwnd += 1 / self.cwnd
        if self.cwnd > MAX_CONCURRENCY:
            self.cwnd = None


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


def _ray(args: argparse.Namespace) -> Any:
    """Ray, started here with 4 CPUs (so every batch's 4 workers are the same warm
    processes), or None when it is not installed or not wanted."""
    if not args.ray:
        return None
    try:
        import ray
    except ImportError:
        return None
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    return ray


def topics(seed: int, n: int) -> list[dict[str, str]]:
    draw = random.Random(seed)
    return [{"topic": " ".join(["topic"] + ["word"] * draw.randint(1, 40) + [str(i)])}
            for i in range(n)]


async def measure(name: str, args: argparse.Namespace, go: Any, seed: int) -> dict[str, Any]:
    rows = topics(seed, args.dialogues)
    random.seed(seed)
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


def spread(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 seeds, 30 dialogues")
    parser.add_argument("--dialogues", type=int, default=60)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=6000)
    parser.add_argument("--window", type=float, default=1.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--only", choices=["dlg", "ray", "ray-pacing", "all"], default="all",
                        help="dlg: leave out LangChain's rows; ray: only the Ray rows and "
                             "dlg batch -c 20 with the limits given; ray-pacing: those "
                             "but the two set-up and pacing baselines with the limits "
                             "learned or set up afresh")
    parser.add_argument("--no-ray", dest="ray", action="store_false",
                        help="leave out the --executor ray rows")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.dialogues = 3, 30

    from langchain_core.rate_limiters import InMemoryRateLimiter

    runs = [("dlg batch -c 4, limits given", lambda s, r: run_dlg(s, r, 4, True)),
            ("dlg batch -c 20, limits given", lambda s, r: run_dlg(s, r, 20, True)),
            ("dlg batch -c 20, limits learned from the answers' headers",
             lambda s, r: run_dlg(s, r, 20))]
    if args.only in ("ray", "ray-pacing"):
        runs = runs[1:2]
    ray = _ray(args)
    if ray is not None:
        runs += [("dlg batch --executor ray, 4 workers, limits given",
                  lambda s, r: run_dlg(s, r, 4, True, "ray")),
                 ("dlg batch --executor ray, 4 workers, limits learned",
                  lambda s, r: run_dlg(s, r, 4, False, "ray")),
                 ("before: ray, pacing as it was (first answer a quarter of the way, every "
                  "settlement sent), limits given",
                  lambda s, r: run_ray_before_pacing(s, r, 4, True)),
                 ("before: ray, pacing as it was, limits learned",
                  lambda s, r: run_ray_before_pacing(s, r, 4, False)),
                 ("before: ray, each row set up afresh, settlements waited for, limits given",
                  lambda s, r: run_ray_before(s, r, 4, True))]
        if args.only == "ray-pacing":
            runs = runs[:4]
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
        if ray is not None:  # the 4 workers started and their imports done
            await run_dlg(s, [{"topic": f"warm-up {i}"} for i in range(8)], 4,
                          executor="ray")
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in runs}
    for seed in range(args.seeds):
        for name, go in runs:  # interleaved: every client meets the same machine load
            rows[name].append(await measure(name, args, go, seed))
    if ray is not None:
        ray.shutdown()
    print(f"{args.dialogues} three-turn dialogues, {args.seeds} seeds; the server allows "
          f"{args.requests} requests and {args.tokens} tokens per {args.window:g}s window, "
          f"answers after {args.latency:g}s\n")
    print("| client, same workload | dialogues failed | 429 share | "
          "wall vs the limits' bound |")
    print("|---|---:|---:|---:|")
    for name, _ in runs:
        found = rows[name]
        failed = sum(r["failed"] for r in found)
        print(f"| {name} | {failed} of {args.dialogues * args.seeds} | "
              f"{spread([100 * r['refused'] for r in found], '.1f')}% | "
              f"{spread([r['wall'] / r['bound'] for r in found], '.2f')}x |", flush=True)
    if ray is None and args.ray:
        print("\n(the --executor ray rows were skipped: ray is not installed)")


if __name__ == "__main__":
    anyio.run(main)
