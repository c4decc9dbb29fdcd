"""Preparing a turn: everything the kernel does before a turn's model call.

What the turn reads (compressed if asked), whether it runs at all (``when``), its system
text and prompt, the model its router (or a ``before_turn`` plugin) chose, its settings
and fallbacks, and the budget's reservation. ``prepare`` returns a ``Plan``, or None when
the turn was skipped, stopped the dialogue or failed, each recorded on the turn. Its
frame is gone by the time the model works: thousands of turns may be in flight.
"""

from __future__ import annotations

from typing import Any

from dlg.errors import describe
from dlg.language.mode import Turn, merged_settings
from dlg.language.sandbox import render
from dlg.language.templates import compiled, turn_context
from dlg.models import build_messages
from dlg.models.caching import CacheHint
from dlg.models.calls import unique
from dlg.records import record as R
from dlg.records.record import TurnRecord
from dlg.running.budget import prompt_token_bound
from dlg.running.compression import turn_reads
from dlg.running.routing import RouteRequest, budgeted_route, describe_route, route_turn
from dlg.running.structured import instruction, output_spec

__all__ = ["Plan", "prepare"]


class Plan:
    """A prepared turn: what its model call needs."""

    __slots__ = ("bound", "cache", "choice", "extra_cost", "fallbacks", "label", "messages",
                 "output", "prompt", "reservation", "settings", "system")

    def __init__(self, system: str | None, prompt: str, messages: Any, choice: Any,
                 settings: dict[str, Any], fallbacks: tuple[Any, ...], reservation: Any,
                 bound: int, output: dict[str, Any] | None, label: str, extra_cost: float,
                 cache: CacheHint | None = None):
        self.system, self.prompt, self.messages, self.choice = system, prompt, messages, choice
        self.settings, self.fallbacks, self.reservation = settings, fallbacks, reservation
        self.bound, self.output, self.label, self.extra_cost = bound, output, label, extra_cost
        self.cache = cache  # for a provider's prompt cache (dlg.models.caching)


