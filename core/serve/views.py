"""What the viewer's pages show, worked out from a store's records: the list of saved
dialogues with its filters, and one dialogue's turns, budget, sub-dialogues and exports.
Plain data for the templates (which escape it); nothing here reads options or the
environment, so no secret reaches a page."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

LIST_LIMIT = 500  # rows on one page of the list


@dataclass(frozen=True)
class Filters:
    """The list's filters, from the query string: status, mode, text."""

    status: str = ""
    mode: str = ""
    q: str = ""

    @classmethod
    def from_query(cls, query: Any) -> Filters:
        def one(name: str) -> str:
            return str(query.get(name) or "").strip()[:200]

        return cls(status=one("status"), mode=one("mode"), q=one("q"))

    def keep(self, row: dict[str, Any]) -> bool:
        if self.status and row.get("status") != self.status:
            return False
        if self.mode and row.get("mode") != self.mode:
            return False
        if self.q:
            text = " ".join([str(row.get("id")), str(row.get("mode")),
                             json.dumps(row.get("inputs") or {}, ensure_ascii=False)])
            return self.q.lower() in text.lower()
        return True


@dataclass
class Listing:
    rows: list[dict[str, Any]]
    statuses: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    total: int = 0


def listing(store: Any, filters: Filters) -> Listing:
    """The saved dialogues as ``dlg ls`` lists them (one whose process is gone:
    interrupted), filtered, newest first."""
    from dlg.records.store import interrupted

    every = interrupted(store, store.list())
    rows = [_row(r) for r in every if filters.keep(r)]
    return Listing(rows=rows[:LIST_LIMIT], total=len(rows),
                   statuses=sorted({str(r.get("status")) for r in every}),
                   modes=sorted({str(r.get("mode")) for r in every if r.get("mode")}))


def _row(r: dict[str, Any]) -> dict[str, Any]:
    inputs = r.get("inputs") or {}
    topic = inputs.get("topic") if isinstance(inputs, dict) else None
    return {"id": str(r.get("id")), "mode": r.get("mode") or "-",
            "status": r.get("status") or "-", "parent": r.get("parent"),
            "turns": f"{r.get('turns_completed') or 0}/{r.get('turns') or 0}",
            "tokens": r.get("total_tokens") or 0, "cost": money(r.get("total_cost_usd")),
            "topic": " ".join(str(topic if topic is not None else "").split())[:120],
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

    dialogue = as_dialogue(find_dialogue(store, dialogue_id))
    (listed,) = interrupted(store, [{"id": dialogue.id, "status": dialogue.status}])
    meta = dialogue.metadata or {}
    m = dialogue.metrics
    budget = meta.get("budget") or None
    parent = meta.get("parent") or None
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
        "budget": (f"${budget.get('spent', 0):.5f} spent of ${budget.get('max_cost', 0):g}"
                   if isinstance(budget, dict) else None),
        "turns": [_turn(t) for t in dialogue.turns],
        "fingerprint": fingerprint(dialogue, listed["status"]),
    }


def _turn(t: Any) -> dict[str, Any]:
    routing = (t.metadata or {}).get("routing") or {}
    return {
        "id": t.id, "index": t.index, "role": t.role, "phase": t.phase,
        "participant": t.participant or "-", "model": model_name(t.model),
        "replaced": [model_name(m) for m in t.replaced], "status": t.status,
        "router": routing.get("router"), "reason": routing.get("reason"),
        "tokens": f"{t.usage.mark}{t.usage.prompt} in · {t.usage.mark}{t.usage.completion} out",
        "cost": money(t.cost_usd), "latency": seconds(t.latency_seconds),
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
