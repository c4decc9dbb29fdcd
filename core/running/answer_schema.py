"""Checking a model's answer against a turn's JSON Schema, in bounded time.

jsonschema matches ``pattern`` and ``patternProperties`` with Python's ``re``, whose
backtracking can take exponential time: ``^(a|aa)+$`` against forty ``a`` and a ``!``
runs for hours, and it runs on the event loop, where it would stop every dialogue of a
batch. The schema comes from a mode and the text from a model, and both are treated as
hostile. Here those keywords (and ``additionalProperties``, which matches property names
against ``patternProperties``) match with the ``regex`` module, which gives up on most
such patterns at once and stops any search at a deadline: all the matching for one
answer shares ``PATTERN_SECONDS``. An answer that cannot be checked in that time does
not match, and the reason says so.

``unevaluatedProperties`` beside ``patternProperties`` would match through ``re`` again;
such a schema is refused when the mode loads (``unsupported``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

__all__ = ["PATTERN_SECONDS", "first_error", "unsupported"]

PATTERN_SECONDS = 0.5  # of pattern matching for one answer, in all
_deadline: ContextVar[float] = ContextVar("dlg_pattern_deadline", default=0.0)
_validator_class: Any = None


class _TooSlow(Exception):
    def __init__(self, pattern: str):
        super().__init__(pattern)
        self.pattern = pattern


def _search(pattern: str, text: str) -> bool:
    import regex

    left = _deadline.get() - time.perf_counter()
    if left <= 0:
        raise _TooSlow(pattern)
    try:
        return regex.search(pattern, text, timeout=left) is not None
    except TimeoutError:
        raise _TooSlow(pattern) from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any,
                        schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _search(pattern, name):
                yield from validator.descend(value, subschema, path=name,
                                             schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any,
                           schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [k for k in instance
              if k not in named and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif additional is False and extras:
        listed = ", ".join(repr(k) for k in sorted(extras))
        yield ValidationError(f"properties not allowed here: {listed} (the schema names "
                              "no such property" + (" and no pattern matches"
                                                    if patterns else "") + ")")


def _validator() -> Any:
    global _validator_class
    if _validator_class is None:
        from jsonschema import Draft202012Validator, validators

        _validator_class = validators.extend(Draft202012Validator, {
            "pattern": _pattern, "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties})
    return _validator_class


def first_error(schema: Mapping[str, Any], data: Any) -> str | None:
    """What is wrong with ``data`` against ``schema`` (the best match of its errors, with
    where it is), or None when it matches."""
    from jsonschema.exceptions import best_match

    token = _deadline.set(time.perf_counter() + PATTERN_SECONDS)
    try:
        error = best_match(_validator()(schema).iter_errors(data))
    except _TooSlow as slow:
        return (f"the answer could not be checked: matching the schema's pattern "
                f"{slow.pattern!r} took more than {PATTERN_SECONDS:g} s")
    finally:
        _deadline.reset(token)
    if error is None:
        return None
    where = "".join(f"[{p!r}]" for p in error.absolute_path) or "the object"
    return f"{where}: {error.message}"


def unsupported(schema: Any) -> str | None:
    """Why ``schema`` cannot be checked in bounded time, or None: ``unevaluatedProperties``
    in a schema that also has ``patternProperties``."""
    found: set[str] = set()

    def walk(node: Any, depth: int) -> None:
        if not isinstance(node, Mapping) or depth > 64:
            return
        found.update(k for k in ("unevaluatedProperties", "patternProperties") if k in node)
        for key, value in node.items():
            if key in _SCHEMA_MAPS and isinstance(value, Mapping):
                for sub in value.values():
                    walk(sub, depth + 1)
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                for sub in value:
                    walk(sub, depth + 1)
            elif key in _SCHEMAS:
                walk(value, depth + 1)

    walk(schema, 0)
    if len(found) == 2:
        return ("it uses unevaluatedProperties and patternProperties together, which dlg "
                "cannot check in bounded time: use additionalProperties")
    return None


# where a schema holds schemas (the rest of its keys are keywords' values, or names)
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions",
                "dependentSchemas"}
_SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SCHEMAS = {"items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems",
            "not", "if", "then", "else", "contains", "propertyNames"}
