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

from dlg.errors import describe, first_dlg_error
from dlg.language.mode import Mode, Turn, merged_settings
from dlg.language.sandbox import render
from dlg.language.templates import compiled, environment, static_views, turn_context
from dlg.models import ModelPool, build_messages, call_model
from dlg.models.calls import unique
from dlg.models.resilience import AllCandidatesFailed, RetryPolicy
from dlg.observability import context
from dlg.observability.redact import redact, redact_attempt, redact_values
from dlg.records import record as R
from dlg.records.record import Dialogue, TurnRecord
from dlg.running.budget import Budget, budgeted_call, prompt_token_bound
from dlg.running.compression import SUMMARY_TOKENS, embeddings, turn_reads
from dlg.running.events import Events
from dlg.running.routing import RouteRequest, Routing, cheapest, describe_route, route_turn
from dlg.running.stopping import Stopping
from dlg.running.structured import instruction, output_spec, structured_answer

__all__ = ["execute"]

log = logging.getLogger("dlg.kernel")
INFO = logging.INFO


class _Run:
    # one per running dialogue: slots keep the thousands in flight small
    __slots__ = ("_dog", "base_context", "bindings", "budget", "candidates", "constraints",
                 "current", "default", "dialogue", "embeddings", "env", "events", "failed",
                 "looping", "mode", "pinned", "pm", "policy", "pool", "quality", "records",
                 "registry", "router", "router_name", "spawner", "stopped", "stopped_at",
                 "stopping", "timeout", "watchdog")

    def __init__(self, mode: Mode, dialogue: Dialogue, *, pm: Any, routing: Routing,
                 bindings: Mapping[str, Any], default: Any, pool: ModelPool,
                 observers: Sequence[Any], timeout: float | None, registry: Any,
                 policy: RetryPolicy, watchdog: bool = False, budget: Budget | None = None,
                 spawner: Any = None):
        self.mode = mode
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
        # each mode turn's record in the round it is in (its only one outside loops)
        self.current = {r.turn_id: r for r in dialogue.turns}
        self.looping = mode.loops
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
        with context.scope(dialogue=self.dialogue.id):  # its ids, for logs and spans
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
                            if self.current[turn.id].status not in (R.COMPLETED, R.SKIPPED):
                                await self.run_turn(turn)
                                if self.failed or self.stopped:
                                    break
                self._ended()
            except anyio.get_cancelled_exc_class():
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

    async def run_phase(self, phase: Any) -> None:
        """Run the phase's turns that have not finished, in order or all at once."""
        todo = [t for t in phase.turns
                if self.current[t.id].status not in (R.COMPLETED, R.SKIPPED)]
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

    def _readable(self, turn: Turn, rec: TurnRecord, tpl: dict[str, Any]
                  ) -> list[TurnRecord]:
        """The records a turn reads. Outside loops, the positions worked out when its
        templates were compiled; in a dialogue with loops, for each turn it reads the
        latest record that ran before this one (``context_from: all``: every one)."""
        if not self.looping:
            return [self.records[i] for i in tpl["reads"]]
        before = self.records[:next(i for i, r in enumerate(self.records) if r is rec)]
        if turn.context_spec == "all":
            seen = {r.turn_id for r in before}
            return before + [self.current[i] for i in turn.context_from if i not in seen]
        latest: dict[str, TurnRecord] = {}
        for r in before:
            latest[r.turn_id] = r
        return [latest.get(i) or self.current[i] for i in turn.context_from]

    async def run_turn(self, turn: Turn) -> None:
        # this frame waits for the model while thousands of turns may be in flight: it
        # keeps only what the call needs (the preparation's frame is gone by then)
        with context.scope(turn=turn.id):  # the turn's ids, for logs, spans and metrics
            if self.stopped:  # a turn running beside this one stopped the dialogue
                return
            rec = self.current[turn.id]
            rec.error = None
            if turn.spawn and rec.response is not None and (rec.metadata or {}).get(
                    "subdialogues"):  # it answered before a crash: continue its children
                rec.status = R.RUNNING
                await self.events.emit("turn_started", dialogue=self.dialogue, turn=rec)
                from dlg.running.subdialogues import spawn_children

                if await spawn_children(self, turn, rec):
                    await self._complete(turn, rec)
                return
            plan = await self._prepare(turn, rec)
            if plan is None:  # skipped, stopped or failed: recorded already
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
                    result = await self._structured(rec, plan, result, plan.output)
            except _Unstructured as exc:
                await self.fail(rec, str(exc))
                return
            except anyio.get_cancelled_exc_class():
                rec.status = R.CANCELLED
                rec.ended_at = R.now()
                await self._finished(rec)
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

    def _call(self, turn: Turn, rec: TurnRecord, plan: _Plan) -> Awaitable[Any]:
        """A prepared turn's model call, to await. No closures here: a nested function
        would give every in-flight turn a cell per captured name (docs/performance.md)."""
        return call_model(
            self.pool, plan.choice, plan.messages, plan.settings, registry=self.registry,
            fallbacks=plan.fallbacks, requires=turn.requires, policy=self.policy,
            timeout=turn.timeout or self.mode.timeout or self.timeout,
            on_chunk=self._chunks(rec) if self.events.listens("turn_chunk") else None,
            record=rec, schema=plan.output["schema"] if plan.output is not None else None,
            allow=(self._allowance(plan.reservation, plan.bound)
                   if plan.reservation is not None else None))

    async def _structured(self, rec: TurnRecord, plan: _Plan, result: Any,
                          output: dict[str, Any]) -> Any:
        """A structured answer (the turn's ``output`` schema): parsed into ``rec.data``,
        repaired by asking again if it does not match; ``_Unstructured`` if it still
        does not. The first call's cost is settled by the caller; each repair settles its
        own."""
        allow = (self._allowance(plan.reservation, plan.bound)
                 if plan.reservation is not None else None)
        result, data, problem = await structured_answer(
            result, output, plan.messages,
            self._repairs(plan.choice, plan.settings, plan.fallbacks, allow, output))
        if problem is not None:
            rec.usage, rec.cost_usd = result.usage, result.cost_usd
            rec.response = redact_values(result.text)
            raise _Unstructured(f"the answer does not match the turn's output schema after "
                                f"{output.get('retries', 1)} repair(s): {problem}")
        rec.data = data
        return result

    async def _prepare(self, turn: Turn, rec: TurnRecord) -> _Plan | None:
        """Everything before a turn's call: what it reads (compressed if asked), whether
        it runs (``when``), its prompt, the model the router (or a ``before_turn``
        plugin) chose, its settings and the budget's reservation. None when the turn was
        skipped, stopped the dialogue or failed (each recorded here)."""
        extra_cost = 0.0  # summaries made for this turn's context
        try:
            tpl = compiled(self.mode, self.env, turn)
            reads, summarised, extra_cost = await turn_reads(
                self.mode, turn, rec, self._readable(turn, rec, tpl), tpl, self.embed,
                self._summarise)
            ctx = turn_context(self.base_context, turn, reads, tpl["needs"], summarised,
                               rec.round)
            if tpl["when"] is not None and not tpl["when"](**ctx):
                rec.status = R.SKIPPED
                rec.started_at = rec.ended_at = R.now()
                await self._finished(rec)
                return None
            system = "\n\n".join(
                render(t, ctx).strip() for t in (tpl["system"], tpl["instruction"]) if t
            ) or None
            prompt = render(tpl["prompt"], ctx).strip()
            if tpl["auto_transcript"] and ctx["transcript"]:
                prompt = f"{ctx['transcript']}\n\n{prompt}"
            output = output_spec(turn)
            if output is not None:  # a structured answer: say so in the prompt
                prompt = f"{prompt}\n\n{instruction(output['schema'])}"
            participant = self.mode.participants.get(turn.participant or "")
            messages = build_messages(prompt, system=system)
            # an upper bound on the prompt's tokens, for a budget or a pool's context
            # windows; plain participant turns skip the encoding
            bound = prompt_token_bound(messages) if (
                self.budget is not None or self.candidates) else 0
            route = await route_turn(self.router, self._request(turn, bound),
                                     self.router_name)
            choice = route.model
            if route.reason or route.name:  # a router that chose: say how, for the record
                rec.metadata = {**(rec.metadata or {}), "routing": describe_route(
                    self.router_name, route, self.pool)}
            if self.events.listens("before_turn"):
                rec.system, rec.prompt = system, prompt
                decision, who = await self.events.decide(
                    dialogue=self.dialogue, turn=rec, model=choice)
                if self.stopped:  # a turn running beside this one stopped the dialogue
                    return None
                if decision.action == "stop":
                    rec.system = rec.prompt = None
                    self.stopped = (decision.status or "stopped", decision.reason, who)
                    return None
                if decision.action == "skip":
                    rec.status = R.SKIPPED
                    rec.started_at = rec.ended_at = R.now()
                    rec.metadata = {**(rec.metadata or {}), "skipped_by": who,
                                    "reason": decision.reason}
                    await self._finished(rec)
                    return None
                if decision.model is not None:
                    if isinstance(decision.model, str):
                        self.pool.check(decision.model)
                    choice = decision.model
                    rec.metadata = {**(rec.metadata or {}), "routed_by": who}
            settings = merged_settings(self.mode.settings,
                                       participant.settings if participant else {},
                                       turn.settings)
            fallbacks = (*(participant.fallbacks if participant else ()), *route.fallbacks)
            reservation = None
            if self.budget is not None:
                planned = self.budget.plan(
                    [(c, self.pool.label(c)) for c in unique((choice, *fallbacks))
                     if not isinstance(c, str) or self.pool.problem(c) is None],
                    bound, settings.get("max_tokens"))
                if planned is None:
                    rec.system = rec.prompt = None
                    self.stopped = ("cost_limited", f"${self.budget.left:.6f} left of "
                                    f"${self.budget.limit:g} cannot pay for turn "
                                    f"'{turn.id}' on any of its models", "budget")
                    return None
                choice, _, settings["max_tokens"] = planned
                reservation = self.budget.reserve(self.pool.label(choice), bound,
                                                  settings["max_tokens"])
            return _Plan(system, prompt, messages, choice, settings, fallbacks, reservation,
                         bound, output, self.pool.safe_label(choice), extra_cost)
        except Exception as exc:
            await self.fail(rec, describe(exc), started=False)
            return None

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
        await self._finished(rec)
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

    def _allowance(self, held: Any, bound: int) -> Any:
        """Whether a fallback fits the turn's budget reservation."""
        def allow(candidate: Any) -> bool:
            return self.budget is not None and self.budget.allows(
                self.pool.label(candidate), held, bound)

        return allow

    def _repairs(self, choice: Any, settings: dict[str, Any], fallbacks: Any, allow: Any,
                 output: dict[str, Any]) -> Any:
        """How a structured answer asks for a repair: another call, within the budget."""
        async def again(conversation: Any) -> Any:
            return await budgeted_call(
                self.budget, self.pool, choice, conversation, settings,
                registry=self.registry, fallbacks=fallbacks, policy=self.policy,
                allow=allow, schema=output["schema"])

        return again

    def _request(self, turn: Turn, prompt_tokens: int) -> RouteRequest:
        return RouteRequest(
            turn=turn, mode=self.mode, bindings=self.bindings, default=self.default,
            constraints={**self.constraints, **(turn.constraints or {})},
            pool=self.candidates, pinned=self.pinned, registry=self.registry,
            available=self._available,
            dialogue=self.dialogue, prompt_tokens=prompt_tokens, quality=self.quality,
            budget_left=self.budget.left if self.budget is not None else None)

    async def _summarise(self, prompt: str) -> Any:
        """A summary by the cheapest model of the pool (else the default), in budget."""
        model = cheapest(self.candidates, self.registry, self._available) or self.default
        return await budgeted_call(self.budget, self.pool, model, prompt,
                                   {"max_tokens": SUMMARY_TOKENS}, registry=self.registry,
                                   policy=self.policy)

    def embed(self) -> Any:
        """The embeddings relevant context is chosen with, made once per dialogue."""
        if self.embeddings is None:
            self.embeddings = embeddings(self.pm)
        return self.embeddings

    def _available(self, model: Any) -> bool:
        """Whether a model can be tried now: its package and key are there and it is not
        resting after repeated failures (a process-wide cool-down)."""
        from dlg.models.resilience import cooldowns

        if isinstance(model, str) and self.pool.problem(model) is not None:
            return False
        return not cooldowns.cooling(self.pool.label(model))

    async def _finished(self, rec: TurnRecord) -> None:
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
        await self._finished(rec)


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


