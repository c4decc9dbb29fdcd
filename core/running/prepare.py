"""Preparing a turn: everything the kernel does before a turn's model call.

What the turn reads (compressed if asked), whether it runs at all (``when``), its system
text and prompt, the model its router (or a ``before_turn`` plugin) chose, its settings
and fallbacks, and the budget's reservation. ``prepare`` returns a ``Plan``, or the
outcome the kernel records instead (``Skipped``, ``Stopped``, ``Failed``): it writes
nothing of the kernel's. Its frame is gone by the time the model works: thousands of
turns may be in flight.
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
from dlg.running.budget import MIN_OUTPUT, count_prompt, prompt_size
from dlg.running.compression import turn_reads
from dlg.running.context import RunContext, RunState
from dlg.running.outcomes import Failed, Plan, Skipped, Stopped
from dlg.running.routing import RouteRequest, budgeted_route, describe_route, route_turn
from dlg.running.structured import instruction, output_spec

__all__ = ["NOT_WHEN", "Plan", "prepare"]

NOT_WHEN = Skipped()  # the turn's ``when`` is false
_NONE: frozenset[str] = frozenset()
_NO_COMPRESSION = (None, "", "none")  # what ``turn_reads`` leaves as it is


async def prepare(ctx: RunContext, state: RunState, turn: Turn, rec: TurnRecord
                  ) -> Plan | Skipped | Stopped | Failed:
    """Everything before a turn's call: what it reads (compressed if asked), whether
    it runs (``when``), its prompt, the model the router (or a ``before_turn``
    plugin) chose, its settings and the budget's reservation. A ``Plan``, or what the
    kernel is to record instead: the turn skipped, the dialogue stopped, the turn failed."""
    extra_cost = 0.0  # summaries made for this turn's context
    try:
        tpl = compiled(ctx.mode, ctx.env, turn)
        reads = state.readable(turn, rec, tpl["reads"])
        summarised = _NONE
        if tpl["needs"] and (turn.context_compression or ctx.mode.context_compression
                             ) not in _NO_COMPRESSION:  # else no coroutine made a turn
            reads, summarised, extra_cost = await turn_reads(
                ctx.mode, turn, rec, reads, tpl, ctx.embed, ctx.summarise)
        view = turn_context(ctx.base_context, turn, reads, tpl["needs"], summarised,
                            rec.round)
        if tpl["when"] is not None and not tpl["when"](**view):
            return NOT_WHEN
        # the mode's system text, then the transcript, then the turn's own instruction
        # and prompt: what every turn sends the same comes first, so a provider's prefix
        # cache reads it (a turn's instruction in the system text changed the first
        # bytes of every turn)
        system = render(tpl["system"], view).strip() or None if tpl["system"] else None
        prompt = render(tpl["prompt"], view).strip()
        if tpl["instruction"]:
            told = render(tpl["instruction"], view).strip()
            prompt = f"{told}\n\n{prompt}" if told and prompt else told or prompt
        repeats: Any = ()  # the earlier turns the prompt starts with (a cache's prefix)
        if tpl["auto_transcript"] and view["transcript"]:
            repeats = reads
            prompt = f"{view['transcript']}\n\n{prompt}"
        output = output_spec(turn)
        if output is not None:  # a structured answer: say so in the prompt
            prompt = f"{prompt}\n\n{instruction(output['schema'])}"
        participant = ctx.mode.participants.get(turn.participant or "")
        messages = build_messages(prompt, system=system)
        budget, routing, pool = ctx.budget, ctx.routing, ctx.pool
        # an upper bound on the prompt's tokens (its bytes), for a budget or a pool's
        # context windows; plain participant turns skip the encoding. A budget counts it
        # per model: by the model's tokenizer where one is installed (dlg.models.tokens)
        size = prompt_size(messages, ctx.pool, output["schema"] if output else None)
        bound = int(size) if (budget is not None or routing.pool) else 0
        route = await route_turn(routing.router, _request(ctx, state, turn, bound),
                                 routing.name)
        choice = route.model
        if route.reason or route.name:  # a router that chose: say how, for the record
            rec.metadata = {**(rec.metadata or {}), "routing": describe_route(
                routing.name, route, pool)}
        if ctx.events.listens("before_turn"):
            rec.system, rec.prompt = system, prompt
            decision, who = await ctx.events.decide(
                dialogue=state.dialogue, turn=rec, model=choice)
            if state.stopped:  # a turn running beside this one stopped the dialogue
                return Stopped(*state.stopped)
            if decision.action == "stop":
                return Stopped(decision.status or "stopped", decision.reason, who)
            if decision.action == "skip":
                return Skipped(who, decision.reason)
            if decision.model is not None:
                if isinstance(decision.model, str):
                    pool.check(decision.model)
                choice = decision.model
                rec.metadata = {**(rec.metadata or {}), "routed_by": who}
        settings = merged_settings(ctx.mode.settings,
                                   participant.settings if participant else {},
                                   turn.settings)
        fallbacks = (*(participant.fallbacks if participant else ()), *route.fallbacks)
        reservation = None
        if budget is not None:
            candidates = [(c, pool.label(c)) for c in unique((choice, *fallbacks))
                          if not isinstance(c, str) or pool.problem(c) is None]
            await count_prompt(size, [c[1] for c in candidates],  # off the event loop
                               ctx.registry, pool, turn.requires)
            labels, rest = _rest(ctx, state, rec, int(size), [c[1] for c in candidates])
            planned = budget.plan_finishing(candidates, size, settings.get("max_tokens"),
                                            labels, rest)
            while planned is None and budget.others_hold():
                # others hold reservations that may come back (other dialogues of a
                # batch's total, sub-dialogues running beside this one): wait for them
                # rather than stop
                await budget.settled()
                if state.stopped:  # a turn beside this one stopped the dialogue meanwhile
                    return Stopped(*state.stopped)
                planned = budget.plan_finishing(candidates, size, settings.get("max_tokens"),
                                                labels, rest)
            if planned is None:
                whose = f" ({budget.name})" if budget.name else ""
                return Stopped("cost_limited", f"${budget.left:.6f} left of "
                               f"${budget.limit:g}{whose} cannot pay for turn "
                               f"'{turn.id}' on any of its models: " + budget.shortfall(
                                   [c[1] for c in candidates], size,
                                   settings.get("max_tokens")), "budget")
            choice, _, settings["max_tokens"], held = planned
            if held:
                rec.metadata = {**(rec.metadata or {}), "held_for_rest": round(held, 10)}
            routed = (rec.metadata or {}).get("routing")
            if routed is not None and pool.safe_label(choice) != routed["model"]:
                # the budget moved the turn off the router's pick: the record names
                # what runs (as the turn's model will), and why
                rec.metadata = {**(rec.metadata or {}), "routing": budgeted_route(
                    routed, pool.safe_label(choice), budget.left, routing.pool, choice)}
            reservation = budget.reserve(pool.label(choice), size, settings["max_tokens"])
        return Plan(system, prompt, messages, choice, settings, fallbacks, reservation,
                    bound, output, pool.safe_label(choice), extra_cost,
                    CacheHint(state.dialogue.id, (), tpl["last"] and state.current is None,
                              repeats, summarised))
    except Exception as exc:
        return Failed(describe(exc), started=False)


def _rest(ctx: RunContext, state: RunState, rec: TurnRecord, bound: int,
          candidates: list[str]) -> tuple[list[str], list[tuple[int, int | None]]]:
    """What the cheapest-finish reserve is worked out from: the models the turns to
    come could run on (the router's pool, else this turn's candidates) and, for each turn
    still pending after this one, its prompt (this one's bound, grown by the answers in
    between at the bytes the answers so far had, else at 4 bytes a token) and its
    ``max_tokens``."""
    pool = ctx.routing.pool
    labels = [ctx.pool.label(m) for m in pool.values()] if pool else candidates
    pending = [r for r in state.records if r.status == R.PENDING and r is not rec]
    if not pending:
        return labels, []
    answered = [len(r.response.encode("utf-8")) for r in state.records
                if r.status == R.COMPLETED and isinstance(r.response, str)]
    mode = ctx.mode
    rest: list[tuple[int, int | None]] = []
    for i, r in enumerate(pending, 1):
        turn = mode.turn(r.turn_id)
        participant = mode.participants.get(turn.participant or "")
        asked = merged_settings(mode.settings, participant.settings if participant else {},
                                turn.settings).get("max_tokens")
        grows = (sum(answered) // len(answered) if answered
                 else 4 * (asked or MIN_OUTPUT))
        rest.append((bound + i * grows, asked))
    return labels, rest


def _request(ctx: RunContext, state: RunState, turn: Turn, prompt_tokens: int
             ) -> RouteRequest:
    """What the turn's router is asked: the turn, the pool, the constraints, the budget."""
    routing = ctx.routing
    return RouteRequest.of(
        turn=turn, mode=ctx.mode, bindings=ctx.bindings, default=ctx.default,
        constraints={**routing.constraints, **(turn.constraints or {})},
        pool=routing.pool, pinned=routing.pinned, registry=ctx.registry,
        available=ctx.available,
        dialogue=state.dialogue, prompt_tokens=prompt_tokens, quality=routing.quality,
        budget_left=ctx.budget.left if ctx.budget is not None else None)
