"""Prompt templates: a sandboxed Jinja environment, static analysis, and render contexts.

Templates render in a ``SandboxedEnvironment`` with ``StrictUndefined``. What a template
may read is known before the dialogue runs (``analyse``), so ``dlg modes validate`` can
catch an unknown variable, or a turn that has not run yet, before anything is paid for.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dlg.errors import ModeError

if TYPE_CHECKING:
    import pluggy
    from jinja2 import Environment

    from dlg.language.mode import Mode, Turn
    from dlg.language.sandbox import BoundedSandbox
    from dlg.records.record import TurnRecord

__all__ = [
    "RESERVED_NAMES",
    "TemplateRefs",
    "TurnView",
    "TurnsView",
    "analyse",
    "compiled",
    "environment",
    "own_templates",
    "static_views",
    "transcript",
    "transcript_ends",
]

# Names every template sees besides the mode's inputs.
RESERVED_NAMES = frozenset(
    {"inputs", "mode", "participants", "participant", "role", "turn", "turns", "context",
     "transcript", "round", "parent"}
)
CONTEXT_NAMES = frozenset({"turns", "context", "transcript"})


@functools.lru_cache(maxsize=32)
def _environment(template_dirs: tuple[str, ...], pm: pluggy.PluginManager) -> BoundedSandbox:
    from importlib.resources import files

    from dlg.language.sandbox import make_environment
    from dlg.running.events import call_hook

    env = make_environment([*template_dirs, str(files("dlg.templates"))])

    call_hook(pm, "prepare_jinja_environment", env=env)
    return env


def environment(template_dirs: tuple[str, ...] = (), pm: pluggy.PluginManager | None = None
                ) -> BoundedSandbox:
    """The Jinja environment for a mode whose own templates live in ``template_dirs``,
    prepared by the plugins of ``pm`` (the process-wide plugin manager if None)."""
    if pm is None:
        from dlg.plugin_manager import get_plugin_manager

        pm = get_plugin_manager()
    return _environment(tuple(template_dirs), pm)


def own_templates(mode: Mode, pm: pluggy.PluginManager | None = None) -> dict[str, str]:
    """The templates a mode includes from its own folders, by name, with their text:
    followed through the templates they include, without dlg's own (every installation
    has those). With ``mode.to_dict()`` this is what another machine needs to run the
    mode (``load_mode(document, base_dir=FOLDER)`` once they are written to FOLDER).
    A template included by a name computed at run time (``{% include name %}``) is not
    known beforehand and is not listed."""
    import os
    from importlib.resources import files

    from jinja2 import TemplateNotFound

    if not mode.template_dirs:
        return {}
    env = environment(mode.template_dirs, pm)
    sources = [mode.system]
    for turn in mode.turns:
        sources += [turn.instruction, turn.prompt, *(turn.spawn.get("inputs") or {}).values()]
    names: dict[str, None] = {}
    for source in sources:
        if isinstance(source, str):
            names.update(dict.fromkeys(analyse(env, source).includes))
    ours = os.path.realpath(str(files("dlg.templates"))) + os.sep
    out = {}
    for name in names:
        try:
            text, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        except TemplateNotFound:  # the loader's checks reported it
            continue
        if not os.path.realpath(str(filename)).startswith(ours):
            out[name] = text
    return out


@dataclass(frozen=True)
class TemplateRefs:
    """What a template reads: free variables, turn references, included templates.

    ``lines`` maps each variable (and each turn reference, as ``turns.X``) to the first
    template line that reads it, so problems can point at the line.
    """

    variables: frozenset[str]
    turns: tuple[str | int, ...]
    includes: tuple[str, ...]
    reads_context: bool
    lines: Mapping[str, int]


def analyse(env: Environment, source: Any, *, expression: bool = False) -> TemplateRefs:
    """Report what a template (source text or parsed AST) reads, with the templates it
    includes (each read once, however the includes loop back).

    Raises ``TemplateSyntaxError`` for source that does not parse.
    """
    if isinstance(source, str):
        ast = env.parse("{{ (" + source + ") }}" if expression else source)
    else:
        ast = source
    variables, turn_refs, includes, lines = _reads(ast)
    # included templates share the context: what they read counts too. ``includes``
    # grows as this goes, so every template reached is read once.
    for name in includes:
        try:
            inc_source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        except Exception:  # reported by the caller as a missing include
            continue
        sub_variables, sub_turns, sub_includes, _ = _reads(env.parse(inc_source))
        variables |= sub_variables
        turn_refs.extend(sub_turns)
        includes.extend(i for i in sub_includes if i not in includes)
    return TemplateRefs(
        variables=frozenset(variables),
        turns=tuple(turn_refs),
        includes=tuple(includes),
        reads_context=bool(variables & CONTEXT_NAMES),
        lines=lines,
    )


def _reads(ast: Any) -> tuple[set[str], list[str | int], list[str], dict[str, int]]:
    """What one parsed template reads itself: its free variables, the turns it names,
    the templates it includes by a fixed name, and the first line of each read."""
    from jinja2 import meta, nodes

    variables = set(meta.find_undeclared_variables(ast))
    includes = list(dict.fromkeys(
        t for t in meta.find_referenced_templates(ast) if t is not None))
    lines: dict[str, int] = {}
    for name_node in ast.find_all(nodes.Name):
        if name_node.name in variables:
            lines.setdefault(name_node.name, name_node.lineno)
    turn_refs: list[str | int] = []
    node: Any
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == "turns"):
            continue
        if isinstance(node, nodes.Getattr):
            ref: str | int = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            ref = node.arg.value
        else:
            continue
        turn_refs.append(ref)
        lines.setdefault(f"turns.{ref}", node.lineno)
    return variables, turn_refs, includes, lines


class TurnView:
    """An earlier turn as a template sees it; ``{{ turns.x }}`` prints its text."""

    __slots__ = ("_rec",)

    def __init__(self, record: TurnRecord):
        self._rec = record

    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def role(self) -> str:
        return self._rec.role

    @property
    def participant(self) -> str | None:
        return self._rec.participant

    @property
    def model(self) -> str | None:
        return self._rec.model

    @property
    def index(self) -> int:
        return self._rec.index

    @property
    def status(self) -> str:
        return self._rec.status

    @property
    def text(self) -> str:
        return self._rec.response or ""

    @property
    def data(self) -> Any:
        """The turn's structured answer (its ``output`` schema), or None."""
        return self._rec.data

    @property
    def skipped(self) -> bool:
        return self._rec.status == "skipped"

    @property
    def round(self) -> int:
        """The round of a turn in a repeating phase (1 outside loops)."""
        return self._rec.round

    @property
    def subdialogues(self) -> list[dict[str, Any]]:
        """The sub-dialogues this turn spawned: id, item, status, answer, cost_usd."""
        return list((self._rec.metadata or {}).get("subdialogues") or ())

    def __str__(self) -> str:
        return self.text

    def __bool__(self) -> bool:
        return self._rec.status == "completed"


