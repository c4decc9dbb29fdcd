"""Checking a mode document against its JSON Schema, and saying what is wrong in words.

jsonschema's own messages name validators; these name the fix: an unknown key gets the
closest known one, a missing prompt says ``prompt`` or ``prompt_file``, a wrong type says
what was expected and what was found, each at its file, line, column and JSON path.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
from typing import Any, cast

from dlg.errors import ModeError, Problem
from dlg.language.source import SourceDoc

__all__ = ["check_against", "known_keys", "schema", "shape_problems"]


@functools.cache
def schema(name: str = "mode.schema.json") -> dict[str, Any]:
    """A JSON Schema shipped in ``dlg.schemas`` (the mode schema by default)."""
    from importlib.resources import files

    # json.loads gives Any: the schemas dlg ships are JSON objects
    return cast(dict[str, Any], json.loads(files("dlg.schemas").joinpath(name).read_text("utf-8")))


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


def known_keys(err: Any) -> list[str]:
    """The keys the mapping an ``additionalProperties`` error is about may have."""
    props = dict(err.schema.get("properties", {}))
    for sub in err.schema.get("allOf", []):
        ref = sub.get("$ref", "")
        if ref.startswith("#/$defs/"):
            props.update(schema()["$defs"][ref.split("/")[-1]].get("properties", {}))
    return sorted(props)


# each pattern of dlg's schemas: what a value that matches it is, and the rule, in words
_PATTERNS = {
    "^[A-Za-z_][A-Za-z0-9_]*$": (
        "a valid name", "use letters, digits and underscores, starting with a letter or "
                        "underscore"),
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": (
        "a valid name", "use letters, digits, '.', '_' and '-', starting with a letter or "
                        "digit"),
    "^[a-z_]+$": ("a capability name", "use lowercase letters and underscores"),
    "^[A-Za-z0-9_.-]+(:[^?\\s]+)?$": (
        "a registry key", "a key is a model spec without its options, provider[:model]"),
}


def _pattern_problem(doc: SourceDoc, err: Any, path: tuple[Any, ...]) -> Problem:
    what, rule = _PATTERNS.get(err.validator_value, (
        "valid here", f"it must match the pattern {err.validator_value}"))
    hint = None
    if "propertyNames" in err.schema_path:  # a key: located at the key, not its mapping
        path = (*path, err.instance)
        if what == "a registry key" and "?" in str(err.instance):
            hint = ("an entry holds for its model given with any options: drop "
                    f"'?{str(err.instance).partition('?')[2]}'")
    return doc.problem(f"{err.instance!r} is not {what}: {rule}", path,
                       key="propertyNames" in err.schema_path, hint=hint)


def _close_key(key: str, known: list[str]) -> str | None:
    """The known key an unknown ``key`` is most likely a misspelling of."""
    close = difflib.get_close_matches(key, known, n=1)
    return close[0] if close else None


def _missing(doc: SourceDoc, err: Any, path: tuple[Any, ...], message: str,
             wanted: list[str]) -> Problem:
    """A missing key, located at the unknown key that misspells it (``promt:``) if the
    mapping has one: reported just after that key's own problem, its cause."""
    problem = doc.problem(message, path)
    if isinstance(err.instance, dict):
        known = known_keys(err)
        for key in err.instance:
            if isinstance(key, str) and key not in known and _close_key(key, known) in wanted:
                line, column = doc.locate((*path, key), key=True)
                return dataclasses.replace(problem, line=line, column=column)
    return problem


def _schema_problems(doc: SourceDoc, err: Any) -> list[Problem]:
    from jsonschema.exceptions import best_match

    if err.context and err.validator != "oneOf":
        err = best_match([err])
    path = tuple(err.absolute_path)
    v, vv = err.validator, err.validator_value

    if v in ("additionalProperties", "unevaluatedProperties"):
        known = known_keys(err)
        unexpected = [k for k in err.instance if k not in known] if isinstance(
            err.instance, dict) else _UNEXPECTED.findall(err.message)
        out = []
        for key in unexpected:
            meant = _close_key(key, known)
            hint = f"did you mean '{meant}'?" if meant else f"allowed: {', '.join(known)}"
            out.append(doc.problem(f"unknown key '{key}'", (*path, key), key=True, hint=hint))
        return out
    if v == "required":
        missing = [k for k in vv if isinstance(err.instance, dict) and k not in err.instance]
        return [_missing(doc, err, path, f"missing required key '{k}'", [k])
                for k in missing[:1]]
    if v == "type":
        want = vv if isinstance(vv, list) else [vv]
        want_s = " or ".join(_TYPE_NAMES.get(t, str(t)) for t in want)
        return [doc.problem(f"expected {want_s}, got {_json_type(err.instance)}", path)]
    if v == "enum":
        close = difflib.get_close_matches(str(err.instance), [str(x) for x in vv], n=1)
        return [doc.problem(
            f"{err.instance!r} is not one of: {', '.join(map(str, vv))}", path,
            hint=f"did you mean '{close[0]}'?" if close else None)]
    if v == "pattern":
        return [_pattern_problem(doc, err, path)]
    if v == "oneOf" and not isinstance(err.instance, dict) and all(
            "required" in s for s in vv):
        return [doc.problem(f"expected a mapping, got {_json_type(err.instance)}", path)]
    if v == "oneOf" and vv == [{"required": ["prompt"]}, {"required": ["prompt_file"]}]:
        if "prompt" in err.instance and "prompt_file" in err.instance:
            return [doc.problem("a turn has either 'prompt' or 'prompt_file', not both", path)]
        return [_missing(doc, err, path, "a turn needs a 'prompt' (or a 'prompt_file')",
                         ["prompt", "prompt_file"])]
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


def shape_problems(doc: SourceDoc, schema_name: str = "mode.schema.json"
                   ) -> tuple[list[Problem], list[Any]]:
    """A parsed document's problems with the schema, in words and in order, and
    jsonschema's errors they come from (``prune.sound_part`` takes those parts out)."""
    errors = list(_validator(schema_name).iter_errors(doc.data))
    problems: list[Problem] = []
    for err in errors:
        problems.extend(_schema_problems(doc, err))
    # at one place, an unknown key before the missing key it misspells
    problems.sort(key=lambda p: (p.line or 0, p.column or 0,
                                 not p.message.startswith("unknown key")))
    return problems, errors


def check_against(doc: SourceDoc, schema_name: str = "mode.schema.json") -> None:
    """Validate a parsed document; raise ``ModeError`` with every located problem."""
    problems, _ = shape_problems(doc, schema_name)
    if problems:
        raise ModeError(problems)
