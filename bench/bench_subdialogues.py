"""Sub-dialogue concurrency benchmark: N children of one turn run at once.

    python bench/bench_subdialogues.py [--latency 0.3]

A turn spawns N children (``concurrency: N``); each child is one turn on a model that
answers after ``latency`` seconds. The baseline, measured in the same run, is the same
mode with one child. Printed for N = 2, 4, 8: the whole dialogue's wall time against the
baseline's (best of three), and the same with ``concurrency: 1`` for comparison.
Target: about one child's time, not N (at most 1.25x).
"""

from __future__ import annotations

import argparse
import os
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


def parent(n: int, concurrency: int) -> str:
    return ("name: fan\nturns:\n"
            f"  - {{id: split, role: Planner, prompt: 'SPLIT {n}',\n"
            f"     spawn: {{mode: child.yaml, concurrency: {concurrency}, max_children: 64}}}}\n")


def wall(folder: Path, n: int, concurrency: int, latency: float) -> float:
    path = folder / f"fan-{n}-{concurrency}.yaml"
    path.write_text(parent(n, concurrency))
    started = time.perf_counter()
    d = dlg.run_sync(path, model=Slow(latency=latency), store=None)
    elapsed = time.perf_counter() - started
    assert d.status == "completed" and len(d.subdialogues) == n, d.error
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    (folder / "child.yaml").write_text(CHILD)
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
    sys.exit(0)


if __name__ == "__main__":
    main()