class _Plan:
    """A prepared turn: what its call needs (``_Run._prepare``)."""

    __slots__ = ("bound", "choice", "extra_cost", "fallbacks", "label", "messages", "output",
                 "prompt", "reservation", "settings", "system")

    def __init__(self, system: str | None, prompt: str, messages: Any, choice: Any,
                 settings: dict[str, Any], fallbacks: tuple[Any, ...], reservation: Any,
                 bound: int, output: dict[str, Any] | None, label: str, extra_cost: float):
        self.system, self.prompt, self.messages, self.choice = system, prompt, messages, choice
        self.settings, self.fallbacks, self.reservation = settings, fallbacks, reservation
        self.bound, self.output, self.label, self.extra_cost = bound, output, label, extra_cost


class _Unstructured(Exception):
    """A structured answer that did not match its schema after the repairs."""


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
) -> Awaitable[Dialogue]:
    """Run (or continue) ``dialogue`` on ``mode``; completed turns are never re-run.
    With ``budget``, no call is made whose worst case does not fit what is left."""
    run = _Run(mode, dialogue, pm=pm, routing=routing, bindings=bindings, default=default,
               pool=pool or ModelPool(pm), observers=observers, timeout=timeout,
               registry=registry, policy=policy or RetryPolicy(), watchdog=watchdog,
               budget=budget, spawner=spawner)
    # returned to be awaited by the caller: no coroutine frame of its own per dialogue
    return run.run_watched() if watchdog else run._run()
