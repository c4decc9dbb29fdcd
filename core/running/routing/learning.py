"""What routers learn from: quality scores per (task, model), kept in the store.

A **task** is a turn's role (lower case); a **model** is the name the pool gave it (else
its label). Scores are in [0, 1]: a user's rating (``dlg rate ID TURN SCORE``, with SCORE
from 0 to 10 or 0 to 1), a judge's score, or anything a plugin records with
``record_quality``. The store keeps a count, a mean and a spread for each pair (since
the last change it detected, and for the recent scores: see ``QualityStat``), updated
in one transaction, so several processes (or machines, on a shared store) learn
together. ``dlg routing stats`` shows them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dlg.errors import DlgError, InputError

__all__ = ["JudgeScores", "QualityStat", "normalise_score", "quality_key", "rate", "rating_history",
           "record_quality", "routing_stats"]


DISCOUNT = 0.9  # the recent statistics' weight on a score per newer score (about 10 recent)
CHANGE_Z = 3.0  # how many standard errors the recent mean may stray before a change is called
MIN_FOR_CHANGE = 6  # scores needed before a change can be called
HISTORY = 50  # the latest scores kept with each (task, model)'s statistics, for the viewer


@dataclass(frozen=True)
class QualityStat:
    """Scores for one (task, model): a count, mean and spread (Welford) of all of them;
    the same since the last change (``since_*``, what routers believe); and the same for
    the recent scores, discounted by ``DISCOUNT`` per newer score. When the recent mean
    strays from the mean since the last change by more than ``CHANGE_Z`` standard errors,
    the model has changed: the statistics since the change restart from the recent ones
    (``changes`` counts the restarts). Statistics saved before these existed (n, mean,
    m2) read as if no change had happened and all their scores were recent."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations (Welford)
    since_n: int = -1  # < 0: as n
    since_mean: float | None = None  # None: as mean
    since_m2: float | None = None  # None: as m2
    w: float = -1.0  # the recent scores' total weight (< 0: as n, at most a window)
    w2: float = -1.0  # the sum of their squared weights (< 0: as w)
    recent: float | None = None  # their weighted mean (None: as mean)
    recent_m2: float | None = None  # their weighted squared deviations (None: m2's share)
    changes: int = 0

    def __post_init__(self) -> None:  # an old record, or a new one
        weight = min(float(self.n), 1 / (1 - DISCOUNT))
        defaults = {"since_n": (self.since_n < 0, self.n),
                    "since_mean": (self.since_mean is None, self.mean),
                    "since_m2": (self.since_m2 is None, self.m2),
                    "w": (self.w < 0, weight), "w2": (self.w2 < 0, weight),
                    "recent": (self.recent is None, self.mean),
                    "recent_m2": (self.recent_m2 is None,
                                  self.m2 * weight / self.n if self.n else 0.0)}
        for name, (missing, value) in defaults.items():
            if missing:
                object.__setattr__(self, name, value)

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.5

    def add(self, score: float) -> QualityStat:
        n = self.n + 1
        delta = score - self.mean
        mean = self.mean + delta / n
        m2 = self.m2 + delta * (score - mean)
        since_n = self.since_n + 1
        since_old = float(self.since_mean or 0.0)
        since_mean = since_old + (score - since_old) / since_n
        since_m2 = float(self.since_m2 or 0.0) + (score - since_old) * (score - since_mean)
        recent_old = float(self.recent or 0.0)
        w = DISCOUNT * self.w + 1
        w2 = DISCOUNT ** 2 * self.w2 + 1
        recent = recent_old + (score - recent_old) / w
        recent_m2 = DISCOUNT * float(self.recent_m2 or 0.0) + (score - recent_old) * (
            score - recent)
        stat = QualityStat(n, mean, m2, since_n, since_mean, since_m2, w, w2, recent,
                           recent_m2, self.changes)
        if stat.changed():
            # restart from the recent scores: the older ones describe another model
            kept = max(1, round(w))
            return QualityStat(n, mean, m2, kept, recent, recent_m2 * kept / w, w, w2, recent,
                               recent_m2, self.changes + 1)
        return stat

    def changed(self) -> bool:
        """Whether the recent mean is too far from the mean since the last change for one
        model's scores."""
        window = 1 / (1 - DISCOUNT)
        n = self.since_n
        if n < (2 * window if self.changes else MIN_FOR_CHANGE) or self.w <= 0:
            return False  # after a change: not again before the new mean has settled
        sd = max(math.sqrt(float(self.since_m2 or 0.0) / (n - 1)), 0.02)
        # the variance of (recent mean - mean), in units of one score's: the recent
        # mean's, less twice their covariance (the recent weight on the last n scores,
        # spread over n), plus the mean's
        shared = min(1.0, (1 - DISCOUNT ** n) / ((1 - DISCOUNT) * self.w))
        spread = sd * math.sqrt(max(self.w2 / self.w ** 2 - (2 * shared - 1) / n, 1e-12))
        return abs(float(self.recent or 0.0) - float(self.since_mean or 0.0)) > (
            CHANGE_Z * spread)

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": round(self.mean, 6), "m2": round(self.m2, 6),
                "since_n": self.since_n, "since_mean": round(float(self.since_mean or 0), 6),
                "since_m2": round(float(self.since_m2 or 0), 6),
                "w": round(self.w, 6), "w2": round(self.w2, 6),
                "recent": round(float(self.recent or 0), 6),
                "recent_m2": round(float(self.recent_m2 or 0), 6), "changes": self.changes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityStat:
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        since = number("since_n")
        return cls(int(data.get("n", 0)), float(data.get("mean", 0.0)),
                   float(data.get("m2", 0.0)), int(since) if since is not None else -1,
                   number("since_mean"), number("since_m2"), number("w") or -1.0,
                   number("w2") or -1.0, number("recent"), number("recent_m2"),
                   int(data.get("changes", 0) or 0))