class TurnsView(Mapping[str, TurnView]):
    """The turns a template may read, by id (``turns.x``) or 1-based position (``turns[2]``)."""

    __slots__ = ("_by_id", "_by_index")

    def __init__(self, records: list[TurnRecord]):
        # by the mode's turn id: a turn with several rounds is its latest one here
        by_id: dict[str, TurnView] = {}
        by_index: dict[int, TurnView] = {}
        for r in records:
            by_id[r.turn_id] = by_index[r.index] = TurnView(r)
        self._by_id, self._by_index = by_id, by_index

    def __getitem__(self, key: str | int) -> TurnView:
        if isinstance(key, int):
            return self._by_index[key]
        return self._by_id[key]

    def __getattr__(self, key: str) -> TurnView:
        try:
            return self._by_id[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


def _parts(records: list[TurnRecord], summarised: frozenset[str]) -> list[str]:
    parts = []
    for r in records:
        if r.status != "completed":
            continue
        who = f"{r.role} ({r.participant})" if r.participant else r.role
        summary = (r.metadata or {}).get("summary") if r.id in summarised else None
        if summary:
            parts.append(f"### {who} (summary)\n{summary}")
        else:
            parts.append(f"### {who}\n{(r.response or '').strip()}")
    return parts


def transcript(records: list[TurnRecord], summarised: frozenset[str] = frozenset()) -> str:
    """The earlier turns a turn reads, as one block of text; those in ``summarised`` by
    their summary (``metadata["summary"]``). Each turn's part is the same bytes in every
    later turn's transcript (no times, no counts), so the next turn's prompt starts with
    this one's and a provider's prefix cache hits."""
    return "\n\n".join(_parts(records, summarised))


def transcript_ends(records: Any, summarised: frozenset[str] = frozenset()
                    ) -> tuple[int, ...]:
    """Where each turn's part of ``transcript(records, summarised)`` ends, as offsets in
    it (dlg.models.caching): worked out when a provider asks, not for every turn."""
    ends, end = [], -2
    for part in _parts(list(records), summarised):
        end += 2 + len(part)
        ends.append(end)
    return tuple(ends)


def _template(env: Any, ast: Any) -> Any:
    """A compiled template that knows whether it loops: one that does not can render
    without the loop and output budgets (its output is bounded by its inputs)."""
    from jinja2 import nodes

    template = env.from_string(ast)
    template.dlg_loops = ast.find(nodes.For) is not None
    template.dlg_globals = frozenset(template.globals)  # Jinja makes this set per render
    return template


def compiled(mode: Mode, env: Any, turn: Turn) -> dict[str, Any]:
    """A turn's compiled templates, compiled on first use and kept on the mode."""
    cache: dict[str, Any] = mode._compiled.setdefault("templates", {})
    if cache.get("env") != id(env):
        cache.clear()
        cache["env"] = id(env)
    entry: dict[str, Any] | None = cache.get(turn.id)
    if entry is not None:
        return entry
    try:
        if "system" not in cache:
            if mode.system:
                ast = env.parse(mode.system)
                cache["system"] = (_template(env, ast), analyse(env, ast).variables)
            else:
                cache["system"] = (None, frozenset())
        system, needs = cache["system"]
        needs = set(needs)
        instruction = None
        if turn.instruction:
            ast = env.parse(turn.instruction)
            instruction = _template(env, ast)
            needs |= analyse(env, ast).variables
        ast = env.parse(turn.prompt)
        prompt_refs = analyse(env, ast)
        needs |= prompt_refs.variables
        when = None
        if turn.when:
            when = env.compile_expression(turn.when)
            needs |= analyse(env, turn.when, expression=True).variables
        auto = bool(turn.context_from) and not prompt_refs.reads_context
        if auto:
            needs.add("transcript")
        entry = {
            "system": system,
            "instruction": instruction,
            "prompt": _template(env, ast),
            "when": when,
            "auto_transcript": auto,
            "last": turn is mode.turns[-1],  # no turn after it (outside loops)
            "needs": frozenset(needs & CONTEXT_NAMES),
            # positions (in dialogue.turns) of the records this turn reads, when each
            # turn has one record (no loops)
            "reads": tuple(mode.turn(i).index - 1 for i in turn.context_from),
        }
    except Exception as exc:  # validated modes do not get here; dict-built ones might
        raise ModeError(
            f"mode '{mode.name}', turn '{turn.id}': a template does not compile: {exc}"
        ) from exc
    cache[turn.id] = entry
    return entry


def static_views(mode: Mode, labels: Mapping[str, Any]) -> dict[str, Any]:
    """The ``mode`` and ``participants`` template variables; the same for every dialogue
    of a mode with the same model labels, so they are built once."""
    key = ("views", tuple(labels.items()))
    views = mode._compiled.get(key)
    if views is None:
        views = mode._compiled[key] = {
            "mode": {"name": mode.name, "description": mode.description},
            "participants": {
                alias: {"alias": alias, "model": labels.get(alias),
                        "description": p.description}
                for alias, p in mode.participants.items()
            },
        }
    return views


def turn_context(base: Mapping[str, Any], turn: Any, readable: list[TurnRecord],
                 needs: frozenset[str], summarised: frozenset[str] = frozenset(),
                 round: int = 1) -> dict[str, Any]:
    """What a turn's templates see: ``base`` (inputs, mode, participants), the turn (in
    ``round``), and the earlier turns it reads (``readable``), built only if its
    templates use them (``needs``)."""
    ctx = {
        **base,
        "turn": {"id": turn.id, "role": turn.role, "index": turn.index,
                 "participant": turn.participant, "round": round},
        "participant": turn.participant,
        "role": turn.role,
        "round": round,
    }
    if needs:
        if needs & {"turns", "context"}:
            view = TurnsView(readable)
            ctx["turns"] = view
            ctx["context"] = [v for v in view.values() if v.status == "completed"]
        if "transcript" in needs:
            ctx["transcript"] = transcript(readable, summarised) if readable else ""
    return ctx
