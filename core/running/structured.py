"""Structured answers: a turn's ``output: {schema: ...}``.

The model is asked for a JSON object matching the schema (the instruction is added to the
prompt, so it works on every model, the embedded one included); the answer is parsed (a
code fence or prose around the object is tolerated) and validated. An answer that does
not match gets ``retries`` repair requests (default 1) that quote what was wrong. The
parsed object is the turn's ``data``; templates read it as ``turns.ID.data``.

A judge turn (``scores: [turn ids]``) gets a default schema (``score`` 0-10 and a
``reason``) when it declares none; its score rates the turns it names for the learned
router (``dlg.running.routing.learning``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dlg.running.outcomes import Failed, Plan, Structured

if TYPE_CHECKING:
    from dlg.language.mode import Turn
    from dlg.running.context import RunContext

__all__ = ["JUDGE_SCHEMA", "instruction", "output_spec", "parse", "repair_prompt",
           "structured_answer", "structured_turn"]

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 10},
                   "reason": {"type": "string"}},
    "required": ["score"],
}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
MAX_ANSWER = 200_000  # characters of an answer that are parsed


def output_spec(turn: Turn) -> dict[str, Any] | None:
    """The turn's output spec, with the judge default; None for a free-text turn."""
    if turn.output:
        return turn.output
    if turn.scores:
        return {"schema": JUDGE_SCHEMA}
    return None


def instruction(schema: dict[str, Any]) -> str:
    return ("Answer with one JSON object only, no other text, matching this JSON Schema:\n"
            + json.dumps(schema, ensure_ascii=False))


def parse(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(the object, None) if ``text`` holds JSON matching ``schema``, else (None, why)."""
    from dlg.running.answer_schema import first_error

    data = _json_in((text or "")[:MAX_ANSWER])
    if data is _NONE:
        return None, "the answer holds no JSON object"
    wrong = first_error(schema, data)
    return (data, None) if wrong is None else (None, wrong)


_NONE = object()  # an answer that holds no JSON (``null`` is JSON)


def _json_in(text: str) -> Any:
    """The JSON in an answer, or ``_NONE``. langchain-core's ``parse_json_markdown`` reads
    an answer that is JSON, or runs from a code fence to its end (whitespace and
    backticks around it stripped), strictly (``json.loads``: a cut-off object is not
    closed for it). Kept here, what it does not do: a fence with prose after it or a
    later fence (the first may be other code), the object between the first ``{`` and
    the last ``}`` (prose around it), and nesting too deep for Python's parser (a
    ``RecursionError``, not an answer)."""
    from langchain_core.utils.json import parse_json_markdown

    candidates = [text, *(m.group(1) for m in _FENCE.finditer(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return parse_json_markdown(candidate, parser=json.loads)
        except (ValueError, RecursionError):
            continue
    return _NONE


async def structured_answer(result: Any, output: dict[str, Any], messages: Any,
                            call_again: Callable[[Any], Awaitable[Any]]
                            ) -> tuple[Any, Any, str | None]:
    """Parse ``result``; while it does not match, ask again (``call_again(conversation)``,
    None when that cannot be paid for) up to ``retries`` times. Returns the result with
    usage, cost and latency summed over the calls, the data (or None), and what is wrong
    (or None)."""
    from langchain_core.messages import AIMessage, HumanMessage

    data, problem = parse(result.text, output["schema"])
    conversation = [HumanMessage(content=messages)] if isinstance(messages, str) else (
        list(messages))
    for _ in range(int(output.get("retries", 1))):
        if problem is None:
            break
        conversation += [AIMessage(content=result.text),
                         HumanMessage(content=repair_prompt(problem))]
        again = await call_again(conversation)
        if again is None:
            return result, None, f"{problem} (no budget left to ask for a repair)"
        again.usage = result.usage + again.usage
        costs = [c for c in (result.cost_usd, again.cost_usd) if c is not None]
        again.cost_usd = sum(costs) if costs else None
        again.latency_seconds += result.latency_seconds
        result = again
        data, problem = parse(result.text, output["schema"])
    return result, data, problem


def repair_prompt(problem: str) -> str:
    return (f"That answer does not match the schema ({problem}). Answer again with the "
            "JSON object only.")


async def structured_turn(ctx: RunContext, plan: Plan, result: Any) -> Structured | Failed:
    """A turn's structured answer (``plan.output``): parsed, and repaired by asking again
    (within the turn's budget) if it does not match. ``Structured`` (the result, its
    usage and cost summed over the repairs, and the data), or ``Failed`` with the last
    answer if it still does not match. The first call's cost is settled by the kernel;
    each repair settles its own."""
    output = plan.output
    assert output is not None  # the kernel asks only for a turn with an output schema
    allow = (ctx.allowance(plan.reservation, plan.bound)
             if plan.reservation is not None else None)
    result, data, problem = await structured_answer(
        result, output, plan.messages, _repairs(ctx, plan, allow))
    if problem is not None:
        return Failed(f"the answer does not match the turn's output schema after "
                      f"{output.get('retries', 1)} repair(s): {problem}", result=result)
    return Structured(result, data)


def _repairs(ctx: RunContext, plan: Plan, allow: Callable[[Any], bool] | None
             ) -> Callable[[Any], Awaitable[Any]]:
    """How a structured answer asks for a repair: another call, within the budget."""
    from dlg.running.budget import budgeted_call

    schema = plan.output["schema"] if plan.output is not None else None

    async def again(conversation: Any) -> Any:
        return await budgeted_call(
            ctx.budget, ctx.pool, plan.choice, conversation, plan.settings,
            registry=ctx.registry, fallbacks=plan.fallbacks, policy=ctx.policy,
            allow=allow, schema=schema, cache=plan.cache)

    return again
