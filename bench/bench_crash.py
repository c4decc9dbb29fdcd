"""Crash recovery: run a dialogue in a real process, SIGKILL it at a random moment,
resume it, and check nothing was lost, duplicated or paid for twice. Repeated N times.

    python bench/bench_crash.py [--rounds 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from crash_support import MODE, install, one_round

TURNS = [t["id"] for p in MODE["phases"] for t in p["turns"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp())
    env = install(root)
    ok = not_saved = 0
    progress = collections.Counter()
    problems = []
    started = time.perf_counter()
    for i in range(args.rounds):
        out = one_round(root, env, rng)
        if not out["saved"]:
            not_saved += 1
            continue
        progress[len(out["done_at_kill"])] += 1
        good = (out["resume_code"] == 0 and out["status"] == "completed"
                and out["turn_ids"] == TURNS and not out["repaid"]
                and sorted(out["calls_after_resume"]) == sorted(
                    t for t in TURNS if t not in out["done_at_kill"]))
        if good:
            ok += 1
        else:
            problems.append((i, out))
    rounds = args.rounds - not_saved
    print(f"rounds: {args.rounds} ({not_saved} killed before the first save) in "
          f"{time.perf_counter() - started:.0f}s")
    print("turns completed when killed: " + ", ".join(
        f"{k}: {progress[k]}" for k in sorted(progress)))
    print(f"recovered with nothing lost, duplicated or re-paid: {ok}/{rounds} "
          f"= {ok / rounds:.1%}" if rounds else "no round saved anything")
    for i, out in problems[:5]:
        print(f"  round {i}: {out}")


if __name__ == "__main__":
    main()
