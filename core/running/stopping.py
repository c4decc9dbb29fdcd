"""Stopping early: a mode's ``until`` (a condition, answers that stopped changing, a judge
that says so) and ``max_turns``, checked after every completed turn.

- ``until.condition``: a Jinja expression over the turns so far (``turns.ID.text``,
  ``turns.ID.data``, the inputs): when it is true, the dialogue stops with status
  ``converged``;
- ``until.similarity``: when a turn's answer is at least this similar (cosine, by the
  configured embeddings, or ``until.embeddings``) to the previous answer of the same role,
  it has converged;
- ``until.judge``: a turn with an output schema whose ``data.converged`` is true (or
  ``"yes"``) says it has converged;
- ``until.patience``: similarity and judge must hold this many times in a row (default
  1): ``patience: 2`` wants three answers of a role each alike to the one before, or two
  judges in a row saying yes;
- ``until.min_turns``: ``until`` is not looked at before this many turns completed;
- ``max_turns``: after this many completed turns, status ``max_turns``.

Turns not run stay pending, so ``dlg resume`` can continue a dialogue that stopped.
Refinement loops (``repeat.until``, see ``loops.py``) use ``verdict`` and ``Similarity``
from here.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from dlg.language.templates import TurnsView

__all__ = ["Similarity", "Stopping", "verdict"]

_YES = ("yes", "true", "converged", "done")
_NO = ("no", "false", "not converged", "continue")


def verdict(data: Any) -> bool | None:
    """A judge turn's structured answer: ``data.converged`` as True/False (a boolean, or
    yes/no in words), None when it says neither."""
    value = data.get("converged") if isinstance(data, dict) else None
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _YES else False if word in _NO else None
    return None


class Similarity:
    """Cosine similarity of two answers by embeddings made on first use (``embed(name)``
    gives them), each text embedded once."""

    def __init__(self, embed: Callable[..., Any], name: str | None) -> None:
        self._embed = embed
        self._name = name
        self._vectors: dict[str, list[float]] = {}

    def embeddings(self) -> Any:
        """The embeddings (an unknown name is a ``DlgError`` naming those installed)."""
        return self._embed(self._name) if self._name else self._embed()

    def __call__(self, a: str, b: str) -> float:
        from dlg.running.selection import cosine

        missing = [t for t in dict.fromkeys((a, b)) if t not in self._vectors]
        if missing:
            embeddings = self.embeddings()
            self._vectors.update(zip(missing, embeddings.embed_documents(missing),
                                     strict=True))
        return cosine(self._vectors[a], self._vectors[b])


class Stopping:
    """Checks a mode's stop conditions after each turn; see the module docstring."""

    def __init__(self, mode: Any, env: Any, base_context: dict[str, Any],
                 embeddings: Callable[..., Any]) -> None:
        self.until = mode.until
        self.max_turns = mode.max_turns
        self.base_context = base_context
        self.patience = int(self.until.get("patience") or 1)
        self.min_turns = int(self.until.get("min_turns") or 0)
        self._similarity = Similarity(embeddings, self.until.get("embeddings"))
        if self.until.get("embeddings"):  # a wrong name fails before the first turn
            self._similarity.embeddings()
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
        if len(done) < self.min_turns:
            return None
        if self._condition is not None:
            view = TurnsView(done)
            try:  # a turn it reads may not have run yet: then it does not hold
                holds = self._condition(**{**self.base_context, "turns": view,
                                           "context": list(view.values())})
            except Exception:
                holds = False
            if holds:
                return "converged", f"until: {self.until['condition']}"
        if finished.status != "completed":
            return None
        judge = self.until.get("judge")
        if judge and finished.turn_id == judge:
            said = [verdict(r.data) for r in done if r.turn_id == judge][-self.patience:]
            if len(said) == self.patience and all(said):
                return "converged", (f"'{judge}' judged it converged" + self._times())
        threshold = self.until.get("similarity")
        if threshold:
            answers = [r.response or "" for r in done if r.role == finished.role]
            answers = answers[-(self.patience + 1):]
            if len(answers) == self.patience + 1:
                alike = [self._similarity(a, b) for a, b in pairwise(answers)]
                if min(alike) >= threshold:
                    times = "twice" if self.patience == 1 else f"{self.patience + 1} times"
                    return "converged", (f"'{finished.role}' answered {min(alike):.2f} alike "
                                         f"{times} (until.similarity {threshold:g})")
        return None

    def _times(self) -> str:
        return "" if self.patience == 1 else f" {self.patience} times in a row"
