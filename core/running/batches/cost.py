"""A batch's ``max_total_cost``: a hard limit on what all its dialogues spend together,
what earlier runs of the batch spent included.

``total_budget`` makes the batch's ``dlg.running.budget.Budget``. An executor runs each
dialogue ``within`` it (``run_item(..., within=budget)``: every call's reservation draws
on it too), or, where dialogues run in other processes, hands each a share of what is
left (``budget.hold``) and settles it with what the dialogue spent (the ``ray``
executor). Once nothing is left, the rest are not started (``not_started``).

A dialogue of the batch resumed on its own (``dlg resume ID``) is held to the total too
(``saved_total``): what the batch's dialogues spent so far is counted from the store.
"""

from __future__ import annotations

from typing import Any

from dlg.errors import DlgError
from dlg.records.batch_headers import batch_of as batch_of_id
from dlg.running.batches.items import skip_ended
from dlg.running.batches.saved import batch_dialogues

__all__ = ["SPENT", "batch_of", "checked_limit", "not_started", "saved_total", "total_budget"]


from dlg.running.budget import SPENT  # the one ledger's (dlg.running.budget)


async def total_budget(limit: float, orchestrator: Any, store: Any, mode: Any,
                       items: list[Any], left: list[Any], run: Any, executor: Any) -> Any:
    """The batch's budget: ``limit`` dollars, less what its dialogues spent before. An
    executor that cannot keep it is refused first."""
    _check_takes_budget(run, executor)
    return _total(limit, orchestrator, await _spent_before(store, mode, items, left))


def _total(limit: float, orchestrator: Any, spent: float) -> Any:
    from dlg.running.budget import Budget

    return Budget(limit, orchestrator.registry, spent=spent,
                  name=f"the batch's ${limit:g} max total cost")


def batch_of(dialogue: Any) -> str | None:
    """The id of the batch whose total ``dialogue`` last ran within (its saved budget
    says so, and its id is the batch's and its row's), else None."""
    budget = dialogue.metadata.get("budget")
    if not isinstance(budget, dict) or "within" not in budget:
        return None
    return batch_of_id(dialogue.id)


async def saved_total(orchestrator: Any, store: Any, mode: Any, dialogue: Any) -> Any:
    """The budget of the batch ``dialogue`` belongs to, when the batch has a
    ``max_total_cost``: what its dialogues spent so far counted from the store (this one
    included), so a dialogue resumed on its own cannot spend past the total. None for a
    dialogue of no batch, or of one without a total."""
    batch_id = batch_of(dialogue)
    if batch_id is None:
        return None
    import anyio

    from dlg.records.store import DialogueNotFoundError

    try:
        saved = await anyio.to_thread.run_sync(batch_dialogues, batch_id, store)
    except DialogueNotFoundError:  # a store that keeps no batches, or it was deleted
        return None
    limit = checked_limit(saved.record.get("max_total_cost"))
    if limit is None:
        return None
    left = await skip_ended(store, saved.items, None)
    return _total(limit, orchestrator, await _spent_before(store, mode, saved.items, left))


def not_started(item: Any, budget: Any) -> None:
    """Report a dialogue not started because the batch's total is spent."""
    item.status = "cost_limited"
    item.error = (f"not started: {budget.name} is spent (${budget.spent:.6f} spent, "
                  f"${budget.reserved:.6f} held by dialogues running)")


def checked_limit(value: Any) -> float | None:
    """A ``max_total_cost`` as given (an argument, a saved batch's record): dollars
    more than 0, or an ``InputError`` saying what is wrong with it."""
    from dlg.language.limits import positive

    return positive(value, "max_total_cost", "dollars")


def _check_takes_budget(run: Any, executor: Any) -> None:
    """An executor of a plugin's that cannot keep a batch's total is refused before
    anything runs, not after it has spent past the limit."""
    import inspect

    try:
        params = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):
        return
    if not any(p.name == "budget" or p.kind is p.VAR_KEYWORD for p in params):
        raise DlgError(f"the '{executor}' executor cannot keep a batch's max total cost "
                       "(its __call__ takes no budget=): run without it, or on another "
                       "executor")


async def _spent_before(store: Any, mode: Any, items: list[Any],
                        left: list[Any]) -> float:
    """What the batch's dialogues spent in earlier runs: those that ended (their saved
    figures, or their records when the mode spawns sub-dialogues, whose costs the
    figures do not hold) and those about to continue (their records)."""
    if store is None:
        return 0.0
    import anyio

    from dlg.records.store import as_dialogue
    from dlg.running.budget import tree_spent

    to_run = {id(i) for i in left}
    ended = [i for i in items if id(i) not in to_run]
    spawns = any(t.spawn for t in mode.turns)
    total = 0.0 if spawns else sum(i.cost_usd for i in ended)
    for item in (items if spawns else left):
        saved = await anyio.to_thread.run_sync(store.load, item.dialogue_id)
        if saved is not None:
            total += tree_spent(as_dialogue(saved))
    return total
