"""A turn's life in the kernel: its steps, and how their outcomes are recorded.

``TurnSteps.run_turn`` reads as the list of a turn's steps (docs/architecture.md): the
record, prepare, the call, settling the budget, the structured answer, the answer
recorded, sub-dialogues, the turn completed. The steps (``prepare``, ``structured_turn``,
``spawn_children``) answer with outcomes (``dlg.running.outcomes``); the methods here
record them on the turn. ``TurnSteps`` is a part of ``dlg.running.kernel.Kernel`` (its
base class, so a turn costs no call more than a method of the kernel's own would): what
the run's state becomes, stopped or failed, the kernel writes (``Kernel.stop``,
``Kernel.fail_dialogue``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import anyio

from dlg.language.mode import Turn
from dlg.models import call_model
from dlg.models.resilience import AllCandidatesFailed
from dlg.observability import context
from dlg.observability.redact import StreamRedactor, redact, redact_attempt, redact_values
from dlg.records import record as R
from dlg.records.record import NO_USAGE, TurnRecord
from dlg.running.budget import Reservation
from dlg.running.outcomes import Failed, Plan, Skipped, Stopped
from dlg.running.prepare import prepare
from dlg.running.spawn import spawn_children
from dlg.running.structured import structured_turn

if TYPE_CHECKING:
    from dlg.running.context import RunContext, RunState

__all__ = ["TurnSteps"]

log = logging.getLogger("dlg.kernel")  # the kernel's logger: a turn's lines are the kernel's
INFO = logging.INFO


class TurnSteps:
    """One turn's run, as its steps, for the kernel (``Kernel`` is a ``TurnSteps``): the
    run's context and state are the kernel's, and so is what stops or fails the dialogue."""

    __slots__ = ()

    ctx: RunContext
    state: RunState

    if TYPE_CHECKING:  # the kernel's (dlg.running.kernel.Kernel)
        def stop(self, status: str, reason: str, by: str | None,
                 at: str | None = None) -> None: ...
        def fail_dialogue(self) -> None: ...

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
                self.stop(*stop, "until", at=rec.id)  # the turn after which it held

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
            self.fail_dialogue()
        await self.finished(rec)


def _log_turn_started(turn: Turn, label: str) -> None:
    log.info("turn %s started on %s", turn.id, label,
             extra={"event": "turn.started", "model": label, "role": turn.role})
