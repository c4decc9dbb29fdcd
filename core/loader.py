"""Loading a mode: parse, check against the schema, resolve inheritance, normalise, check.

``load_mode`` is the one entry point. Every problem found is reported with its file, line,
column and JSON path (see ``errors.ModeError``). A mode that loaded cleanly is cached by
content hash (in the user's cache dir), so running it again skips parsing and validation.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from pathlib import Path
from typing import Any

from .errors import ModeError, ModeNotFoundError, Problem
from .inherit import Layout, resolve
from .mode import Input, Mode, Participant, Phase, Turn
from .source import SourceDoc, read_source

__all__ = ["ModeLoader", "check_against", "load_mode", "schema"]


@functools.cache
def schema(name: str = "mode.schema.json") -> dict[str, Any]:
    """A JSON Schema shipped in ``dlg.schemas`` (the mode schema by default)."""
    from importlib.resources import files

    return json.loads(files("dlg.schemas").joinpath(name).read_text("utf-8"))


@functools.cache
def _validator(name: str = "mode.schema.json") -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(name))


# -- schema problems, phrased for people -------------------------------------------------

_UNEXPECTED = re.compile(r"'([^']+)'")
_TYPE_NAMES = {
    "string": "a string", "integer": "a whole number", "number": "a number",
    "boolean": "true or false", "object": "a mapping", "array": "a list", "null": "null",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _known_keys(err: Any) -> list[str]:
    props = dict(err.schema.get("properties", {}))
    for sub in err.schema.get("allOf", []):
        ref = sub.get("$ref", "")
        if ref.startswith("#/$defs/"):
            props.update(schema()["$defs"][ref.split("/")[-1]].get("properties", {}))
    return sorted(props)


def _schema_problems(doc: SourceDoc, err: Any) -> list[Problem]:
    from jsonschema.exceptions import best_match

    if err.context and err.validator != "oneOf":
        err = best_match([err])
    path = tuple(err.absolute_path)
    v, vv = err.validator, err.validator_value

    if v in ("additionalProperties", "unevaluatedProperties"):
        known = _known_keys(err)
        unexpected = [k for k in err.instance if k not in known] if isinstance(
            err.instance, dict) else _UNEXPECTED.findall(err.message)
        out = []
        for key in unexpected:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(known)}"
            out.append(doc.problem(f"unknown key '{key}'", (*path, key), key=True, hint=hint))
        return out
    if v == "required":
        missing = [k for k in vv if isinstance(err.instance, dict) and k not in err.instance]
        return [doc.problem(f"missing required key '{k}'", path) for k in missing[:1]]
    if v == "type":
        want = vv if isinstance(vv, list) else [vv]
        want_s = " or ".join(_TYPE_NAMES.get(t, t) for t in want)
        return [doc.problem(f"expected {want_s}, got {_json_type(err.instance)}", path)]
    if v == "enum":
        close = difflib.get_close_matches(str(err.instance), [str(x) for x in vv], n=1)
        return [doc.problem(
            f"{err.instance!r} is not one of: {', '.join(map(str, vv))}", path,
            hint=f"did you mean '{close[0]}'?" if close else None)]
    if v == "pattern":
        return [doc.problem(
            f"{err.instance!r} is not a valid name: use letters, digits and underscores, "
            "starting with a letter or underscore", path)]
    if v == "oneOf" and not isinstance(err.instance, dict) and all(
            "required" in s for s in vv):
        return [doc.problem(f"expected a mapping, got {_json_type(err.instance)}", path)]
    if v == "oneOf" and vv == [{"required": ["prompt"]}, {"required": ["prompt_file"]}]:
        both = "prompt" in err.instance and "prompt_file" in err.instance
        return [doc.problem(
            "a turn has either 'prompt' or 'prompt_file', not both" if both
            else "a turn needs a 'prompt' (or a 'prompt_file')", path)]
    if v == "oneOf" and any("required" in s and ("before" in s["required"] or "turns" in
                                                  s["required"]) for s in vv):
        return [doc.problem(
            "an 'add' entry needs one anchor ('before', 'after' or 'at') and one of "
            "'turns' or 'phase'", path)]
    if v == "oneOf":
        # branches that failed only on type were the wrong branch: report the right one's
        relevant = [e for e in err.context if e.validator != "type"]
        if relevant:
            return _schema_problems(doc, best_match(relevant))
        wanted = []
        for branch in vv:
            t = branch.get("type") or ("string" if "$ref" in branch else None)
            if t and _TYPE_NAMES.get(t, t) not in wanted:
                wanted.append(_TYPE_NAMES.get(t, t))
        return [doc.problem(
            f"expected {' or '.join(wanted) or 'something else'}, got "
            f"{_json_type(err.instance)}", path)]
    if v == "not" and vv == {"required": ["id"]}:
        return [doc.problem("an override cannot change a turn's 'id'", (*path, "id"), key=True)]
    if v == "not" and vv == {"required": ["turns", "phases"]}:
        return [doc.problem("give either 'turns' or 'phases', not both", path)]
    if v == "not" and vv == {"required": ["turns"]}:
        return [doc.problem("a mixed mode lists its turns inside 'phases', not in 'turns'",
                            ("turns",), key=True)]
    if v == "not":
        return [doc.problem(
            "'overrides', 'add' and 'remove' change an inherited mode: use them with 'extends'",
            path)]
    if v == "anyOf" and vv == [{"required": ["turns"]}, {"required": ["phases"]}]:
        return [doc.problem("a mode needs 'turns' or 'phases' (or 'extends' to inherit them)",
                            path)]
    if v == "const" and vv == "mixed":
        return [doc.problem("a mode with 'phases' has 'structure: mixed'", path)]
    if v in ("minItems", "minimum", "maximum", "exclusiveMinimum", "minLength", "uniqueItems"):
        return [doc.problem(err.message.replace("[]", "the list"), path)]
    return [doc.problem(err.message, path)]


def check_against(doc: SourceDoc, schema_name: str = "mode.schema.json") -> None:
    """Validate a parsed document; raise ``ModeError`` with every located problem."""
    problems: list[Problem] = []
    for err in _validator(schema_name).iter_errors(doc.data):
        problems.extend(_schema_problems(doc, err))
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise ModeError(problems)


def _prepare(doc: SourceDoc) -> SourceDoc:
    doc.parse()
    try:
        check_against(doc)
    except ModeError as exc:
        from .convert import is_seed_format

        if is_seed_format(doc.data):
            shown = doc.file if not doc.file.startswith("<") else "FILE"
            raise ModeError([Problem(
                "this mode is written in the original specification's format (numbered "
                "turns under 'prompts', {name} templates), which dlg does not run as it is",
                file=doc.file, line=1, column=1,
                hint=f"`dlg modes convert {shown}` writes it as a dlg mode"),
                *exc.problems]) from None
        raise
    return doc


# -- normalisation and semantic checks --------------------------------------------------


def _context_ids(
    spec: Any, turn_id: str, order: list[str], phase_of: dict[str, int],
    phases: list[dict[str, Any]], problems: list[Problem], where: Any,
) -> tuple[str, ...]:
    pos = order.index(turn_id)
    my_phase = phase_of[turn_id]
    parallel = phases[my_phase]["structure"] == "parallel"

    def readable(other: str) -> bool:
        if phase_of[other] < my_phase:
            return True
        return phase_of[other] == my_phase and not parallel and order.index(other) < pos

    if spec == "all":
        return tuple(t for t in order[:pos] if readable(t))
    if spec == "none":
        return ()
    if spec == "previous":
        if not parallel and pos > 0 and phase_of[order[pos - 1]] == my_phase:
            return (order[pos - 1],)
        if my_phase == 0:
            return ()
        prev = phases[my_phase - 1]
        ids = [t["id"] for t in prev["turns"]]
        return tuple(ids) if prev["structure"] == "parallel" else (ids[-1],)

    out: list[str] = []
    for i, ref in enumerate(spec):
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
        elif ref_id == turn_id:
            problems.append(doc.problem(f"turn '{turn_id}' cannot read itself", ref_path))
        elif phase_of[ref_id] == my_phase and parallel:
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


def _build(layout: Layout, *, check_templates: bool, pm: Any = None
           ) -> tuple[Mode, list[str]]:
    """Turn a resolved layout into a ``Mode``; raise ``ModeError`` with every problem."""
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
    from .render import RESERVED_NAMES

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
    if problems:
        raise ModeError(problems)
    if not order:
        raise ModeError(top.problem("this mode has no turns left", ()))

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
            ctx = _context_ids(spec, tid, order, phase_of, layout.phases, problems,
                               layout.where)
            turns.append(Turn(
                id=tid, role=turn["role"], index=index, phase=phase["id"],
                prompt=turn.get("prompt", ""), participant=participant,
                requires=tuple(turn.get("requires", ())), prefer=turn.get("prefer"),
                instruction=turn.get("instruction"), context_from=ctx, context_spec=spec,
                settings=dict(turn.get("settings") or {}), when=turn.get("when"),
                timeout=turn.get("timeout"), on_error=turn.get("on_error", "fail"),
                description=turn.get("description", ""),
            ))
        phases.append(Phase(id=phase["id"], structure=phase["structure"], turns=tuple(turns)))

    template_dirs = tuple(dict.fromkeys(str(d.base_dir) for d in layout.docs if d.base_dir))
    mode = Mode(
        name=meta["name"], phases=tuple(phases), description=meta.get("description", ""),
        inputs=inputs, participants=participants, system=meta.get("system"),
        settings=dict(meta.get("settings") or {}), timeout=meta.get("timeout"),
        source=top.file, extends_chain=tuple(d.file for d in layout.docs[1:]),
        template_dirs=template_dirs,
    )
    if check_templates:  # also when other problems were found: --all-errors shows all
        from .checks import check_templates as _check

        problems.extend(_check(mode, layout, _template_line, pm))
    if problems:
        problems.sort(key=lambda p: (p.file or "", p.line or 0, p.column or 0))
        raise ModeError(problems)
    return mode, template_files


def _read_template_file(name: str, doc: SourceDoc, layout: Layout) -> tuple[str, str] | None:
    """A prompt file's text and path: next to the mode that names it, next to the modes
    it extends, or in dlg's templates; never outside those folders (symlinks resolved)."""
    from importlib.resources import files

    from .limits import confined, read_text

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


