"""What is running right now: the dialogue, turn and span ids of the current task.

The kernel sets these context variables; anyio copies them into the tasks a turn or a
parallel phase starts, so logs, spans and metrics emitted anywhere inside a turn (by dlg,
LangChain or an HTTP client) can be tied back to it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from dlg.process import random_bits

__all__ = ["current", "dialogue_id", "enter", "leave", "new_span_id", "scope", "span_id",
           "turn_id"]

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
    """16 random hex digits (``dlg.process.random_bits``), one for every turn."""
    return random_bits(64).to_bytes(8, "big").hex()


def enter(*, dialogue: str | None = None, turn: str | None = None) -> Token[Any]:
    """Enter a dialogue or a turn: set its ids and a new span id; ``leave`` the returned
    token when it ends (``scope`` is the same as a ``with`` block). The kernel calls these
    directly: a scope object and its bound ``__exit__`` would stay alive for every turn in
    flight."""
    current_dialogue, parent, current_turn, _ = _ids.get()
    if dialogue is not None:
        if current_dialogue is not None and current_dialogue != dialogue:
            parent = current_dialogue  # a sub-dialogue: its parent's id stays known
        current_dialogue, current_turn = dialogue, None
    if turn is not None:
        current_turn = turn
    return _ids.set((current_dialogue, parent, current_turn, new_span_id()))


def leave(token: Token[Any]) -> None:
    """Restore the ids in force before ``enter`` returned ``token``."""
    _ids.reset(token)


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
        self._token = enter(dialogue=self._dialogue, turn=self._turn)
        self.span = span_id() or ""
        return self.span

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            leave(self._token)
            self._token = None


_KEYS = ("dialogue_id", "parent_dialogue_id", "turn_id", "span_id")


def current() -> dict[str, str]:
    """The ids in force, for a log record or a span."""
    return {k: v for k, v in zip(_KEYS, _ids.get(), strict=True) if v is not None}
