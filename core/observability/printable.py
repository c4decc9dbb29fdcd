"""Text from outside dlg, made safe to print.

Model replies, a dialogue's inputs and the error messages that quote them can hold
control characters, and a terminal acts on them: an escape sequence can move the cursor,
clear the screen, retitle the window or write the clipboard (OSC 52), and a carriage
return can hide what came before it on the line. In a log, a line break can forge the
next record. ``visible`` shows each such character as a ``\\uXXXX`` escape instead (valid
inside a JSON string too, so JSON stays JSON).
"""

from __future__ import annotations

import re

__all__ = ["visible"]

# C0 but tab and newline, DEL, and C1 (U+0080..U+009F: 0x9B is a CSI on some terminals)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_BREAK = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str, *, lines: bool = True) -> str:
    """``text`` with its control characters shown as ``\\uXXXX``. With ``lines``, newlines
    and tabs are kept and a CRLF line end becomes a newline; without, a line break is
    escaped too (one log record, one line)."""
    pattern = _CONTROL if lines else _CONTROL_OR_BREAK
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text.replace("\r\n", "\n") if lines else text)
