"""A batch's rows as items: each row's dialogue id (``BATCH-00007``), what became of it,
and the batch's result and totals. What running, costing and exporting a batch share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlg.records.record import ENDED

__all__ = ["BatchItem", "BatchResult", "batch_items", "item_id", "new_batch_id", "skip_ended"]


@dataclass
class BatchItem:
    """One dialogue of a batch, as the summary shows it."""

    index: int
    inputs: dict[str, Any]
    dialogue_id: str
    status: str = "pending"
    turns: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    latency_seconds: float = 0.0  # its wall time, from start to end (a resumed one's
    # spans the time between its runs too)
    model_seconds: float = 0.0  # the time its models took to answer, in all its runs
    error: str | None = None
    skipped: bool = False  # it had ended before this run: nothing was run again
    worker: str | None = None  # where it ran, when not in this process (host:pid)
    spent_usd: float = 0.0  # what this run spent (cost_usd counts earlier runs too)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "dialogue_id": self.dialogue_id, "inputs": self.inputs,
                "status": self.status, "turns": self.turns, "tokens": self.tokens,
                "cost_usd": round(self.cost_usd, 10),
                "latency_seconds": round(self.latency_seconds, 4),
                "model_seconds": round(self.model_seconds, 4), "error": self.error,
                "skipped": self.skipped, "spent_usd": round(self.spent_usd, 10),
                **({"worker": self.worker} if self.worker else {})}

    def record(self, dialogue: Any) -> None:
        m = dialogue.metrics
        stopped = dialogue.metadata.get("stopped") or {}  # why it stopped with turns left
        self.status, self.error = dialogue.status, dialogue.error or stopped.get("reason")
        self.turns, self.tokens = m.turns_completed, m.total_tokens
        self.cost_usd, self.latency_seconds = m.total_cost_usd, m.total_latency_seconds
        self.model_seconds = m.total_model_seconds

    def kept(self, header: dict[str, Any], *, before_run: bool = True) -> None:
        """Report a dialogue that had ended from its saved header (its figures, as
        ``record`` gives them), without loading its turns; ``before_run``: it ended
        before this run, which leaves it as it was (``skipped``)."""
        m = header.get("metrics") or {}
        self.status, self.error = header["status"], header.get("error")
        self.turns, self.tokens = m.get("turns_completed", 0), m.get("total_tokens", 0)
        self.cost_usd = m.get("total_cost_usd", 0.0)
        self.latency_seconds = m.get("total_latency_seconds", 0.0)
        self.model_seconds = m.get("total_model_seconds", 0.0)
        self.skipped = before_run


@dataclass
class BatchResult:
    id: str
    mode: str
    items: list[BatchItem] = field(default_factory=list)
    wall_seconds: float = 0.0
    max_total_cost: float | None = None  # the batch's limit on what it spends in all

    @property
    def totals(self) -> dict[str, Any]:
        statuses: dict[str, int] = {}
        for item in self.items:
            statuses[item.status] = statuses.get(item.status, 0) + 1
        return {"dialogues": len(self.items), "statuses": statuses,
                "turns": sum(i.turns for i in self.items),
                "tokens": sum(i.tokens for i in self.items),
                "cost_usd": round(sum(i.cost_usd for i in self.items), 10),
                "latency_seconds": round(sum(i.latency_seconds for i in self.items), 4),
                "model_seconds": round(sum(i.model_seconds for i in self.items), 4),
                "wall_seconds": round(self.wall_seconds, 4),
                **({"max_total_cost": self.max_total_cost}
                   if self.max_total_cost is not None else {})}

    @property
    def ok(self) -> bool:
        return all(i.status in ENDED for i in self.items)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mode": self.mode, "totals": self.totals,
                "items": [i.to_dict() for i in self.items]}


def new_batch_id() -> str:
    from dlg.records.stamps import new_dialogue_id

    return "batch-" + new_dialogue_id()


def item_id(batch_id: str, index: int) -> str:
    return f"{batch_id}-{index:05d}"


def batch_items(batch_id: str, rows: list[Any]) -> list[BatchItem]:
    """A batch's rows as its items, before anything ran: dialogue ``BATCH-NNNNN`` each."""
    return [BatchItem(index=i, inputs=r, dialogue_id=item_id(batch_id, i))
            for i, r in enumerate(rows)]


async def skip_ended(store: Any, items: list[BatchItem],
                      on_item: Callable[[BatchItem], None] | None) -> list[BatchItem]:
    """The items still to run: with a store that reads many headers at once
    (``headers(ids)``), those that had ended are reported from their headers here, in
    one query, instead of each being loaded (``run_item`` does that for other stores)."""
    if store is None or not hasattr(store, "headers"):
        return items
    import anyio

    saved = await anyio.to_thread.run_sync(store.headers, [i.dialogue_id for i in items])
    left = []
    for item in items:
        header = saved.get(item.dialogue_id)
        if header is not None and header.get("status") in ENDED:
            item.kept(header)
            if on_item is not None:
                on_item(item)
        else:
            left.append(item)
    return left
