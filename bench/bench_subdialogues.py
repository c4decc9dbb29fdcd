"""Sub-dialogue concurrency benchmark: N children of one turn run at once.

    python bench/bench_subdialogues.py [--latency 0.3] [--reps 20] [--only many]

A turn spawns N children (``concurrency: N``); each child is one turn on a model that
answers after ``latency`` seconds. The baseline, measured in the same run, is the same
mode with one child. Printed for N = 2, 4, 8: the whole dialogue's wall time against the
baseline's (best of three), and the same with ``concurrency: 1`` for comparison.
Target: about one child's time, not N (at most 1.25x).

Then many short children at low latency (issue 24), where the kernel's work per child
shows: 64 children of three turns each, every call answering after 50 ms, against one
such child, interleaved over ``--reps`` repetitions (mean and standard deviation of the
wall times, and of the ratio in each pair), without saving and with the default store
(SQLite, every turn saved when it completes). The CPU time per extra child is printed
too: on a shared machine the wall ratio moves with the load, the CPU time much less.
Target: <= 1.25x one child.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
os.environ["DLG_NO_CACHE"] = "1"

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


def many(folder: Path, reps: int, n: int = 64, latency: float = 0.05) -> float:
    """64 three-turn children against one; see the module docstring. The worst ratio."""
    (folder / "child3.yaml").write_text(CHILD3)
    print(f"\n{n} children of 3 turns at {latency * 1000:.0f} ms a call, vs one such child "
          f"({reps} interleaved repetitions; mean ± sd)")
    print(f"{'store':<22} {'one child':>15} {f'{n} children':>15} {'ratio':>13} "
          f"{'CPU / extra child':>18}")
    worst = 0.0
    for label, store in (("none", None), ("sqlite (every turn)", "sqlite")):
        for _ in range(2):  # warm up: imports, mode loading, the store's file
            timed(folder, 1, latency, store), timed(folder, n, latency, store)
        ones, alls, ratios, cpus = [], [], [], []
        for _ in range(reps):
            one, one_cpu = timed(folder, 1, latency, store)
            together, cpu = timed(folder, n, latency, store)
            ones.append(one), alls.append(together), ratios.append(together / one)
            cpus.append((cpu - one_cpu) / (n - 1))
        ratio = statistics.mean(alls) / statistics.mean(ones)
        worst = max(worst, ratio)
        print(f"{label:<22} {_ms(ones):>15} {_ms(alls):>15} "
              f"{ratio:>5.2f}x ± {statistics.stdev(ratios):.2f} "
              f"{statistics.mean(cpus) * 1000:>10.2f} ms")
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
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    os.environ.setdefault("DLG_DATA_DIR", str(folder / "data"))  # the sqlite store's file
    (folder / "child.yaml").write_text(CHILD)
    if args.only == "many":
        many(folder, args.reps)
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
    many(folder, args.reps)
    sys.exit(0)


if __name__ == "__main__":
    main()
