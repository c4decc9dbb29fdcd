"""Sub-dialogues: a turn with ``spawn`` runs a child mode for each item of its answer.

```yaml
- id: decompose
  role: Planner
  output: {schema: {type: object, properties: {subtopics: {type: array}}}}
  spawn: {mode: debate, for_each: data.subtopics, concurrency: 3}
```

When the turn has answered, its items are worked out (``for_each``, else the answer's
data when it is a list, else its only list, else its non-empty lines), at most
``max_children`` of them. Each becomes a child dialogue at depth + 1, with its own id,
saved as its own record and linked both ways: the child's ``metadata["parent"]`` names
the parent, its turn, the item and the depth, and holds what the child inherits (the
parent's inputs, the spawning turn's answer and the parent's transcript: the ``parent``
template variable); the turn's ``metadata["subdialogues"]`` lists the children with
their status, answer and cost (templates: ``turns.ID.subdialogues``).

The plan is saved before any child starts, so a crash never re-pays the spawning turn:
resuming the parent resumes each unfinished child (its completed turns kept) and keeps
the finished ones. Children share the parent's budget (one hard limit for the tree);
a child resumed on its own is limited to what was left when it was spawned. Children run
``concurrency`` at a time; at ``max_depth`` (the mode's, default 2) a spawning turn
answers without spawning.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dlg.errors import DlgError
from dlg.records.record import ENDED
from dlg.running.budget import tree_spent  # the one ledger's; kept importable here

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Store
    from dlg.language.mode import Mode
    from dlg.records.record import Dialogue

__all__ = ["DEFAULT_DEPTH", "ENDED", "Children", "Parent", "Spawner", "child_summary",
           "mode_folder", "plan_children", "spawned_files", "tree_spent"]

DEFAULT_DEPTH = 2
DEFAULT_CONCURRENCY = 4
DEFAULT_CHILDREN = 8
INHERITED_CHARS = 16_000  # the most of the parent's transcript a child inherits
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def items_of(turn: Any, data: Any, text: str, env: Any, base: dict[str, Any]) -> list[Any]:
    """The items a spawning turn's answer names; see the module docstring."""
    spec = turn.spawn
    if spec.get("for_each"):
        try:
            value = env.compile_expression(spec["for_each"])(
                **{**base, "data": data, "text": text})
        except Exception as exc:
            raise DlgError(f"spawn.for_each '{spec['for_each']}' of turn '{turn.id}' "
                           f"cannot be evaluated on its answer: {exc}") from None
    elif isinstance(data, list):
        value = data
    elif isinstance(data, dict) and sum(isinstance(v, list) for v in data.values()) == 1:
        value = next(v for v in data.values() if isinstance(v, list))
    else:
        value = [_BULLET.sub("", line).strip() for line in text.splitlines()]
        value = [v for v in value if v]
    if not isinstance(value, list | tuple):
        raise DlgError(f"spawn.for_each of turn '{turn.id}' gave {type(value).__name__}, "
                       "not a list of items")
    return list(value)


