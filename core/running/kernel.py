"""The kernel: runs a resolved mode and fills in its ``Dialogue`` record.

Structured concurrency throughout: phases run in order; a parallel phase starts all its
turns in one task group; every turn runs under its own timeout. Lifecycle events go to
plugins (and to per-run observers) through hooks, shielded from cancellation so that an
observer (a store, a logger) always hears how a turn and the dialogue ended.

A turn's own steps, and how their outcomes are recorded, are in ``dlg.running.turn``
(``TurnSteps``, the kernel's base class); here are the dialogue's phases, loops and stops.
The kernel knows nothing about particular providers, exporters or stores.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from dlg.errors import first_dlg_error
from dlg.language.mode import Mode, Phase
from dlg.language.templates import environment, static_views
from dlg.models import ModelPool
from dlg.models.resilience import RetryPolicy
from dlg.observability import context
from dlg.observability.redact import redact
from dlg.records import record as R
from dlg.records.record import Dialogue, TurnRecord
from dlg.running.budget import Budget
from dlg.running.context import RunContext, RunState, embedder
from dlg.running.events import Events
from dlg.running.interrupt import Interrupt
from dlg.running.loops import Loop
from dlg.running.routing import Routing
from dlg.running.stopping import Stopping
from dlg.running.subdialogues import Spawner
from dlg.running.turn import TurnSteps

if TYPE_CHECKING:
    import pluggy

    from dlg.models.catalog import ModelRegistry

__all__ = ["Kernel", "execute"]

log = logging.getLogger("dlg.kernel")
INFO = logging.INFO


class Kernel(TurnSteps):
    """Runs one dialogue: its phases in order, each turn as a list of steps (``run_turn``,
    from ``TurnSteps``). The only writer of the run's state (``RunState``): the steps
    answer with outcomes."""

    # one per running dialogue: slots keep the thousands in flight small
    __slots__ = ("_dog", "ctx", "state")

    def __init__(self, ctx: RunContext, state: RunState) -> None:
        self.ctx = ctx
        self.state = state
        self._dog: Any = None

    async def run_watched(self) -> Dialogue:
        """``run`` beside a watchdog that measures how long the event loop blocks."""
        from dlg.observability.watchdog import LoopWatchdog

        self._dog = LoopWatchdog(self.state.dialogue)
        try:
            with context.scope(dialogue=self.state.dialogue.id):  # the watchdog's logs too
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._dog.run)
                    try:
                        return await self.run()
                    finally:
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the watchdog never fails: unwrap
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        raise AssertionError("unreachable: the task group returned or raised")

    async def run(self) -> Dialogue:
        ctx, state = self.ctx, self.state
        # its ids, for logs and spans (entered and left without a ``with``: a scope
        # object would stay alive for every dialogue in flight)
        ids = context.enter(dialogue=state.dialogue.id)
        if ctx.interrupt is not None:
            ctx.interrupt.enter(self)
        try:
            d = state.dialogue
            if log.isEnabledFor(INFO):
                _log_started(d)
            d.status = R.RUNNING
            d.started_at = d.started_at or R.now()
            d.ended_at = None
            d.metadata.pop("stopped", None)  # a resumed dialogue is no longer stopped
            if ctx.budget is not None:  # the limit it runs under now (a resume may change it)
                d.metadata["budget"] = ctx.budget.summary()
            try:
                await ctx.events.emit("dialogue_started", dialogue=d)
                for phase in ctx.mode.phases:
                    if state.failed or state.stopped:
                        break
                    if phase.repeat:
                        await self.run_loop(phase)
                    elif phase.parallel:
                        await self.run_phase(phase)
                    else:  # here rather than in run_phase: one coroutine frame fewer
                        for turn in phase.turns:
                            if state.record(turn).status not in (R.COMPLETED, R.SKIPPED):
                                await self.run_turn(turn)
                                if state.failed or state.stopped:
                                    break
                self._ended()
            except (anyio.get_cancelled_exc_class(), KeyboardInterrupt):  # an interrupt too
                d.status = R.CANCELLED
                raise
            except BaseException as exc:
                d.status = R.FAILED
                d.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                d.ended_at = R.now()
                if d.error:
                    d.error = redact(d.error)
                if self._dog is not None:  # the figures go out with the final save
                    d.metadata["event_loop"] = self._dog.summary()
                await ctx.events.emit("dialogue_finished", shield=True, dialogue=d)
                if log.isEnabledFor(INFO):
                    _log_finished(d)
            return d
        finally:
            if ctx.interrupt is not None:
                ctx.interrupt.leave(self)
            context.leave(ids)

    def stop(self, status: str, reason: str, by: str | None, at: str | None = None) -> None:
        """Stop the dialogue before its next turn (the first stop stands): turns not run
        stay pending. Asked by the kernel's own steps' outcomes, and by an ``Interrupt``;
        ``at`` is the turn after which a mode's ``until`` held."""
        if self.state.stopped is None:
            self.state.stopped = (status, reason, by)
            if at is not None:
                self.state.stopped_at = at

    def fail_dialogue(self) -> None:
        """A turn whose ``on_error`` is ``fail`` failed: the dialogue fails, and no turn
        starts after it."""
        self.state.failed = True

    def _ended(self) -> None:
        """The dialogue's status once its phases are done: completed, failed (with the
        first failed turn's error), or how it stopped with turns left."""
        state = self.state
        d = state.dialogue
        d.status = R.FAILED if state.failed else R.COMPLETED
        if state.stopped and not state.failed and any(
                t.status == R.PENDING for t in d.turns):  # stopped with turns left
            status, reason, who = state.stopped
            d.status = status
            d.metadata["stopped"] = {"status": status, "reason": reason, "by": who,
                                     "turns_completed": d.turns_completed,
                                     **({"at": state.stopped_at} if state.stopped_at else {})}
        if state.failed and d.error is None:
            failed = [t for t in d.turns if t.status == R.FAILED]
            d.error = f"turn '{failed[0].id}' failed: {failed[0].error}" if failed else (
                "failed")

    async def run_phase(self, phase: Phase, loop: Loop | None = None) -> None:
        """Run the phase's turns that have not finished, in order or all at once (in a
        loop, a turn its ``gate`` skips is recorded skipped instead)."""
        state = self.state
        todo = [t for t in phase.turns
                if state.record(t).status not in (R.COMPLETED, R.SKIPPED)]
        if phase.parallel and len(todo) > 1:
            try:
                async with anyio.create_task_group() as tg:
                    for turn in todo:
                        tg.start_soon(self.run_turn, turn)
            except BaseExceptionGroup as group:
                raise first_dlg_error(group) from None
        else:
            for turn in todo:
                skip = loop.gate(state.records, state.current or {}, turn) if loop else None
                if skip is not None:
                    await self._record(state.record(turn), skip)
                    continue
                await self.run_turn(turn)
                if state.failed or state.stopped:
                    break

    async def run_loop(self, phase: Phase) -> None:
        """A refinement loop (``repeat``): the phase round after round, until its
        ``until`` holds or it has run ``max_rounds`` rounds (``dlg.running.loops``)."""
        ctx, state = self.ctx, self.state
        loop = Loop(phase, ctx.env, ctx.base_context, ctx.embed)
        meta = state.dialogue.metadata
        if loop.finished(meta):
            return
        assert state.current is not None  # a mode with loops keeps each turn's current
        for at, rec in loop.missing(state.records, state.current):
            self._add(at, (rec,))
        while True:
            await self.run_phase(phase, loop if loop.confirm else None)
            if state.failed:
                return
            after = loop.after_round(state.records, state.current, state.stopped)
            loops = meta.setdefault("loops", {})
            if after.state is not None:
                loops[phase.id] = after.state
            self._add(after.at, after.records)
            if not after.more:
                return

    def _add(self, at: int, records: Sequence[TurnRecord]) -> None:
        """Pending records of a loop's round, at ``at`` in the run's records."""
        if records:
            self.state.records[at:at] = records
            assert self.state.current is not None
            for rec in records:
                self.state.current[rec.turn_id] = rec

