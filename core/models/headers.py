"""A provider's response headers, read as hostile input: what the rate-limit waits
(``dlg.models.ratelimits``) and the pacer (``dlg.models.pacing``) both read."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_HEADER_CHARS", "header"]

MAX_HEADER_CHARS = 64  # a longer value is not believed


def header(headers: Any, name: str) -> str | None:
    """A header's value, stripped; None when it is missing, empty, longer than
    ``MAX_HEADER_CHARS`` or the mapping itself is broken."""
    try:
        value = headers.get(name)
    except Exception:  # a broken mapping is no header
        return None
    if value is None:
        return None
    value = str(value).strip()
    return value if 0 < len(value) <= MAX_HEADER_CHARS else None
