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

Output that is closed while dlg writes (``dlg run ... | head``) stops the writing, not
the command: the stream is pointed at the null device and the command goes on, so a
dialogue runs to its end and is saved as it would be (no ``Broken pipe`` message, no
traceback, exit status 0). Its text is in the store: ``dlg show ID`` or ``dlg export ID``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import click

from dlg.observability.printable import visible

__all__ = ["closed", "echo", "is_terminal", "one_line", "rich_text", "visible",
           "write_bytes"]


def closed(stream: Any) -> None:
    """Writing to ``stream`` met a broken pipe: its reader went away. The stream is
    pointed at the null device, so what dlg writes after is dropped and Python's flush
    at exit does not fail on it either."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):  # no file descriptor (a test's stream): nothing to flush
        pass


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
    stream = sys.stderr if err else sys.stdout
    if is_terminal(stream):
        text = visible(text)
    try:
        # color=True: click would otherwise strip what looks like a colour code from text
        # bound for a pipe; there is none left in text bound for a terminal
        click.echo(text, err=err, nl=nl, color=True)
    except BrokenPipeError:
        closed(stream)


def write_bytes(data: bytes) -> None:
    """Bytes to stdout (a binary export); dropped once its reader has gone away."""
    try:
        sys.stdout.buffer.write(data)
    except BrokenPipeError:
        closed(sys.stdout)


def rich_text(text: str) -> str:
    """``text`` to give rich where it reads markup (``console.print``, table cells,
    titles): control characters made visible and markup escaped."""
    from rich.markup import escape

    return escape(visible(text))
