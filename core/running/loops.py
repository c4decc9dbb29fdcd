"""Refinement loops: a phase with ``repeat`` runs its turns round after round.

```yaml
- id: refine
  repeat: {max_rounds: 4, until: {similarity: 0.9}}
  turns: [critique, revise]
```

Round 1 uses the turns' own records; each later round adds a record per turn, with id
``ID@N`` and ``round`` N, right after the round before, so the record stays in the order
things ran and each round is saved as it goes. Templates read the latest round of each
turn (``turns.revise`` is the newest revision; a turn reads its own previous round) and
``round``. After each round ``until`` is checked:

- ``condition``: a Jinja expression over the turns and ``round``;
- ``score``: ``data.score`` of ``until.turn`` (default: the phase's last turn with an
  output schema) is at least this;
- ``similarity``: the answer of ``until.turn`` (default: the phase's last turn) is at
  least this similar to its answer in the round before (the configured embeddings, or
  ``until.embeddings`` by name);
- ``judge``: the turn named (one of the phase's, with an output schema) answered
  ``data.converged`` true (or "yes").

``patience: K`` wants score, similarity or judge to hold in K rounds in a row (default
1); ``min_rounds: N`` looks at ``until`` only from round N (default 1).

``unless: EXPR`` (a Jinja expression over the turns and ``round``, such as the critique's
``data.objections``) vetoes score, similarity and judge while it is true: a stop rule that
reads the probe without a turn of its own. An expression that fails does not veto.

``confirm: TURN`` (a turn of the phase with an output schema, after the turn ``until``
watches, and never its default) is a judge asked only at a candidate stop: it runs in a
round only when score or similarity has held ``patience`` rounds in a row by then (else
``gate`` skips it), and the loop ends only when it answers ``data.converged`` true. So it
costs a turn per candidate stop, not one per round, and can veto the stop.

The loop ends ``converged`` when one holds, else ``max_rounds`` after the last round;
``dialogue.metadata["loops"][PHASE]`` says which, after how many rounds. When the
dialogue stops in a loop with rounds left (its ``until``, ``max_turns``, a budget), the
loop is ``stopped`` and the rest of its round, or the next round, is pending. A resumed
dialogue continues the round it was in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlg.language.templates import TurnsView
from dlg.records.record import COMPLETED, FAILED, SKIPPED, TurnRecord
from dlg.running.outcomes import Skipped
from dlg.running.stopping import Similarity, verdict

__all__ = ["Loop", "Round", "round_id"]

FINISHED = ("converged", "max_rounds")
log = logging.getLogger("dlg.kernel")


def round_id(turn_id: str, n: int) -> str:
    """The record id of a turn's round ``n``: the turn's id, then ``ID@2``, ``ID@3``..."""
    return turn_id if n == 1 else f"{turn_id}@{n}"


class Loop:
    """One repeating phase of a running dialogue; see the module docstring."""

    def __init__(self, phase: Any, env: Any, base_context: dict[str, Any],
                 embeddings: Callable[..., Any]) -> None:
        self.phase = phase
        self.max_rounds = int(phase.repeat["max_rounds"])
        self.until = dict(phase.repeat.get("until") or {})
        self.base_context = base_context
        self._embeddings = embeddings
        self._condition = (env.compile_expression(self.until["condition"])
                           if self.until.get("condition") else None)
        self._unless = (env.compile_expression(self.until["unless"])
                        if self.until.get("unless") else None)
        self.confirm: str | None = self.until.get("confirm")
        ids = [t.id for t in phase.turns if t.id != self.confirm]
        judged = [t.id for t in phase.turns if t.output and t.id != self.confirm]
        self.watched = self.until.get("turn") or ids[-1]
        self.scorer = self.until.get("turn") or (judged[-1] if judged else None)
        self.patience = int(self.until.get("patience") or 1)
        self.min_rounds = int(self.until.get("min_rounds") or 1)
        self._similarity = Similarity(embeddings, self.until.get("embeddings"))
        if self.until.get("embeddings"):  # a wrong name fails before the loop's first round
            self._similarity.embeddings()

    def state(self, metadata: dict[str, Any]) -> dict[str, Any]:
        return dict((metadata.get("loops") or {}).get(self.phase.id) or {})

    def finished(self, metadata: dict[str, Any]) -> bool:
        return self.state(metadata).get("status") in FINISHED

    def round(self, current: dict[str, TurnRecord]) -> int:
        """The round the phase is in (the newest of its turns' records)."""
        return max(current[t.id].round for t in self.phase.turns)

    def check(self, records: list[TurnRecord], current: dict[str, TurnRecord], n: int
              ) -> tuple[str, str] | None:
        """(status, reason) if the loop ends after round ``n``, else None."""
        if n >= self.min_rounds:
            end = self._converged(records, n)
            if end is not None:
                return "converged", end
        if n >= self.max_rounds:
            return "max_rounds", f"{n} rounds (max_rounds {self.max_rounds})"
        return None

    def gate(self, records: list[TurnRecord], current: dict[str, TurnRecord], turn: Any
             ) -> Skipped | None:
        """Whether ``turn`` is skipped in the round the phase is in: the ``confirm`` turn
        is, unless the loop's signals have held ``patience`` rounds in a row by now."""
        if turn.id != self.confirm:
            return None
        n = self.round(current)
        if n >= self.min_rounds and self._held(records, n):
            return None
        return Skipped("until.confirm", f"round {n} is not a candidate stop: "
                                        "asked only once the loop looks converged")

    def _converged(self, records: list[TurnRecord], n: int) -> str | None:
        """Why the loop has converged after round ``n``: its condition holds, or its
        score, similarity or judge held in ``patience`` rounds in a row (and its
        ``confirm`` turn, when it has one, said so in round ``n``)."""
        if self._condition is not None and self._holds(self._condition, records, n):
            return f"until: {self.until['condition']}"
        held = self._held(records, n)
        if held is None or (self.confirm and not self._confirmed(records, n)):
            return None
        if self.confirm:
            held += f", confirmed by '{self.confirm}' (until.confirm)"
        return held

    def _holds(self, expression: Any, records: list[TurnRecord], n: int) -> bool:
        """Whether ``condition`` or ``unless`` is true after round ``n`` (or the part of it
        that has run)."""
        view = TurnsView([r for r in records if r.status == COMPLETED])
        try:  # a turn it reads may not have run: then it does not hold
            return bool(expression(**{**self.base_context, "turns": view, "round": n,
                                      "context": list(view.values())}))
        except Exception:
            return False

    def _held(self, records: list[TurnRecord], n: int) -> str | None:
        """Why score, similarity or judge held in ``patience`` rounds in a row up to round
        ``n`` (the watched turns of round ``n`` that have run) with ``unless`` false, else
        None."""
        if n < self.patience or (
                self._unless is not None and self._holds(self._unless, records, n)):
            return None
        by_id = {r.id: r for r in records if r.status == COMPLETED}
        reasons = [self._stable(by_id, m) for m in range(n, n - self.patience, -1)]
        if not all(reasons):
            return None
        times = "" if self.patience == 1 else (
            f", {self.patience} rounds in a row (until.patience {self.patience})")
        return f"{reasons[0]}{times}"

    def _confirmed(self, records: list[TurnRecord], n: int) -> bool:
        """Whether the ``confirm`` turn ran in round ``n`` and said it has converged."""
        rec = next((r for r in records if r.id == round_id(str(self.confirm), n)), None)
        return rec is not None and rec.status == COMPLETED and bool(verdict(rec.data))

    def _stable(self, by_id: dict[str, TurnRecord], m: int) -> str | None:
        """Why round ``m`` looks converged (score, judge or similarity), else None."""
        if self.until.get("score") is not None and self.scorer is not None:
            rec = by_id.get(round_id(self.scorer, m))
            data = rec.data if rec is not None else None
            score = data.get("score") if isinstance(data, dict) else None
            if isinstance(score, int | float) and not isinstance(score, bool) and (
                    score >= self.until["score"]):
                return f"'{self.scorer}' scored {score:g} (until.score {self.until['score']:g})"
        judge = self.until.get("judge")
        if judge:
            rec = by_id.get(round_id(judge, m))
            if rec is not None and verdict(rec.data):
                return f"'{judge}' judged it converged in round {m} (until.judge)"
        threshold = self.until.get("similarity")
        if threshold and m > 1:
            now = by_id.get(round_id(self.watched, m))
            before = by_id.get(round_id(self.watched, m - 1))
            if now is not None and before is not None:
                similarity = self._similarity(before.response or "", now.response or "")
                if similarity >= threshold:
                    return (f"'{self.watched}' answered {similarity:.2f} alike in rounds "
                            f"{m - 1} and {m} (until.similarity {threshold:g})")
        return None

    def complete(self, current: dict[str, TurnRecord]) -> bool:
        """Whether every turn of the current round has finished: completed, skipped, or
        failed with ``on_error: continue``."""
        return all(current[t.id].status in (COMPLETED, SKIPPED) or (
            current[t.id].status == FAILED and t.on_error == "continue")
            for t in self.phase.turns)

    def next_round(self, records: list[TurnRecord], n: int) -> tuple[int, list[TurnRecord]]:
        """Pending records for round ``n`` and where they go: right after the phase's
        last record."""
        ids = {t.id for t in self.phase.turns}
        last = max(i for i, r in enumerate(records) if r.turn_id in ids)
        return last + 1, [_pending(t, n) for t in self.phase.turns]

    def missing(self, records: list[TurnRecord], current: dict[str, TurnRecord]
                ) -> list[tuple[int, TurnRecord]]:
        """Pending records for the turns of the round the phase is in that have none, each
        with where it goes among the round's records (inserted in this order). A round's
        records are added together; one missing was lost by a process killed while the
        round ran, whose store kept the round's finished turns only (an earlier dlg saved
        a round's records as each turn finished). Without them, the round would close
        without those turns."""
        n = self.round(current)
        ids = {t.id for t in self.phase.turns}
        ours = [r for r in records if r.turn_id in ids and r.round == n]
        first = next((i for i, r in enumerate(records) if r.turn_id in ids and r.round == n),
                     len(records))
        added: list[tuple[int, TurnRecord]] = []
        for turn in self.phase.turns:
            if current[turn.id].round >= n:
                continue
            at = first + sum(r.index < turn.index for r in ours)
            rec = _pending(turn, n)
            ours.append(rec)
            added.append((at, rec))
        return added

    def after_round(self, records: list[TurnRecord], current: dict[str, TurnRecord],
                    stopped: tuple[str, str, str | None] | None) -> Round:
        """What the loop does once the phase has run (a round, or the part of one a stop
        left): end, stop with the dialogue, or go on to the next round."""
        n = self.round(current)
        if not self.complete(current):
            # stopped in the round: its turns not run are pending
            return Round(_stopped(stopped, n) if stopped else None)
        end = self.check(records, current, n)
        if end is not None:
            log.info("loop %s ended after %d round%s: %s", self.phase.id, n,
                     "s" if n > 1 else "", end[1],
                     extra={"event": "loop.finished", "rounds": n, "status": end[0]})
            return Round({"rounds": n, "status": end[0], "reason": end[1]})
        at, new = self.next_round(records, n + 1)
        if stopped:  # between rounds: the next one is pending, for a resume to run
            return Round(_stopped(stopped, n), at=at, records=tuple(new))
        return Round({"rounds": n, "status": "running"}, more=True, at=at,
                     records=tuple(new))


@dataclass(frozen=True, slots=True)
class Round:
    """A loop's answer after a round (``Loop.after_round``): its state for
    ``dialogue.metadata["loops"]`` (None: as it was), the next round's pending records
    and where they go, and whether the loop goes on."""

    state: dict[str, Any] | None
    more: bool = False
    at: int = 0
    records: tuple[TurnRecord, ...] = ()


def _pending(turn: Any, n: int) -> TurnRecord:
    """A pending record of ``turn``'s round ``n``."""
    return TurnRecord(id=round_id(turn.id, n), index=turn.index, role=turn.role,
                      phase=turn.phase, participant=turn.participant, requires=turn.requires,
                      round=n)


def _stopped(stopped: tuple[str, str, str | None], n: int) -> dict[str, Any]:
    """A loop's state when the dialogue stopped (``until``, ``max_turns``, a budget) in
    or after its round ``n`` with rounds left: not finished, so a resume continues it."""
    return {"rounds": n, "status": "stopped",
            "reason": f"the dialogue stopped ({stopped[0]}: {stopped[1]})"}
