"""Mode inheritance: ``extends``, ``overrides``, ``add`` and ``remove``.

Works on raw documents (schema-valid, or their sound part: see ``prune``; a turn or
phase whose shape was wrong is read with defaults) and produces a ``Layout``: the merged
top-level keys, the phases with their turn dictionaries, and where each turn was defined,
so later errors can point at the right file and line.

Order of application for a child mode: top-level keys are deep-merged over the parent's,
then ``remove``, then ``add``, then ``overrides``. A child that gives ``turns`` or
``phases`` replaces the parent's structure entirely.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlg.errors import ModeError, Problem
from dlg.language.prune import MALFORMED
from dlg.language.source import PathT, SourceDoc, format_path

__all__ = ["META_KEYS", "Layout", "deep_merge", "resolve"]

META_KEYS = ("name", "description", "inputs", "participants", "system", "settings", "timeout",
             "models", "router", "constraints", "context_compression", "max_context_tokens",
             "until", "max_turns", "max_depth")
_MERGED_META = ("inputs", "participants", "settings", "models", "constraints")


def deep_merge(base: Any, patch: Any) -> Any:
    """Dicts merge key by key; anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(patch)


@dataclass
class Layout:
    meta: dict[str, Any]
    phases: list[dict[str, Any]]
    origin: dict[str, tuple[SourceDoc, PathT]] = field(default_factory=dict)
    field_origin: dict[tuple[str, str], tuple[SourceDoc, PathT]] = field(default_factory=dict)
    docs: list[SourceDoc] = field(default_factory=list)
    duplicates: list[tuple[str, SourceDoc, PathT]] = field(default_factory=list)
    # what inheritance found wrong (an override of a turn that does not exist, ...): the
    # change is skipped and the other checks go on
    problems: list[Problem] = field(default_factory=list)

    def define(self, turn_id: str, doc: SourceDoc, path: PathT) -> None:
        """Record where a turn is defined; a second definition is kept as a duplicate."""
        if turn_id in self.origin:
            self.duplicates.append((turn_id, doc, path))
        else:
            self.origin[turn_id] = (doc, path)

    def where(self, turn_id: str, field_name: str | None = None) -> tuple[SourceDoc, PathT]:
        if field_name is not None and (turn_id, field_name) in self.field_origin:
            return self.field_origin[(turn_id, field_name)]
        return self.origin[turn_id]

    def find_turn(self, turn_id: str) -> tuple[int, int] | None:
        for pi, phase in enumerate(self.phases):
            for ti, turn in enumerate(phase["turns"]):
                if turn["id"] == turn_id:
                    return pi, ti
        return None

    def find_phase(self, phase_id: str) -> int | None:
        for pi, phase in enumerate(self.phases):
            if phase["id"] == phase_id:
                return pi
        return None

    def all_ids(self) -> list[str]:
        return [p["id"] for p in self.phases] + [
            t["id"] for p in self.phases for t in p["turns"]
        ]


def _normal_meta(data: dict[str, Any]) -> dict[str, Any]:
    meta = {k: copy.deepcopy(data[k]) for k in META_KEYS if k in data}
    if "participants" in meta:
        meta["participants"] = {
            alias: ({} if v is None else {"model": v} if isinstance(v, str) else v)
            for alias, v in meta["participants"].items()
        }
    if "inputs" in meta:
        meta["inputs"] = {
            name: ({"description": v} if isinstance(v, str) else v)
            for name, v in meta["inputs"].items()
        }
    return meta


def _turns(turns: Any, doc: SourceDoc, layout: Layout, path: PathT) -> list[dict[str, Any]]:
    """A copy of a list of turns, each defined at its place. A turn whose shape was wrong
    keeps its place (so later turns keep their numbers) under an id no turn can have."""
    out = []
    for ti, turn in enumerate(turns if isinstance(turns, list) else []):
        if turn is MALFORMED or not isinstance(turn, dict):
            turn = {"role": "", "prompt": ""}
        turn = copy.deepcopy(turn)
        if not isinstance(turn.get("id"), str):
            turn["id"] = f"<turn {ti + 1} of {format_path(path)}>"
        out.append(turn)
        layout.define(turn["id"], doc, (*path, ti))
    return out