def quality_key(role: str) -> str:
    return str(role).strip().lower()


def normalise_score(score: float) -> float:
    """A score in [0, 1]: one from 0 to 10 is divided by 10."""
    if not 0 <= score <= 10:
        raise InputError(f"a quality score is from 0 to 10 (or 0 to 1), not {score:g}")
    return score / 10 if score > 1 else score


def record_quality(store: Any, task: str, model: str, score: float, *,
                   source: Mapping[str, Any] | None = None) -> QualityStat:
    """Add one score for (task, model) in the store; the updated statistics. ``source``
    (the rated ``dialogue`` and ``turn``, and ``by``: ``user`` or ``judge``) is kept with
    the score among the pair's latest ``HISTORY`` (``rating_history``), in the same
    transaction."""
    if not hasattr(store, "update_quality"):
        raise DlgError(f"the store '{getattr(store, 'name', store)}' keeps no quality "
                       "statistics (it has no update_quality)")
    value = normalise_score(score)
    entry = {"at": round(time.time(), 6), "score": round(value, 6), **(source or {})}

    def update(old: dict[str, Any] | None) -> dict[str, Any]:
        kept = (old or {}).get("history")
        history = [*(kept if isinstance(kept, list) else [])[-(HISTORY - 1):], entry]
        return {**QualityStat.from_dict(old or {}).add(value).to_dict(), "history": history}

    data = store.update_quality(quality_key(task), model, update)
    return QualityStat.from_dict(data)


def rating_history(store: Any, limit: int = 200) -> list[dict[str, Any]]:
    """The latest scores the store keeps (each pair's last ``HISTORY``), newest first:
    each with its ``task``, ``model``, ``score`` (0 to 1), ``at`` (a Unix time) and, when
    recorded, the rated ``dialogue`` and ``turn`` and ``by`` whom."""
    if not hasattr(store, "quality"):
        return []
    out: list[tuple[tuple[float, int], dict[str, Any]]] = []
    for (task, model), data in store.quality().items():
        kept = data.get("history") if isinstance(data, Mapping) else None
        for place, entry in enumerate(kept if isinstance(kept, list) else []):
            if isinstance(entry, Mapping) and isinstance(entry.get("score"), int | float):
                at = entry.get("at")
                out.append(((at if isinstance(at, int | float) else 0.0, place),
                            {**entry, "task": task, "model": model}))
    out.sort(key=lambda kept: kept[0], reverse=True)  # a pair's later score first on a tie
    return [entry for _, entry in out[:limit]]


def routing_stats(store: Any) -> dict[str, dict[str, QualityStat]]:
    """task -> model -> statistics, for every pair the store has scores for."""
    if not hasattr(store, "quality"):
        return {}
    out: dict[str, dict[str, QualityStat]] = {}
    for (task, model), data in sorted(store.quality().items()):
        out.setdefault(task, {})[model] = QualityStat.from_dict(data)
    return out


def rate(store: Any, dialogue_id: str, turn_ref: str, score: float) -> tuple[str, str,
                                                                            QualityStat]:
    """A user's rating of one turn of a saved dialogue: (task, model, new statistics)."""
    from dlg.records.store import as_dialogue, find_dialogue

    dialogue = as_dialogue(find_dialogue(store, dialogue_id))
    try:
        turn = dialogue.turn(int(turn_ref) if turn_ref.isdigit() else turn_ref)
    except KeyError:
        raise InputError(f"dialogue {dialogue.id} has no turn '{turn_ref}' (its turns: "
                       f"{', '.join(t.id for t in dialogue.turns)})") from None
    if turn.status != "completed" or not turn.model:
        raise InputError(f"turn '{turn.id}' of dialogue {dialogue.id} did not complete: "
                       "only an answer can be rated")
    routed = (turn.metadata or {}).get("routing") or {}
    model = routed.get("pool_name") or turn.model
    stat = record_quality(store, turn.role, model, score,
                          source={"dialogue": dialogue.id, "turn": turn.id, "by": "user"})
    return quality_key(turn.role), model, stat


class JudgeScores:
    """An observer: when a judge turn (``scores: [turn ids]``) completes, the ``score`` of
    its structured answer rates each turn it names, for the model that answered it."""

    def __init__(self, mode: Any, store: Any):
        self.judges = {t.id: t.scores for t in mode.turns if t.scores}
        self._store = store  # a function that opens the store

    async def turn_finished(self, dialogue: Any, turn: Any) -> None:
        import anyio

        scored = self.judges.get(turn.turn_id)
        data = turn.data if isinstance(turn.data, Mapping) else {}
        score = data.get("score")
        if not scored or turn.status != "completed" or not isinstance(score, int | float):
            return
        store = await anyio.to_thread.run_sync(self._store)
        rated = {}
        for ref in scored:
            target = dialogue.latest(ref)  # in a loop: the round just judged
            if target.status != "completed" or not target.model:
                continue
            model = ((target.metadata or {}).get("routing") or {}).get("pool_name") or (
                target.model)
            await anyio.to_thread.run_sync(functools.partial(
                record_quality, store, target.role, model, min(max(float(score), 0.0), 10.0),
                source={"dialogue": dialogue.id, "turn": target.id, "by": "judge"}))
            rated[ref] = score
        turn.metadata = {**(turn.metadata or {}), "rated": rated}
