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

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dlg.errors import DlgError, InputError
from dlg.records.record import ENDED
from dlg.running.batches.cost import SPENT, checked_limit, not_started, total_budget
from dlg.running.batches.items import BatchItem, BatchResult, batch_items, new_batch_id, skip_ended
from dlg.running.budget import Admission, mode_estimate
from dlg.running.inputs import check_rows, checked_row

__all__ = ["LocalExecutor", "run_batch", "run_item"]


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

        more["budget"] = await total_budget(max_total_cost, orchestrator, store, loaded,
                                            result.items, left, run, executor)
    await run(loaded, left, concurrency=concurrency, on_item=on_item,
              options=dict(options or {}), **more)
    result.wall_seconds = time.perf_counter() - started
    return result


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
        admission = (Admission(budget, mode_estimate(budget, mode, self._labels()))
                     if budget is not None else None)

        async def one(item: BatchItem) -> None:
            async with limiter:
                if admission is not None:
                    # started only while the total's remainder can finish it
                    while not admission.can_start() and admission.running:
                        await admission.changed()
                if budget is None or admission is None:
                    await run_item(self.orchestrator, mode, item, within=budget)
                elif budget.left <= SPENT or not admission.can_start():
                    not_started(item, budget)
                else:
                    admission.start(id(item))
                    try:
                        await run_item(self.orchestrator, mode, item, within=budget)
                    finally:
                        admission.end(id(item), item.spent_usd)
            if on_item is not None:
                on_item(item)

        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(one, item)


    def _labels(self) -> list[str]:
        """The models the dialogues may run on, for a first estimate of their cost."""
        from dlg.models.pool import ModelPool

        o = self.orchestrator
        models = [*o.pool_models.values(), *o.models.values(),
                  *([o.model] if o.model is not None else [])]
        return [ModelPool.label(m) for m in models if m is not None]


async def run_item(orchestrator: Any, mode: Any, item: BatchItem, within: Any = None
                   ) -> BatchItem:
    """Run, resume or (if it had ended) just report one dialogue of a batch. A problem
    with it (bad inputs, a model that cannot run, a busy dialogue) is its error, never
    the batch's. ``within``: the budget the batch's total keeps (or, on a worker
    elsewhere, the dialogue's share of it); ``item.spent_usd`` says what this run
    spent."""
    import anyio

    from dlg.running.budget import tree_spent

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
