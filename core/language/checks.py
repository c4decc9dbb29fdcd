"""Static checks on a mode's templates, run by the loader before anything is paid for.

Each template (the mode's ``system``, a turn's ``instruction``, ``prompt`` and ``when``) is
parsed; every variable it reads must be an input or a name every template has, every turn
it reads must be in the turn's ``context_from``, and every template it includes must exist.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from dlg.errors import Problem
from dlg.language.inherit import Layout
from dlg.language.mode import Mode, Turn
from dlg.language.sandbox import constant_problem
from dlg.language.templates import RESERVED_NAMES, analyse, environment

__all__ = ["check_templates"]


def check_templates(
    mode: Mode, layout: Layout, template_line: Callable[..., int | None], pm: Any = None
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
