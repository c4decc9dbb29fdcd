"""The record of a dialogue: what ran, on which model, what it said, what it cost.

``Dialogue.to_dict()`` is the JSON document described by ``schemas/dialogue.schema.json``;
``Dialogue.from_dict()`` reads it back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# the ids and times a record holds; ``now``, ``new_dialogue_id`` and ``check_id`` are
# also this module's, as they were before ``stamps`` had them
from dlg.records.stamps import check_id, from_iso, iso, new_dialogue_id, now

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "ENDED",
    "Dialogue",
    "DialogueMetrics",
    "TokenUsage",
    "TurnRecord",
    "check_id",
    "new_dialogue_id",
    "now",
]

# Turn and dialogue statuses
PENDING, RUNNING, COMPLETED, FAILED, SKIPPED, CANCELLED = (
    "pending", "running", "completed", "failed", "skipped", "cancelled"
)
# a dialogue that ended as its mode meant it to: all its turns ran, or it stopped early by
# design (``until``: ``converged``; ``max_turns``); nothing is left to run
ENDED = (COMPLETED, "converged", "max_turns")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens one call (or a sum of calls) used; immutable, so records can share zero."""

    prompt: int = 0
    completion: int = 0
    estimated: bool = False  # counted by dlg because the provider reported nothing
    cached: int = 0  # of the prompt tokens, those the provider read from its prompt cache
    cache_written: int = 0  # of the prompt tokens, those it wrote to its cache (Anthropic)

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @property
    def mark(self) -> str:
        """``"~"`` for counts dlg estimated (the provider reported none), else ``""``: put
        it before a count wherever a person reads one."""
        return "~" if self.estimated else ""

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt + other.prompt,
            self.completion + other.completion,
            self.estimated or other.estimated,
            self.cached + other.cached,
            self.cache_written + other.cache_written,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt": self.prompt, "completion": self.completion, "total": self.total,
        }
        if self.estimated:
            out["estimated"] = True
        if self.cached:
            out["cached"] = self.cached
        if self.cache_written:
            out["cache_written"] = self.cache_written
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenUsage:
        return cls(data.get("prompt", 0), data.get("completion", 0), data.get("estimated", False),
                   data.get("cached", 0), data.get("cache_written", 0))


NO_USAGE = TokenUsage()


@dataclass(slots=True)
class TurnRecord:
    id: str
    index: int
    role: str
    phase: str
    participant: str | None = None
    model: str | None = None
    status: str = PENDING
    system: str | None = None
    prompt: str | None = None
    response: str | None = None
    usage: TokenUsage = NO_USAGE
    cost_usd: float | None = None
    latency_seconds: float | None = None
    # seconds its model call waited on rate limits: paced ahead of a limit, and after
    # 429s (None: it never waited, as a model with no limit never does)
    waited_seconds: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    requires: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()  # models that failed before ``model`` answered
    attempts: list[dict[str, Any]] | None = None  # every failed attempt, in order
    metadata: dict[str, Any] | None = None  # allocated when something is recorded
    data: Any = None  # a structured answer (the turn's ``output`` schema), parsed
    round: int = 1  # in a repeating phase, the round (ids: ID, ID@2, ID@3, ...)

    @property
    def turn_id(self) -> str:
        """The mode turn this record is of (its id without the ``@round``)."""
        return self.id if self.round == 1 else self.id.rpartition("@")[0]

    def subdialogue_tree(self) -> list[tuple[int, dict[str, Any]]]:
        """The sub-dialogues this turn spawned, and theirs, depth first: (depth, entry)
        pairs, each entry with id, mode, item, status, answer, cost_usd and turns."""
        return subdialogue_rows((self.metadata or {}).get("subdialogues"))

    @property
    def tokens(self) -> TokenUsage:
        """Alias of ``usage``, as in the spec's examples (``turn.tokens.total``)."""
        return self.usage

    @property
    def text(self) -> str:
        return self.response or ""

    def to_dict(self) -> dict[str, Any]:
        # the saver makes one of these per turn saved, and one per turn of each whole
        # record: the optional keys are set after (same order), not merged in
        out = {
            "id": self.id,
            "index": self.index,
            "role": self.role,
            "phase": self.phase,
            "participant": self.participant,
            "model": self.model,
            "status": self.status,
            "system": self.system,
            "prompt": self.prompt,
            "response": self.response,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "latency_seconds": self.latency_seconds,
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "error": self.error,
            "requires": list(self.requires),
            "replaced": list(self.replaced),
            "attempts": list(self.attempts) if self.attempts else [],
            "metadata": dict(self.metadata) if self.metadata else {},
        }
        if self.data is not None:
            out["data"] = self.data
        if self.round != 1:
            out["round"] = self.round
        if self.waited_seconds is not None:
            out["waited_seconds"] = round(self.waited_seconds, 3)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TurnRecord:
        return cls(
            id=data["id"],
            index=data["index"],
            role=data["role"],
            phase=data.get("phase", "main"),
            participant=data.get("participant"),
            model=data.get("model"),
            status=data.get("status", PENDING),
            system=data.get("system"),
            prompt=data.get("prompt"),
            response=data.get("response"),
            usage=TokenUsage.from_dict(data.get("usage") or {}),
            cost_usd=data.get("cost_usd"),
            latency_seconds=data.get("latency_seconds"),
            waited_seconds=data.get("waited_seconds"),
            started_at=from_iso(data.get("started_at")),
            ended_at=from_iso(data.get("ended_at")),
            error=data.get("error"),
            requires=tuple(data.get("requires") or ()),
            replaced=tuple(data.get("replaced") or ()),
            attempts=list(data["attempts"]) if data.get("attempts") else None,
            metadata=dict(data["metadata"]) if data.get("metadata") else None,
            data=data.get("data"),
            round=int(data.get("round") or 1),
        )


