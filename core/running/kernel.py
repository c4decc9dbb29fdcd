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
from typing import Any

import anyio

from dlg.errors import first_dlg_error
from dlg.language.mode import Mode, Turn
from dlg.language.templates import environment, static_views
from dlg.models import ModelPool, call_model
from dlg.models.resilience import AllCandidatesFailed, RetryPolicy
from dlg.observability import context
from dlg.observability.redact import redact, redact_attempt, redact_values
from dlg.records import record as R
from dlg.records.record import Dialogue, TurnRecord
from dlg.running.budget import Budget, budgeted_call
from dlg.running.compression import SUMMARY_TOKENS, embeddings
from dlg.running.events import Events
from dlg.running.prepare import Plan, prepare
from dlg.running.routing import Routing, cheapest
from dlg.running.stopping import Stopping
from dlg.running.structured import Unstructured, structured_turn

__all__ = ["execute"]

log = logging.getLogger("dlg.kernel")
INFO = logging.INFO


class _Run:
    # one per running dialogue: slots keep the thousands in flight small
    __slots__ = ("_dog", "base_context", "bindings", "budget", "candidates", "constraints",
                 "current", "default", "dialogue", "embeddings", "env", "events", "failed",
                 "interrupt", "looping", "mode", "pinned", "pm", "policy", "pool", "quality",
                 "records", "registry", "router", "router_name", "spawner", "stopped",
                 "stopped_at", "stopping", "timeout", "watchdog")

    def __init__(self, mode: Mode, dialogue: Dialogue, *, pm: Any, routing: Routing,
                 bindings: Mapping[str, Any], default: Any, pool: ModelPool,
                 observers: Sequence[Any], timeout: float | None, registry: Any,
                 policy: RetryPolicy, watchdog: bool = False, budget: Budget | None = None,
                 spawner: Any = None, interrupt: Any = None):
        self.mode = mode
        self.interrupt = interrupt  # a dlg.running.interrupt.Interrupt (Ctrl-C), or None
        self.spawner = spawner  # runs sub-dialogues (dlg.running.subdialogues.Spawner)
        self.router, self.router_name = routing.router, routing.name
        self.candidates, self.pinned = routing.pool, routing.pinned
        self.constraints = routing.constraints
        self.quality = routing.quality
        self.budget = budget
        self.pm = pm
        self.embeddings: Any = None
        self.watchdog = watchdog
        self._dog: Any = None
        self.registry = registry
        self.policy = policy
        self.dialogue = dialogue
        self.bindings = bindings
        self.default = default
        self.pool = pool
        self.events = Events(pm, observers)
        self.stopped: tuple[str, str, str | None] | None = None  # status, reason, who
        self.stopped_at: str | None = None
        self.timeout = timeout
        self.failed = False
        self.records = dialogue.turns  # in the order turns run (a loop's rounds in turn)
        self.looping = mode.loops
        # with loops, each mode turn's record in the round it is in; without, a turn's
        # record is at its position (``record``), as the compiled templates' reads assume
        self.current = ({r.turn_id: r for r in dialogue.turns} if self.looping
                        else None)
        self.env = environment(mode.template_dirs, pm)
        self.base_context = {
            **self.env.globals,  # once here, not copied by Jinja at every render
            **dialogue.inputs,
            "inputs": dialogue.inputs,
            **static_views(mode, dialogue.participants),
            "parent": dialogue.metadata.get("parent"),  # what a sub-dialogue inherits
        }
        self.stopping = (Stopping(mode, self.env, self.base_context, self.embed)
                         if mode.until or mode.max_turns is not None else None)

    async def run_watched(self) -> Dialogue:
        """``_run`` beside a watchdog that measures how long the event loop blocks."""
        from dlg.observability.watchdog import LoopWatchdog

        self._dog = LoopWatchdog(self.dialogue)
        try:
            with context.scope(dialogue=self.dialogue.id):  # the watchdog's logs too
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._dog.run)
                    try:
                        return await self._run()
                    finally:
                        tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the watchdog never fails: unwrap
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        raise AssertionError("unreachable: the task group returned or raised")

    async def _run(self) -> Dialogue:
        # its ids, for logs and spans (entered and left without a ``with``: a scope
        # object would stay alive for every dialogue in flight)
        ids = context.enter(dialogue=self.dialogue.id)
        if self.interrupt is not None:
            self.interrupt.enter(self)
        try:
            d = self.dialogue
            if log.isEnabledFor(INFO):
                _log_started(d)
            d.status = R.RUNNING
            d.started_at = d.started_at or R.now()
            d.ended_at = None
            d.metadata.pop("stopped", None)  # a resumed dialogue is no longer stopped
            if self.budget is not None:  # the limit it runs under now (a resume may change it)
                d.metadata["budget"] = self.budget.summary()
            try:
                await self.events.emit("dialogue_started", dialogue=d)
                for phase in self.mode.phases:
                    if self.failed or self.stopped:
                        break
                    if phase.repeat:
                        from dlg.running.loops import run_loop

                        await run_loop(self, phase)
                    elif phase.parallel:
                        await self.run_phase(phase)
                    else:  # here rather than in run_phase: one coroutine frame fewer
                        for turn in phase.turns:
                            if self.record(turn).status not in (R.COMPLETED, R.SKIPPED):
                                await self.run_turn(turn)
                                if self.failed or self.stopped:
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
                await self.events.emit("dialogue_finished", shield=True, dialogue=d)
                if log.isEnabledFor(INFO):
                    _log_finished(d)
            return d
        finally:
            if self.interrupt is not None:
                self.interrupt.leave(self)
            context.leave(ids)

    def _ended(self) -> None:
        """The dialogue's status once its phases are done: completed, failed (with the
        first failed turn's error), or how it stopped with turns left."""
        d = self.dialogue
        d.status = R.FAILED if self.failed else R.COMPLETED
        if self.stopped and not self.failed and any(
                t.status == R.PENDING for t in d.turns):  # stopped with turns left
            status, reason, who = self.stopped
            d.status = status
            d.metadata["stopped"] = {"status": status, "reason": reason, "by": who,
                                     "turns_completed": d.turns_completed,
                                     **({"at": self.stopped_at} if self.stopped_at else {})}
        if self.failed and d.error is None:
            failed = [t for t in d.turns if t.status == R.FAILED]
            d.error = f"turn '{failed[0].id}' failed: {failed[0].error}" if failed else (
                "failed")

    def record(self, turn: Turn) -> TurnRecord:
        """A mode turn's record (in a loop, the one of the round it is in)."""
        if self.current is not None:
            return self.current[turn.id]
        rec = self.records[turn.index - 1] if turn.index <= len(self.records) else None
        if rec is not None and rec.id == turn.id:
            return rec
        return next(r for r in self.records if r.id == turn.id)  # (never, by construction)

    async def run_phase(self, phase: Any) -> None:
        """Run the phase's turns that have not finished, in order or all at once."""
        todo = [t for t in phase.turns
                if self.record(t).status not in (R.COMPLETED, R.SKIPPED)]
        if phase.parallel and len(todo) > 1:
            try:
                async with anyio.create_task_group() as tg:
                    for turn in todo:
                        tg.start_soon(self.run_turn, turn)
            except BaseExceptionGroup as group:
                raise first_dlg_error(group) from None
        else:
            for turn in todo:
                await self.run_turn(turn)
                if self.failed or self.stopped:
                    break

    async def run_turn(self, turn: Turn) -> None:
        # this frame waits for the model while thousands of turns may be in flight: it
        # keeps only what the call needs (the preparation's frame is gone by then)
        ids = context.enter(turn=turn.id)  # the turn's ids, for logs, spans and metrics
        try:
            if self.stopped:  # a turn running beside this one stopped the dialogue
                return
            rec = self.record(turn)
            rec.error = None
            if turn.spawn and rec.response is not None and (rec.metadata or {}).get(
                    "subdialogues"):  # it answered before a crash: continue its children
                rec.status = R.RUNNING
                await self.events.emit("turn_started", dialogue=self.dialogue, turn=rec)
                from dlg.running.subdialogues import spawn_children

                if await spawn_children(self, turn, rec):
                    await self._complete(turn, rec)
                return
            plan = await prepare(self, turn, rec)
            if plan is None:  # skipped, stopped or failed: recorded already
                return
            if self.interrupt is not None and self.interrupt.requested:
                # asked to stop while it was prepared: no call is made
                if plan.reservation is not None and self.budget is not None:
                    self.budget.settle(plan.reservation, 0.0)
                return
            rec.system, rec.prompt, rec.model = plan.system, plan.prompt, plan.label
            rec.status = R.RUNNING
            rec.started_at = R.now()
            if log.isEnabledFor(INFO):
                _log_turn_started(turn, plan.label)
            await self.events.emit("turn_started", dialogue=self.dialogue, turn=rec)

            spent: float | None = None
            try:
                result = await self._call(turn, rec, plan)
                spent = result.cost_usd
                if plan.output is not None:
                    result = await structured_turn(self, rec, plan, result)
            except Unstructured as exc:
                await self.fail(rec, str(exc))
                return
            except anyio.get_cancelled_exc_class():
                rec.status = R.CANCELLED
                rec.ended_at = R.now()
                await self.finished(rec)
                raise
            except AllCandidatesFailed as exc:
                rec.attempts = [redact_attempt(a.to_dict()) for a in exc.attempts]
                await self.fail(rec, str(exc))
                return
            finally:
                if plan.reservation is not None:
                    self._settle(rec, plan.reservation, spent)
            self._answered(turn, rec, result, plan.extra_cost)
            if turn.spawn:
                from dlg.running.subdialogues import spawn_children

                if not await spawn_children(self, turn, rec):
                    return
            await self._complete(turn, rec)
        finally:
            context.leave(ids)

    def _call(self, turn: Turn, rec: TurnRecord, plan: Plan) -> Awaitable[Any]:
        """A prepared turn's model call, to await. No closures here: a nested function
        would give every in-flight turn a cell per captured name (docs/performance.md)."""
        return call_model(
            self.pool, plan.choice, plan.messages, plan.settings, registry=self.registry,
            fallbacks=plan.fallbacks, requires=turn.requires, policy=self.policy,
            timeout=turn.timeout or self.mode.timeout or self.timeout,
            on_chunk=self._chunks(rec) if self.events.listens("turn_chunk") else None,
            record=rec, schema=plan.output["schema"] if plan.output is not None else None,
            cache=plan.cache,
            allow=(self.allowance(plan.reservation, plan.bound)
                   if plan.reservation is not None else None))

    def _settle(self, rec: TurnRecord, reservation: Any, spent: float | None) -> None:
        """Settle a turn's budget reservation with what it spent, for the record."""
        if self.budget is None:
            return
        self.budget.settle(reservation, spent)
        rec.metadata = {**(rec.metadata or {}), "budget": {
            "reserved": round(reservation.amount, 10),
            "max_tokens": reservation.max_tokens,
            "left_after": round(self.budget.left, 10)}}
        self.dialogue.metadata["budget"] = self.budget.summary()

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
        rec.usage = result.usage
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
        if self.stopping is not None and not self.stopped:
            stop = self.stopping.check(self.records, rec)
            if stop is not None:
                self.stopped = (*stop, "until")
                self.stopped_at = rec.id  # the turn after which it held

    def _chunks(self, rec: TurnRecord) -> Any:
        """What hears a turn's text as it streams in: the ``turn_chunk`` listeners."""
        async def on_chunk(text: str) -> None:
            await self.events.emit("turn_chunk", dialogue=self.dialogue, turn=rec, text=text)

        return on_chunk

    def allowance(self, held: Any, bound: int) -> Any:
        """Whether a fallback fits the turn's budget reservation."""
        def allow(candidate: Any) -> bool:
            return self.budget is not None and self.budget.allows(
                self.pool.label(candidate), held, bound)

        return allow

    async def summarise(self, prompt: str) -> Any:
        """A summary by the cheapest model of the pool (else the default), in budget."""
        model = cheapest(self.candidates, self.registry, self.available) or self.default
        return await budgeted_call(self.budget, self.pool, model, prompt,
                                   {"max_tokens": SUMMARY_TOKENS}, registry=self.registry,
                                   policy=self.policy)

    def embed(self) -> Any:
        """The embeddings relevant context is chosen with, made once per dialogue."""
        if self.embeddings is None:
            self.embeddings = embeddings(self.pm)
        return self.embeddings

    def available(self, model: Any) -> bool:
        """Whether a model can be tried now: its package and key are there and it is not
        resting after repeated failures (a process-wide cool-down)."""
        from dlg.models.resilience import cooldowns

        if isinstance(model, str) and self.pool.problem(model) is not None:
            return False
        return not cooldowns.cooling(self.pool.label(model))

    async def finished(self, rec: TurnRecord) -> None:
        await self.events.emit("turn_finished", shield=True, dialogue=self.dialogue, turn=rec)

    async def fail(self, rec: TurnRecord, message: str, *, started: bool = True) -> None:
        rec.status = R.FAILED
        rec.error = message = redact(message)
        log.warning("turn %s failed: %s", rec.id, message,
                    extra={"event": "turn.failed", "model": rec.model})
        now = R.now()
        rec.started_at = rec.started_at if started and rec.started_at else now
        rec.ended_at = now
        if self.mode.turn(rec.turn_id).on_error == "fail":
            self.failed = True
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
    pm: Any,
    routing: Routing,
    bindings: Mapping[str, Any],
    default: Any,
    pool: ModelPool | None = None,
    observers: Sequence[Any] = (),
    timeout: float | None = None,
    registry: Any = None,
    policy: RetryPolicy | None = None,
    watchdog: bool = False,
    budget: Budget | None = None,
    spawner: Any = None,
    interrupt: Any = None,
) -> Awaitable[Dialogue]:
    """Run (or continue) ``dialogue`` on ``mode``; completed turns are never re-run.
    With ``budget``, no call is made whose worst case does not fit what is left. With
    ``interrupt`` (``dlg.running.interrupt.Interrupt``), no turn starts once a stop is
    asked for."""
    run = _Run(mode, dialogue, pm=pm, routing=routing, bindings=bindings, default=default,
               pool=pool or ModelPool(pm), observers=observers, timeout=timeout,
               registry=registry, policy=policy or RetryPolicy(), watchdog=watchdog,
               budget=budget, spawner=spawner, interrupt=interrupt)
    # returned to be awaited by the caller: no coroutine frame of its own per dialogue
    return run.run_watched() if watchdog else run._run()
