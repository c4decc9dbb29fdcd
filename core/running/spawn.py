"""The spawning step of a turn: its sub-dialogues, run once the turn has answered.

What a spawning turn's children are and how they run is ``dlg.running.subdialogues``';
this step plans them (saving the plan before any child starts, so a crash never re-pays
the turn), runs or continues them, and answers the kernel with an outcome: ``DONE``,
``Failed`` (a child did not complete) or ``Stopped`` (the shared budget ran out in a
child: the turn stays pending, so a resume with more budget continues them).
"""

from __future__ import annotations

import anyio

from dlg.errors import describe
from dlg.language.mode import Turn
from dlg.records.record import ENDED, TurnRecord
from dlg.running.context import RunContext, RunState
from dlg.running.outcomes import DONE, Done, Failed, Stopped
from dlg.running.subdialogues import DEFAULT_DEPTH, plan_children

__all__ = ["spawn_children"]


async def spawn_children(ctx: RunContext, state: RunState, turn: Turn, rec: TurnRecord
                         ) -> Done | Failed | Stopped:
    """Run the sub-dialogues of a spawning turn that has answered; see the module
    docstring."""
    dialogue, spawner = state.dialogue, ctx.spawner
    depth = int(dialogue.metadata.get("depth") or 0)
    limit = ctx.mode.max_depth if ctx.mode.max_depth is not None else DEFAULT_DEPTH
    if spawner is None or depth >= limit:
        why = (f"depth {depth} is the mode's max_depth" if spawner is not None
               else "this run does not spawn sub-dialogues")
        rec.metadata = {**(rec.metadata or {}), "spawn": f"not spawned: {why}"}
        return DONE
    try:
        child_mode = spawner.child_mode(ctx.mode, turn)
        planned = not (rec.metadata or {}).get("subdialogues")
        if planned:
            entries = plan_children(turn, rec, child_mode, ctx.env, ctx.base_context,
                                    dialogue.inputs)
            if not entries:
                rec.metadata = {**(rec.metadata or {}),
                                "spawn": "not spawned: the answer named no items"}
                return DONE
            rec.metadata = {**(rec.metadata or {}), "subdialogues": entries}
            # the plan (and the answer it came from) is saved before any child runs
            await ctx.events.emit("turn_progress", dialogue=dialogue, turn=rec)
        # children planned just now were never saved: none to look for in the store
        children = await spawner.run(ctx.mode, dialogue, turn, rec, child_mode, ctx.budget,
                                     new=planned)
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        return Failed(describe(exc))
    if ctx.budget is not None:  # what the children spent, from the shared budget
        dialogue.metadata["budget"] = ctx.budget.summary()
    known = {c.id for c in dialogue.subdialogues}
    dialogue.subdialogues.extend(c for c in children if c is not None and c.id not in known)
    entries = (rec.metadata or {})["subdialogues"]
    unfinished = [e for e in entries if e.get("status") not in ENDED]
    if unfinished and all(e.get("status") == "cost_limited" for e in unfinished):
        return Stopped("cost_limited", f"the budget ran out in {len(unfinished)} of "
                       f"{len(entries)} sub-dialogues of turn '{turn.id}'", "budget",
                       pending=True)
    if unfinished:
        first = unfinished[0]
        return Failed(f"{len(unfinished)} of {len(entries)} sub-dialogues did not complete "
                      f"(first: {first['id']}, {first.get('status')}: "
                      f"{first.get('error') or 'no error recorded'}); "
                      "`dlg resume` continues them")
    return DONE
