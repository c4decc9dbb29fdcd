"""Loading a mode: parse, check against the schema, resolve inheritance, normalise, check.

``load_mode`` is the one entry point. Every problem found is reported with its file, line,
column and JSON path (see ``errors.ModeError``), in one pass: the checks of what a mode
means run on the parts of it (and of the modes it extends) whose shape is right
(``prune``), so a shape problem and a meaning problem are reported together. A mode that
loaded cleanly is cached by content hash (in the user's cache dir), so running it again
skips parsing and validation.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlg.errors import ModeError, ModeNotFoundError, Problem
from dlg.language import cache
from dlg.language.inherit import Layout, resolve
from dlg.language.mode import Input, Mode, Participant, Phase, Turn
from dlg.language.schema import check_against, schema
from dlg.language.source import SourceDoc, read_source

if TYPE_CHECKING:
    import pluggy

__all__ = ["ModeLoader", "check_against", "load_mode", "schema"]  # the last two: schema.py


# a check of meaning that fails on a part the pruning let through is a bug; with shape
# problems to report, the user gets those instead of a traceback (tests turn this off)
SAFETY_NET = True


def _prepare(doc: SourceDoc, shape: list[Problem]) -> SourceDoc:
    """Parse ``doc`` and add its schema problems to ``shape``; its ``data`` is then the
    part whose shape is right."""
    from dlg.language.schema import shape_problems

    doc.parse()
    problems, errors = shape_problems(doc)
    if problems:
        from dlg.language.convert import is_seed_format

        if is_seed_format(doc.data):
            shown = doc.file if not doc.file.startswith("<") else "FILE"
            raise ModeError([Problem(
                "this mode is written in the original specification's format (numbered "
                "turns under 'prompts', {name} templates), which dlg does not run as it is",
                file=doc.file, line=1, column=1,
                hint=f"`dlg modes convert {shown}` writes it as a dlg mode"),
                *problems])
        from dlg.language.prune import sound_part

        shape.extend(problems)
        doc.data = sound_part(doc.data, errors)
    return doc


def _in_order(problems: list[Problem], files: list[str]) -> list[Problem]:
    """Problems without repeats, by file (the mode, then the modes it extends), line and
    column; at one place, in the order found (a misspelt key before what it leaves
    missing)."""
    first: dict[tuple[Any, ...], Problem] = {}
    for p in problems:
        first.setdefault((p.file, p.line, p.column, p.path, p.message), p)
    unique = list(first.values())
    rank = {f: i for i, f in reversed(list(enumerate(files)))}
    return sorted(unique, key=lambda p: (rank.get(p.file or "", len(files)), p.line or 0,
                                         p.column or 0))


# -- building a Mode (its checks are dlg.language.checks') --------------------------


def _template_line(doc: SourceDoc, path: tuple[Any, ...], template_line: int | None
                   ) -> int | None:
    """The file line of a template's line ``template_line`` (1-based), as best we can."""
    line, col = doc.locate(path)
    if line is None or template_line is None:
        return line
    text_lines = doc.text.splitlines()
    here = text_lines[line - 1][(col or 1) - 1:].lstrip() if line - 1 < len(text_lines) else ""
    if here[:1] in ("|", ">"):  # a block scalar: the template starts on the next line
        return line + template_line
    return line + template_line - 1


