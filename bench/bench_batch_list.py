"""Listing batches (``dlg serve``'s ``/b``): the store's ``batch_headers()`` against the
fallback a store without it gets (``list()``'s summaries and each batch's record loaded,
rows and all: what ``/b`` did before), on the same SQLite store.

    python bench/bench_batch_list.py [--repeats 20] [--quick]

Each case is a fresh store in a temporary folder holding ``batches`` batches of
``dialogues / batches`` rows each (each row's inputs 50 characters), every row's dialogue
saved with one turn (written straight into the tables: running 20,000 dialogues would
measure the kernel). Both ways must give the same headers (checked); printed, mean and
standard deviation of the wall time of one listing over ``repeats`` listings, each way
timed alternately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

CASES = [(1, 10), (1, 5000), (20, 20_000), (200, 20_000)]


def _fill(store: Any, batches: int, dialogues: int) -> None:
    rows = dialogues // batches
    with store._transaction() as execute:
        for b in range(batches):
            record = {"id": f"batch{b:04d}", "mode_name": "m", "created_at": float(b),
                      "rows": [{"topic": "t" * 45 + f"{i:05d}"} for i in range(rows)]}
            execute("INSERT INTO dlg_batches (id, record, mode_name, created_at, row_count) "
                    "VALUES (?, ?, ?, ?, ?)", (record["id"], json.dumps(record), "m",
                                               float(b), rows))
        for i in range(dialogues):
            dialogue_id = f"batch{i % batches:04d}-{i // batches:05d}"  # rows 0 to rows - 1
            summary = {"id": dialogue_id, "mode": "m", "status": "completed",
                       "created_at": "2026", "turns": 1, "turns_completed": 1,
                       "total_tokens": 10, "total_cost_usd": 0.001}
            execute("INSERT INTO dlg_dialogues (id, header, summary, created_at, status, "
                    "batch, batch_row) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (dialogue_id, "{}", json.dumps(summary), "2026", "completed",
                     *dialogue_id.rsplit("-", 1)[:1], i // batches))  # as the store writes
            execute("INSERT INTO dlg_turns (dialogue_id, turn_id, status, tokens, cost, "
                    "body) VALUES (?, ?, ?, ?, ?, ?)",
                    (dialogue_id, "a", "completed", 10, 0.001, "{}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the two smaller cases only")
    args = parser.parse_args()
    from dlg.plugins.sqlite_store import SqliteStore
    from dlg.records import batch_headers as listing

    for batches, dialogues in CASES[:2] if args.quick else CASES:
        store = SqliteStore(tempfile.mkdtemp() + "/bench.sqlite3")
        _fill(store, batches, dialogues)
        ways = {"batch_headers()": lambda s=store: listing.batch_headers(s),
                "fallback (records loaded)": lambda s=store: listing._fallback(s)}
        results = [sorted(way(), key=lambda h: h["id"]) for way in ways.values()]
        for header in results[1]:  # the fallback counts ended ones by summary: the same
            header["running"] = sorted(header["running"])
        assert results[0] == results[1], "the two ways disagree"
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, way in ways.items():
                started = time.perf_counter()
                way()
                times[name].append((time.perf_counter() - started) * 1000)
        for name, spent in times.items():
            print(f"{batches:>4} batches, {dialogues:>6} dialogues  {name:<26} "
                  f"{statistics.mean(spent):8.2f} ± {statistics.stdev(spent):6.2f} ms "
                  f"(n={args.repeats})")
        store.close()


if __name__ == "__main__":
    main()