def subdialogue_rows(entries: Any, depth: int = 1) -> list[tuple[int, dict[str, Any]]]:
    """A spawning turn's sub-dialogues (``turn.metadata["subdialogues"]``) and theirs,
    depth first: (depth, entry) pairs, for drawing the tree."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for entry in entries or ():
        if isinstance(entry, dict) and depth <= 9:
            rows.append((depth, entry))
            rows.extend(subdialogue_rows(entry.get("children"), depth + 1))
    return rows


@dataclass(frozen=True)
class DialogueMetrics:
    total_latency_seconds: float
    total_model_seconds: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost_usd: float
    turns_completed: int
    turns_failed: int
    substitutions: int = 0  # turns answered by a fallback model
    retries: int = 0  # failed attempts, over all turns


@dataclass(slots=True)
class Dialogue:
    id: str
    mode: str
    mode_hash: str
    inputs: dict[str, Any]
    turns: list[TurnRecord]
    status: str = PENDING
    mode_source: str | None = None
    participants: dict[str, str | None] = field(default_factory=dict)
    created_at: float = field(default_factory=now)
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    dlg_version: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # the sub-dialogues its turns spawned (each a Dialogue), when run or loaded; not saved
    # here (each child is its own record, linked from its turn's metadata)
    subdialogues: list[Dialogue] = field(default_factory=list, repr=False, compare=False)

    @property
    def depth(self) -> int:
        """0 for a dialogue that was run; a sub-dialogue's parent's depth + 1."""
        return int(self.metadata.get("depth") or 0)

    @property
    def convergence_detected_at(self) -> int | None:
        """For a dialogue that stopped early as ``converged``: how many turns had
        completed when its ``until`` held (the seed's SC4.3); else None."""
        stopped = self.metadata.get("stopped") or {}
        if self.status != "converged" or stopped.get("status") != "converged":
            return None
        return stopped.get("turns_completed")

    @property
    def parent_id(self) -> str | None:
        """The dialogue that spawned this one, if any."""
        return (self.metadata.get("parent") or {}).get("id")

    def turn(self, key: str | int) -> TurnRecord:
        """A turn by id or by 1-based position."""
        for t in self.turns:
            if t.id == key or t.index == key:
                return t
        raise KeyError(key)

    def latest(self, turn_id: str) -> TurnRecord:
        """The record of a mode turn's latest round (its only one outside loops)."""
        for t in reversed(self.turns):
            if t.id == turn_id or (t.round != 1 and t.turn_id == turn_id):
                return t
        raise KeyError(turn_id)

    @property
    def completed_turns(self) -> list[TurnRecord]:
        return [t for t in self.turns if t.status == COMPLETED]

    @property
    def turns_completed(self) -> int:
        return len(self.completed_turns)

    @property
    def usage(self) -> TokenUsage:
        total = TokenUsage()
        for t in self.turns:
            total = total + t.usage
        return total

    @property
    def total_tokens(self) -> int:
        return self.usage.total

    @property
    def own_cost_usd(self) -> float:
        """What this dialogue's own turns cost (``metrics.total_cost_usd``)."""
        return sum(t.cost_usd or 0.0 for t in self.turns)

    @property
    def total_cost_usd(self) -> float:
        """What this dialogue cost with the sub-dialogues its turns spawned (each one's
        cost, its own children's included, as its parent's turn recorded it): what it
        drew from its budget. Its own turns alone: ``own_cost_usd``."""
        return self.own_cost_usd + sum(
            e.get("cost_usd") or 0.0 for t in self.turns
            for e in (t.metadata or {}).get("subdialogues") or ()
            if isinstance(e, dict) and isinstance(e.get("cost_usd"), int | float))

    @property
    def metrics(self) -> DialogueMetrics:
        return DialogueMetrics(**self._metrics())

    def _metrics(self) -> dict[str, Any]:
        """``metrics`` as the record's dict (made after every turn saved, without the
        frozen dataclass between)."""
        wall = (
            (self.ended_at or time.time()) - self.started_at if self.started_at else 0.0
        )
        # one pass over the turns: a store asks for this after every turn
        model_seconds = cost = 0.0
        prompt = completion = done = failed = substitutions = retries = 0
        for t in self.turns:
            usage = t.usage
            prompt += usage.prompt
            completion += usage.completion
            model_seconds += t.latency_seconds or 0.0
            cost += t.cost_usd or 0.0
            if t.status == COMPLETED:
                done += 1
            elif t.status == FAILED:
                failed += 1
            if t.replaced:
                substitutions += 1
            if t.attempts:
                retries += len(t.attempts)
        return {
            "total_latency_seconds": wall,
            "total_model_seconds": model_seconds,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "total_cost_usd": cost,
            "turns_completed": done,
            "turns_failed": failed,
            "substitutions": substitutions,
            "retries": retries,
        }

    def header_dict(self) -> dict[str, Any]:
        """``to_dict()`` without the turns, with ``turn_ids``, ``turn_statuses`` and
        ``turn_models`` (the models its turns ran on, once each): what a store rewrites
        after each turn."""
        out = self.to_dict(turns=False)
        out["turn_ids"] = [t.id for t in self.turns]
        out["turn_statuses"] = [t.status for t in self.turns]
        out["turn_models"] = sorted({t.model for t in self.turns if t.model})
        return out

    def to_dict(self, *, turns: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": "dlg.dialogue/1",
            "id": self.id,
            "mode": self.mode,
            "mode_hash": self.mode_hash,
            "mode_source": self.mode_source,
            "status": self.status,
            "error": self.error,
            "inputs": dict(self.inputs),
            "participants": dict(self.participants),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "ended_at": iso(self.ended_at),
            "dlg_version": self.dlg_version,
            "metrics": self._metrics(),
            "metadata": dict(self.metadata),
        }
        if turns:
            out["turns"] = [t.to_dict() for t in self.turns]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dialogue:
        return cls(
            id=data["id"],
            mode=data["mode"],
            mode_hash=data.get("mode_hash", ""),
            mode_source=data.get("mode_source"),
            inputs=dict(data.get("inputs") or {}),
            turns=[TurnRecord.from_dict(t) for t in data.get("turns", [])],
            status=data.get("status", PENDING),
            participants=dict(data.get("participants") or {}),
            created_at=from_iso(data.get("created_at")) or now(),
            started_at=from_iso(data.get("started_at")),
            ended_at=from_iso(data.get("ended_at")),
            error=data.get("error"),
            dlg_version=data.get("dlg_version", ""),
            metadata=dict(data.get("metadata") or {}),
        )

    def export(self, format: str = "json", path: str | Path | None = None, *,
               pm: pluggy.PluginManager | None = None) -> str | bytes | Path:
        """Render with a registered exporter; write to ``path`` if given and return it."""
        from dlg.records.export import export

        return export(self, format, path, pm=pm)