def _build(layout: Layout, *, check_templates: bool, pm: pluggy.PluginManager | None = None,
           malformed: bool = False) -> tuple[Mode, list[str]]:
    """Turn a resolved layout into a ``Mode``; raise ``ModeError`` with every problem.
    ``malformed``: parts of the documents were taken out (their shape was wrong)."""
    from dlg.language.checks import (
        context_ids,
        repeat_problems,
        structured_problems,
        until_problems,
    )
    from dlg.language.prune import sound_items

    problems: list[Problem] = []
    meta = layout.meta
    top = layout.docs[0]
    template_files: list[str] = []

    inputs = {
        name: Input(name=name, description=spec.get("description", ""),
                    required=spec.get("required", False), default=spec.get("default"),
                    type=spec.get("type", "string"))
        for name, spec in (meta.get("inputs") or {}).items()
    }
    from dlg.language.templates import RESERVED_NAMES

    for name in inputs:
        if name in RESERVED_NAMES:
            problems.append(top.problem(
                f"input '{name}' clashes with a name every template already has", ("inputs",
                                                                                     name),
                key=True, hint=f"reserved: {', '.join(sorted(RESERVED_NAMES))}"))
    participants = {
        alias: Participant(alias=alias, model=spec.get("model"),
                           description=spec.get("description", ""),
                           settings=dict(spec.get("settings") or {}),
                           fallbacks=tuple(spec.get("fallbacks") or ()))
        for alias, spec in (meta.get("participants") or {}).items()
    }

    # ids, order, phases
    order: list[str] = []
    phase_of: dict[str, int] = {}
    phase_ids: set[str] = set()
    for pi, phase in enumerate(layout.phases):
        if phase["id"] in phase_ids:
            problems.append(top.problem(f"two phases are both called '{phase['id']}'", ()))
        phase_ids.add(phase["id"])
        for turn in phase["turns"]:
            if turn["id"] not in phase_of:
                phase_of[turn["id"]] = pi
                order.append(turn["id"])
    for tid, doc, path in layout.duplicates:
        problems.append(doc.problem(f"two turns are both called '{tid}'", (*path, "id")))
    for tid in order:
        if tid in phase_ids and tid != "main":
            doc, path = layout.where(tid)
            problems.append(doc.problem(f"turn id '{tid}' is also a phase id", (*path, "id")))
    if problems:  # which turn would a reference mean? the other checks wait for a fix
        raise ModeError([*layout.problems, *problems])
    if not order:  # with parts taken out, that may be why: those are reported
        raise ModeError([*layout.problems, *([] if malformed else [
            top.problem("this mode has no turns left", ())])])
    problems.extend(layout.problems)

    # prompt files are read now, so the resolved mode is self-contained
    for phase in layout.phases:
        for turn in phase["turns"]:
            if "prompt_file" not in turn:
                continue
            doc, path = layout.where(turn["id"], "prompt_file")
            where = path if path[-1:] == ("prompt_file",) else (*path, "prompt_file")
            try:
                text = _read_template_file(turn["prompt_file"], doc, layout)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                problems.append(doc.problem(
                    f"prompt_file '{turn['prompt_file']}' cannot be read: {exc}", where))
                continue
            if text is None:
                problems.append(doc.problem(
                    f"prompt_file '{turn['prompt_file']}' not found (looked next to "
                    f"{doc.file} and in dlg's templates)", where,
                    hint="a prompt file is named relative to the mode's folder, without "
                    "'..' and not by an absolute path; it must stay inside that folder"))
            else:
                template_files.append(text[1])
                turn["prompt"] = text[0]
                del turn["prompt_file"]

    phases: list[Phase] = []
    index = 0
    for phase in layout.phases:
        turns: list[Turn] = []
        for turn in phase["turns"]:
            index += 1
            tid = turn["id"]
            participant = turn.get("participant")
            if participant is not None and participant not in participants:
                doc, path = layout.where(tid, "participant")
                known = list(participants)
                close = difflib.get_close_matches(participant, known, n=1)
                problems.append(doc.problem(
                    f"turn '{tid}' names participant '{participant}', which the mode does "
                    "not declare",
                    path if path[-1:] == ("participant",) else (*path, "participant"),
                    hint=f"did you mean '{close[0]}'?" if close else
                    f"declared: {', '.join(known) or 'none'}; add it under 'participants'"))
            spec = turn.get("context_from", "all")
            ctx = context_ids(spec, tid, order, phase_of, layout.phases, problems,
                              layout.where)
            turns.append(Turn(
                id=tid, role=turn.get("role", ""), index=index, phase=phase["id"],
                prompt=turn.get("prompt", ""), participant=participant,
                requires=tuple(sound_items(turn.get("requires", []))), prefer=turn.get("prefer"),
                instruction=turn.get("instruction"), context_from=ctx, context_spec=spec,
                settings=dict(turn.get("settings") or {}), when=turn.get("when"),
                timeout=turn.get("timeout"), on_error=turn.get("on_error", "fail"),
                description=turn.get("description", ""),
                constraints=dict(turn.get("constraints") or {}),
                output=dict(turn.get("output") or {}), scores=tuple(turn.get("scores") or ()),
                context_compression=turn.get("context_compression"),
                max_context_tokens=turn.get("max_context_tokens"),
                spawn=dict(turn.get("spawn") or {}),
            ))
            problems.extend(structured_problems(turns[-1], order, phase_of, layout))
        repeat = dict(phase.get("repeat") or {})
        if repeat and turns:
            problems.extend(repeat_problems(phase, repeat, turns, layout))
        phases.append(Phase(id=phase["id"], structure=phase["structure"], turns=tuple(turns),
                            repeat=repeat))

    template_dirs = tuple(dict.fromkeys(str(d.base_dir) for d in layout.docs if d.base_dir))
    mode = Mode(
        name=meta.get("name", ""), phases=tuple(phases), description=meta.get("description", ""),
        inputs=inputs, participants=participants, system=meta.get("system"),
        settings=dict(meta.get("settings") or {}), timeout=meta.get("timeout"),
        source=top.file, extends_chain=tuple(d.file for d in layout.docs[1:]),
        template_dirs=template_dirs, models=_pool(meta.get("models")),
        router=meta.get("router"), constraints=dict(meta.get("constraints") or {}),
        context_compression=meta.get("context_compression"),
        max_context_tokens=meta.get("max_context_tokens"),
        until=dict(meta.get("until") or {}), max_turns=meta.get("max_turns"),
        max_depth=meta.get("max_depth"),
    )
    problems.extend(until_problems(mode, layout))
    if check_templates:  # also when other problems were found: --all-errors shows all
        from dlg.language.checks import check_templates as _check

        problems.extend(_check(mode, layout, _template_line, pm))
    if problems:
        problems.sort(key=lambda p: (p.file or "", p.line or 0, p.column or 0))
        raise ModeError(problems)
    return mode, template_files


