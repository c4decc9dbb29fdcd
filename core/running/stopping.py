"""Stopping early: a mode's ``until`` (a condition, or answers that stopped changing) and
``max_turns``, checked after every completed turn.

- ``until.condition``: a Jinja expression over the turns so far (``turns.ID.text``,
  ``turns.ID.data``, the inputs): when it is true, the dialogue stops with status
  ``converged``;
- ``until.similarity``: when a turn's answer is at least this similar (cosine, by the
  configured embeddings) to the previous answer of the same role, it has converged;
- ``max_turns``: after this many completed turns, status ``max_turns``.

Turns not run stay pending, so ``dlg resume`` can continue a dialogue that stopped.
"""

from __future__ import annotations

from typing import Any

from dlg.language.templates import TurnsView

__all__ = ["Stopping"]


class Stopping:
    """Checks a mode's stop conditions after each turn; see the module docstring."""

    def __init__(self, mode: Any, env: Any, base_context: dict[str, Any],
                 embeddings: Any) -> None:
        self.until = mode.until
        self.max_turns = mode.max_turns
        self.base_context = base_context
        self._embeddings = embeddings  # a function returning the embeddings
        self._condition = (env.compile_expression(mode.until["condition"])
                           if mode.until.get("condition") else None)

    @property
    def active(self) -> bool:
        return bool(self.until) or self.max_turns is not None

    def check(self, records: list[Any], finished: Any) -> tuple[str, str] | None:
        """(status, reason) if the dialogue should stop now that ``finished`` is done."""
        done = [r for r in records if r.status == "completed"]
        if self.max_turns is not None and len(done) >= self.max_turns:
            return "max_turns", f"{len(done)} turns completed (max_turns {self.max_turns})"
        if self._condition is not None:
            view = TurnsView(done)
            try:  # a turn it reads may not have run yet: then it does not hold
                holds = self._condition(**{**self.base_context, "turns": view,
                                           "context": list(view.values())})
            except Exception:
                holds = False
            if holds:
                return "converged", f"until: {self.until['condition']}"
        threshold = self.until.get("similarity")
        if threshold and finished.status == "completed":
            earlier = [r for r in done if r.role == finished.role and r is not finished]
            if earlier:
                from dlg.running.compression import cosine

                embed = self._embeddings()
                a, b = embed.embed_documents([earlier[-1].response or "",
                                              finished.response or ""])
                similarity = cosine(a, b)
                if similarity >= threshold:
                    return "converged", (f"'{finished.role}' answered {similarity:.2f} alike "
                                         f"twice (until.similarity {threshold:g})")
        return None
