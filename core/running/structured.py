"""Structured answers: a turn's ``output: {schema: ...}``.

The model is asked for a JSON object matching the schema (the instruction is added to the
prompt, so it works on every model, the embedded one included); the answer is parsed (a
code fence or prose around the object is tolerated) and validated. An answer that does
not match gets ``retries`` repair requests (default 1) that quote what was wrong. The
parsed object is the turn's ``data``; templates read it as ``turns.ID.data``.

A judge turn (``scores: [turn ids]``) gets a default schema (``score`` 0-10 and a
``reason``) when it declares none; its score rates the turns it names for the learned
router (``dlg.running.learning``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["JUDGE_SCHEMA", "Unstructured", "instruction", "output_spec", "parse",
           "repair_prompt", "structured_answer", "structured_turn"]

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "number", "minimum": 0, "maximum": 10},
                   "reason": {"type": "string"}},
    "required": ["score"],
}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
MAX_ANSWER = 200_000  # characters of an answer that are parsed


def output_spec(turn: Any) -> dict[str, Any] | None:
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

    text = (text or "")[:MAX_ANSWER]
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    data = None
    for candidate in candidates:
        try:
            data = json.loads(candidate.strip())
        except (ValueError, RecursionError):
            continue
        break
    else:
        return None, "the answer holds no JSON object"
    wrong = first_error(schema, data)
    return (data, None) if wrong is None else (None, wrong)


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


class Unstructured(Exception):
    """A structured answer that did not match its schema after the repairs."""


async def structured_turn(run: Any, rec: Any, plan: Any, result: Any) -> Any:
    """A turn's structured answer (``plan.output``), for the kernel's ``run``: parsed into
    ``rec.data``, repaired by asking again (within the turn's budget) if it does not
    match; ``Unstructured`` if it still does not. The first call's cost is settled by
    the caller; each repair settles its own."""
    from dlg.observability.redact import redact_values

    output = plan.output
    allow = (run.allowance(plan.reservation, plan.bound)
             if plan.reservation is not None else None)
    result, data, problem = await structured_answer(
        result, output, plan.messages, _repairs(run, plan, allow))
    if problem is not None:
        rec.usage, rec.cost_usd = result.usage, result.cost_usd
        rec.response = redact_values(result.text)
        raise Unstructured(f"the answer does not match the turn's output schema after "
                           f"{output.get('retries', 1)} repair(s): {problem}")
    rec.data = data
    return result


def _repairs(run: Any, plan: Any, allow: Any) -> Callable[[Any], Awaitable[Any]]:
    """How a structured answer asks for a repair: another call, within the budget."""
    from dlg.running.budget import budgeted_call

    async def again(conversation: Any) -> Any:
        return await budgeted_call(
            run.budget, run.pool, plan.choice, conversation, plan.settings,
            registry=run.registry, fallbacks=plan.fallbacks, policy=run.policy,
            allow=allow, schema=plan.output["schema"], cache=plan.cache)

    return again
