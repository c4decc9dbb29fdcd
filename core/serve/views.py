"""What the viewer's pages show, worked out from a store's records: the list of saved
dialogues with its filters, and one dialogue's turns, budget, sub-dialogues and exports.
Plain data for the templates (which escape it); nothing here reads options or the
environment, so no secret reaches a page."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

LIST_LIMIT = 500  # rows on one page of the list


@dataclass(frozen=True)
class Filters:
    """The list's filters, from the query string: status, mode, model, batch, the day
    it was created from and to (``YYYY-MM-DD``, UTC, both included), text."""

    status: str = ""
    mode: str = ""
    q: str = ""
    model: str = ""
    batch: str = ""
    since: str = ""  # ?from=
    until: str = ""  # ?to=

    @classmethod
    def from_query(cls, query: Any) -> Filters:
        """The filters of a query string; ``InputError`` (a 400 page) for a date that is
        not ``YYYY-MM-DD`` or a range that ends before it starts."""
        def one(name: str) -> str:
            return str(query.get(name) or "").strip()[:200]

        since, until = _day(one("from"), "from"), _day(one("to"), "to")
        if since and until and since > until:
            from dlg.errors import InputError

            raise InputError(f"the dates run backwards: from {since} is after to {until}")
        return cls(status=one("status"), mode=one("mode"), q=one("q"), model=one("model"),
                   batch=one("batch"), since=since, until=until)

    def query(self, **changed: str) -> str:
        """These filters as a query string (``from``/``to`` for the dates)."""
        from urllib.parse import urlencode

        given = {"status": self.status, "mode": self.mode, "model": self.model,
                 "batch": self.batch, "from": self.since, "to": self.until, "q": self.q,
                 **changed}
        return urlencode({k: v for k, v in given.items() if v})

    def keep(self, row: dict[str, Any]) -> bool:
        if self.status and row.get("status") != self.status:
            return False
        if self.mode and row.get("mode") != self.mode:
            return False
        if self.model and self.model not in (row.get("models") or ()):
            return False
        if self.batch and batch_of(row) != self.batch:
            return False
        day = str(row.get("created_at") or "")[:10]
        if (self.since and day < self.since) or (self.until and day > self.until):
            return False
        if self.q:
            text = " ".join([str(row.get("id")), str(row.get("mode")),
                             json.dumps(row.get("inputs") or {}, ensure_ascii=False)])
            return self.q.lower() in text.lower()
        return True


def _day(value: str, name: str) -> str:
    """``value`` checked as a day, ``YYYY-MM-DD``; empty for none."""
    import datetime
    import re

    if not value:
        return ""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        from dlg.errors import InputError

        raise InputError(f"?{name}={value!r} is not a date: give one as YYYY-MM-DD, "
                         "e.g. 2026-01-31") from None


def batch_of(row: dict[str, Any]) -> str:
    """The batch a listed dialogue is a row of (``dlg batch`` names them ``BATCH-NNNNN``;
    a sub-dialogue so named is none), or ""."""
    from dlg.records.batch_headers import batch_of as named

    return "" if row.get("parent") else named(str(row.get("id"))) or ""


@dataclass
class Listing:
    rows: list[dict[str, Any]]
    statuses: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    total: int = 0


def summaries(store: Any) -> list[dict[str, Any]]:
    """Every saved dialogue's summary as ``dlg ls`` lists it (one whose process is gone:
    interrupted), newest first."""
    from dlg.records.store import interrupted

    return interrupted(store, store.list())


def listing(store: Any, filters: Filters, models: OldModels | None = None,
            every: list[dict[str, Any]] | None = None) -> Listing:
    """The saved dialogues (``every``: their ``summaries``, read now if not given),
    filtered, newest first. ``models``: what remembers the models of dialogues saved
    before summaries named them (a live list reads it every half second)."""
    if every is None:
        every = summaries(store)
    if filters.model:  # saved before summaries named their models: read from the record
        read = models if models is not None else OldModels()
        every = [r if "models" in r else {**r, "models": read(store, r)} for r in every]
        read.keep({str(r.get("id")) for r in every})
    rows = [_row(r) for r in every if filters.keep(r)]
    return Listing(rows=rows[:LIST_LIMIT], total=len(rows),
                   statuses=sorted({str(r.get("status")) for r in every}),
                   modes=sorted({str(r.get("mode")) for r in every if r.get("mode")}),
                   models=sorted({str(m) for r in every for m in r.get("models") or ()}),
                   batches=sorted({b for r in every if (b := batch_of(r))}))


class OldModels:
    """The models of dialogues whose summary does not name them (saved by a dlg before
    it did), each read from its record once and again only when its summary changes.
    Shared by list views that read in worker threads: its table is changed under a lock
    (a record is read outside it; two threads may read the same one, never corrupt it)."""

    def __init__(self) -> None:
        self._read: dict[str, tuple[str, list[str]]] = {}  # id -> (its summary, models)
        self._lock = threading.Lock()

    def __call__(self, store: Any, row: dict[str, Any]) -> list[str]:
        dialogue_id = str(row.get("id"))
        seen = json.dumps(row, sort_keys=True, default=str)
        with self._lock:
            known = self._read.get(dialogue_id)
        if known is not None and known[0] == seen:
            return known[1]
        record = store.load(dialogue_id) or {}
        models = sorted({model_name(t.get("model")) for t in record.get("turns") or ()
                         if isinstance(t, dict) and t.get("model")})
        with self._lock:
            self._read[dialogue_id] = (seen, models)
        return models

    def keep(self, ids: set[str]) -> None:
        """Forget the dialogues not listed any more (deleted)."""
        with self._lock:
            for gone in self._read.keys() - ids:
                self._read.pop(gone, None)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    inputs = r.get("inputs") or {}
    topic = inputs.get("topic") if isinstance(inputs, dict) else None
    return {"id": str(r.get("id")), "mode": r.get("mode") or "-",
            "status": r.get("status") or "-", "parent": r.get("parent"),
            "turns": f"{r.get('turns_completed') or 0}/{r.get('turns') or 0}",
            "tokens": r.get("total_tokens") or 0, "cost": money(r.get("total_cost_usd")),
            "topic": " ".join(str(topic if topic is not None else "").split())[:120],
            "models": ", ".join(str(m) for m in r.get("models") or ()) or "-",
            "created": str(r.get("created_at") or "")[:19].replace("T", " ")}


def model_name(spec: str | None) -> str:
    """A model as a page names it: its spec without the options after ``?`` (where a
    base URL or a secret's reference may be)."""
    return (spec or "-").partition("?")[0] or "-"


def money(value: Any) -> str:
    return f"${value:.5f}" if isinstance(value, int | float) and value else "-"


def seconds(value: Any) -> str:
    return f"{value:.2f}s" if isinstance(value, int | float) else "-"


def dialogue_view(store: Any, dialogue_id: str) -> dict[str, Any]:
    """One saved dialogue as its page shows it; ``DialogueNotFoundError`` if none."""
    from dlg.records.store import as_dialogue, find_dialogue, interrupted
    from dlg.serve.timeline import groups, timeline

    dialogue = as_dialogue(find_dialogue(store, dialogue_id))
    (listed,) = interrupted(store, [{"id": dialogue.id, "status": dialogue.status}])
    meta = dialogue.metadata or {}
    m = dialogue.metrics
    budget = meta.get("budget") or None
    parent = meta.get("parent") or None
    turns = [_turn(t) for t in dialogue.turns]
    return {
        "id": dialogue.id, "mode": dialogue.mode, "status": listed["status"],
        "running": listed["status"] == "running",
        "inputs": {str(k): _short(v) for k, v in (dialogue.inputs or {}).items()},
        "error": dialogue.error,
        "parent": parent.get("id") if isinstance(parent, dict) else None,
        "totals": [("turns", f"{m.turns_completed}/{len(dialogue.turns)}"),
                   ("tokens", f"{dialogue.usage.mark}{m.total_tokens:,}"),
                   ("cost", money(dialogue.total_cost_usd) if dialogue.total_cost_usd
                    else "$0"),
                   ("wall time", seconds(m.total_latency_seconds))],
        "budget": _budget(budget, dialogue.total_cost_usd),
        "turns": turns,
        "groups": groups(turns, {t.phase for t in dialogue.turns if t.round > 1}),
        "timeline": timeline(dialogue.turns),
        "complete": bool(dialogue.turns) and all(t.status in ("completed", "skipped")
                                                 for t in dialogue.turns),
        "fingerprint": fingerprint(dialogue, listed["status"]),
    }


def _budget(budget: Any, cost: Any) -> dict[str, Any] | None:
    """What the dialogue spent against its limit (``--max-cost``), for a meter."""
    if not isinstance(budget, dict):
        return None
    limit = budget.get("max_cost")
    spent = budget.get("spent")
    if not isinstance(limit, int | float) or not isinstance(spent, int | float):
        return None
    return {"text": f"${spent:.5f} spent of ${limit:g}", "max": f"{limit:.10f}",
            "value": f"{min(max(spent, 0.0), limit):.10f}",
            "share": f"{spent / limit:.0%}" if limit > 0 else "-"}


def _turn(t: Any) -> dict[str, Any]:
    routing = (t.metadata or {}).get("routing") or {}
    return {
        "id": t.id, "index": t.index, "role": t.role, "phase": t.phase, "round": t.round,
        "participant": t.participant or "-", "model": model_name(t.model),
        "replaced": [model_name(m) for m in t.replaced], "status": t.status,
        "router": routing.get("router"), "reason": routing.get("reason"),
        "tokens": f"{t.usage.mark}{t.usage.prompt} in · {t.usage.mark}{t.usage.completion} out",
        "cost": money(t.cost_usd), "latency": seconds(t.latency_seconds),
        "waited": seconds(t.waited_seconds) if t.waited_seconds is not None else None,
        "error": t.error, "text": t.response or "",
        "rateable": t.status == "completed" and bool(t.model),
        "subdialogues": [{"depth": depth, "id": e.get("id"), "mode": e.get("mode") or "-",
                          "status": e.get("status") or "-", "cost": money(e.get("cost_usd")),
                          "item": _short(e.get("item"), 80)}
                         for depth, e in t.subdialogue_tree()],
    }


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def fingerprint(dialogue: Any, status: str) -> str:
    """What changes when a turn of the dialogue is saved (or it ends): its status (as
    listed) and each turn's status and answer's length."""
    import hashlib

    seen = json.dumps([status, [(t.id, t.status, len(t.response or ""))
                                for t in dialogue.turns]])
    return hashlib.sha256(seen.encode()).hexdigest()[:16]
