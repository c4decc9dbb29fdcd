"""What dlg prints to a terminal.

Most of what the commands print comes from outside dlg: model replies, a dialogue's
inputs, saved records, error messages that quote them. Text bound for a terminal has its
control characters made visible (``dlg.observability.printable``), so a reply cannot
move the cursor, clear the screen or retitle the window. Output to a file or a pipe is
left exact: ``dlg export ID > out.md`` and ``dlg ls --json | jq`` get the bytes that
were saved.

Text drawn by rich (the live views) is also escaped from rich's markup, where a
``[/...]`` in an error message would otherwise be read as a closing tag (and fail the
display).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click

from dlg.observability.printable import visible

__all__ = ["echo", "is_terminal", "one_line", "rich_text", "visible"]


def one_line(text: str) -> str:
    """``text`` for a table cell: each run of whitespace, line breaks included, as one
    space, and its other control characters made visible."""
    return visible(" ".join(text.split()))


def is_terminal(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def echo(message: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` for text that may come from outside dlg: made ``visible`` when the
    stream is a terminal, exact otherwise."""
    text = "" if message is None else str(message)
    if is_terminal(sys.stderr if err else sys.stdout):
        text = visible(text)
    # color=True: click would otherwise strip what looks like a colour code from text
    # bound for a pipe; there is none left in text bound for a terminal
    click.echo(text, err=err, nl=nl, color=True)


def rich_text(text: str) -> str:
    """``text`` to give rich where it reads markup (``console.print``, table cells,
    titles): control characters made visible and markup escaped."""
    from rich.markup import escape

    return escape(visible(text))