def _log_started(d: Dialogue) -> None:
    log.info("dialogue %s started: mode %s, %d turns", d.id, d.mode, len(d.turns),
             extra={"event": "dialogue.started", "mode": d.mode})


def _log_finished(d: Dialogue) -> None:
    m = d.metrics
    log.info("dialogue %s %s: %d/%d turns, %d tokens, $%.5f", d.id, d.status,
             m.turns_completed, len(d.turns), m.total_tokens, m.total_cost_usd,
             extra={"event": "dialogue.finished", "status": d.status,
                    "tokens": m.total_tokens, "cost_usd": m.total_cost_usd,
                    "duration_s": round(m.total_latency_seconds, 3)})


def execute(
    mode: Mode,
    dialogue: Dialogue,
    *,
    pm: pluggy.PluginManager,
    routing: Routing,
    bindings: Mapping[str, Any],
    default: Any,
    pool: ModelPool | None = None,
    observers: Sequence[Any] = (),
    timeout: float | None = None,
    registry: ModelRegistry | None = None,
    policy: RetryPolicy | None = None,
    watchdog: bool = False,
    budget: Budget | None = None,
    spawner: Spawner | None = None,
    interrupt: Interrupt | None = None,
) -> Awaitable[Dialogue]:
    """Run (or continue) ``dialogue`` on ``mode``; completed turns are never re-run.
    With ``budget``, no call is made whose worst case does not fit what is left. With
    ``interrupt`` (``dlg.running.interrupt.Interrupt``), no turn starts once a stop is
    asked for."""
    env = environment(mode.template_dirs, pm)
    base_context = {
        **env.globals,  # once here, not copied by Jinja at every render
        **dialogue.inputs,
        "inputs": dialogue.inputs,
        **static_views(mode, dialogue.participants),
        "parent": dialogue.metadata.get("parent"),  # what a sub-dialogue inherits
    }
    embed = embedder(pm)
    ctx = RunContext(
        mode=mode, pm=pm, pool=pool or ModelPool(pm), registry=registry,
        policy=policy or RetryPolicy(), timeout=timeout, routing=routing, bindings=bindings,
        default=default, events=Events(pm, observers), env=env, base_context=base_context,
        budget=budget, spawner=spawner, interrupt=interrupt, embed=embed,
        stopping=(Stopping(mode, env, base_context, embed)
                  if mode.until or mode.max_turns is not None else None))
    kernel = Kernel(ctx, RunState(dialogue, looping=mode.loops))
    # returned to be awaited by the caller: no coroutine frame of its own per dialogue
    return kernel.run_watched() if watchdog else kernel.run()
