"""The ``html`` exporter: one self-contained HTML file (no scripts, fonts or images from
anywhere), with a timeline that shows what ran in parallel, per-turn model, latency,
tokens and cost, the totals, and every turn's text.

The markup is the Jinja template ``report.html.j2`` in dlg's ``templates/``, rendered with
autoescape on (a plain environment, not the prompts' sandbox: the template is dlg's own;
what a dialogue holds is data, escaped, never run). This module only works out the
numbers the template shows.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from dlg.plugin import hookimpl

if TYPE_CHECKING:
    from jinja2 import Template

TEMPLATE = "report.html.j2"


@functools.cache
def _template() -> Template:
    """The report's template, loaded and compiled once a process (jinja2 is imported
    when a report is made, not at start-up)."""
    import jinja2

    from dlg.plugin import markdown_html

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dlg.templates", "."), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True, auto_reload=False)
    env.filters.update(markdown=markdown_html, money=_money, seconds=_seconds,
                       cache_note=_cache_note,
                       budget_note=_budget_note)
    return env.get_template(TEMPLATE)


def _budget_note(routing: dict[str, Any]) -> str:
    """What a turn's routing says of a budget that moved it off the router's pick."""
    from dlg.plugin import budget_note

    note = budget_note(routing)
    return f"; {note}" if note else ""


def _cache_note(turn: Any) -> str:
    """What the prompt cache did for a turn, as ``cache_note`` says it ("" if nothing)."""
    from dlg.plugin import cache_note, saved_usd

    return cache_note(turn.usage, saved_usd(turn.metadata))


def _money(value: float | None) -> str:
    return "-" if not value else f"${value:.5f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


class HtmlExporter:
    name = "html"
    extension = "html"
    extensions = ("html", "htm")
    description = "A self-contained HTML report with a timeline of the turns"

    def export(self, dialogue: Any) -> str:
        title = f"{dialogue.mode}: {dialogue.inputs.get('topic', dialogue.id)}"
        return _template().render(
            dialogue=dialogue, title=title, totals=_totals(dialogue),
            timeline=_timeline(dialogue), subdialogues=_subdialogues,
            paced=any(t.waited_seconds is not None for t in dialogue.turns))


def _totals(dialogue: Any) -> list[tuple[str, str]]:
    """The figures the report leads with, as (label, value)."""
    m = dialogue.metrics
    b = dialogue.metadata.get("budget")
    budget = [("budget", f"${b['spent']:.4f} of ${b['max_cost']:g}")] if b else []
    return [
        ("turns", f"{m.turns_completed}/{len(dialogue.turns)}"),
        ("wall time", _seconds(m.total_latency_seconds)),
        ("model time", _seconds(m.total_model_seconds)),
        ("tokens" + (" (~ estimated)" if dialogue.usage.estimated else ""),
         f"{dialogue.usage.mark}{m.total_tokens:,}"),
        ("cost", _money(m.total_cost_usd) if m.total_cost_usd else "$0"),
        *_cache(dialogue),
        ("fallbacks", str(m.substitutions)),
        *budget,
    ]


def _cache(dialogue: Any) -> list[tuple[str, str]]:
    """The prompt cache's line of the totals: tokens read and money saved, if any."""
    from dlg.plugin import cache_note, dialogue_saved_usd

    note = cache_note(dialogue.usage, dialogue_saved_usd(dialogue))
    return [("prompt cache", note)] if note else []


def _timeline(dialogue: Any) -> dict[str, Any] | None:
    """Where each timed turn's bar starts and how wide it is, in % of the dialogue's span;
    None when no turn has times."""
    timed = [t for t in dialogue.turns if t.started_at and t.ended_at]
    if not timed:
        return None
    start = min(t.started_at for t in timed)
    span = max(max(t.ended_at for t in timed) - start, 1e-6)
    bars = []
    for t in timed:
        width = min(max((t.ended_at - t.started_at) / span * 100, 0.3), 100.0)
        left = min((t.started_at - start) / span * 100, 100.0 - width)  # stays inside
        bars.append({"turn": t, "kind": "replaced" if t.replaced else t.status,
                     "left": f"{left:.2f}", "width": f"{width:.2f}"})
    return {"bars": bars, "span": f"{span:.2f}"}


def _subdialogues(turn: Any) -> list[dict[str, Any]]:
    """The sub-dialogues a turn spawned, and theirs, depth first, as the rows of a tree."""
    return [{"depth": depth, "id": e.get("id"), "mode": e.get("mode") or "-",
             "status": e.get("status"), "cost": e.get("cost_usd"), "item": e.get("item"),
             "answer": " ".join(str(e.get("answer") or "").split())[:300]}
            for depth, e in turn.subdialogue_tree()]


@hookimpl
def register_exporters(register):
    register(HtmlExporter())
