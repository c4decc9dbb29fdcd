"""The viewer's batch pages: ``/b``, the saved batches with their progress, and
``/b/{id}``, one batch (``dlg show --batch``'s figures: each row's status linking to its
dialogue, the totals, the waiting on rate limits its turns recorded), kept up to date
through ``/b/{id}/events`` as rows finish.

Batches are read as the CLI reads them: the batch's record (``load_batch``, what ``dlg
batch --resume`` continues from) and its dialogues ``BATCH-NNNNN`` (``batch_status``).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dlg.records.record import ENDED
from dlg.serve import live
from dlg.serve.views import money, seconds

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

ROWS_SHOWN = 1000  # rows listed on a batch's page (the totals count every one)
WAITS_UP_TO = 2000  # rows whose turns are read for their waiting on rate limits
CACHED = 20_000  # ended dialogues whose waiting is remembered (it cannot change)


def progress_of(statuses: list[str], rows: int) -> dict[str, int]:
    """Rows done (ended), running, failed (or stopped: failed, cancelled, interrupted,
    cost-limited) and pending (nothing saved yet), from the saved dialogues' statuses."""
    from collections import Counter

    return progress_counted(dict(Counter(statuses)), rows)


def progress_counted(statuses: dict[str, int], rows: int) -> dict[str, int]:
    """``progress_of`` from the saved dialogues counted by status."""
    saved = sum(statuses.values())
    done = sum(n for s, n in statuses.items() if s in ENDED)
    running = statuses.get("running", 0)
    pending = statuses.get("pending", 0)
    return {"rows": rows, "done": done, "running": running,
            "failed": saved - done - running - pending,
            "pending": pending + max(0, rows - saved)}


def batch_list(store: Any) -> list[dict[str, Any]]:
    """The batches the store keeps, newest first: each one's id, mode, when it was made,
    its progress, tokens and cost, from its header (``dlg.records.batch_headers``: no
    batch's rows or dialogues are loaded). A row saved ``running`` whose process is gone
    counts as failed (interrupted), as ``dlg ls`` lists it."""
    from dlg.records.batch_headers import batch_headers
    from dlg.records.store import INTERRUPTED, interrupted

    headers = batch_headers(store)
    running = [{"id": i, "status": "running"} for h in headers for i in h["running"]]
    dead = {r["id"] for r in interrupted(store, running) if r["status"] == INTERRUPTED}
    out: list[dict[str, Any]] = []
    for h in headers:
        statuses = dict(h["statuses"])
        gone = sum(i in dead for i in h["running"])
        if gone:
            statuses["running"] -= gone
            statuses[INTERRUPTED] = statuses.get(INTERRUPTED, 0) + gone
        created = h["created_at"]
        out.append({
            "id": h["id"], "mode": h["mode"] or "?", "created": _when(created),
            "at": created if isinstance(created, int | float) else 0,
            "progress": progress_counted(statuses, max(h["rows"], sum(statuses.values()))),
            "tokens": h["tokens"], "cost": money(h["cost_usd"])})
    return out