def child_inputs(turn: Any, child_mode: Any, item: Any, index: int, data: Any, text: str,
                 env: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """A child's inputs: ``spawn.inputs`` rendered, else the item (a mapping gives the
    inputs it names; anything else goes to the first required input, else ``topic``)."""
    from dlg.language.sandbox import render

    templates = turn.spawn.get("inputs")
    if templates:
        ctx = {**inputs, "inputs": inputs, "item": item, "index": index, "data": data,
               "text": text}
        return {name: render(env.from_string(source), ctx).strip()
                for name, source in templates.items()}
    if isinstance(item, dict):
        return {k: v for k, v in item.items() if k in child_mode.inputs}
    required = [n for n, i in child_mode.inputs.items() if i.required]
    name = required[0] if required else "topic"
    return {name: item if isinstance(item, str) else str(item)} if (
        name in child_mode.inputs) else {}


def plan_children(turn: Any, rec: Any, child_mode: Any, env: Any, base: dict[str, Any],
                  inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The children a spawning turn's answer asks for: id, item and inputs each."""
    from dlg.records.stamps import new_dialogue_id
    from dlg.running.inputs import prepare_inputs

    text = rec.response or ""
    items = items_of(turn, rec.data, text, env, base)
    limit = int(turn.spawn.get("max_children") or DEFAULT_CHILDREN)
    entries = []
    for index, item in enumerate(items[:limit]):
        given = child_inputs(turn, child_mode, item, index, rec.data, text, env, inputs)
        entries.append({"id": new_dialogue_id(), "item": item,
                        "inputs": prepare_inputs(child_mode, given), "status": "pending"})
    if len(items) > limit:
        rec.metadata = {**(rec.metadata or {}),
                        "spawn_left_out": len(items) - limit}
    return entries


def child_summary(child: Any) -> dict[str, Any]:
    """What the parent's turn keeps of a child: status, answer, cost (with the child's
    own children), turns, and its children's summaries."""
    done = [t for t in child.turns if t.status == "completed"]
    nested = [e for t in child.turns for e in (t.metadata or {}).get("subdialogues") or ()]
    return {"mode": child.mode, "status": child.status,
            "answer": done[-1].response if done else None,
            "cost_usd": round(tree_spent(child), 10),
            "turns": len(done), "error": child.error,
            **({"children": nested} if nested else {})}


class Spawner:
    """Runs the children of spawning turns for one orchestrator; see the module docstring.

    ``open_child(mode, entry, index, parent, turn, budget, transcript)`` gives a new
    child ``Dialogue`` (``transcript``: what it inherits of the parent's, made once for
    a turn's children rather than once per child: it reads the whole parent);
    ``reopen_child(id)`` a saved child ready to continue (mode and dialogue; no mode
    if it had ended), or None if it was never saved; ``execute(mode, dialogue, budget)``
    runs one.
    """

    def __init__(self, *, open_child: Callable[..., Any], reopen_child: Callable[..., Any],
                 execute: Callable[..., Any], load_mode: Callable[[str, Any], Any]):
        self.open_child = open_child
        self.reopen_child = reopen_child
        self.execute = execute
        self.load_mode = load_mode
        self._inherits: tuple[tuple[Any, ...], str] | None = None  # (key, transcript)

    def inherited_text(self, parent: Any, turn: Any) -> str:
        """``inherited_text``, made again only when what it reads of the parent changed
        (a turn of a parallel phase completed while children waited to start)."""
        key = _transcript_key(parent, turn)
        if self._inherits is None or self._inherits[0] != key:
            self._inherits = (key, inherited_text(parent, turn))
        return self._inherits[1]

    def child_mode(self, parent_mode: Any, turn: Any) -> Any:
        ref = turn.spawn["mode"]
        return parent_mode if ref == "self" else self.load_mode(ref, parent_mode)

    async def run(self, parent_mode: Any, parent: Any, turn: Any, rec: Any,
                  child_mode: Any, budget: Any, *, new: bool = False) -> list[Any]:
        """Run (or continue) every child of ``rec``; update their entries in place.
        Returns the children's dialogues, in the plan's order. ``new``: the plan was made
        in this run, so no child was ever saved (none is looked for in the store: a thread
        hop per child, which many children at once queue for)."""
        import anyio

        entries: list[dict[str, Any]] = rec.metadata["subdialogues"]
        limiter = anyio.CapacityLimiter(int(turn.spawn.get("concurrency")
                                            or DEFAULT_CONCURRENCY))
        children: list[Any] = [None] * len(entries)

        async def one(i: int, entry: dict[str, Any]) -> None:
            async with limiter:
                reopened = None if new else await anyio.to_thread.run_sync(
                    self.reopen_child, entry["id"])
                if reopened is not None:
                    mode, child = reopened
                    if mode is None:  # it had ended: nothing to run
                        children[i] = child
                        entry.update(child_summary(child))
                        return
                    if budget is not None and entry.get("cost_usd") is None:
                        # it was cut short before its parent learnt its cost: count
                        # what it spent against the shared limit now
                        budget.spent += tree_spent(child)
                else:
                    mode = child_mode
                    child = self.open_child(mode, entry, i, parent, rec, budget,
                                            self.inherited_text(parent, rec))
                try:
                    child = await self.execute(mode, child, budget)
                except DlgError as exc:  # the child could not run: the turn says why
                    child.status, child.error = "failed", str(exc)
                children[i] = child
                entry.update(child_summary(child))

        try:
            async with anyio.create_task_group() as tg:
                for i, entry in enumerate(entries):
                    tg.start_soon(one, i, entry)
        finally:
            self._inherits = None  # the parent's text is not kept past its children
        return children


def inherited(parent: Any, turn_rec: Any, depth: int, entry: dict[str, Any],
              index: int, text: str | None = None) -> dict[str, Any]:
    """What a child knows of its parent (``metadata["parent"]``; the ``parent`` template
    variable): ids, depth, the item, the parent's inputs, the spawning turn's answer and
    the end of the parent's transcript (``text``: ``inherited_text``'s, when known)."""
    return {"id": parent.id, "mode": parent.mode, "turn": turn_rec.id, "depth": depth,
            "index": index, "item": entry["item"], "inputs": dict(parent.inputs),
            "text": turn_rec.response or "", "data": turn_rec.data,
            "transcript": inherited_text(parent, turn_rec) if text is None else text}


def inherited_text(parent: Any, turn_rec: Any) -> str:
    """The end of the parent's transcript a child inherits: its completed turns, then the
    spawning turn's answer, at most ``INHERITED_CHARS``."""
    from dlg.language.templates import transcript

    earlier = transcript([t for t in parent.turns if t is not turn_rec])
    own = f"### {turn_rec.role}\n{(turn_rec.response or '').strip()}"
    text = f"{earlier}\n\n{own}" if earlier else own
    return text[-INHERITED_CHARS:]


def _transcript_key(parent: Any, turn_rec: Any) -> tuple[Any, ...]:
    """What ``inherited_text`` reads of the parent: equal keys, the same text. (Its
    strings compare by identity first: a pass over the turns, no text built.)"""
    return (parent.id, turn_rec, turn_rec.role, turn_rec.response,
            *((t.role, t.participant, t.response) for t in parent.turns
              if t.status == "completed" and t is not turn_rec))


class Parent(Protocol):
    """What ``Children`` needs of the orchestrator that runs the parent: starting,
    reopening and running a dialogue with its models, store and plugins."""

    @property
    def plugin_manager(self) -> pluggy.PluginManager: ...
    def start(self, mode: Any, /, inputs: Any = None, *,
              dialogue_id: str | None = None, **more_inputs: Any) -> tuple[Mode, Dialogue]: ...
    def open_store(self) -> Store | None: ...
    def reopen(self, record: dict[str, Any], saved: Dialogue, force: bool = False
               ) -> tuple[Mode, Dialogue]: ...
    def execute(self, mode: Mode, dialogue: Dialogue, *, budget: Any = None
                ) -> Awaitable[Dialogue]: ...


class Children:
    """The sub-dialogues of spawning turns for one orchestrator (``dlg.Orchestrator``
    owns one): made, reopened, run and their modes found with the parent's models, store
    and plugins."""

    def __init__(self, parent: Parent) -> None:
        self._parent = parent

    def spawner(self) -> Spawner:
        """What runs sub-dialogues for a dialogue (``spawn:`` turns)."""
        return Spawner(open_child=self._open_child, reopen_child=self._reopen_child,
                       execute=self._execute_child, load_mode=self._child_mode)

    def _open_child(self, mode: Any, entry: dict[str, Any], index: int, parent: Any,
                    turn: Any, budget: Any, transcript: str | None = None) -> Any:
        _, child = self._parent.start(mode, entry["inputs"], dialogue_id=entry["id"])
        child.metadata["depth"] = parent.depth + 1
        child.metadata["parent"] = inherited(parent, turn, parent.depth + 1, entry, index,
                                             transcript)
        if budget is not None:  # resumed on its own, a child may spend what was left
            child.metadata["budget_limit"] = round(budget.limit - budget.spent, 10)
        return child

    def _reopen_child(self, dialogue_id: str) -> tuple[Any | None, Any] | None:
        """A saved child ready to continue (with no mode if it had ended), or None if it
        was never saved."""
        from dlg.records.store import as_dialogue

        store = self._parent.open_store()
        record = store.load(dialogue_id) if store is not None else None
        if record is None:
            return None
        saved = as_dialogue(record)
        if saved.status in ENDED:
            return None, saved
        return self._parent.reopen(record, saved)

    async def _execute_child(self, mode: Any, child: Any, budget: Any) -> Any:
        return await self._parent.execute(mode, child, budget=budget)

    def _child_mode(self, ref: str, parent: Any) -> Any:
        """A spawned mode: a name, or a path inside the parent mode's folder."""
        from dlg.language.limits import confined
        from dlg.language.loader import load_mode
        from dlg.language.source import is_path_like

        folder = mode_folder(parent) if is_path_like(ref) else None
        if folder is not None:
            found = confined(folder, ref, [folder])
            if found is None:
                raise DlgError(f"spawn.mode '{ref}' of mode '{parent.name}' is not a file "
                               f"inside {folder} (a spawned mode is named relative to the "
                               "mode's folder, without '..')")
            return load_mode(found, pm=self._parent.plugin_manager)
        return load_mode(ref, pm=self._parent.plugin_manager)


def mode_folder(mode: Any) -> Path | None:
    """The folder a mode's spawned modes are named from: its own (a file's folder, or
    the ``base_dir`` a document was loaded with; the first of its template folders),
    else its file's, else None (a document loaded without a folder)."""
    from dlg.language.source import reloadable

    if mode.template_dirs:
        return Path(mode.template_dirs[0])
    if reloadable(mode.source):
        return Path(mode.source).parent
    return None


def spawned_files(mode: Mode, pm: pluggy.PluginManager | None = None, *, _prefix: str = "",
                  _seen: set[str] | None = None) -> dict[str, str]:
    """The modes a mode's turns spawn by path, as standalone documents (JSON text) by
    their paths from the mode's folder, with the templates each includes from its own
    folder and, in turn, the modes it spawns: with ``mode.to_dict()`` and
    ``own_templates(mode)``, what another machine needs to run the whole tree. A path
    that leads out of the folder, or does not load, is left for the spawning turn to
    report."""
    import json
    from pathlib import PurePosixPath

    from dlg.errors import ModeError
    from dlg.language.limits import confined
    from dlg.language.loader import load_mode
    from dlg.language.source import is_path_like
    from dlg.language.templates import own_templates

    seen = set() if _seen is None else _seen
    folder = mode_folder(mode)
    out: dict[str, str] = {}
    for turn in mode.turns:
        ref = turn.spawn.get("mode")
        if folder is None or not isinstance(ref, str) or not is_path_like(ref):
            continue
        found = confined(folder, ref, [folder])
        if found is None or str(found) in seen:
            continue
        seen.add(str(found))
        try:
            child = load_mode(found, pm=pm)
        except ModeError:
            continue
        where = PurePosixPath(_prefix, found.relative_to(folder.resolve()).as_posix())
        out[str(where)] = json.dumps(child.document, ensure_ascii=False)
        for name, text in own_templates(child, pm).items():
            out[str(where.parent / name)] = text
        out.update(spawned_files(child, pm, _prefix=str(where.parent), _seen=seen))
    return out
