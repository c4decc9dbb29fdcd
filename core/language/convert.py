"""Converting modes written in the original specification's format to dlg modes.

The seed format numbers its turns (``"turns": 5``), keeps them under ``"prompts"``
(``turn_1``, ``turn_2``, ...) with ``template`` strings in Python's ``{name}`` style, and
inherits with ``overrides`` and ``additional_turns`` keyed by the same names::

    {"name": "detective", "turns": 2, "prompts": {
        "turn_1": {"role": "hypothesis", "participant": "grok", "template": "... {topic}"},
        "turn_2": {"role": "evidence", "participant": "claude", "template": "{turn_1}"}}}

``convert(data)`` returns the dlg mode (a dict) and notes on what it changed; ``dlg modes
convert FILE`` writes it as YAML. ``{topic}`` becomes ``{{ topic }}``, ``{turn_1}``
becomes ``{{ turns.turn_1 }}`` (and the turn reads it), names used as participants are
declared, and ``{{``/``}}`` stay literal braces.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["convert", "is_seed_format"]

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NUMBERED = re.compile(r"turn_\d+")
_TURN_KEYS = ("role", "participant", "requires", "prefer", "description", "timeout")


def is_seed_format(data: Any) -> bool:
    """Whether ``data`` looks like the seed's format (numbered turns under ``prompts``)."""
    if not isinstance(data, dict):
        return False
    overrides = data.get("overrides")
    return ("prompts" in data or "additional_turns" in data
            or (isinstance(data.get("turns"), int) and not isinstance(data.get("turns"), bool))
            or (isinstance(overrides, dict)
                and any(isinstance(v, dict) and "template" in v for v in overrides.values())))


def _template(text: str, turn_ids: set[str], reads: list[str], fields: set[str]) -> str:
    """Python ``str.format`` fields as Jinja: ``{x}`` -> ``{{ x }}``, turns as turns.X;
    the turns read go to ``reads``, the other names (the inputs) to ``fields``."""

    def field(match: re.Match[str]) -> str:
        whole, name = match.group(0), match.group(1)
        if whole == "{{":
            return "{{ '{' }}"
        if whole == "}}":
            return "{{ '}' }}"
        if name in turn_ids or _NUMBERED.fullmatch(name):  # turn_N: maybe the parent's
            if name not in reads:
                reads.append(name)
            return "{{ turns." + name + " }}"
        fields.add(name)
        return "{{ " + name + " }}"

    return _FIELD.sub(field, text)


def _turn(key: str, spec: dict[str, Any], turn_ids: set[str], notes: list[str],
          fields: set[str]) -> dict[str, Any]:
    turn: dict[str, Any] = {"id": key}
    for name in _TURN_KEYS:
        if name in spec:
            turn[name] = spec[name]
    turn.setdefault("role", key)
    reads: list[str] = []
    if "template" in spec:
        turn["prompt"] = _template(str(spec["template"]), turn_ids, reads, fields)
    elif "prompt" in spec:
        turn["prompt"] = spec["prompt"]
    else:
        turn["prompt"] = f"Continue the dialogue as the {turn['role']}."
        notes.append(f"{key} had no template: it got a placeholder prompt")
    if reads:
        turn["context_from"] = reads
    unknown = sorted(set(spec) - set(_TURN_KEYS) - {"template", "prompt"})
    if unknown:
        notes.append(f"{key}: dropped keys dlg does not know: {', '.join(unknown)}")
    return turn


def _ordered(prompts: dict[str, Any]) -> list[str]:
    def number(key: str) -> tuple[int, str]:
        m = re.search(r"(\d+)$", key)
        return (int(m.group(1)) if m else 10**9, key)

    return sorted(prompts, key=number)


def convert(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The dlg mode for a seed-format mode, and notes on what changed."""
    notes: list[str] = []
    prompts = data.get("prompts") or {}
    extra = data.get("additional_turns") or {}
    overrides = data.get("overrides") or {}
    keys = _ordered(prompts)
    turn_ids = set(keys) | set(extra) | set(overrides)
    for key in turn_ids:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"'{key}' cannot be a turn id: use letters, digits and _")
    out: dict[str, Any] = {"name": data.get("name", "converted")}
    for key in ("description", "extends", "system", "settings", "timeout"):
        if key in data:
            out[key] = data[key]
    fields: set[str] = set()
    turns = [_turn(k, prompts[k], turn_ids, notes, fields) for k in keys]
    added = [_turn(k, extra[k], turn_ids, notes, fields) for k in _ordered(extra)]
    used = sorted({t["participant"] for t in turns + added if t.get("participant")})
    if "extends" not in data:
        if used:
            out["participants"] = {p: {} for p in used}
        out["inputs"] = {name: {"required": name == "topic"} for name in sorted(fields)}
    if turns:
        structure = data.get("structure", "sequential")
        if structure in ("sequential", "parallel"):
            out["structure"] = structure
        out["turns"] = turns
    if overrides:
        out["overrides"] = {}
        for key, patch in overrides.items():
            changed = {k: v for k, v in patch.items() if k in _TURN_KEYS}
            if "template" in patch:
                changed["prompt"] = _template(str(patch["template"]), turn_ids, [], fields)
            out["overrides"][key] = changed
    if added:
        out["add"] = [{"at": "end", "turns": added}]
    declared = data.get("turns")
    if isinstance(declared, int):
        defined = len(turns) + len(added)
        if "extends" not in data and declared != defined:
            notes.append(f"'turns' said {declared} but {defined} turns are defined: dlg runs "
                         "the turns that are defined")
    notes.append("{name} fields became Jinja ({{ name }}); {turn_N} became "
                 "{{ turns.turn_N }} and the turn reads turn_N")
    if used:
        notes.append(f"participants {', '.join(used)} are declared without models: bind them "
                     "with --participant NAME=SPEC or add model: under participants")
    return out, notes
