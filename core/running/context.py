"""What a running dialogue runs with, and what it has done so far.

``RunContext`` is fixed for the run (the mode, the plugin manager, the models, the
router, the budget, the events, the templates' environment): the kernel and its steps
read it, nobody writes it. ``RunState`` is the dialogue as it runs (its records, whether
it stopped or failed): the steps read it; only the kernel (``dlg.running.kernel``) writes
it, from the outcomes the steps return (``dlg.running.outcomes``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy
    from jinja2 import Environment

    from dlg.language.mode import Mode, Turn
    from dlg.models.catalog import ModelRegistry
    from dlg.models.pool import ModelPool
    from dlg.models.resilience import RetryPolicy
    from dlg.records.record import Dialogue, TurnRecord
    from dlg.running.budget import Budget, Reservation
    from dlg.running.events import Events
    from dlg.running.interrupt import Interrupt
    from dlg.running.routing import Routing
    from dlg.running.stopping import Stopping
    from dlg.running.subdialogues import Spawner

__all__ = ["RunContext", "RunState"]


class _Embedder:
    """The embeddings a dialogue chooses relevant context with (or the ones named: a
    mode's ``until.embeddings``), each made on first use, once per dialogue."""

    __slots__ = ("_made", "_pm")

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._made: dict[str | None, Any] | None = None

    def __call__(self, name: str | None = None) -> Any:
        if self._made is None:
            self._made = {}
        if name not in self._made:
            from dlg.running.compression import embeddings

            self._made[name] = embeddings(self._pm, name)
        return self._made[name]


@dataclass(frozen=True, slots=True)
class RunContext:
    """What one dialogue runs with; see the module docstring."""

    mode: Mode
    pm: pluggy.PluginManager
    pool: ModelPool
    registry: ModelRegistry | None
    policy: RetryPolicy
    timeout: float | None
    routing: Routing
    bindings: Mapping[str, Any]
    default: Any
    events: Events
    env: Environment
    base_context: dict[str, Any]
    budget: Budget | None = None
    spawner: Spawner | None = None
    interrupt: Interrupt | None = None
    stopping: Stopping | None = None
    embed: Callable[..., Any] = field(default=lambda name=None: None)

    def available(self, model: Any) -> bool:
        """Whether a model can be tried now: its package and key are there and it is not
        resting after repeated failures (a process-wide cool-down)."""
        from dlg.models.resilience import cooldowns

        if isinstance(model, str) and self.pool.problem(model) is not None:
            return False
        return not cooldowns.cooling(self.pool.label(model))

    def allowance(self, held: Reservation, bound: int) -> Callable[[Any], bool]:
        """Whether a fallback fits the turn's budget reservation ``held``."""
        budget, pool = self.budget, self.pool

        def allow(candidate: Any) -> bool:
            return budget is not None and budget.allows(pool.label(candidate), held, bound)

        return allow

    def guard(self, held: Reservation) -> Callable[[Any, Any], bool]:
        """Whether the turn's reservation ``held`` covers another attempt after failed
        ones (``Budget.covers``: what they were billed, and the attempt's worst case)."""
        budget, pool = self.budget, self.pool

        def covers(candidate: Any, failed: Any) -> bool:
            return budget is not None and budget.covers(held, pool.label(candidate), failed)

        return covers

    async def summarise(self, prompt: str) -> Any:
        """A summary by the cheapest model of the pool (else the default), in budget."""
        from dlg.running.budget import budgeted_call
        from dlg.running.compression import SUMMARY_TOKENS
        from dlg.running.routing import cheapest

        model = cheapest(self.routing.pool, self.registry, self.available) or self.default
        return await budgeted_call(self.budget, self.pool, model, prompt,
                                   {"max_tokens": SUMMARY_TOKENS}, registry=self.registry,
                                   policy=self.policy)


def embedder(pm: pluggy.PluginManager) -> Callable[..., Any]:
    """A dialogue's embeddings, made once, when first asked for."""
    return _Embedder(pm)


class RunState:
    """A dialogue as it runs; see the module docstring. Only the kernel writes it."""

    # one per running dialogue: slots keep the thousands in flight small
    __slots__ = ("current", "dialogue", "failed", "records", "stopped", "stopped_at")

    def __init__(self, dialogue: Dialogue, looping: bool) -> None:
        self.dialogue = dialogue
        self.records: list[TurnRecord] = dialogue.turns  # in the order turns ran
        # with loops, each mode turn's record in the round it is in; without, a turn's
        # record is at its position (``record``), as the compiled templates' reads assume
        self.current: dict[str, TurnRecord] | None = (
            {r.turn_id: r for r in dialogue.turns} if looping else None)
        self.stopped: tuple[str, str, str | None] | None = None  # status, reason, who
        self.stopped_at: str | None = None  # the turn after which ``until`` held
        self.failed = False

    def record(self, turn: Turn) -> TurnRecord:
        """A mode turn's record (in a loop, the one of the round it is in)."""
        if self.current is not None:
            return self.current[turn.id]
        records = self.records
        rec = records[turn.index - 1] if turn.index <= len(records) else None
        if rec is not None and rec.id == turn.id:
            return rec
        return next(r for r in records if r.id == turn.id)  # (never, by construction)

    def readable(self, turn: Turn, rec: TurnRecord, reads: Sequence[int]
                 ) -> list[TurnRecord]:
        """The records a turn reads. Outside loops, the positions worked out when its
        templates were compiled (``reads``); in a dialogue with loops, for each turn it
        reads the latest record that ran before this one (``context_from: all``: every
        one)."""
        if self.current is None:
            return [self.records[i] for i in reads]
        current = self.current
        before = self.records[:next(i for i, r in enumerate(self.records) if r is rec)]
        if turn.context_spec == "all":
            seen = {r.turn_id for r in before}
            return before + [current[i] for i in turn.context_from if i not in seen]
        latest: dict[str, TurnRecord] = {}
        for r in before:
            latest[r.turn_id] = r
        return [latest.get(i) or current[i] for i in turn.context_from]
