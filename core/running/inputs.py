"""What a dialogue starts from: the user's inputs, checked against the mode's
declarations (defaults, required, types), and the new, pending ``Dialogue`` record; and a
batch's rows of inputs, read from a ``.jsonl`` or ``.csv`` file or given from Python, held
to the bounds a mode is."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlg._version import __version__
from dlg.errors import InputError
from dlg.language.mode import Mode
from dlg.records import record as R
from dlg.records.record import Dialogue, TurnRecord

__all__ = ["MAX_ROWS", "check_rows", "checked_row", "new_dialogue", "prepare_inputs",
           "read_rows"]

MAX_INPUT_BYTES = 64 << 20  # an inputs file
MAX_ROWS = 100_000  # rows of a batch

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def prepare_inputs(mode: Mode, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check inputs against the mode's declarations: defaults, required, types."""
    out: dict[str, Any] = {}
    _check_values(given)
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


def check_rows(mode: Mode, rows: list[dict[str, Any]]) -> None:
    """A batch's rows against the mode's inputs, before anything runs: an input it does
    not have (a CSV column, a JSONL key), one it needs that rows lack, a value of the
    wrong type. Raises ``InputError`` saying each, with what the mode reads; a batch
    that ran would fail those rows, and resuming it would fail them again."""
    unknown: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    values: list[str] = []
    needed = [n for n, d in mode.inputs.items() if d.required and d.default is None]
    for number, row in enumerate(rows, 1):
        for name in row:
            if name not in mode.inputs:
                unknown.setdefault(name, []).append(number)
        for name in needed:
            if row.get(name) is None:
                missing.setdefault(name, []).append(number)
        if any(n not in mode.inputs for n in row) or any(row.get(n) is None for n in needed):
            continue
        try:
            prepare_inputs(mode, row)
        except InputError as exc:
            values.append(f"row {number}: {exc}")
    if not (unknown or missing or values):
        return
    lines = [f"{n!r:.60} ({_rows(at, len(rows))}) is not one of its inputs"
             for n, at in list(unknown.items())[:5]]
    if len(unknown) > 5:  # rows of a JSONL file may each name others
        lines.append(f"... and {len(unknown) - 5} more names that are not its inputs")
    lines += [f"'{n}', which it needs, is missing from {_rows(at, len(rows))}"
              for n, at in missing.items()]
    lines += values[:5] + ([f"... and {len(values) - 5} more rows"] if len(values) > 5 else [])
    lines.append(f"mode '{mode.name}' reads: " + (", ".join(
        _declared(d) for d in mode.inputs.values()) or "no inputs"))
    hint = _meant(list(unknown), [n for n in mode.inputs if n not in unknown], missing)
    if hint:
        lines.append(f"hint: {hint}")
    raise InputError(f"the inputs do not fit mode '{mode.name}' (nothing ran):\n"
                     + "\n".join(f"  {line}" for line in lines))


def _rows(numbers: list[int], total: int) -> str:
    """``every row``, ``row 2 of 4``, ``rows 2 and 3 of 4``, ``rows 2, 3, 5 and 9 more``."""
    if len(numbers) == total and total > 1:
        return "every row"
    if len(numbers) == 1:
        return f"row {numbers[0]} of {total}"
    shown = ", ".join(map(str, numbers[:3]))
    more = len(numbers) - 3
    if more > 0:
        return f"rows {shown} and {more} more of {total}"
    return f"rows {shown.rpartition(', ')[0]} and {numbers[-1]} of {total}"


def _declared(decl: Any) -> str:
    """``topic (required: The motion under debate)``, ``n (an integer, default 3)``."""
    about = []
    if decl.type != "string":
        about.append(f"{'an' if decl.type[0] in 'aeiou' else 'a'} {decl.type}")
    if decl.default is not None:
        about.append(f"default {decl.default!r}")
    elif decl.required:
        about.append("required")
    text = ", ".join(about)
    if decl.description:
        text += (": " if text else "") + decl.description
    return f"{decl.name} ({text})" if text else decl.name


