"""What is running right now: the dialogue, turn and span ids of the current task.

The kernel sets these context variables; anyio copies them into the tasks a turn or a
parallel phase starts, so logs, spans and metrics emitted anywhere inside a turn (by dlg,
LangChain or an HTTP client) can be tied back to it.
"""

from __future__ import annotations

import os
from contextvars import ContextVar, Token

__all__ = ["current", "dialogue_id", "new_span_id", "scope", "span_id", "turn_id"]

dialogue_id: ContextVar[str | None] = ContextVar("dlg_dialogue_id", default=None)
parent_dialogue_id: ContextVar[str | None] = ContextVar("dlg_parent_dialogue_id", default=None)
turn_id: ContextVar[str | None] = ContextVar("dlg_turn_id", default=None)
span_id: ContextVar[str | None] = ContextVar("dlg_span_id", default=None)


def new_span_id() -> str:
    return os.urandom(8).hex()


class scope:
    """Enter a dialogue or a turn: set its ids (and a new span id) until the block ends.

    A small class rather than a generator: one of these is alive for every turn in
    flight, so it is kept light.
    """

    __slots__ = ("_dialogue", "_tokens", "_turn", "span")

    def __init__(self, *, dialogue: str | None = None, turn: str | None = None):
        self._dialogue = dialogue
        self._turn = turn
        self._tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []
        self.span = ""

    def __enter__(self) -> str:
        tokens = self._tokens
        if self._dialogue is not None:
            outer = dialogue_id.get()
            if outer is not None and outer != self._dialogue:
                tokens.append((parent_dialogue_id, parent_dialogue_id.set(outer)))
            tokens.append((dialogue_id, dialogue_id.set(self._dialogue)))
            tokens.append((turn_id, turn_id.set(None)))
        if self._turn is not None:
            tokens.append((turn_id, turn_id.set(self._turn)))
        self.span = new_span_id()
        tokens.append((span_id, span_id.set(self.span)))
        return self.span

    def __exit__(self, *exc: object) -> None:
        for var, token in reversed(self._tokens):
            var.reset(token)
        self._tokens.clear()


def current() -> dict[str, str]:
    """The ids in force, for a log record or a span."""
    out = {}
    for key, var in (("dialogue_id", dialogue_id), ("parent_dialogue_id", parent_dialogue_id),
                     ("turn_id", turn_id), ("span_id", span_id)):
        value = var.get()
        if value is not None:
            out[key] = value
    return out