def _phase(phase: dict[str, Any], doc: SourceDoc, layout: Layout, path: PathT,
           pi: int) -> dict[str, Any]:
    structure = phase.get("structure", "sequential")
    return {"id": phase.get("id", f"<phase {pi + 1}>"),
            "structure": structure if structure in ("sequential", "parallel") else
            "sequential", "turns": _turns(phase.get("turns"), doc, layout, (*path, "turns")),
            **_repeat_of(phase)}


def _phases_of(doc: SourceDoc, layout: Layout) -> None:
    data = doc.data
    if "phases" in data:
        for pi, phase in enumerate(data["phases"]):
            if phase is not MALFORMED:
                layout.phases.append(_phase(phase, doc, layout, ("phases", pi), pi))
    else:
        structure = data.get("structure", "sequential")
        layout.phases.append({
            "id": "main",
            "structure": structure if structure in ("sequential", "parallel") else "sequential",
            "turns": _turns(data.get("turns"), doc, layout, ("turns",))})


def _unknown(doc: SourceDoc, path: PathT, what: str, ref: str, known: list[str]) -> Problem:
    close = difflib.get_close_matches(ref, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known) or 'none'}"
    return doc.problem(f"{what} '{ref}' does not exist in the parent mode", path, hint=hint)


def resolve(
    doc: SourceDoc,
    load_parent: Callable[[str, SourceDoc], SourceDoc],
    *,
    chain: tuple[SourceDoc, ...] = (),
) -> Layout:
    """Resolve ``doc`` (already parsed and schema-checked) against its ancestors; what
    cannot be applied is in the layout's ``problems``."""
    data = doc.data
    if "extends" not in data:
        layout = Layout(meta=_normal_meta(data), phases=[], docs=[doc])
        _phases_of(doc, layout)
        return layout

    parent_doc = load_parent(data["extends"], doc)
    seen = [*chain, doc]
    if any(d.identity == parent_doc.identity for d in seen):
        cycle = " -> ".join([*(d.file for d in seen), parent_doc.file])
        raise ModeError(doc.problem(f"'extends' makes a cycle: {cycle}", ("extends",)))
    layout = resolve(parent_doc, load_parent, chain=(*chain, doc))
    layout.docs.insert(0, doc)

    # top-level keys
    child_meta = _normal_meta(data)
    for key, value in child_meta.items():
        if key in _MERGED_META and key in layout.meta:
            layout.meta[key] = deep_merge(layout.meta[key], value)
        else:
            layout.meta[key] = value

    # a child that gives turns or phases replaces the parent's structure
    if "turns" in data or "phases" in data:
        layout.phases = []
        layout.origin = {}
        layout.field_origin = {}
        layout.duplicates = []
        _phases_of(doc, layout)
    elif "structure" in data:
        if len(layout.phases) != 1:
            layout.problems.append(doc.problem(
                "'structure' can only change a parent with a single phase; "
                "give 'phases' to restructure a mixed mode", ("structure",)))
        elif data["structure"] == "mixed":
            layout.problems.append(doc.problem(
                "'structure: mixed' needs 'phases'", ("structure",)))
        else:
            layout.phases[0]["structure"] = data["structure"]

    for i, ref in enumerate(data.get("remove", [])):
        if ref is not MALFORMED:
            _remove(layout, doc, ("remove", i), ref)
    for i, insertion in enumerate(data.get("add", [])):
        if insertion is not MALFORMED:
            _add(layout, doc, ("add", i), insertion)
    for turn_id, patch in data.get("overrides", {}).items():
        found = layout.find_turn(turn_id)
        if found is None:
            layout.problems.append(_unknown(
                doc, ("overrides", turn_id), "turn", turn_id,
                [t["id"] for p in layout.phases for t in p["turns"]]))
            continue
        pi, ti = found
        turn = layout.phases[pi]["turns"][ti]
        merged = deep_merge(turn, patch)
        # prompt and prompt_file are alternatives: the override's choice wins
        if "prompt" in patch:
            merged.pop("prompt_file", None)
        elif "prompt_file" in patch:
            merged.pop("prompt", None)
        layout.phases[pi]["turns"][ti] = merged
        for key in patch:
            layout.field_origin[(turn_id, key)] = (doc, ("overrides", turn_id, key))
    return layout


