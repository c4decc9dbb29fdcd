"""The viewer's routing page, ``/routing``: what the learned router has learned (per task
and model, the mean quality with a 95% interval and the number of scores, as
``dlg routing stats`` reads them), drawn as inline SVG made here (quality per model per
task with error bars; price against quality), and the latest ratings, newest first,
each linking to the turn it rated. Kept up to date through ``/routing/events``.

Plots are computed into plain numbers and drawn by ``routing_body.html.j2`` (autoescaped:
a model's name and a task are hostile input); a model is named without its options.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dlg.serve import live
from dlg.serve.views import model_name

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

Z95 = 1.96
WIDTH, LEFT, RIGHT, ROW, TOP = 640, 190, 60, 22, 26  # the quality plot, in pixels
SCATTER_H, PAD = 300, 50  # the price plot's height and margins
HISTORY_SHOWN = 200


def interval(n: int, mean: float, sd: float) -> tuple[float, float]:
    """A 95% interval for the mean of ``n`` scores in [0, 1] (normal approximation, with
    the spread ``QualityStat.sd`` gives: 0.5 before two scores), clipped to [0, 1]."""
    half = Z95 * sd / math.sqrt(max(n, 1))
    return max(0.0, mean - half), min(1.0, mean + half)


def learned(store: Any, registry: Any) -> list[dict[str, Any]]:
    """Per task, its models (best mean first) with n, mean, interval, spread, changes
    detected and blended price ($ per million tokens, None if the registry has none)."""
    from dlg.running.routing.learning import routing_stats

    tasks = []
    for task, models in routing_stats(store).items():
        rows = []
        for model, s in sorted(models.items(), key=lambda kv: -kv[1].mean):
            lo, hi = interval(s.n, s.mean, s.sd)
            info = registry.get(model) if registry is not None else None
            price = getattr(info, "cost_per_million", None)
            rows.append({"model": model_name(model), "n": s.n, "mean": s.mean, "lo": lo,
                         "hi": hi, "sd": s.sd, "changes": s.changes,
                         "since": (s.since_n, float(s.since_mean or 0.0)),
                         "price": price if isinstance(price, int | float) else None})
        tasks.append({"task": task, "models": rows, "plot": _quality_plot(rows)})
    return tasks


def _x(value: float) -> float:
    return round(LEFT + value * (WIDTH - LEFT - RIGHT), 2)


def _quality_plot(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each model a row: its mean as a dot, its interval as a bar, n on the right."""
    height = TOP + ROW * len(rows) + 8
    points = [{"label": r["model"], "n": r["n"], "y": TOP + ROW * i + ROW / 2,
               "x": _x(r["mean"]), "lo": _x(r["lo"]), "hi": _x(r["hi"]),
               "mean": r["mean"]} for i, r in enumerate(rows)]
    ticks = [{"x": _x(v / 4), "label": f"{v / 4:g}"} for v in range(5)]
    return {"width": WIDTH, "height": height, "points": points, "ticks": ticks,
            "left": LEFT, "right": WIDTH - RIGHT, "bottom": height - 8}


def scatter(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Price against quality: one point per (task, model) with a known price, its
    interval as a vertical bar. None when no rated model has a price."""
    priced = [(t["task"], r) for t in tasks for r in t["models"] if r["price"] is not None]
    if not priced:
        return None
    top = max(r["price"] for _, r in priced) or 1.0
    span_x, span_y = WIDTH - 2 * PAD - 40, SCATTER_H - 2 * PAD

    def x(price: float) -> float:
        return round(PAD + 40 + price / top * span_x * 0.95, 2)

    def y(quality: float) -> float:
        return round(SCATTER_H - PAD - quality * span_y, 2)

    points = [{"label": f"{r['model']} · {task}", "x": x(r["price"]), "y": y(r["mean"]),
               "end": r["price"] > top / 2,  # its label to the left of it
               "lo": y(r["lo"]), "hi": y(r["hi"]), "price": r["price"], "mean": r["mean"],
               "n": r["n"]} for task, r in priced]
    return {"width": WIDTH, "height": SCATTER_H, "points": points,
            "x0": PAD + 40, "x1": WIDTH - PAD, "y0": SCATTER_H - PAD, "y1": PAD,
            "xticks": [{"x": x(top * f), "label": f"${top * f:.3g}"} for f in (0, .5, 1)],
            "yticks": [{"y": y(v / 4), "label": f"{v / 4:g}"} for v in range(5)]}


def history(store: Any) -> list[dict[str, Any]]:
    """The latest ratings, newest first, as the page lists them."""
    import datetime

    from dlg.running.routing.learning import rating_history

    out = []
    for e in rating_history(store, HISTORY_SHOWN):
        at = e.get("at")
        out.append({"when": datetime.datetime.fromtimestamp(at, datetime.UTC).strftime(
                        "%Y-%m-%d %H:%M:%S") if isinstance(at, int | float) else "-",
                    "task": str(e["task"]), "model": model_name(str(e["model"])),
                    "score": f"{float(e['score']) * 10:g}",
                    "by": str(e.get("by") or "-"),
                    "dialogue": str(e["dialogue"]) if e.get("dialogue") else None,
                    "turn": str(e["turn"]) if e.get("turn") else None})
    return out


class RoutingPage:
    """The routing routes over the viewer's store (``viewer``: ``dlg.serve.app.Viewer``)."""

    def __init__(self, viewer: Any, render: Callable[..., str]):
        self.viewer, self.render = viewer, render
        # the page is the same for everyone: its open streams share one reader
        self.shared = live.Shared(self._snapshot)

    @functools.cached_property
    def registry(self) -> Any:
        from dlg.models.catalog import ModelRegistry

        return ModelRegistry.load()

    def view(self) -> dict[str, Any]:
        store = self.viewer.store
        raw = store.quality() if hasattr(store, "quality") else {}
        tasks = learned(store, self.registry)
        seen = json.dumps(sorted((str(k), v) for k, v in raw.items()), default=str)
        return {"tasks": tasks, "scatter": scatter(tasks), "history": history(store),
                "unpriced": sorted({r["model"] for t in tasks for r in t["models"]
                                    if r["price"] is None}),
                "keeps": hasattr(store, "quality"),
                "fingerprint": hashlib.sha256(seen.encode()).hexdigest()[:16]}

    def _snapshot(self) -> live.Snapshot:
        view = self.view()
        return live.Snapshot(view["fingerprint"], self.render("routing_body.html.j2", r=view),
                             done=False)

    async def page(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        view = await self.viewer._run(self.view)
        return HTMLResponse(self.render("routing.html.j2", r=view))

    async def events(self, request: Request) -> Response:
        return self.viewer._stream(self.shared, request.query_params.get("since"))


def routes(viewer: Any, render: Callable[..., str]) -> list[Route]:
    """``/routing`` and its events (``render``: a template's HTML)."""
    from starlette.routing import Route

    page = RoutingPage(viewer, render)
    return [Route("/routing", page.page), Route("/routing/events", page.events)]
