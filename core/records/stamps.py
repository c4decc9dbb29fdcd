"""Ids and times in records: dialogue ids (made, and checked when a user gives one) and
timestamps to the microsecond, written as ISO 8601 in UTC.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from dlg import process

__all__ = ["ID_CHARACTERS", "check_id", "from_iso", "iso", "new_dialogue_id", "now"]


def now() -> float:
    """Wall-clock time, to the microsecond, so records round-trip through ISO 8601 exactly
    (whole microseconds over 10**6: the float ``round(time.time(), 6)`` gives, in a fifth
    of the time)."""
    return time.time_ns() // 1000 / 1_000_000


_stamp: tuple[int, str] = (-1, "")  # the last second an id was made in, formatted


def new_dialogue_id() -> str:
    """Sortable and readable: ``20261123-230512-3fa9c1d2``."""
    global _stamp
    second = int(time.time())
    if _stamp[0] != second:
        _stamp = (second, time.strftime("%Y%m%d-%H%M%S", time.gmtime(second)))
    return f"{_stamp[1]}-{process.random_bits(32):08x}"


ID_CHARACTERS = "A-Za-z0-9._-"  # what an id given by the user may hold (a class in a regex)


def check_id(value: Any, what: str = "dialogue id", longest: int = 128) -> str:
    """``value`` if it can name a dialogue (or a batch): letters, digits, ``.``, ``_``
    and ``-``, starting with a letter or digit, at most ``longest`` characters. An id
    becomes a file name when a dialogue is exported into a folder, so one that could
    lead out of it (``../x``, ``a/b``) is refused where it is given."""
    import re

    from dlg.errors import InputError

    if not isinstance(value, str) or not re.fullmatch(
            f"[A-Za-z0-9][{ID_CHARACTERS}]*", value) or len(value) > longest:
        raise InputError(
            f"{what} {value!r} cannot be used: give 1 to {longest} letters, digits, '.', "
            "'_' or '-', starting with a letter or digit")
    return value


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _iso_known(ts)


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text


def _iso_known(ts: float) -> str:
    """``ts`` in ISO 8601 to the microsecond, UTC (``2026-11-30T21:44:11.123456Z``).
    Every save formats a turn's times: the date and time of the second are made once
    per second, the microseconds each time (a fifth of the time of ``isoformat``)."""
    global _second
    second = math.floor(ts)
    micro = round((ts - second) * 1_000_000)  # half to even, as ``fromtimestamp`` rounds
    if not 0 <= micro < 1_000_000 or not 0 <= second < 253402300800:  # up to year 9999
        return _iso_slow(ts)
    if _second[0] != second:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{micro:06d}Z"


def _iso_slow(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z"
    )


def from_iso(value: str | None) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
