"""How an orchestrator runs a dialogue it made or reopened: a dialogue that ran before
claimed first (it may be running elsewhere), its observers (the saver, judge scores), its
budget, then the kernel (``dlg.running.kernel.execute``).

``Orchestrator.execute`` calls these with itself; what they need of it is ``Runnable``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from dlg.language.mode import Mode
from dlg.records.record import Dialogue
from dlg.running.bindings import Bindable
from dlg.running.kernel import execute

if TYPE_CHECKING:
    from dlg.running.bindings import Binder
    from dlg.running.routing.routers import Routers
    from dlg.running.subdialogues import Children

__all__ = ["Runnable", "run_claimed", "run_dialogue"]


class Runnable(Bindable, Protocol):
    """What running a dialogue needs of its orchestrator: what binding its models needs
    (``Bindable``), where it is saved, who hears it, its routers, bindings and children,
    and how it runs (timeout, retries, watchdog, interrupt)."""

    store: Any
    _store_obj: Any
    observers: tuple[Any, ...]
    timeout: float | None
    retry: Any
    watchdog: bool
    interrupt: Any
    routers: Routers
    binder: Binder
    children: Children

    def open_store(self) -> Any: ...


async def run_claimed(of: Runnable, mode: Mode, dialogue: Dialogue, budget: Any,
                      within: Any) -> Dialogue:
    """A dialogue that ran before may be running elsewhere: claim it before any turn
    runs (a new one is claimed with its first save, as no one else knows its id
    yet). The saver lets go when the dialogue ends; this covers an early failure."""
    import anyio

    from dlg.records.store import Lease

    lease = Lease()
    claimed = await anyio.to_thread.run_sync(of.open_store)
    await anyio.to_thread.run_sync(lease.acquire, claimed, dialogue.id)
    try:
        if within is None and budget is None:  # one of a batch's, resumed on its own
            from dlg.running.batches.cost import batch_of, saved_total

            if batch_of(dialogue) is not None:
                within = await saved_total(of, claimed, mode, dialogue)
        return await run_dialogue(of, mode, dialogue, budget, within, lease)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lease.release, claimed, dialogue.id)


def run_dialogue(of: Runnable, mode: Mode, dialogue: Dialogue, budget: Any,
                 within: Any = None, lease: Any = None) -> Awaitable[Dialogue]:
    """The dialogue's run on the kernel, to await: its observers (the saver first, when
    it is saved; judge scores, when a turn rates others) and its budget (its own
    ``max_cost``, a sub-dialogue's share, a batch's ``within``), then ``execute``."""
    bound, default = of.binder.bindings(mode)
    observers = tuple(of.observers)
    if of.store is not None:
        from dlg.records.saver import Saver
        from dlg.records.store import Lease

        # the store is opened by the saver when the dialogue starts, off the event
        # loop, unless it is open already
        observers = (Saver(of.open_store, mode.document, lease or Lease(), of._store_obj),
                     *observers)
    routing = of.routing(mode)
    if any(t.scores for t in mode.turns):  # judge turns rate the turns they name
        from dlg.running.routing.learning import JudgeScores

        observers = (*observers, JudgeScores(mode, of.routers.quality_store))
    limit = routing.constraints.get("max_cost")
    if dialogue.metadata.get("budget_limit") is not None:  # a sub-dialogue's share
        share = float(dialogue.metadata["budget_limit"])
        limit = share if limit is None else min(float(limit), share)
    if budget is None and (limit is not None or within is not None):
        from dlg.running.budget import Budget, tree_spent

        budget = Budget(float("inf") if limit is None else limit, of.registry,
                        spent=tree_spent(dialogue), within=within)
        held = (dialogue.metadata.get("budget") or {}).get("held_for_billing")
        if isinstance(held, (int, float)) and held > 0:  # resumed: still held
            budget.hold_unsure(float(held))
    return execute(
        mode, dialogue, pm=of.plugin_manager, routing=routing,
        bindings=bound, default=default, pool=of.pool, observers=observers,
        timeout=of.timeout, registry=of.registry, policy=of.retry,
        watchdog=of.watchdog, budget=budget, interrupt=of.interrupt,
        spawner=of.children.spawner() if any(t.spawn for t in mode.turns) else None,
    )
