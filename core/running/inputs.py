"""What a dialogue starts from: the user's inputs, checked against the mode's
declarations (defaults, required, types), and the new, pending ``Dialogue`` record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlg._version import __version__
from dlg.errors import InputError
from dlg.language.mode import Mode
from dlg.records import record as R
from dlg.records.record import Dialogue, TurnRecord

__all__ = ["new_dialogue", "prepare_inputs"]

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def prepare_inputs(mode: Mode, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check inputs against the mode's declarations: defaults, required, types."""
    out: dict[str, Any] = {}
    unknown = [k for k in given if k not in mode.inputs]
    if unknown:
        known = ", ".join(mode.inputs) or "none"
        raise InputError(
            f"mode '{mode.name}' has no input '{unknown[0]}' (its inputs: {known})"
        )
    for name, decl in mode.inputs.items():
        if name in given and given[name] is not None:
            out[name] = _coerce_input(mode, name, decl.type, given[name])
        elif decl.default is not None:
            out[name] = decl.default
        elif decl.required:
            flag = "--topic TEXT" if name == "topic" else f"--input {name}=VALUE"
            raise InputError(
                f"mode '{mode.name}' needs the input '{name}'"
                + (f" ({decl.description})" if decl.description else "")
                + f": pass {flag}"
            )
    return out


def _coerce_input(mode: Mode, name: str, kind: str, value: Any) -> Any:
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    try:
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).lower() in _TRUE | _FALSE:
                return str(value).lower() in _TRUE
            raise ValueError
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind == "number":
            return float(value)
    except (TypeError, ValueError):
        pass
    article = "an" if kind[0] in "aeiou" else "a"
    raise InputError(f"input '{name}' of mode '{mode.name}' must be {article} {kind}, got "
                     f"{value!r}")


def new_dialogue(mode: Mode, inputs: dict[str, Any], dialogue_id: str | None = None,
                 participants: Mapping[str, Any] | None = None) -> Dialogue:
    return Dialogue(
        id=dialogue_id or R.new_dialogue_id(),
        mode=mode.name,
        mode_hash=mode.content_hash,
        mode_source=mode.source,
        inputs=dict(inputs),
        participants=dict(participants or {}),
        turns=[
            TurnRecord(id=t.id, index=t.index, role=t.role, phase=t.phase,
                       participant=t.participant, requires=t.requires)
            for t in mode.turns
        ],
        dlg_version=__version__,
    )
