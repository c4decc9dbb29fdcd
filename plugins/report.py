"""The ``html`` exporter: one self-contained HTML file (no scripts, fonts or images from
anywhere), with a timeline that shows what ran in parallel, per-turn model, latency,
tokens and cost, the totals, and every turn's text."""

from __future__ import annotations

from typing import Any

from dlg.hookspecs import hookimpl

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:960px;padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.meta{color:#555;margin:0 0 1rem}.totals{display:flex;gap:1.5rem;flex-wrap:wrap;
margin:1rem 0;padding:.75rem 1rem;background:#f5f5f7;border-radius:8px}
.totals b{display:block;font-size:1.2rem}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e5e5e5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.timeline{position:relative;border-left:1px solid #ccc;margin:.5rem 0 1rem}
.lane{position:relative;height:22px;margin:3px 0}
.bar{position:absolute;height:18px;top:2px;border-radius:4px;background:#4a7bd0;
color:#fff;font-size:11px;line-height:18px;padding:0 4px;white-space:nowrap;box-sizing:border-box;
overflow:hidden;min-width:2px}
.bar.failed{background:#c0392b}.bar.skipped{background:#aaa}.bar.cancelled{background:#e67e22}
.bar.replaced{background:#8e44ad}
.lane .label{position:absolute;right:100%;margin-right:6px;font-size:11px;color:#555;
white-space:nowrap;max-width:8.5rem;overflow:hidden;text-overflow:ellipsis}
.timeline-wrap{overflow-x:auto}
.turn{border:1px solid #e5e5e5;border-radius:8px;padding:.75rem 1rem;margin:1rem 0}
.turn h3{margin:0;font-size:1rem}.turn .facts{color:#666;font-size:12px;margin:.2rem 0 .6rem}
.turn pre{white-space:pre-wrap;font:inherit;margin:0}
.turn .text{overflow-wrap:anywhere}.turn .text pre,.turn .text code{background:#f5f5f7;
font-family:ui-monospace,monospace;font-size:12px}.turn .text pre{padding:.5rem;
overflow-x:auto;white-space:pre}.turn .text table{width:auto}
.turn .text img{max-width:100%}
.error{color:#c0392b}
.tree{margin:.6em 0}.tree ul{margin:.2em 0 .2em 1.2em;padding:0}
"""


def _markdown(text: str) -> str:
    """A model's answer as HTML: its Markdown rendered, its own HTML shown as text (an
    answer is hostile input: no raw HTML, no javascript: links)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(
        "table").render(text)


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
        from html import escape  # when a report is made, not at start-up

        m = dialogue.metrics
        title = f"{dialogue.mode}: {dialogue.inputs.get('topic', dialogue.id)}"
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               '<meta name="viewport" content="width=device-width, initial-scale=1">',
               f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
               f"<h1>{escape(title)}</h1>",
               f'<p class="meta">dialogue <code>{escape(dialogue.id)}</code> · '
               f'status <b id="status">{escape(dialogue.status)}</b></p>']
        if dialogue.inputs:
            out.append('<p class="meta">' + " · ".join(
                f"{escape(str(k))}: {escape(str(v))}" for k, v in dialogue.inputs.items())
                + "</p>")
        b = dialogue.metadata.get("budget")
        budget = [("budget", f"${b['spent']:.4f} of ${b['max_cost']:g}")] if b else []
        out.append('<div class="totals">' + "".join(
            f"<div><b>{escape(v)}</b>{escape(k)}</div>" for k, v in (
                ("turns", f"{m.turns_completed}/{len(dialogue.turns)}"),
                ("wall time", _seconds(m.total_latency_seconds)),
                ("model time", _seconds(m.total_model_seconds)),
                ("tokens" + (" (~ estimated)" if dialogue.usage.estimated else ""),
                 f"{dialogue.usage.mark}{m.total_tokens:,}"),
                ("cost", _money(m.total_cost_usd) if m.total_cost_usd else "$0"),
                ("fallbacks", str(m.substitutions)),
                *budget,
            )) + "</div>")
        out.extend(self._timeline(dialogue))
        out.append("<h2>Turns</h2><table><thead><tr><th>#</th><th>turn</th><th>phase</th>"
                   "<th>participant</th><th>model</th><th>status</th><th>latency</th>"
                   "<th>in</th><th>out</th><th>cost</th></tr></thead><tbody>")
        for t in dialogue.turns:
            model = escape(t.model or "-") + (
                f" <small>(for {escape(', '.join(t.replaced))})</small>" if t.replaced else "")
            out.append(
                f'<tr class="turn-row" data-turn="{escape(t.id)}"><td class="n">{t.index}</td>'
                f"<td>{escape(t.role)}</td><td>{escape(t.phase)}</td>"
                f"<td>{escape(t.participant or '-')}</td><td>{model}</td>"
                f"<td>{escape(t.status)}</td><td class='n'>{_seconds(t.latency_seconds)}</td>"
                f"<td class='n'>{t.usage.mark}{t.usage.prompt}</td>"
                f"<td class='n'>{t.usage.mark}{t.usage.completion}</td>"
                f"<td class='n'>{_money(t.cost_usd)}</td></tr>")
        out.append("</tbody></table>")
        for t in dialogue.turns:
            who = f" · {escape(t.participant)}" if t.participant else ""
            out.append(f'<section class="turn" id="turn-{escape(t.id)}">'
                       f"<h3>{t.index}. {escape(t.role)}{who}</h3>"
                       f'<div class="facts">{escape(t.model or "-")} · {escape(t.status)} · '
                       f"{_seconds(t.latency_seconds)} · {t.usage.mark}{t.usage.total} tokens"
                       + (" (estimated)" if t.usage.estimated else "")
                       + (f" · {t.usage.cached} cached" if t.usage.cached else "")
                       + "</div>")
            routing = (t.metadata or {}).get("routing")
            if routing and routing.get("reason"):
                from dlg.running.routing import budget_note

                note = budget_note(routing)
                out.append(f'<div class="facts">routed by {escape(routing["router"])}: '
                           f'{escape(routing["reason"])}'
                           f'{escape("; " + note) if note else ""}</div>')
            if t.status == "completed":
                out.append(f'<div class="text">{_markdown((t.response or "").strip())}</div>')
            elif t.error:
                out.append(f'<p class="error">{escape(t.error)}</p>')
            out.extend(self._tree(t))
            out.append("</section>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    @staticmethod
    def _tree(turn: Any) -> list[str]:
        """The sub-dialogues a turn spawned, as nested lists."""
        from html import escape  # when a report is made, not at start-up

        rows = turn.subdialogue_tree()
        if not rows:
            return []
        out = ['<div class="tree"><b>Sub-dialogues</b>']
        depth = 0
        for level, e in rows:
            while depth < level:
                out.append("<ul>")
                depth += 1
            while depth > level:
                out.append("</ul>")
                depth -= 1
            answer = " ".join(str(e.get("answer") or "").split())
            out.append(f'<li><code>{escape(str(e.get("id")))}</code> '
                       f'{escape(str(e.get("mode") or "-"))} · {escape(str(e.get("status")))}'
                       f' · {_money(e.get("cost_usd"))}: <b>{escape(str(e.get("item")))}</b>'
                       + (f"<br><small>{escape(answer[:300])}</small>" if answer else "")
                       + "</li>")
        out.extend(["</ul>"] * depth)
        out.append("</div>")
        return out

    @staticmethod
    def _timeline(dialogue: Any) -> list[str]:
        from html import escape  # when a report is made, not at start-up

        timed = [t for t in dialogue.turns if t.started_at and t.ended_at]
        if not timed:
            return []
        start = min(t.started_at for t in timed)
        span = max(max(t.ended_at for t in timed) - start, 1e-6)
        out = ['<h2>Timeline</h2><div class="timeline-wrap">'
               '<div class="timeline" style="margin-left:9rem">']
        for t in dialogue.turns:
            if t not in timed:
                continue
            width = min(max((t.ended_at - t.started_at) / span * 100, 0.3), 100.0)
            left = min((t.started_at - start) / span * 100, 100.0 - width)  # stays inside
            kind = "replaced" if t.replaced else t.status
            out.append(
                f'<div class="lane"><span class="label" title="{escape(t.role)}">'
                f'{t.index}. {escape(t.role)}</span>'
                f'<div class="bar {escape(kind)}" data-turn="{escape(t.id)}" '
                f'style="left:{left:.2f}%;width:{width:.2f}%" '
                f'title="{escape(t.role)}: {_seconds(t.latency_seconds)}">'
                f"{escape(t.model or '')}</div></div>")
        out.append(f'<p class="meta">0 s to {span:.2f} s; bars that overlap ran at the same '
                   "time.</p></div></div>")
        return out


@hookimpl
def register_exporters(register):
    register(HtmlExporter())
