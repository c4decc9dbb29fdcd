"""The event-loop watchdog: how long was the loop blocked while a dialogue ran?

A task wakes every ``interval`` seconds and measures how late it woke; lateness is time
the loop could not run anything. The seed's target (SC2.1) is no block over 100 ms. The
figures go to ``dialogue.metadata["event_loop"]`` (saved, shown by ``dlg show``, and
exported as a metric by the telemetry plugin).
"""

from __future__ import annotations

import time
from typing import Any

import anyio

__all__ = ["LoopWatchdog"]


class LoopWatchdog:
    def __init__(self, dialogue: Any, *, interval: float = 0.02, threshold: float = 0.1):
        self.dialogue = dialogue
        self.interval = interval
        self.threshold = threshold
        self.max_block = 0.0
        self.blocks_over = 0
        self.blocked_total = 0.0
        self.samples = 0

    def summary(self) -> dict[str, Any]:
        return {
            "max_block_ms": round(self.max_block * 1000, 1),
            "blocks_over_threshold": self.blocks_over,
            "blocked_total_ms": round(self.blocked_total * 1000, 1),
            "threshold_ms": self.threshold * 1000,
            "samples": self.samples,
        }

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await anyio.sleep(self.interval)
            late = time.perf_counter() - before - self.interval
            self.samples += 1
            if late > 0.005:  # below this, it is scheduling noise
                self.blocked_total += late
                self.max_block = max(self.max_block, late)
                if late > self.threshold:
                    self.blocks_over += 1
                self.dialogue.metadata["event_loop"] = self.summary()
            elif "event_loop" not in self.dialogue.metadata:
                self.dialogue.metadata["event_loop"] = self.summary()
