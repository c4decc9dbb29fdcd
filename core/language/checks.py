"""Static checks on a mode, run by the loader before anything is paid for (a mode from
the cache was checked when it was cached, so none of this is imported for it).

- Its turns' references (``context_ids``, ``structured_problems``, ``repeat_problems``):
  what each turn's ``context_from`` names, resolved to turn ids, must exist and have run
  by then; an ``output.schema`` must be a JSON Schema dlg can check answers against; a
  judge's ``scores`` and a loop's ``until`` must name turns that can give them.
- Its templates (``check_templates``): each (the mode's ``system``, a turn's
  ``instruction``, ``prompt`` and ``when``) is parsed; every variable it reads must be an
  input or a name every template has, every turn it reads must be in the turn's
  ``context_from``, and every template it includes must exist.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dlg.errors import Problem
from dlg.language.inherit import Layout
from dlg.language.mode import Mode, Turn
from dlg.language.prune import MALFORMED, is_sound
from dlg.language.sandbox import constant_problem
from dlg.language.templates import RESERVED_NAMES, analyse, environment

if TYPE_CHECKING:
    import pluggy

__all__ = ["check_templates", "context_ids", "repeat_problems", "structured_problems",
           "until_problems"]


def check_templates(
    mode: Mode, layout: Layout, template_line: Callable[..., int | None],
    pm: pluggy.PluginManager | None = None,
) -> list[Problem]:
    from jinja2 import TemplateNotFound, TemplateSyntaxError

    env = environment(mode.template_dirs, pm)
    known_vars = set(mode.inputs) | RESERVED_NAMES
    problems: list[Problem] = []
    order = [t.id for t in mode.turns]

    def field_path(turn: Turn | None, field: str) -> tuple[Any, tuple[Any, ...]]:
        if turn is None:
            return layout.docs[0], (field,)
        doc, path = layout.where(turn.id, field)
        if path[-1:] != (field,):
            path = (*path, field)
        return doc, path

    def check(source: str | None, turn: Turn | None, field: str, *, expression: bool = False
              ) -> None:
        if source is None:
            return
        doc, path = field_path(turn, field)
        label = f"{field} of turn '{turn.id}'" if turn else f"the mode's {field}"
        try:
            refs = analyse(env, source, expression=expression)
        except TemplateSyntaxError as exc:
            line = template_line(doc, path, None if expression else exc.lineno)
            problems.append(Problem(f"{label}: template syntax error: {exc.message}",
                                    file=doc.file, path=_fmt(path), line=line))
            return
        def at(key: str) -> dict[str, Any]:
            line = template_line(doc, path, None if expression else refs.lines.get(key))
            return {"file": doc.file, "path": _fmt(path), "line": line}

        over = constant_problem(env, "{{ (" + source + ") }}" if expression else source)
        if over:
            problems.append(doc.problem(f"{label}: {over}", path))
        for name in refs.includes:
            try:
                env.loader.get_source(env, name)  # type: ignore[union-attr]
            except TemplateNotFound as exc:
                why = exc.message if exc.message and exc.message != name else (
                    f"'{name}', which is not in the mode's folder or in dlg's templates")
                problems.append(doc.problem(f"{label} includes {why}", path))
        for var in sorted(refs.variables - known_vars - set(env.globals)):
            close = difflib.get_close_matches(var, sorted(known_vars), n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    f"inputs: {', '.join(mode.inputs) or 'none'}; declare it under 'inputs'")
            problems.append(Problem(f"{label} uses '{var}', which is not an input or a "
                                    "dialogue variable", hint=hint, **at(var)))
        if turn is None:
            return
        for ref in refs.turns:
            problem = _turn_ref_problem(ref, turn, mode, order)
            if problem:
                problems.append(Problem(f"{label} {problem[0]}", hint=problem[1],
                                        **at(f"turns.{ref}")))

    check(mode.system, None, "system")
    if mode.until.get("condition"):
        check(mode.until["condition"], None, "until", expression=True)
    for turn in mode.turns:
        check(turn.instruction, turn, "instruction")
        check(turn.prompt, turn, "prompt")
        check(turn.when, turn, "when", expression=True)
    return problems


def _turn_ref_problem(ref: str | int, turn: Turn, mode: Mode, order: list[str]
                      ) -> tuple[str, str | None] | None:
    if isinstance(ref, int):
        if not 1 <= ref <= len(order):
            return f"reads turns[{ref}], but the mode has {len(order)} turns", None
        ref_id = order[ref - 1]
    else:
        ref_id = ref
    if ref_id in turn.context_from:
        return None
    if ref_id not in order:
        close = difflib.get_close_matches(ref_id, order, n=1)
        return (f"reads turn '{ref_id}', which does not exist",
                f"did you mean '{close[0]}'?" if close else None)
    other = mode.turn(ref_id)
    if other.index >= turn.index or (other.phase == turn.phase and
                                     _phase(mode, turn.phase).parallel):
        return (f"reads turn '{ref_id}', which has not run yet when '{turn.id}' runs",
                "a turn can only read turns that finish before it starts")
    return (f"reads turn '{ref_id}', which is not in its context_from",
            f"add '{ref_id}' to context_from")


def _phase(mode: Mode, phase_id: str) -> Any:
    return next(p for p in mode.phases if p.id == phase_id)


def _fmt(path: tuple[Any, ...]) -> str:
    from dlg.language.source import format_path

    return format_path(path)


def context_ids(
    spec: Any, turn_id: str, order: list[str], phase_of: dict[str, int],
    phases: list[dict[str, Any]], problems: list[Problem], where: Any,
) -> tuple[str, ...]:
    pos = order.index(turn_id)
    my_phase = phase_of[turn_id]
    parallel = phases[my_phase]["structure"] == "parallel"
    # in a loop, a turn reads its phase's turns as of the round before (itself included)
    loop = bool(phases[my_phase].get("repeat"))

    def readable(other: str) -> bool:
        if phase_of[other] < my_phase:
            return True
        return phase_of[other] == my_phase and (
            loop or (not parallel and order.index(other) < pos))

    if spec == "all":
        if loop:
            return tuple(t for t in order if readable(t))
        # each of order[:pos] is before it: no need to look its place up (a mode of
        # thousands of turns)
        return tuple(t for t in order[:pos] if phase_of[t] < my_phase or (
            phase_of[t] == my_phase and not parallel))
    if spec == "none":
        return ()
    if spec == "previous":
        if not parallel and pos > 0 and phase_of[order[pos - 1]] == my_phase:
            return (order[pos - 1],)
        # the first turn of a loop also reads its phase's last turn (the round before)
        own = (phases[my_phase]["turns"][-1]["id"],) if loop and not parallel else ()
        if my_phase == 0:
            return own
        prev = phases[my_phase - 1]
        ids = [t["id"] for t in prev["turns"]]
        return (*(ids if prev["structure"] == "parallel" else ids[-1:]), *own)

    out: list[str] = []
    for i, ref in enumerate(spec):
        if ref is MALFORMED:  # its shape was wrong, and that is reported
            continue
        if isinstance(ref, float):  # 2.0 is an integer to JSON Schema: turn 2
            ref = int(ref)
        doc, path = where(turn_id, "context_from")
        ref_path = (*path, i) if path and path[-1] == "context_from" else (
            *path, "context_from", i)
        if isinstance(ref, int):
            if not 1 <= ref <= len(order):
                problems.append(doc.problem(
                    f"turn {ref} does not exist (this mode has {len(order)} turns)", ref_path))
                continue
            ref_id = order[ref - 1]
        else:
            ref_id = ref
        if ref_id not in phase_of:
            close = difflib.get_close_matches(ref_id, order, n=1)
            problems.append(doc.problem(
                f"context_from names turn '{ref_id}', which does not exist", ref_path,
                hint=f"did you mean '{close[0]}'?" if close else None))
        elif ref_id == turn_id and not loop:
            problems.append(doc.problem(
                f"turn '{turn_id}' cannot read itself", ref_path,
                hint="only a turn in a repeating phase reads itself (its previous round)"))
        elif phase_of[ref_id] == my_phase and parallel and not loop:
            problems.append(doc.problem(
                f"turn '{turn_id}' runs in parallel with '{ref_id}' (phase "
                f"'{phases[my_phase]['id']}') and cannot read it",
                ref_path, hint="move one of them to an earlier phase"))
        elif not readable(ref_id):
            problems.append(doc.problem(
                f"turn '{turn_id}' reads '{ref_id}', which has not run yet when "
                f"'{turn_id}' runs", ref_path))
        elif ref_id not in out:
            out.append(ref_id)
    return tuple(out)


def structured_problems(turn: Turn, order: list[str], phase_of: dict[str, int],
                         layout: Layout) -> list[Problem]:
    """An ``output.schema`` that is no JSON Schema; ``scores`` naming turns that have not
    run when the judge runs."""
    out = []
    # jsonschema is imported only here: a cached mode loads without it
    if turn.output and "schema" in turn.output:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        from dlg.running.answer_schema import unsupported

        try:
            Draft202012Validator.check_schema(turn.output.get("schema"))
            why = unsupported(turn.output.get("schema"))
        except SchemaError as exc:
            why = f"is not a valid JSON Schema: {exc.message}"
        else:
            why = why and f"cannot be used: {why}"
        if why:
            doc, path = layout.where(turn.id, "output")
            out.append(doc.problem(f"output.schema of turn '{turn.id}' {why}", path))
    for i, ref in enumerate(turn.scores):
        if not is_sound(ref):  # its shape was wrong, and that is reported
            continue
        if ref not in phase_of or order.index(ref) >= order.index(turn.id) or (
                phase_of[ref] == phase_of[turn.id] and
                layout.phases[phase_of[ref]]["structure"] == "parallel"):
            doc, path = layout.where(turn.id, "scores")
            where = (*path, i) if path[-1:] == ("scores",) else (*path, "scores", i)
            out.append(doc.problem(
                f"turn '{turn.id}' scores '{ref}', which is not a turn that has run by then",
                where, hint="a judge scores turns of earlier phases, or earlier in its own"))
    return out


def until_problems(mode: Mode, layout: Layout) -> list[Problem]:
    """A mode's ``until.judge`` must be a turn with an output schema; ``patience``,
    ``min_turns`` and ``embeddings`` need something to stop on."""
    until = mode.until
    doc, out = layout.docs[0], _pointless(until, "until", layout.docs[0], ("until",))
    if until.get("judge") is not None:
        order = [t.id for t in mode.turns]
        judge = next((t for t in mode.turns if t.id == until["judge"]), None)
        if judge is None or not judge.output:
            close = difflib.get_close_matches(until["judge"], order, n=1)
            out.append(doc.problem(
                f"until.judge names '{until['judge']}', which is "
                + ("not a turn" if judge is None else "a turn without an output schema"),
                ("until", "judge"), hint=(
                    "give it output: {schema: ...} with a boolean converged" if judge
                    else f"did you mean '{close[0]}'?" if close else "name a judging turn")))
    return out


def _pointless(until: dict[str, Any], name: str, doc: Any, where: tuple[Any, ...]
               ) -> list[Problem]:
    """``patience`` without similarity, score or judge to hold, ``embeddings`` without
    similarity, ``min_rounds``/``min_turns`` with nothing to stop on: each a mistake."""
    kinds = ("similarity", "score", "judge") if name == "repeat.until" else (
        "similarity", "judge")
    signals = ", ".join(kinds[:-1]) + f" or {kinds[-1]}"
    stops = ", ".join(kinds) + " or condition"
    needs = {"patience": (kinds, signals), "embeddings": (("similarity",), "similarity"),
             "confirm": (("similarity", "score"), "similarity or score"),
             "unless": (kinds, signals),
             "min_rounds": ((*kinds, "condition"), stops),
             "min_turns": ((*kinds, "condition"), stops)}
    out = []
    for key, (keys, wanted) in needs.items():
        if until.get(key) is not None and all(until.get(k) is None for k in keys):
            out.append(doc.problem(
                f"{name}.{key} has nothing to apply to: {name} has no {wanted}",
                (*where, key), hint=f"add {wanted} to {name}, or remove {key}"))
    return out


def repeat_problems(phase: dict[str, Any], repeat: dict[str, Any], turns: list[Turn],
                     layout: Layout) -> list[Problem]:
    """A loop's ``until.turn``, ``until.judge`` and ``until.confirm`` must be its turns;
    ``until.score``, ``until.judge`` and ``until.confirm`` need a turn with an output
    schema to read; ``confirm`` runs after the turn it confirms, in a sequential phase;
    ``min_rounds`` and ``patience`` must fit in ``max_rounds``."""
    until = repeat.get("until") or {}
    ids = [t.id for t in turns]
    doc, path = layout.where(ids[0])
    where = (*path[:-2], "repeat", "until") if path[-2:-1] == ("turns",) else path
    out = _pointless(until, "repeat.until", doc, where)
    for key in ("turn", "judge", "confirm"):
        if until.get(key) is not None and until[key] not in ids:
            close = difflib.get_close_matches(until[key], ids, n=1)
            out.append(doc.problem(
                f"repeat.until.{key} of phase '{phase['id']}' names '{until[key]}', which is "
                "not one of its turns", (*where, key),
                hint=f"did you mean '{close[0]}'?" if close else f"its turns: {', '.join(ids)}"))
    if until.get("judge") in ids and not next(t for t in turns if t.id == until["judge"]).output:
        out.append(doc.problem(
            f"repeat.until.judge of phase '{phase['id']}' reads data.converged of "
            f"'{until['judge']}', which has no output schema", (*where, "judge"),
            hint="give it output: {schema: ...} with a boolean converged"))
    out.extend(_confirm_problems(phase, until, turns, doc, where))
    for key in ("condition", "unless"):
        if isinstance(until.get(key), str):
            from jinja2 import Environment, TemplateSyntaxError

            try:
                Environment().parse("{{ (" + until[key] + ") }}")
            except TemplateSyntaxError as exc:
                out.append(doc.problem(f"repeat.until.{key} of phase '{phase['id']}': "
                                       f"template syntax error: {exc.message}", (*where, key)))
    rounds = int(repeat.get("max_rounds") or 1)
    for key in ("min_rounds", "patience"):
        if int(until.get(key) or 1) > rounds:
            out.append(doc.problem(
                f"repeat.until.{key} of phase '{phase['id']}' is {until[key]}, more than its "
                f"max_rounds {rounds}: the loop could never converge", (*where, key),
                hint=f"at most {rounds}, or raise max_rounds"))
    if until.get("score") is not None and until.get("turn", ids[0]) in ids:
        if until.get("turn") is None:  # the confirm turn is not the one scored
            judged = [t for t in turns if t.output and t.id != until.get("confirm")]
        else:
            judged = [t for t in turns if t.id == until["turn"] and t.output]
        if not judged:
            out.append(doc.problem(
                f"repeat.until.score of phase '{phase['id']}' reads data.score, but no turn "
                "of it has an output schema", (*where, "score"),
                hint="give the judging turn output: {schema: ...} with a score"))
    return out


def _confirm_problems(phase: dict[str, Any], until: dict[str, Any], turns: list[Turn],
                      doc: Any, where: tuple[Any, ...]) -> list[Problem]:
    """``until.confirm`` reads ``data.converged`` of a turn that runs after the turn whose
    similarity or score it confirms, one turn after another (it runs only when they held)."""
    ids = [t.id for t in turns]
    confirm = until.get("confirm")
    if confirm not in ids:
        return []
    name = f"repeat.until.confirm of phase '{phase['id']}'"
    at = (*where, "confirm")
    if not turns[ids.index(confirm)].output:
        return [doc.problem(f"{name} reads data.converged of '{confirm}', which has no output "
                            "schema", at,
                            hint="give it output: {schema: ...} with a boolean converged")]
    if phase.get("structure") == "parallel":
        return [doc.problem(f"{name} needs its turns one after another, but the phase is "
                            "parallel", at, hint="make the phase sequential")]
    if until.get("judge") is not None:
        return [doc.problem(f"{name} and repeat.until.judge both name a judge", at,
                            hint="keep confirm (asked only at a candidate stop) or judge "
                                 "(asked every round)")]
    others = [t for t in turns if t.id != confirm]
    judged = [t.id for t in others if t.output]
    read = [until["turn"]] if until.get("turn") else [
        *([others[-1].id] if until.get("similarity") and others else []),
        *([judged[-1]] if until.get("score") is not None and judged else [])]
    late = [t for t in read if t in ids and ids.index(t) >= ids.index(confirm)]
    if late:
        return [doc.problem(f"{name} names '{confirm}', which does not run after "
                            f"'{late[0]}', the turn it confirms", at,
                            hint=f"put '{confirm}' after '{late[0]}' in the phase")]
    return []
