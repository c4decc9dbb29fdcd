"""What is running right now: the dialogue, turn and span ids of the current task.

The kernel sets these context variables; anyio copies them into the tasks a turn or a
parallel phase starts, so logs, spans and metrics emitted anywhere inside a turn (by dlg,
LangChain or an HTTP client) can be tied back to it.
"""

from __future__ import annotations

import os
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["current", "dialogue_id", "new_span_id", "scope", "span_id", "turn_id"]

# (dialogue id, parent dialogue id, turn id, span id): one variable, so entering a turn
# or a dialogue sets one thing (thousands of turns may be in flight)
_ids: ContextVar[tuple[str | None, str | None, str | None, str | None]] = ContextVar(
    "dlg_ids", default=(None, None, None, None))


def dialogue_id() -> str | None:
    return _ids.get()[0]


def turn_id() -> str | None:
    return _ids.get()[2]


def span_id() -> str | None:
    return _ids.get()[3]


def new_span_id() -> str:
    return os.urandom(8).hex()


class scope:
    """Enter a dialogue or a turn: set its ids (and a new span id) until the block ends.

    A small class rather than a generator: one of these is alive for every turn in
    flight, so it is kept light.
    """

    __slots__ = ("_dialogue", "_token", "_turn", "span")

    def __init__(self, *, dialogue: str | None = None, turn: str | None = None):
        self._dialogue = dialogue
        self._turn = turn
        self._token: Token[Any] | None = None
        self.span = ""

    def __enter__(self) -> str:
        dialogue, parent, turn, _ = _ids.get()
        if self._dialogue is not None:
            if dialogue is not None and dialogue != self._dialogue:
                parent = dialogue  # a sub-dialogue: its parent's id stays known
            dialogue, turn = self._dialogue, None
        if self._turn is not None:
            turn = self._turn
        self.span = new_span_id()
        self._token = _ids.set((dialogue, parent, turn, self.span))
        return self.span

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _ids.reset(self._token)
            self._token = None


_KEYS = ("dialogue_id", "parent_dialogue_id", "turn_id", "span_id")


def current() -> dict[str, str]:
    """The ids in force, for a log record or a span."""
    return {k: v for k, v in zip(_KEYS, _ids.get(), strict=True) if v is not None}