async def prepare(run: Any, turn: Turn, rec: TurnRecord) -> Plan | None:
    """Everything before a turn's call: what it reads (compressed if asked), whether
    it runs (``when``), its prompt, the model the router (or a ``before_turn``
    plugin) chose, its settings and the budget's reservation. None when the turn was
    skipped, stopped the dialogue or failed (each recorded here)."""
    extra_cost = 0.0  # summaries made for this turn's context
    try:
        tpl = compiled(run.mode, run.env, turn)
        reads, summarised, extra_cost = await turn_reads(
            run.mode, turn, rec, _readable(run, turn, rec, tpl), tpl, run.embed,
            run.summarise)
        ctx = turn_context(run.base_context, turn, reads, tpl["needs"], summarised,
                           rec.round)
        if tpl["when"] is not None and not tpl["when"](**ctx):
            rec.status = R.SKIPPED
            rec.started_at = rec.ended_at = R.now()
            await run.finished(rec)
            return None
        system = "\n\n".join(
            render(t, ctx).strip() for t in (tpl["system"], tpl["instruction"]) if t
        ) or None
        prompt = render(tpl["prompt"], ctx).strip()
        repeats: Any = ()  # the earlier turns the prompt starts with (a cache's prefix)
        if tpl["auto_transcript"] and ctx["transcript"]:
            repeats = reads
            prompt = f"{ctx['transcript']}\n\n{prompt}"
        output = output_spec(turn)
        if output is not None:  # a structured answer: say so in the prompt
            prompt = f"{prompt}\n\n{instruction(output['schema'])}"
        participant = run.mode.participants.get(turn.participant or "")
        messages = build_messages(prompt, system=system)
        # an upper bound on the prompt's tokens, for a budget or a pool's context
        # windows; plain participant turns skip the encoding
        bound = prompt_token_bound(messages) if (
            run.budget is not None or run.candidates) else 0
        route = await route_turn(run.router, _request(run, turn, bound),
                                 run.router_name)
        choice = route.model
        if route.reason or route.name:  # a router that chose: say how, for the record
            rec.metadata = {**(rec.metadata or {}), "routing": describe_route(
                run.router_name, route, run.pool)}
        if run.events.listens("before_turn"):
            rec.system, rec.prompt = system, prompt
            decision, who = await run.events.decide(
                dialogue=run.dialogue, turn=rec, model=choice)
            if run.stopped:  # a turn running beside this one stopped the dialogue
                return None
            if decision.action == "stop":
                rec.system = rec.prompt = None
                run.stopped = (decision.status or "stopped", decision.reason, who)
                return None
            if decision.action == "skip":
                rec.status = R.SKIPPED
                rec.started_at = rec.ended_at = R.now()
                rec.metadata = {**(rec.metadata or {}), "skipped_by": who,
                                "reason": decision.reason}
                await run.finished(rec)
                return None
            if decision.model is not None:
                if isinstance(decision.model, str):
                    run.pool.check(decision.model)
                choice = decision.model
                rec.metadata = {**(rec.metadata or {}), "routed_by": who}
        settings = merged_settings(run.mode.settings,
                                   participant.settings if participant else {},
                                   turn.settings)
        fallbacks = (*(participant.fallbacks if participant else ()), *route.fallbacks)
        reservation = None
        if run.budget is not None:
            candidates = [(c, run.pool.label(c)) for c in unique((choice, *fallbacks))
                          if not isinstance(c, str) or run.pool.problem(c) is None]
            planned = run.budget.plan(candidates, bound, settings.get("max_tokens"))
            while planned is None and run.budget.others_hold():
                # other dialogues of a shared budget (a batch's) hold reservations that
                # may come back: wait for them rather than stop
                await run.budget.settled()
                planned = run.budget.plan(candidates, bound, settings.get("max_tokens"))
            if planned is None:
                rec.system = rec.prompt = None
                whose = f" ({run.budget.name})" if run.budget.name else ""
                run.stopped = ("cost_limited", f"${run.budget.left:.6f} left of "
                                f"${run.budget.limit:g}{whose} cannot pay for turn "
                                f"'{turn.id}' on any of its models", "budget")
                return None
            choice, _, settings["max_tokens"] = planned
            routed = (rec.metadata or {}).get("routing")
            if routed is not None and run.pool.safe_label(choice) != routed["model"]:
                # the budget moved the turn off the router's pick: the record names
                # what runs (as the turn's model will), and why
                rec.metadata = {**(rec.metadata or {}), "routing": budgeted_route(
                    routed, run.pool.safe_label(choice), run.budget.left,
                    run.candidates, choice)}
            reservation = run.budget.reserve(run.pool.label(choice), bound,
                                             settings["max_tokens"])
        return Plan(system, prompt, messages, choice, settings, fallbacks, reservation,
                    bound, output, run.pool.safe_label(choice), extra_cost,
                    CacheHint(run.dialogue.id, (), tpl["last"] and not run.looping,
                              repeats, summarised))
    except Exception as exc:
        await run.fail(rec, describe(exc), started=False)
        return None


def _readable(run: Any, turn: Turn, rec: TurnRecord, tpl: dict[str, Any]
              ) -> list[TurnRecord]:
    """The records a turn reads. Outside loops, the positions worked out when its
    templates were compiled; in a dialogue with loops, for each turn it reads the
    latest record that ran before this one (``context_from: all``: every one)."""
    if not run.looping:
        return [run.records[i] for i in tpl["reads"]]
    before = run.records[:next(i for i, r in enumerate(run.records) if r is rec)]
    if turn.context_spec == "all":
        seen = {r.turn_id for r in before}
        return before + [run.current[i] for i in turn.context_from if i not in seen]
    latest: dict[str, TurnRecord] = {}
    for r in before:
        latest[r.turn_id] = r
    return [latest.get(i) or run.current[i] for i in turn.context_from]


def _request(run: Any, turn: Turn, prompt_tokens: int) -> RouteRequest:
    """What the turn's router is asked: the turn, the pool, the constraints, the budget."""
    return RouteRequest.of(
        turn=turn, mode=run.mode, bindings=run.bindings, default=run.default,
        constraints={**run.constraints, **(turn.constraints or {})},
        pool=run.candidates, pinned=run.pinned, registry=run.registry,
        available=run.available,
        dialogue=run.dialogue, prompt_tokens=prompt_tokens, quality=run.quality,
        budget_left=run.budget.left if run.budget is not None else None)
