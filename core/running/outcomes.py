"""What a turn's steps answer: the kernel reads an outcome and records it.

A step (``prepare``, a structured answer, spawning sub-dialogues, a refinement loop's round)
never writes the kernel's state (whether the dialogue stopped or failed) nor a turn's
status: it returns one of these and the kernel acts on it, in one place
(``dlg.running.kernel``). A step's successful answer is its own type (a ``Plan``, a
``Structured`` answer, ``DONE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from dlg.models.caching import CacheHint

__all__ = ["DONE", "Done", "Failed", "Plan", "Skipped", "Stopped", "Structured"]


class Plan:
    """A prepared turn: what its model call needs."""

    __slots__ = ("bound", "cache", "choice", "extra_cost", "fallbacks", "label", "messages",
                 "output", "prompt", "reservation", "settings", "system")

    def __init__(self, system: str | None, prompt: str, messages: Any, choice: Any,
                 settings: dict[str, Any], fallbacks: tuple[Any, ...], reservation: Any,
                 bound: int, output: dict[str, Any] | None, label: str, extra_cost: float,
                 cache: CacheHint | None = None):
        self.system, self.prompt, self.messages, self.choice = system, prompt, messages, choice
        self.settings, self.fallbacks, self.reservation = settings, fallbacks, reservation
        self.bound, self.output, self.label, self.extra_cost = bound, output, label, extra_cost
        self.cache = cache  # for a provider's prompt cache (dlg.models.caching)


@dataclass(frozen=True, slots=True)
class Skipped:
    """The turn does not run (its ``when`` is false, or a ``before_turn`` plugin said
    so): recorded ``skipped``, with who skipped it and why when a plugin did."""

    by: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Stopped:
    """The dialogue stops before (or after) this turn with ``status`` (``cost_limited``,
    ``stopped``, ...): turns not run stay pending, for a resume. ``pending``: the turn
    itself stays pending too (its sub-dialogues ran out of budget, so a resume with more
    continues them)."""

    status: str
    reason: str
    by: str | None = None
    pending: bool = False

    def as_tuple(self) -> tuple[str, str, str | None]:
        return self.status, self.reason, self.by


@dataclass(frozen=True, slots=True)
class Failed:
    """The turn failed, with ``message`` (redacted by the kernel). ``started``: whether
    it got as far as its call (a failure while preparing it did not). ``result``: the
    answer it got, if any (a structured answer that never matched its schema), so its
    usage, cost and text are recorded all the same."""

    message: str
    started: bool = True
    result: Any = None


@dataclass(frozen=True, slots=True)
class Structured:
    """A structured answer that matched its schema: the model's result (usage and cost
    summed over its repairs) and the parsed ``data``."""

    result: Any
    data: Any


@dataclass(frozen=True, slots=True)
class Done:
    """A step that finished and has nothing more to say (sub-dialogues that all ended)."""


DONE: Final = Done()