# -- cache --------------------------------------------------------------------------------


def _cache_dir() -> Path | None:
    import os

    if os.environ.get("DLG_NO_CACHE", "").strip().lower() in {"1", "true", "yes"}:
        return None
    base = os.environ.get("DLG_CACHE_DIR")
    if not base:
        from platformdirs import user_cache_dir

        base = user_cache_dir("dlg")
    return Path(base) / "modes"


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_key(doc: SourceDoc) -> str:
    from ._version import __version__

    return _sha(f"{__version__}\0{doc.identity}\0{doc.text}")


def _cache_get(doc: SourceDoc, pm: Any) -> Mode | None:
    directory = _cache_dir()
    if directory is None:
        return None
    try:
        entry = json.loads((directory / f"{_cache_key(doc)}.json").read_text("utf-8"))
        for dep in entry["deps"]:
            if dep["kind"] == "mode":
                base = Path(dep["base"]) if dep["base"] else None
                text = read_source(dep["ref"], relative_to=base, pm=pm).text
            else:
                text = Path(dep["ref"]).read_text("utf-8")
            if _sha(text) != dep["sha"]:
                return None
        return _from_cached(entry)
    except (OSError, ValueError, KeyError, TypeError, ModeError):
        return None


def _cache_put(doc: SourceDoc, mode: Mode, layout: Layout, template_files: list[str]) -> None:
    import os
    import tempfile

    directory = _cache_dir()
    if directory is None:
        return
    deps = []
    for child, parent in zip(layout.docs, layout.docs[1:], strict=False):
        deps.append({"kind": "mode", "ref": child.data["extends"],
                     "base": str(child.base_dir) if child.base_dir else None,
                     "sha": _sha(parent.text)})
    for path in template_files:
        deps.append({"kind": "file", "ref": path, "sha": _sha(Path(path).read_text("utf-8"))})
    entry = {
        "mode": mode.to_dict(), "source": mode.source, "extends_chain": mode.extends_chain,
        "template_dirs": mode.template_dirs, "deps": deps,
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh)
        os.replace(tmp, directory / f"{_cache_key(doc)}.json")
    except OSError:
        pass  # a cache that cannot be written is only slower


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
    source: Any, *, pm: Any = None, use_cache: bool = True, check_templates: bool = True
) -> Mode:
    """Load a mode from a name, a path, a dict, or return a ``Mode`` unchanged.

    Raises ``ModeError`` (with every problem found) or ``ModeNotFoundError``.
    """
    if isinstance(source, Mode):
        return source
    if isinstance(source, dict):
        doc = SourceDoc(text=json.dumps(source, default=str), file="<dict>",
                        identity=f"dict:{id(source)}", is_json=True)
        use_cache = False
    else:
        doc = read_source(source, pm=pm)
    if use_cache:
        cached = _cache_get(doc, pm)
        if cached is not None:
            return cached

    def load_parent(ref: str, child: SourceDoc) -> SourceDoc:
        try:
            parent = read_source(ref, relative_to=child.base_dir, pm=pm)
        except ModeNotFoundError as exc:
            problem = exc.problems[0]
            raise ModeError(child.problem(f"'extends': {problem.message}", ("extends",),
                                          hint=problem.hint)) from None
        return _prepare(parent)

    layout = resolve(_prepare(doc), load_parent)
    mode, template_files = _build(layout, check_templates=check_templates, pm=pm)
    if use_cache and check_templates:
        _cache_put(doc, mode, layout, template_files)
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
