"""Sub-dialogue concurrency benchmark: N children of one turn run at once.

    python bench/bench_subdialogues.py [--latency 0.3] [--reps 20] [--only many] [--freeze]

A turn spawns N children (``concurrency: N``); each child is one turn on a model that
answers after ``latency`` seconds. The baseline, measured in the same run, is the same
mode with one child. Printed for N = 2, 4, 8: the whole dialogue's wall time against the
baseline's (best of three), and the same with ``concurrency: 1`` for comparison.
Target: about one child's time, not N (at most 1.25x).

Then many short children at low latency (issue 24), where the kernel's work per child
shows: 64 children of three turns each, every call answering after 50 ms, against one
such child, interleaved over ``--reps`` repetitions (mean and standard deviation of the
wall times, and of the ratio in each pair), without saving and with the default store
(SQLite, every turn saved when it completes). The CPU time per extra child (process
time, mean ± sd over the repetitions) is printed too: on a shared machine the wall ratio
moves with the load, the CPU time much less. The floor, measured in the same run and
interleaved with dlg's figures: the same work as plain LangChain loops (the parent's
call, then 64 tasks of three ``ainvoke``s each on the same fake model, each prompt the
transcript so far and the turn's prompt, as the child mode builds it), so the table
shows what is reachable and what is dlg's. ``--freeze``: ``gc.freeze()`` after the
warm-up, as ``dlg run`` and ``dlg batch`` do after start-up.
Target: <= 1.25x one child.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ["DLG_NO_CACHE"] = "1"

from collections.abc import Callable
from typing import Any

import anyio
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import dlg

CHILD = ("name: child\ninputs: {topic: {required: true}}\n"
         "turns: [{id: look, role: Look, prompt: 'look at {{ topic }}'}]\n")
CHILD3 = ("name: child3\ninputs: {topic: {required: true}}\n"
          "turns:\n  - {id: look, role: Look, prompt: 'look at {{ topic }}'}\n"
          "  - {id: again, role: Again, prompt: 'again {{ topic }}'}\n"
          "  - {id: last, role: Last, prompt: 'last on {{ topic }}'}\n")


class Slow(BaseChatModel):
    """Lists N items when asked to split; otherwise answers after ``latency`` seconds."""

    latency: float = 0.3

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:  # pragma: no cover
        raise NotImplementedError

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content)
        if prompt.startswith("SPLIT"):
            text = "\n".join(f"part {i}" for i in range(int(prompt.split()[1])))
        else:
            await anyio.sleep(self.latency)
            text = f"answer to {prompt}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def parent(n: int, concurrency: int, child: str = "child.yaml") -> str:
    return ("name: fan\nturns:\n"
            f"  - {{id: split, role: Planner, prompt: 'SPLIT {n}',\n"
            f"     spawn: {{mode: {child}, concurrency: {concurrency}, max_children: 64}}}}\n")


def wall(folder: Path, n: int, concurrency: int, latency: float) -> float:
    path = folder / f"fan-{n}-{concurrency}.yaml"
    path.write_text(parent(n, concurrency))
    started = time.perf_counter()
    d = dlg.run_sync(path, model=Slow(latency=latency), store=None)
    elapsed = time.perf_counter() - started
    assert d.status == "completed" and len(d.subdialogues) == n, d.error
    return elapsed


def timed(folder: Path, n: int, latency: float, store: Any) -> tuple[float, float]:
    """Wall and CPU seconds of a dialogue spawning ``n`` three-turn children at once."""
    path = folder / f"fan3-{n}.yaml"
    path.write_text(parent(n, n, "child3.yaml"))
    cpu, started = time.process_time(), time.perf_counter()
    d = dlg.run_sync(path, model=Slow(latency=latency), store=store)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert d.status == "completed" and len(d.subdialogues) == n, d.error
    assert all(c.turns_completed == 3 for c in d.subdialogues)
    return elapsed, cpu


async def _plain_child(model: Slow, topic: str) -> None:
    """One child as a plain LangChain loop: the same three prompts (the transcript so far,
    then the turn's prompt, as the child mode's turns build them), one ``ainvoke`` each."""
    transcript: list[str] = []
    for role, prompt in (("Look", f"look at {topic}"), ("Again", f"again {topic}"),
                         ("Last", f"last on {topic}")):
        text = "\n\n".join([*transcript, prompt])
        answer = await model.ainvoke(text)
        transcript.append(f"### {role}\n{answer.content}")


def floor(n: int, latency: float) -> tuple[float, float]:
    """Wall and CPU seconds of the LangChain floor: the parent's call, then ``n`` plain
    loops at once (``_plain_child``), in an event loop of its own as ``dlg.run_sync``
    runs one."""
    async def main() -> None:
        model = Slow(latency=latency)
        answer = await model.ainvoke(f"SPLIT {n}")
        async with anyio.create_task_group() as tg:
            for line in str(answer.content).splitlines():
                tg.start_soon(_plain_child, model, line)

    cpu, started = time.process_time(), time.perf_counter()
    anyio.run(main)
    return time.perf_counter() - started, time.process_time() - cpu


def many(folder: Path, reps: int, n: int = 64, latency: float = 0.05,
         freeze: bool = False) -> float:
    """64 three-turn children against one; see the module docstring. The worst ratio."""
    (folder / "child3.yaml").write_text(CHILD3)
    print(f"\n{n} children of 3 turns at {latency * 1000:.0f} ms a call, vs one such child "
          f"({reps} interleaved repetitions; mean ± sd)")
    print(f"{'run':<22} {'one child':>15} {f'{n} children':>15} {'ratio':>13} "
          f"{'CPU / extra child':>18}")
    worst = 0.0
    runs: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        ("LangChain loops", lambda k: floor(k, latency)),
        ("dlg, no store", lambda k: timed(folder, k, latency, None)),
        ("dlg, sqlite (every turn)", lambda k: timed(folder, k, latency, "sqlite"))]
    for _ in range(2):  # warm up: imports, mode loading, the store's file
        for _, run in runs:
            run(1), run(n)
    if freeze:  # what `dlg run` and `dlg batch` do after start-up (dlg.cli.collector)
        gc.freeze()
    figures: dict[str, list[tuple[float, float, float, float]]] = {r[0]: [] for r in runs}
    for _ in range(reps):  # interleaved: each repetition runs every figure once
        for label, run in runs:
            one, one_cpu = run(1)
            together, cpu = run(n)
            figures[label].append((one, together, together / one, (cpu - one_cpu) / (n - 1)))
    for label, _ in runs:
        ones, alls, ratios, cpus = (list(c) for c in zip(*figures[label], strict=True))
        ratio = statistics.mean(alls) / statistics.mean(ones)
        if label.startswith("dlg"):
            worst = max(worst, ratio)
        print(f"{label:<22} {_ms(ones):>15} {_ms(alls):>15} "
              f"{ratio:>5.2f}x ± {statistics.stdev(ratios):.2f} "
              f"{statistics.mean(cpus) * 1000:>7.3f} ± {statistics.stdev(cpus) * 1000:.3f} ms")
    print(f"{'ok    ' if worst <= 1.25 else 'MISSED'} {n} three-turn children take about one "
          f"child's time (worst {worst:.2f}x, target <= 1.25x)")
    return worst


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values) * 1000:.0f} ± {statistics.stdev(values) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--reps", type=int, default=20,
                        help="repetitions of the many-children figure")
    parser.add_argument("--only", choices=["many"], help="only the many-children figure")
    parser.add_argument("--freeze", action="store_true",
                        help="gc.freeze() after the warm-up, as `dlg run` and `dlg batch` do "
                             "after start-up (else every full collection walks the imports)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    os.environ.setdefault("DLG_DATA_DIR", str(folder / "data"))  # the sqlite store's file
    (folder / "child.yaml").write_text(CHILD)
    if args.only == "many":
        many(folder, args.reps, freeze=args.freeze)
        sys.exit(0)
    wall(folder, 1, 1, args.latency)  # warm up: imports, mode loading
    one = min(wall(folder, 1, 1, args.latency) for _ in range(3))
    print(f"one child: {one:.3f}s (each child's model answers after {args.latency}s)")
    print(f"{'children':>8} {'concurrent':>11} {'ratio':>6} {'sequential':>11} {'ratio':>6}")
    worst = 0.0
    for n in (2, 4, 8):
        together = min(wall(folder, n, n, args.latency) for _ in range(3))
        apart = wall(folder, n, 1, args.latency)
        worst = max(worst, together / one)
        print(f"{n:>8} {together:>10.3f}s {together / one:>5.2f}x {apart:>10.3f}s "
              f"{apart / one:>5.2f}x")
    print(f"{'ok    ' if worst <= 1.25 else 'MISSED'} N children take about one child's "
          f"time (worst {worst:.2f}x, target <= 1.25x)")
    many(folder, args.reps, freeze=args.freeze)
    sys.exit(0)


if __name__ == "__main__":
    main()