def _pool(models: Any) -> dict[str, str]:
    """A mode's ``models:``: a mapping of names to specs, or a list of specs."""
    if isinstance(models, list):
        from dlg.language.prune import sound_items

        return {spec: spec for spec in sound_items(models)}
    return dict(models or {})


def _read_template_file(name: str, doc: SourceDoc, layout: Layout) -> tuple[str, str] | None:
    """A prompt file's text and path: next to the mode that names it, next to the modes
    it extends, or in dlg's templates; never outside those folders (symlinks resolved)."""
    from importlib.resources import files

    from dlg.language.limits import confined, read_text

    folders = []
    if doc.base_dir is not None:
        folders.append(doc.base_dir)
    folders.extend(Path(str(d.base_dir)) for d in layout.docs if d.base_dir)
    folders.append(Path(str(files("dlg.templates"))))
    for folder in dict.fromkeys(folders):
        found = confined(folder, str(name), [folder])
        if found is not None and found.is_file():
            return read_text(found), str(found)
    return None


def _from_cached(entry: dict[str, Any]) -> Mode:
    doc = SourceDoc(text="", file=entry["source"], identity="cache", data=entry["mode"])
    layout = resolve(doc, _no_parent)
    mode, _ = _build(layout, check_templates=False)
    return Mode(**{**mode.__dict__, "source": entry["source"],
                   "extends_chain": tuple(entry["extends_chain"]),
                   "template_dirs": tuple(entry["template_dirs"])})


def _no_parent(ref: str, doc: SourceDoc) -> SourceDoc:  # pragma: no cover - never extends
    raise ModeError("a cached mode cannot extend another")


# -- public API ---------------------------------------------------------------------------


def load_mode(
    source: Any, *, pm: pluggy.PluginManager | None = None, use_cache: bool = True,
    check_templates: bool = True,
    base_dir: str | Path | None = None,
) -> Mode:
    """Load a mode from a name, a path, a dict, or return a ``Mode`` unchanged.

    ``base_dir`` is a dict's folder: the templates it includes, its ``prompt_file``s and
    the modes it extends by path are found there, as for a mode file in that folder.

    Raises ``ModeError`` (with every problem found) or ``ModeNotFoundError``.
    """
    if isinstance(source, Mode):
        return source
    if isinstance(source, dict):
        doc = SourceDoc(text=json.dumps(source, default=str), file="<dict>",
                        identity=f"dict:{id(source)}", is_json=True,
                        base_dir=None if base_dir is None else Path(base_dir))
        use_cache = False
    else:
        doc = read_source(source, pm=pm)
    if use_cache:
        entry = cache.get(doc, pm)
        if entry is not None:
            return _from_cached(entry)

    shape: list[Problem] = []  # the schema's problems, of the mode and its parents
    files = [doc.file]

    def load_parent(ref: str, child: SourceDoc) -> SourceDoc:
        try:
            parent = read_source(ref, relative_to=child.base_dir, pm=pm)
        except ModeNotFoundError as exc:
            problem = exc.problems[0]
            raise ModeError(child.problem(f"'extends': {problem.message}", ("extends",),
                                          hint=problem.hint)) from None
        files.append(parent.file)
        return _prepare(parent, shape)

    try:
        layout = resolve(_prepare(doc, shape), load_parent)
        mode, template_files = _build(layout, check_templates=check_templates, pm=pm,
                                      malformed=bool(shape))
    except ModeError as exc:
        raise ModeError(_in_order([*shape, *exc.problems], files)) from None
    except Exception:
        if not shape or not SAFETY_NET:
            raise
        raise ModeError(_in_order(shape, files)) from None
    if shape:
        raise ModeError(_in_order(shape, files))
    if use_cache and check_templates:
        cache.put(doc, mode, layout, template_files)
    return mode


class ModeLoader:
    """The spec's name for mode loading: ``ModeLoader.from_file("detective.json")``."""

    @staticmethod
    def from_file(path: str | Path) -> Mode:
        return load_mode(Path(path))

    @staticmethod
    def from_name(name: str) -> Mode:
        return load_mode(name)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Mode:
        return load_mode(data)