def _when(at: Any) -> str:
    import datetime

    if not isinstance(at, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def rate_limit_wait(dialogue: Any) -> float:
    """Seconds a dialogue's turns waited on rate limits: each turn's ``waited_seconds``
    (paced ahead of a limit, and after 429s), or for a turn saved by an earlier dlg, the
    waits its rate-limited attempts recorded."""
    return sum(t.waited_seconds if t.waited_seconds is not None else sum(
        float(a.get("waited") or 0) for a in t.attempts or []
        if isinstance(a, dict) and a.get("rate_limited")) for t in dialogue.turns)


class BatchPages:
    """The batch routes over the viewer's store (``viewer``: ``dlg.serve.app.Viewer``)."""

    def __init__(self, viewer: Any, render: Callable[..., str]):
        self.viewer, self.render = viewer, render
        self._waits: OrderedDict[str, float] = OrderedDict()  # ended dialogues only

    def _wait(self, item: Any) -> float:
        from dlg.records.store import as_dialogue

        if item.dialogue_id in self._waits:
            return self._waits[item.dialogue_id]
        found = self.viewer.store.load(item.dialogue_id)
        waited = rate_limit_wait(as_dialogue(found)) if found is not None else 0.0
        if item.status in ENDED:
            self._waits[item.dialogue_id] = waited
            while len(self._waits) > CACHED:
                self._waits.popitem(last=False)
        return waited

    def view(self, batch_id: str) -> dict[str, Any]:
        """One batch as its page shows it; ``DialogueNotFoundError`` if none."""
        from dlg.records.store import interrupted
        from dlg.running.batches.export import batch_status

        result = batch_status(batch_id, self.viewer.store)
        items = result.items
        listed = interrupted(self.viewer.store, [{"id": i.dialogue_id, "status": i.status}
                                                 for i in items if i.status == "running"])
        gone = {r["id"] for r in listed if r["status"] != "running"}
        for item in items:
            if item.dialogue_id in gone:
                item.status = "interrupted"
        counted = len(items) <= WAITS_UP_TO
        waited = sum(self._wait(i) for i in items if i.status != "pending") if counted else 0
        t = result.totals
        rows = [{"index": i.index + 1, "id": i.dialogue_id, "status": i.status,
                 "saved": i.status != "pending", "turns": i.turns, "tokens": i.tokens,
                 "cost": money(i.cost_usd), "time": seconds(i.latency_seconds),
                 "error": (i.error or "")[:300], "inputs": _inputs(i.inputs)}
                for i in items[:ROWS_SHOWN]]
        seen = json.dumps([(i.status, i.turns, i.tokens) for i in items])
        return {
            "id": batch_id, "mode": result.mode, "rows": rows, "shown": len(rows),
            "progress": progress_of([i.status for i in items], len(items)),
            "totals": [("dialogues", f"{t['dialogues']:,}"), ("turns", f"{t['turns']:,}"),
                       ("tokens", f"{t['tokens']:,}"),
                       ("cost", money(t["cost_usd"]) if t["cost_usd"] else "$0"),
                       ("model time", seconds(t["latency_seconds"])),
                       ("waiting on rate limits",
                        seconds(waited) if counted else f"not counted (over {WAITS_UP_TO:,} "
                                                        "rows)")],
            "limit": (f"${result.max_total_cost:g} max total cost"
                      if result.max_total_cost is not None else None),
            "running": any(i.status in ("running", "pending") for i in items),
            "fingerprint": hashlib.sha256(seen.encode()).hexdigest()[:16],
        }

    # routes ----------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        batches = await self.viewer._run(batch_list, self.viewer.store)
        return HTMLResponse(self.render("batches.html.j2", batches=batches))

    def _snapshot(self, batch_id: str) -> live.Snapshot:
        view = self.view(batch_id)
        return live.Snapshot(view["fingerprint"], self.render("batch_body.html.j2", b=view),
                             done=not view["running"])

    async def batch(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        view = await self.viewer._run(self.view, request.path_params["batch_id"])
        return HTMLResponse(self.render("batch.html.j2", b=view))

    async def events(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        await self.viewer._run(self.view, batch_id)  # none: 404 now
        return self.viewer._stream(functools.partial(self._snapshot, batch_id),
                                   request.query_params.get("since"))


def _inputs(inputs: Any) -> str:
    text = " · ".join(f"{k}: {v}" for k, v in inputs.items()) if isinstance(
        inputs, dict) else str(inputs)
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:120] + "…"


def routes(viewer: Any, render: Callable[..., str]) -> list[Route]:
    """``/b``, ``/b/{batch_id}`` and its events (``render``: a template's HTML)."""
    from starlette.routing import Route

    pages = BatchPages(viewer, render)
    return [Route("/b", pages.index), Route("/b/{batch_id}", pages.batch),
            Route("/b/{batch_id}/events", pages.events)]