def _remove(layout: Layout, doc: SourceDoc, path: PathT, ref: str) -> None:
    pi: int | None
    found = layout.find_turn(ref)
    if found is not None:
        pi, ti = found
        removed = {ref}
        del layout.phases[pi]["turns"][ti]
        if not layout.phases[pi]["turns"]:
            del layout.phases[pi]
    else:
        pi = layout.find_phase(ref)
        if pi is None:
            layout.problems.append(_unknown(doc, path, "turn or phase", ref, layout.all_ids()))
            return
        removed = {t["id"] for t in layout.phases[pi]["turns"]}
        del layout.phases[pi]
    # turns that read a removed turn by id simply stop reading it
    for phase in layout.phases:
        for turn in phase["turns"]:
            ctx = turn.get("context_from")
            if isinstance(ctx, list) and any(r in removed for r in ctx):
                turn["context_from"] = [r for r in ctx if r not in removed]


def _repeat_of(phase: dict[str, Any]) -> dict[str, Any]:
    return {"repeat": copy.deepcopy(phase["repeat"])} if phase.get("repeat") else {}


def _unique_phase_id(layout: Layout, base: str) -> str:
    taken = {p["id"] for p in layout.phases}
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def _add(layout: Layout, doc: SourceDoc, path: PathT, ins: dict[str, Any]) -> None:
    pi: int | None
    if sum(k in ins for k in ("before", "after", "at")) != 1 or ("turns" in ins) == (
            "phase" in ins):
        return  # its shape was wrong (reported): nothing to apply
    if "at" in ins:
        anchor, side = None, ins["at"]
    else:
        side = "before" if "before" in ins else "after"
        anchor = ins[side]

    if "turns" in ins:
        turns = _turns(ins["turns"], doc, layout, (*path, "turns"))
        if not layout.phases:
            layout.phases.append({"id": "main", "structure": "sequential", "turns": turns})
            return
        if anchor is None:
            phase = layout.phases[0] if side == "start" else layout.phases[-1]
            pos = 0 if side == "start" else len(phase["turns"])
        else:
            found = layout.find_turn(anchor)
            if found is not None:
                pi, ti = found
                phase = layout.phases[pi]
                pos = ti if side == "before" else ti + 1
            else:
                pi = layout.find_phase(anchor)
                if pi is None:
                    layout.problems.append(_unknown(doc, (*path, side), "turn or phase",
                                                    anchor, layout.all_ids()))
                    return
                phase = layout.phases[pi]
                pos = 0 if side == "before" else len(phase["turns"])
        phase["turns"][pos:pos] = turns
        return

    new = _phase(ins["phase"], doc, layout, (*path, "phase"), len(layout.phases))
    if anchor is None:
        pos = 0 if side == "start" else len(layout.phases)
        layout.phases.insert(pos, new)
        return
    pi = layout.find_phase(anchor)
    if pi is not None:
        layout.phases.insert(pi if side == "before" else pi + 1, new)
        return
    found = layout.find_turn(anchor)
    if found is None:
        layout.problems.append(_unknown(doc, (*path, side), "turn or phase", anchor,
                                        layout.all_ids()))
        return
    pi, ti = found
    phase = layout.phases[pi]
    cut = ti if side == "before" else ti + 1
    whole = phase["structure"] == "parallel" or bool(phase.get("repeat"))
    if whole or cut in (0, len(phase["turns"])):
        # a parallel or repeating phase is never split: the new phase goes before or
        # after it whole
        at_end = side == "after" if whole else cut != 0
        layout.phases.insert(pi + 1 if at_end else pi, new)
        return
    head, tail = phase["turns"][:cut], phase["turns"][cut:]
    phase["turns"] = head
    rest = {"id": _unique_phase_id(layout, phase["id"]), "structure": phase["structure"],
            "turns": tail}
    layout.phases[pi + 1:pi + 1] = [new, rest]
