"""A dialogue's timeline on its page: a row per phase (per round, in a loop), each turn a
bar from its start to its end, turns that ran at the same time side by side in their row.

Geometry only, as numbers for an inline SVG (the page's policy allows no inline style,
and SVG's own attributes need none); the template draws it and escapes every label.
"""

from __future__ import annotations

from typing import Any

WIDTH = 1000  # the drawing's width in its own units (it scales to the page)
LABEL = 190  # the labels' column
LANE = 16  # a bar's height
GAP = 4  # between two bars of a row
ROW_GAP = 10  # between two rows


def timeline(turns: list[Any]) -> dict[str, Any] | None:
    """Rows of bars for ``turns`` (``TurnRecord``s) that have started; None if none has.
    A turn still running ends at the latest time the dialogue knows of."""
    timed = [t for t in turns if isinstance(t.started_at, int | float)]
    if not timed:
        return None
    start = min(t.started_at for t in timed)
    latest = max(max(t.started_at, t.ended_at or 0.0) for t in timed)
    span = max(latest - start, 1e-6)
    scale = (WIDTH - LABEL) / span
    looped = {t.phase for t in turns if t.round > 1}
    groups: dict[tuple[str, int], list[Any]] = {}
    for t in sorted(timed, key=lambda t: (t.started_at, t.index)):
        groups.setdefault((t.phase, t.round), []).append(t)
    rows, y = [], 0.0
    for (phase, round_), members in groups.items():
        lanes: list[float] = []  # where each lane's last bar ends
        bars = []
        for t in members:
            end = t.ended_at if isinstance(t.ended_at, int | float) else latest
            lane = next((i for i, last in enumerate(lanes) if last <= t.started_at), None)
            if lane is None:
                lanes.append(end)
                lane = len(lanes) - 1
            else:
                lanes[lane] = end
            x = LABEL + (t.started_at - start) * scale
            bars.append({"id": t.id, "status": "replaced" if t.replaced else t.status,
                         "x": f"{x:.1f}", "y": f"{y + lane * (LANE + GAP):.1f}",
                         "w": f"{max((end - t.started_at) * scale, 2.0):.1f}",
                         "h": LANE, "seconds": f"{end - t.started_at:.2f}",
                         "model": (t.model or "-").partition("?")[0]})
        height = len(lanes) * LANE + (len(lanes) - 1) * GAP
        label = f"{phase}" + (f" · round {round_}" if phase in looped else "")
        rows.append({"label": label, "phase": phase, "round": round_, "y": f"{y:.1f}",
                     "text_y": f"{y + height / 2 + 4:.1f}", "parallel": len(lanes) > 1,
                     "bars": bars})
        y += height + ROW_GAP
    return {"rows": rows, "width": WIDTH, "height": f"{max(y - ROW_GAP, LANE):.1f}",
            "label": LABEL, "span": f"{span:.2f}"}


def groups(turns: list[dict[str, Any]], looped: set[str]) -> list[dict[str, Any]]:
    """``turns`` (the page's turn views) in runs of the same phase and round, each run
    labelled with its round when its phase is a loop's."""
    out: list[dict[str, Any]] = []
    for t in turns:
        key = (t["phase"], t["round"])
        if not out or out[-1]["key"] != key:
            out.append({"key": key, "turns": [],
                        "label": (f"{t['phase']} · round {t['round']}"
                                  if t["phase"] in looped else None)})
        out[-1]["turns"].append(t)
    return out
