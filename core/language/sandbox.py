"""The sandbox prompts render in: Jinja's ``SandboxedEnvironment`` with a budget.

Jinja's sandbox stops a template from reaching Python internals; it does not stop one from
using all the memory or time there is. A mode's templates are hostile input, so here:

- files are read only from the template folders, symlinks resolved (``ConfinedLoader``),
  regular files up to ``limits.MAX_FILE_BYTES``;
- every ``{% for %}`` loop draws on one budget per render (``MAX_LOOP_STEPS``), so nested
  loops cannot run for hours;
- ``*``, ``**`` and ``%`` are checked before they run (no ``'a' * 10**9``, no
  ``10**10**10``, no ``'%999999999s'``), which also stops Jinja from folding such a
  constant while it compiles; calls and filters get no number over ``MAX_SIZE``;
- a render stops once its output passes ``MAX_OUTPUT`` characters.

Breaking a bound raises ``jinja2.exceptions.SecurityError`` with a message that says which
bound; the kernel records it as the turn's error, the loader as a mode problem.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, TemplateNotFound, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from dlg.language.limits import MAX_FILE_BYTES, LimitError, read_text

__all__ = [
    "MAX_LOOP_STEPS",
    "MAX_OUTPUT",
    "MAX_SIZE",
    "BoundedSandbox",
    "ConfinedLoader",
    "constant_problem",
    "make_environment",
    "render",
]

MAX_LOOP_STEPS = 100_000  # loop iterations in one render, all loops together
MAX_OUTPUT = 2_000_000  # characters one render may produce
MAX_SIZE = 1_000_000  # the largest string/list a * may build, and number a call may get
_HUGE_FORMAT = re.compile(r"\d{7,}")  # a width or precision of millions
_steps: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "dlg_render_steps", default=None)


class ConfinedLoader(FileSystemLoader):
    """A ``FileSystemLoader`` that never reads outside its folders: ``..`` is refused
    by Jinja itself, and symlinks that lead out are refused here."""

    def __init__(self, searchpath: list[str]):
        super().__init__(searchpath)
        self._roots = [os.path.realpath(p) for p in self.searchpath]

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
        _, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        if not any(real == root or real.startswith(root + os.sep) for root in self._roots):
            raise TemplateNotFound(
                template, f"'{template}' leads outside the mode's folder and dlg's templates")
        try:
            source = read_text(Path(real), limit=MAX_FILE_BYTES)
        except (LimitError, OSError, UnicodeDecodeError) as exc:
            raise TemplateNotFound(template, f"'{template}' cannot be read: {exc}") from None
        return source, filename, uptodate


def _loop(iterable: Any) -> Iterator[Any]:
    """Wraps every ``for`` loop's iterable: each step spends one unit of the budget."""
    budget = _steps.get()
    if budget is None:  # rendering outside ``render``: a budget for this loop alone
        budget = [MAX_LOOP_STEPS]
    for item in iterable:
        budget[0] -= 1
        if budget[0] < 0:
            raise SecurityError(f"the template's loops ran more than {MAX_LOOP_STEPS:,} "
                                "steps")
        yield item


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
        raise SecurityError(f"{what} {value} is over the template limit of {MAX_SIZE:,}")


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with dlg's budget; see the module docstring."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for node in tree.find_all(nodes.For):
            node.iter = nodes.Call(nodes.Name("__dlg_loop", "load"), [node.iter], [],
                                   None, None, lineno=node.lineno)
            node.iter.set_environment(self)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                n = _sized(seq)
                if n is not None and isinstance(times, int) and n * times > MAX_SIZE:
                    raise SecurityError(f"'*' would build {n * times:,} items; the template "
                                        f"limit is {MAX_SIZE:,}")
            if isinstance(left, int) and isinstance(right, int) and (
                    left.bit_length() + right.bit_length() > 4096):
                raise SecurityError("'*' on numbers this large is not allowed in templates")
        elif operator == "**":
            if isinstance(right, int | float) and abs(right) > 1024 and (
                    not isinstance(left, int | float) or abs(left) > 1):
                raise SecurityError(f"'**' with an exponent of {right} is not allowed in "
                                    "templates")
        elif operator == "%" and isinstance(left, str) and _HUGE_FORMAT.search(left):
            raise SecurityError("a format width or precision of millions is not allowed")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_number(value, "the number")
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(method, "__self__", None)
        if getattr(method, "__name__", "") in ("format", "format_map") and isinstance(
                owner, str) and _HUGE_FORMAT.search(owner):
            raise SecurityError("a format width or precision of millions is not allowed")
        return super().call(__context, __obj, *args, **kwargs)


def _bounded_filter(fn: Any) -> Any:
    @functools.wraps(fn)  # keeps Jinja's pass_environment/pass_context marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_number(value, "the number")
        return fn(*args, **kwargs)

    return bounded


class _NotConstant(Exception):
    pass


def constant_problem(env: BoundedSandbox, source: str) -> str | None:
    """Why a constant expression in ``source`` breaks the budget (``{{ 'a' * 10**9 }}``),
    found without running the template; None if none does."""
    def value(node: nodes.Node) -> Any:
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.BinExpr):
            return env.call_binop(None, node.operator, value(node.left), value(node.right))
        raise _NotConstant

    for node in env.parse(source).find_all(nodes.BinExpr):
        try:
            value(node)
        except SecurityError as exc:
            return str(exc)
        except Exception:  # not constant, or an error the template will meet when it runs
            continue
    return None


def make_environment(folders: list[str]) -> BoundedSandbox:
    """A bounded sandbox reading templates from ``folders`` (in order)."""
    from jinja2 import StrictUndefined

    env = BoundedSandbox(
        loader=ConfinedLoader(folders),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["__dlg_loop"] = _loop
    for name in ("center", "indent", "wordwrap", "truncate", "format", "batch", "slice"):
        if name in env.filters:
            env.filters[name] = _bounded_filter(env.filters[name])
    return env


def render(template: Any, context: dict[str, Any]) -> str:
    """``template.render(**context)`` within the loop and output budgets (a template
    marked ``dlg_loops = False`` has no loop, so it renders directly: its arithmetic and
    calls are still checked, and its output is bounded by its inputs). Templates that
    include one another without end (or macros that call themselves) are an error that
    says so."""
    try:
        return _render(template, context)
    except RecursionError:
        raise SecurityError(
            "the template nests too deep: it includes itself, directly or through other "
            "templates, or a macro calls itself, without end") from None


def _render(template: Any, context: dict[str, Any]) -> str:
    if not getattr(template, "dlg_loops", True):
        if "__dlg_loop" not in context:  # the globals are not in it: Jinja adds them
            return str(template.render(**context))
        # the caller put the globals in (once per dialogue): render on the context as
        # it is, without Jinja copying the globals and the context for every render
        # (``new_context(context, shared=True)``, with the set of the globals' names made
        # once per template)
        env = template.environment
        try:
            ctx = env.context_class(env, context, template.name, template.blocks)
            ctx.globals_keys = getattr(template, "dlg_globals", None) or set(template.globals)
            return str(env.concat(template.root_render_func(ctx)))
        except Exception:
            return str(template.environment.handle_exception())
    token = _steps.set([MAX_LOOP_STEPS])
    try:
        size = 0
        parts = []
        for piece in template.generate(**context):
            size += len(piece)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the template produced more than {MAX_OUTPUT:,} "
                                    "characters")
            parts.append(piece)
        return "".join(parts)
    finally:
        _steps.reset(token)
