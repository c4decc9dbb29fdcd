"""The kernel: runs a resolved mode and fills in its ``Dialogue`` record.

Structured concurrency throughout: phases run in order; a parallel phase starts all its
turns in one task group; every turn runs under its own timeout. Lifecycle events go to
plugins (and to per-run observers) through hooks, shielded from cancellation so that an
observer (a store, a logger) always hears how a turn and the dialogue ended.

The kernel knows nothing about particular providers, exporters or stores.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from dlg.errors import first_dlg_error
from dlg.language.mode import Mode, Phase, Turn
from dlg.language.templates import environment, static_views
from dlg.models import ModelPool, call_model
from dlg.models.resilience import AllCandidatesFailed, RetryPolicy
from dlg.observability import context
from dlg.observability.redact import StreamRedactor, redact, redact_attempt, redact_values
from dlg.records import record as R
from dlg.records.record import NO_USAGE, Dialogue, TurnRecord
from dlg.running.budget import Budget, Reservation
from dlg.running.context import RunContext, RunState, embedder
from dlg.running.events import Events
from dlg.running.interrupt import Interrupt
from dlg.running.loops import Loop
from dlg.running.outcomes import Failed, Plan, Skipped, Stopped
from dlg.running.prepare import prepare
from dlg.running.routing import Routing
from dlg.running.spawn import spawn_children
from dlg.running.stopping import Stopping
from dlg.running.structured import structured_turn
from dlg.running.subdialogues import Spawner

if TYPE_CHECKING:
    import pluggy

    from dlg.models.catalog import ModelRegistry

__all__ = ["Kernel", "execute"]

log = logging.getLogger("dlg.kernel")
INFO = logging.INFO


class Kernel:
    """Runs one dialogue: its phases in order, each turn as a list of steps. The only
    writer of the run's state (``RunState``): the steps answer with outcomes."""

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

    def stop(self, status: str, reason: str, by: str | None) -> None:
        """Stop the dialogue before its next turn (the first stop stands): turns not run
        stay pending. Asked by the kernel's own steps' outcomes, and by an ``Interrupt``."""
        if self.state.stopped is None:
            self.state.stopped = (status, reason, by)

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

    async def run_turn(self, turn: Turn) -> None:
        """One turn, as its steps: the record, prepare (what it reads, ``when``, its
        prompt, its route, ``before_turn``, the budget's reservation), the call, settling
        the budget, the structured answer, the answer recorded, sub-dialogues, then the
        turn completed (and ``until`` checked). A step answers with an outcome; this
        method records it."""
        # this frame waits for the model while thousands of turns may be in flight: it
        # keeps only what the call needs (the preparation's frame is gone by then)
        ids = context.enter(turn=turn.id)  # the turn's ids, for logs, spans and metrics
        try:
            ctx, state = self.ctx, self.state
            if state.stopped:  # a turn running beside this one stopped the dialogue
                return
            rec = state.record(turn)
            rec.error = None
            if turn.spawn and rec.response is not None and (rec.metadata or {}).get(
                    "subdialogues"):  # it answered before a crash: continue its children
                rec.status = R.RUNNING
                await ctx.events.emit("turn_started", dialogue=state.dialogue, turn=rec)
                await self._spawn(turn, rec)
                return
            plan = await prepare(ctx, state, turn, rec)
            if type(plan) is not Plan:  # skipped, stopped or failed
                await self._record(rec, plan)  # type: ignore[arg-type]
                return
            if ctx.interrupt is not None and ctx.interrupt.requested:
                # asked to stop while it was prepared: no call is made
                self._release(plan)
                return
            rec.system, rec.prompt, rec.model = plan.system, plan.prompt, plan.label
            rec.status = R.RUNNING
            rec.started_at = R.now()
            if log.isEnabledFor(INFO):
                _log_turn_started(turn, plan.label)
            try:
                await ctx.events.emit("turn_started", dialogue=state.dialogue, turn=rec)
            except BaseException:  # a listener failed, or cancelled: no call is made, and
                self._release(plan)  # turns waiting for room must not wait on it forever
                raise

            spent: float | None = None
            billed = 0.0  # failed attempts' input, presumed billed (``Budget.billed``)
            stream = StreamRedactor() if ctx.events.listens("turn_chunk") else None
            try:
                result = await self._call(turn, rec, plan, stream)
                if stream is not None:  # what was held back of a streamed answer
                    await self._chunk(rec, stream.flush())
                spent = result.cost_usd
                if result.attempts and ctx.budget is not None:
                    usage = result.usage
                    # a count the provider reported, else the prompt's best estimate
                    billed = ctx.budget.billed(result.attempts, plan.reservation.prompt
                                               if usage.estimated and plan.reservation
                                               else usage.prompt)
                    spent = (spent or 0.0) + billed
                if plan.output is not None:
                    structured = await structured_turn(ctx, plan, result)
                    if type(structured) is Failed:
                        await self._record(rec, structured)
                        return
                    result, rec.data = structured.result, structured.data  # type: ignore[union-attr]
            except anyio.get_cancelled_exc_class():
                rec.status = R.CANCELLED
                rec.ended_at = R.now()
                await self.finished(rec)
                raise
            except AllCandidatesFailed as exc:
                rec.attempts = [redact_attempt(a.to_dict()) for a in exc.attempts]
                if ctx.budget is not None:
                    spent = billed = ctx.budget.billed(
                        exc.attempts, plan.reservation.prompt if plan.reservation else 0)
                    if billed:
                        rec.cost_usd = billed
                await self.fail(rec, str(exc))
                return
            finally:
                if plan.reservation is not None:
                    self._settle(rec, plan.reservation, spent, billed)
            self._answered(turn, rec, result, plan.extra_cost + billed)
            if turn.spawn:
                await self._spawn(turn, rec)
                return
            await self._complete(turn, rec)
        finally:
            context.leave(ids)

    async def _spawn(self, turn: Turn, rec: TurnRecord) -> None:
        """The turn's sub-dialogues, then the turn completed, or what stopped them."""
        outcome = await spawn_children(self.ctx, self.state, turn, rec)
        if type(outcome) is Failed or type(outcome) is Stopped:
            await self._record(rec, outcome)
        else:
            await self._complete(turn, rec)

    async def _record(self, rec: TurnRecord, outcome: Skipped | Stopped | Failed) -> None:
        """Record what a step answered instead of going on: the turn skipped, the
        dialogue stopped, or the turn failed."""
        if type(outcome) is Skipped:
            rec.status = R.SKIPPED
            rec.started_at = rec.ended_at = R.now()
            if outcome.by is not None:
                rec.metadata = {**(rec.metadata or {}), "skipped_by": outcome.by,
                                "reason": outcome.reason}
            await self.finished(rec)
        elif type(outcome) is Stopped:
            if outcome.pending:  # it answered; it stays pending for a resume to continue
                rec.status = R.PENDING
                await self.ctx.events.emit("turn_progress", dialogue=self.state.dialogue,
                                           turn=rec)
            else:  # it never ran
                rec.system = rec.prompt = None
            self.stop(outcome.status, outcome.reason, outcome.by)
        else:
            assert type(outcome) is Failed
            if outcome.result is not None:  # the answer it got, for its usage and cost
                result = outcome.result
                rec.usage, rec.cost_usd = result.usage, result.cost_usd
                rec.response = redact_values(result.text)
            await self.fail(rec, outcome.message, started=outcome.started)

    def _call(self, turn: Turn, rec: TurnRecord, plan: Plan,
              stream: StreamRedactor | None) -> Awaitable[Any]:
        """A prepared turn's model call, to await. No closures here: a nested function
        would give every in-flight turn a cell per captured name (docs/performance.md)."""
        ctx = self.ctx
        return call_model(
            ctx.pool, plan.choice, plan.messages, plan.settings, registry=ctx.registry,
            fallbacks=plan.fallbacks, requires=turn.requires, policy=ctx.policy,
            timeout=turn.timeout or ctx.mode.timeout or ctx.timeout,
            on_chunk=self._chunks(rec, stream) if stream is not None else None,
            record=rec, schema=plan.output["schema"] if plan.output is not None else None,
            cache=plan.cache,
            allow=(ctx.allowance(plan.reservation, plan.bound)
                   if plan.reservation is not None else None),
            guard=ctx.guard(plan.reservation) if plan.reservation is not None else None)

    def _release(self, plan: Plan) -> None:
        """Give back the reservation of a turn whose call was never made."""
        if plan.reservation is not None and self.ctx.budget is not None:
            self.ctx.budget.settle(plan.reservation, 0.0)

    def _settle(self, rec: TurnRecord, reservation: Reservation, spent: float | None,
                billed: float) -> None:
        """Settle a turn's budget reservation (``Budget.settle_turn``): recorded on the
        turn; the dialogue stops before its next call when the turn overran past the
        limit."""
        budget = self.ctx.budget
        if budget is None:
            return
        kept, stop = budget.settle_turn(reservation, spent, billed)
        rec.metadata = {**(rec.metadata or {}), "budget": kept}
        self.state.dialogue.metadata["budget"] = budget.summary()
        if stop is not None:
            self.stop("cost_limited", f"turn '{rec.id}' {stop}", "budget")

    def _answered(self, turn: Turn, rec: TurnRecord, result: Any, extra_cost: float) -> None:
        """Record a model's answer to a turn: the text, usage, cost, the model that gave
        it and the attempts that failed before it."""
        failures = result.attempts
        if failures:
            rec.attempts = [redact_attempt(a.to_dict()) for a in failures]
            rec.replaced = result.replaced
            if rec.replaced:
                log.warning("turn %s: %s answered in place of %s", turn.id, result.model,
                            ", ".join(rec.replaced),
                            extra={"event": "turn.fallback", "model": result.model,
                                   "replaced": list(rec.replaced),
                                   "attempts": len(failures)})
            else:
                log.info("turn %s: %s answered after %d failed attempt%s", turn.id,
                         result.model, len(failures), "s" if len(failures) > 1 else "",
                         extra={"event": "turn.retried", "model": result.model,
                                "attempts": len(failures)})
        rec.response = redact_values(result.text)  # a model may repeat a key it saw
        # with any summaries made for its context (none, mostly: then no sum is made)
        rec.usage = result.usage if rec.usage is NO_USAGE else rec.usage + result.usage
        rec.latency_seconds = result.latency_seconds
        rec.model = result.model
        rec.cost_usd = (result.cost_usd or 0.0) + extra_cost if (
            extra_cost or result.cost_usd is not None) else None

    async def _complete(self, turn: Turn, rec: TurnRecord) -> None:
        """Mark a turn that answered completed, tell the listeners, check stopping."""
        rec.status = R.COMPLETED
        rec.ended_at = R.now()
        if log.isEnabledFor(INFO):
            log.info("turn %s completed in %.2fs: %d tokens", turn.id,
                     rec.latency_seconds or 0.0, rec.usage.total,
                     extra={"event": "turn.finished", "model": rec.model, "status": rec.status,
                            "latency_s": round(rec.latency_seconds or 0.0, 4),
                            "prompt_tokens": rec.usage.prompt,
                            "completion_tokens": rec.usage.completion,
                            "cost_usd": rec.cost_usd})
        await self.finished(rec)
        stopping, state = self.ctx.stopping, self.state
        if stopping is not None and not state.stopped:
            stop = stopping.check(state.records, rec)
            if stop is not None:
                self.stop(*stop, "until")
                state.stopped_at = rec.id  # the turn after which it held

    def _chunks(self, rec: TurnRecord, stream: StreamRedactor) -> Any:
        """What hears a turn's text as it streams in: the ``turn_chunk`` listeners, given
        it redacted (a model may repeat a key it saw, split across pieces)."""
        async def on_chunk(text: str) -> None:
            await self._chunk(rec, stream.feed(text))

        return on_chunk

    async def _chunk(self, rec: TurnRecord, text: str) -> None:
        if text:
            await self.ctx.events.emit("turn_chunk", dialogue=self.state.dialogue, turn=rec,
                                       text=text)

    async def finished(self, rec: TurnRecord) -> None:
        await self.ctx.events.emit("turn_finished", shield=True, dialogue=self.state.dialogue,
                                   turn=rec)

    async def fail(self, rec: TurnRecord, message: str, *, started: bool = True) -> None:
        rec.status = R.FAILED
        rec.error = message = redact(message)
        log.warning("turn %s failed: %s", rec.id, message,
                    extra={"event": "turn.failed", "model": rec.model})
        now = R.now()
        rec.started_at = rec.started_at if started and rec.started_at else now
        rec.ended_at = now
        if self.ctx.mode.turn(rec.turn_id).on_error == "fail":
            self.state.failed = True
        await self.finished(rec)


def _log_started(d: Dialogue) -> None:
    log.info("dialogue %s started: mode %s, %d turns", d.id, d.mode, len(d.turns),
             extra={"event": "dialogue.started", "mode": d.mode})


def _log_turn_started(turn: Turn, label: str) -> None:
    log.info("turn %s started on %s", turn.id, label,
             extra={"event": "turn.started", "model": label, "role": turn.role})


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
