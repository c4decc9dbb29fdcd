"""Batches: one mode run on many inputs (topics x modes x models, for researchers).

```python
result = await dlg.batch("debate", [{"topic": "cars"}, {"topic": "trains"}],
                         model="openai:gpt-4o-mini", concurrency=8)
print(result.totals)
```

Every row of inputs becomes a dialogue whose id is the batch's id and the row's number
(``BATCH-00007``), saved in the store like any other. Running the batch again (the same
id, or ``dlg batch --resume BATCH``) keeps the dialogues that ended, resumes the ones that
stopped or crashed part-way (their finished turns kept) and starts the rest: a batch is
resumable as a whole. The batch itself (mode, rows, options) is kept in the store when
the store can hold it (``save_batch``/``load_batch``).

``executor`` says where the dialogues run: ``local`` (this process, ``concurrency`` at a
time) or a plugin's (``ray`` runs each on a Ray cluster; see ``dlg.running.executors``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlg.errors import DlgError, InputError
from dlg.records.record import ENDED
from dlg.running.inputs import check_rows, checked_row, read_rows

__all__ = ["ENDED", "BatchItem", "BatchResult", "Batching", "run_batch"]


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
    latency_seconds: float = 0.0
    error: str | None = None
    skipped: bool = False  # it had ended before this run: nothing was run again
    worker: str | None = None  # where it ran, when not in this process (host:pid)
    spent_usd: float = 0.0  # what this run spent (cost_usd counts earlier runs too)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "dialogue_id": self.dialogue_id, "inputs": self.inputs,
                "status": self.status, "turns": self.turns, "tokens": self.tokens,
                "cost_usd": round(self.cost_usd, 10),
                "latency_seconds": round(self.latency_seconds, 4), "error": self.error,
                "skipped": self.skipped, "spent_usd": round(self.spent_usd, 10),
                **({"worker": self.worker} if self.worker else {})}

    def record(self, dialogue: Any) -> None:
        m = dialogue.metrics
        stopped = dialogue.metadata.get("stopped") or {}  # why it stopped with turns left
        self.status, self.error = dialogue.status, dialogue.error or stopped.get("reason")
        self.turns, self.tokens = m.turns_completed, m.total_tokens
        self.cost_usd, self.latency_seconds = m.total_cost_usd, m.total_latency_seconds

    def kept(self, header: dict[str, Any], *, before_run: bool = True) -> None:
        """Report a dialogue that had ended from its saved header (its figures, as
        ``record`` gives them), without loading its turns; ``before_run``: it ended
        before this run, which leaves it as it was (``skipped``)."""
        m = header.get("metrics") or {}
        self.status, self.error = header["status"], header.get("error")
        self.turns, self.tokens = m.get("turns_completed", 0), m.get("total_tokens", 0)
        self.cost_usd = m.get("total_cost_usd", 0.0)
        self.latency_seconds = m.get("total_latency_seconds", 0.0)
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


async def run_batch(orchestrator: Any, mode: Any, rows: Iterable[Mapping[str, Any]], *,
                    batch_id: str | None = None, concurrency: int = 4,
                    executor: str | Any = "local",
                    on_item: Callable[[BatchItem], None] | None = None,
                    options: Mapping[str, Any] | None = None,
                    max_total_cost: float | None = None) -> BatchResult:
    """Run ``mode`` once per row with ``orchestrator`` (see the module docstring).
    ``on_item(item)`` hears of each dialogue as it ends; ``options`` (how the
    orchestrator was made: model specs, router, ...) is kept with the batch, and is what
    an executor that runs dialogues elsewhere rebuilds it from. ``max_total_cost``
    (dollars) limits what the batch's dialogues spend in all, earlier runs of the batch
    included: each dialogue's budget draws on the batch's (``Budget(within=...)``)."""
    from dlg.language.loader import load_mode
    from dlg.language.source import reloadable
    from dlg.records.stamps import check_id

    if max_total_cost is not None:
        from dlg.running.batch_cost import checked_limit

        max_total_cost = checked_limit(max_total_cost)
    loaded = load_mode(mode, pm=orchestrator.plugin_manager)
    given = [checked_row(i, r) for i, r in enumerate(rows)]
    if not given:
        raise InputError("a batch needs at least one row of inputs")
    check_rows(loaded, given)  # before anything runs or is saved: resuming cannot mend it
    import anyio

    # its dialogues are BATCH-NNNNN
    batch_id = new_batch_id() if batch_id is None else check_id(batch_id, "batch id", 122)
    result = BatchResult(id=batch_id, mode=loaded.name, items=batch_items(batch_id, given),
                         max_total_cost=max_total_cost)
    store = orchestrator.open_store()
    if store is not None and hasattr(store, "save_batch"):
        await anyio.to_thread.run_sync(store.save_batch, {
            # a mode given as a document (no file, no name) is kept as one
            "id": batch_id, "mode": (loaded.source if reloadable(loaded.source)
                                     else loaded.name if not loaded.source
                                     else loaded.to_dict()),
            "mode_name": loaded.name, "rows": given, "options": dict(options or {}),
            "concurrency": concurrency, "created_at": time.time(),
            **({"max_total_cost": max_total_cost} if max_total_cost is not None else {})})
    run = _executor(executor, orchestrator)
    started = time.perf_counter()
    left = await skip_ended(store, result.items, on_item)
    if left and executor == "local":
        # a model that cannot run fails the batch now, not each of its rows in turn; the
        # dialogues use what this makes (off the event loop: it may import a provider's
        # package, or load the local model). Elsewhere the workers make their own.
        await anyio.to_thread.run_sync(orchestrator.bindings, loaded)
    more: dict[str, Any] = {}
    if max_total_cost is not None:
        from dlg.running.batch_cost import total_budget

        more["budget"] = await total_budget(max_total_cost, orchestrator, store, loaded,
                                            result.items, left, run, executor)
    await run(loaded, left, concurrency=concurrency, on_item=on_item,
              options=dict(options or {}), **more)
    result.wall_seconds = time.perf_counter() - started
    return result


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


def _executor(executor: str | Any, orchestrator: Any) -> Any:
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        return LocalExecutor(orchestrator)
    from dlg import registrations

    found = registrations.executors(orchestrator.plugin_manager)
    if executor not in found:
        raise InputError(f"'{executor}' is not a known executor (installed: local"
                       + "".join(f", {n}" for n in found) + ")")
    return found[executor](orchestrator)


class LocalExecutor:
    """Runs a batch's dialogues in this process, ``concurrency`` at a time."""

    def __init__(self, orchestrator: Any):
        self.orchestrator = orchestrator

    async def __call__(self, mode: Any, items: list[BatchItem], *, concurrency: int,
                       on_item: Callable[[BatchItem], None] | None = None,
                       options: dict[str, Any] | None = None, budget: Any = None) -> None:
        """``budget``: the batch's ``max_total_cost``, which every dialogue's budget
        draws on as it runs (``Budget(within=...)``)."""
        import anyio

        limiter = anyio.CapacityLimiter(max(1, concurrency))

        from dlg.running.batch_cost import SPENT, not_started

        async def one(item: BatchItem) -> None:
            async with limiter:
                while budget is not None and budget.left <= SPENT and budget.reserved > 0:
                    await budget.settled()  # what dialogues running hold may come back
                if budget is not None and budget.left <= SPENT:
                    not_started(item, budget)
                else:
                    await run_item(self.orchestrator, mode, item, within=budget)
            if on_item is not None:
                on_item(item)

        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)


