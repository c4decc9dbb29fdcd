"""Bounds on what a mode may make dlg do: the files it reads and the data it holds.

A mode, its parents, its prompt files and its templates are hostile input. They are read
only from regular files (never a device, a FIFO or a directory), up to ``MAX_FILE_BYTES``,
and a parsed document may not be deeper than ``MAX_DEPTH`` or expand (through YAML
aliases) to more than ``MAX_NODES`` values. Files a mode names are confined to folders
(``confined``): the mode's own folder and the template folders, symlinks resolved.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "LimitError",
    "check_shape",
    "check_text",
    "confined",
    "is_text",
    "positive",
    "read_text",
]

MAX_FILE_BYTES = 1 << 20  # a mode, prompt file or template: 1 MiB
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_NODES = 100_000  # values in a document, counting each use of a YAML alias
MAX_INT_DIGITS = 18  # integers a mode may hold (a timeout, a count): below 10**18


class LimitError(ValueError):
    """Input over one of the bounds above; ``path`` is the JSON path, when known."""

    def __init__(self, message: str, path: tuple[Any, ...] = ()):
        super().__init__(message)
        self.path = path


def read_text(path: Path, *, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes, without the byte
    order mark some editors put first (Excel's "CSV UTF-8", Notepad), which would
    otherwise be part of the first key or column name.

    Raises ``FileNotFoundError``, ``IsADirectoryError``, ``LimitError`` (not a regular
    file, or too large), ``UnicodeDecodeError`` or ``OSError``. The file is checked
    before it is opened, so a FIFO or a device is never opened (which could block).
    """
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(str(path))
    if not stat.S_ISREG(info.st_mode):
        raise LimitError(f"'{path}' is not a regular file (a device, FIFO or socket)")
    if info.st_size > limit:
        raise LimitError(f"'{path}' is {info.st_size:,} bytes; the limit is {limit:,}")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # it grew since stat
        raise LimitError(f"'{path}' is over {limit:,} bytes")
    return data.decode("utf-8-sig")


def confined(base: Path, name: str, roots: list[Path]) -> Path | None:
    """``base / name`` if it is inside one of ``roots`` once symlinks are resolved;
    None if ``name`` is absolute, climbs with ``..``, or resolves outside them."""
    if not name or os.path.isabs(name) or name.startswith("~"):
        return None
    if any(part == ".." for part in Path(name).parts):
        return None
    candidate = (base / name).resolve()
    for root in roots:
        real = root.resolve()
        if candidate == real or real in candidate.parents:
            return candidate
    return None


def positive(value: Any, name: str, unit: str, *, zero: bool = False) -> float | None:
    """``value`` (a ``max_cost``, a ``timeout``, given as an argument or an option) as a
    finite number more than 0 (at least 0, with ``zero``), or None for None; an
    ``InputError`` saying what is wrong with it otherwise. A NaN would pass every
    comparison and so hold nothing."""
    from dlg.errors import InputError

    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number of {unit}, not {value!r}") from None
    if not (math.isfinite(number) and (number >= 0 if zero else number > 0)):
        raise InputError(f"{name} must be a finite number of {unit} "
                         f"{'of at least 0' if zero else 'more than 0'}, not {value!r}")
    return number


def is_text(text: str) -> bool:
    """Whether ``text`` is valid Unicode. It is not when it holds a lone surrogate, which
    is what Python makes of a byte that is not UTF-8 in a command's arguments (a terminal
    set to another encoding) or of a ``\\ud800`` escape in JSON: no file, store or
    terminal can take it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(text: str, path: tuple[Any, ...] = ()) -> None:
    """Raise ``LimitError``, saying where, if ``text`` is not valid Unicode (``is_text``)."""
    if not is_text(text):
        at = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
        raise LimitError(f"the text is not valid Unicode at character {at + 1} (a byte "
                         "that is not UTF-8, or a lone surrogate): write it in UTF-8", path)


def check_shape(data: Any) -> None:
    """Raise ``LimitError`` if ``data`` (parsed JSON or YAML) is too deep, too large once
    aliases are expanded, has a key that is not a string, an integer too large, or a
    number that is not finite (YAML's ``.nan`` and ``.inf``, ``1e400``: a NaN passes
    every "at least" and "at most", so a ``timeout`` or ``max_cost`` of NaN would hold
    nothing).

    Shared (aliased) values are counted once per use without walking them again, so a
    "billion laughs" document is refused in time linear in its text.
    """
    sizes: dict[int, int] = {}

    def size(node: Any, path: tuple[Any, ...], depth: int) -> int:
        if depth > MAX_DEPTH:
            raise LimitError(f"nested more than {MAX_DEPTH} levels deep", path)
        if isinstance(node, float):
            if not math.isfinite(node):
                raise LimitError(f"{node} is not a finite number", path)
            return 1
        if isinstance(node, str):
            check_text(node, path)
            return 1
        if isinstance(node, bool) or node is None:
            return 1
        if isinstance(node, int):
            if abs(node) >= 10**MAX_INT_DIGITS:
                raise LimitError("this number is too large", path)
            return 1
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        total = 1
        if isinstance(node, dict):
            for k, v in node.items():
                if not isinstance(k, str):
                    raise LimitError(f"the key {k!r} is not a string: quote it", (*path, str(k)))
                check_text(k, (*path, k.encode("utf-8", "backslashreplace").decode()))
                total += size(v, (*path, k), depth + 1)
                if total > MAX_NODES:
                    break
        elif isinstance(node, list | tuple):
            for i, v in enumerate(node):
                total += size(v, (*path, i), depth + 1)
                if total > MAX_NODES:
                    break
        else:  # a date, bytes, ...: one value, which the schema then judges
            return 1
        if total > MAX_NODES:
            raise LimitError(f"the document expands to more than {MAX_NODES:,} values "
                             "(YAML aliases count each time they are used)", path)
        sizes[key] = total
        return total

    size(data, (), 0)