def _meant(unknown: list[str], known: list[str], missing: dict[str, list[int]]) -> str | None:
    """The input an unknown name is likely meant to be: the closest, else the one input
    the rows lack when one name is unknown (a column named otherwise)."""
    import difflib

    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"is '{name}' meant to be '{close[0]}'?"
    if len(unknown) == 1 and len(missing) == 1:
        return f"is '{unknown[0]}' meant to be '{next(iter(missing))}'?"
    return None


def _check_values(given: Mapping[str, Any]) -> None:
    """Inputs that no store could save are refused before anything runs: text that is
    not valid Unicode (``--topic`` with a byte that is not UTF-8, from a terminal set to
    another encoding), numbers that are not finite, nesting too deep."""
    if all(type(v) is str and v.isascii() for v in given.values()):
        return  # the usual case, plain text: nothing to walk (names must be the mode's)
    from dlg.language.limits import LimitError, check_shape

    try:
        check_shape(dict(given))
    except LimitError as exc:
        from dlg.language.source import format_path

        name, inner = (exc.path[0], exc.path[1:]) if exc.path else ("?", ())
        where = f" at {format_path(inner)}" if inner else ""
        raise InputError(f"input '{name}'{where}: {exc}") from None


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


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a ``.jsonl`` (one JSON object a line) or ``.csv`` (a header row) file;
    a bad line is an ``InputError`` naming the file and the line."""
    from dlg.language.limits import LimitError, check_shape, read_text

    path = Path(path)
    try:
        text = read_text(path, limit=MAX_INPUT_BYTES)
    except (OSError, LimitError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the inputs file {path}: {exc}") from None
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        # strict: a quote left open or a stray one is an error, not a value that runs on
        reader = csv.DictReader(io.StringIO(text), strict=True)
        try:
            if not reader.fieldnames:
                raise InputError(f"{path}: the CSV file has no header row naming the inputs")
            for row in reader:
                if None in row:
                    raise InputError(f"{path}:{reader.line_num}: more values than the "
                                     f"header names ({len(reader.fieldnames)})")
                rows.append({k: v for k, v in row.items() if v not in (None, "")})
        except csv.Error as exc:
            hint = ("; a .jsonl file holds inputs of any length"
                    if "field limit" in str(exc) else "")
            raise InputError(f"{path}:{reader.line_num + 1}: not valid CSV ({exc}){hint}"
                             ) from None
    elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                check_shape(row)
            except LimitError as exc:  # too deep, too large: the bounds a mode has
                from dlg.language.source import format_path

                raise InputError(f"{path}:{number}: {format_path(exc.path)}: {exc}") from None
            except ValueError as exc:
                raise InputError(f"{path}:{number}: not a JSON object ({exc})") from None
            except RecursionError:  # deeper than json can read
                raise InputError(f"{path}:{number}: nested too deeply") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: each line must be a JSON object of "
                                 f"inputs, not {type(row).__name__}")
            rows.append(row)
    else:
        raise InputError(f"{path}: inputs must be a .jsonl or a .csv file")
    if not rows:
        raise InputError(f"{path}: no rows of inputs")
    if len(rows) > MAX_ROWS:
        raise InputError(f"{path}: {len(rows):,} rows; a batch holds at most {MAX_ROWS:,}")
    return rows


def checked_row(index: int, row: Any) -> dict[str, Any]:
    """A row given from Python, checked as a file's rows are: a mapping of input names to
    values the store can keep (the batch is saved with its rows, to be resumed)."""
    if not isinstance(row, Mapping):
        raise InputError(f"row {index} of the inputs is {type(row).__name__}: each row is a "
                         "mapping of input names to values")
    from dlg.language.limits import LimitError, check_shape

    out = dict(row)
    for name, value in out.items():
        if not isinstance(name, str):
            raise InputError(f"row {index} of the inputs: input names are text, not "
                             f"{type(name).__name__} ({name!r})")
        try:
            json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            raise InputError(f"row {index} of the inputs: '{name}' is {type(value).__name__}, "
                             "which a batch cannot save: give text, a number, true or false, "
                             "or lists and mappings of those") from None
    try:
        check_shape(out)  # the bounds a file's rows are held to (depth, size, finite)
    except LimitError as exc:
        from dlg.language.source import format_path

        raise InputError(f"row {index} of the inputs: {format_path(exc.path)}: {exc}"
                         ) from None
    return out