async def run_item(orchestrator: Any, mode: Any, item: BatchItem, within: Any = None
                   ) -> BatchItem:
    """Run, resume or (if it had ended) just report one dialogue of a batch. A problem
    with it (bad inputs, a model that cannot run, a busy dialogue) is its error, never
    the batch's. ``within``: the budget the batch's total keeps (or, on a worker
    elsewhere, the dialogue's share of it); ``item.spent_usd`` says what this run
    spent."""
    import anyio

    from dlg.running.subdialogues import tree_spent

    try:
        saved = None
        store = orchestrator.open_store()
        if store is not None:
            saved = await anyio.to_thread.run_sync(store.load, item.dialogue_id)
        if saved is not None:
            from dlg.records.store import as_dialogue

            dialogue = as_dialogue(saved)
            if dialogue.status in ENDED:
                item.record(dialogue)
                item.skipped = True
                return item
            # the batch's mode, if the dialogue ran it: a worker on another machine
            # may not have the mode's folder
            loaded, dialogue = orchestrator.reopen(saved, dialogue, mode=mode)
        else:
            loaded, dialogue = orchestrator.start(mode, item.inputs,
                                                  dialogue_id=item.dialogue_id)
        before = tree_spent(dialogue)
        try:
            dialogue = await orchestrator.execute(loaded, dialogue, within=within)
        finally:  # what it spent, also when it failed or was cancelled part-way
            item.spent_usd = max(0.0, tree_spent(dialogue) - before)
        item.record(dialogue)
    except anyio.get_cancelled_exc_class():
        item.status = "cancelled"
        raise
    except DlgError as exc:
        item.status, item.error = "failed", str(exc)
    return item


class Batching:
    """``batch`` and ``options`` for ``dlg.Orchestrator``."""

    # provided by the Orchestrator
    model: Any
    models: dict[str, Any]
    pool_models: dict[str, Any]
    router: Any
    constraints: dict[str, Any]
    timeout: float | None
    registry_file: str | None

    async def batch(self, mode: Any, rows: Any, *, batch_id: str | None = None,
                    concurrency: int = 4, executor: str | Any = "local",
                    on_item: Any = None, max_total_cost: float | None = None) -> Any:
        """Run ``mode`` once per row of inputs (a list of mappings, or a ``.jsonl`` or
        ``.csv`` file); see ``dlg.running.batch``. Returns a ``BatchResult``; running it
        again with the same ``batch_id`` continues it. ``max_total_cost`` (dollars)
        limits what the whole batch spends; ``max_cost`` still limits each dialogue."""
        if isinstance(rows, str | os.PathLike):
            rows = read_rows(rows)
        return await run_batch(self, mode, rows, batch_id=batch_id, concurrency=concurrency,
                               executor=executor, on_item=on_item, options=self.options(),
                               max_total_cost=max_total_cost)

    def options(self) -> dict[str, Any]:
        """How this orchestrator was made, as far as it can be written down (model specs,
        not model objects, the registry file by its path): what a batch keeps, and what
        remote workers rebuild it from."""
        from dlg.observability.redact import redact

        def spec(value: Any) -> Any:
            return redact(value) if isinstance(value, str) else None

        return {k: v for k, v in {
            "model": spec(self.model),
            "models": {a: spec(m) for a, m in self.models.items()} or None,
            "pool": {n: spec(m) for n, m in self.pool_models.items()} or None,
            "router": self.router if isinstance(self.router, str) else None,
            "constraints": self.constraints or None,
            "timeout": self.timeout,
            "registry": self.registry_file,
        }.items() if v is not None}

