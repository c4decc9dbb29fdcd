"""The part of a mode document whose shape is right, so its meaning can be checked too.

A document with schema problems is not thrown away: ``sound_part`` returns a copy with
each malformed value taken out (a key of the wrong type, an unknown key, a value not in
its enum) and each malformed list item replaced by ``MALFORMED`` (so the items after it
keep their index, and their line in the file). What a malformed part leaves missing (a
required key) stays missing: the checks of meaning read the rest with defaults and skip
what they would need from it. A participant or an input declared with a wrong shape
stays declared, and an id that is a string but not a valid name stays, so what names
them is not reported too. So ``--all-errors`` lists the shape's problems and the
meaning's in one pass.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["MALFORMED", "is_sound", "sound_items", "sound_part"]


class _Malformed:
    """A list item whose shape was wrong: skipped by every check of meaning."""

    def __repr__(self) -> str:
        return "MALFORMED"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Malformed:
        return self


MALFORMED = _Malformed()


def is_sound(value: Any) -> bool:
    return value is not MALFORMED


def sound_items(values: Any) -> list[Any]:
    """The items of a list that are not ``MALFORMED`` (anything else: no items)."""
    return [v for v in values if v is not MALFORMED] if isinstance(values, list) else []


def sound_part(data: dict[str, Any], errors: list[Any]) -> dict[str, Any]:
    """``data`` without the parts that ``errors`` (jsonschema's) say are malformed."""
    out = copy.deepcopy(data)
    for err in errors:
        for path in _malformed_paths(err):
            if path[-1:] == ("id",) and isinstance(err.instance, str):
                continue  # a bad id is still what references to it say
            if len(path) == 2 and path[0] in _DECLARED and isinstance(out.get(path[0]), dict):
                # declared, even if badly: what uses it is checked as if it were right
                out[path[0]][path[1]] = _DECLARED[path[0]]
                continue
            _take_out(out, path)
    return out


# the sound value of a malformed participant or input: the default model, no description
_DECLARED: dict[str, Any] = {"participants": None, "inputs": {}}


def _malformed_paths(err: Any) -> list[tuple[Any, ...]]:
    from jsonschema.exceptions import best_match

    from dlg.language.schema import known_keys

    path = tuple(err.absolute_path)
    v, vv = err.validator, err.validator_value
    if v in ("additionalProperties", "unevaluatedProperties"):
        if not isinstance(err.instance, dict):
            return []
        known = known_keys(err)
        return [(*path, k) for k in err.instance if k not in known]
    if v in ("required", "anyOf", "dependentRequired"):
        return []  # something missing: nothing to take out
    if v == "oneOf":
        if isinstance(err.instance, dict) and all(
                set(s) <= {"required", "not"} for s in vv if isinstance(s, dict)):
            # a turn with neither or both of prompt and prompt_file: the build reads
            # what is there; an 'add' entry without an anchor: not applied
            if any("before" in s.get("required", ()) or "turns" in s.get("required", ())
                   for s in vv if isinstance(s, dict)):
                return [path]
            return []
        relevant = [e for e in err.context if e.validator != "type"]
        if relevant and isinstance(err.instance, dict | list):
            return _malformed_paths(best_match(relevant))
        return [path]
    if v == "not":
        required = vv.get("required", []) if isinstance(vv, dict) else []
        if required == ["id"]:
            return [(*path, "id")]
        if "turns" in required:  # with phases too, or in a mixed mode: phases win
            return [(*path, "turns")]
        return [(*path, k) for k in ("overrides", "add", "remove")]
    if v == "propertyNames" or "propertyNames" in err.schema_path:
        return [(*path, err.instance)] if isinstance(err.instance, str) else []
    if err.context:
        return _malformed_paths(best_match([err]))
    return [path]


def _take_out(data: Any, path: tuple[Any, ...]) -> None:
    if not path:
        return
    parent = data
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        parent[last] = MALFORMED
