"""The built-in exporters: ``json`` (the full Dialogue record) and ``markdown``."""

from __future__ import annotations

import json
from typing import Any

from dlg.hookspecs import hookimpl


class JsonExporter:
    name = "json"
    extension = "json"
    description = "The full dialogue record (schemas/dialogue.schema.json)"

    def export(self, dialogue: Any) -> str:
        return json.dumps(dialogue.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _one_line(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


class MarkdownExporter:
    name = "markdown"
    extension = "md"
    description = "A readable transcript with per-turn model, latency and tokens"

    def export(self, dialogue: Any) -> str:
        m = dialogue.metrics
        lines = [f"# {dialogue.mode}: {dialogue.inputs.get('topic', dialogue.id)}", ""]
        lines.append(f"- Dialogue: `{dialogue.id}`")
        lines.append(f"- Status: {dialogue.status}")
        for key, value in dialogue.inputs.items():
            lines.append(f"- {key}: {value}")
        lines.append(
            f"- Turns: {m.turns_completed} completed, {m.turns_failed} failed; "
            f"tokens: {dialogue.usage.mark}{m.total_tokens}; time: "
            f"{m.total_latency_seconds:.2f}s"
        )
        if dialogue.usage.estimated:
            lines.append("- Token counts marked ~ are estimates: the provider reported none")
        budget = dialogue.metadata.get("budget")
        if budget:
            within = f", within {budget['within']}" if budget.get("within") else ""
            lines.append(f"- Budget: ${budget['spent']:.5f} spent of "
                         f"${budget['max_cost']:g}{within}")
        stopped = dialogue.metadata.get("stopped")
        if stopped:
            lines.append(f"- Stopped ({stopped['status']}) by {stopped['by']}: "
                         f"{stopped['reason']}")
        lines.append("")
        for t in dialogue.turns:
            who = f" ({t.participant})" if t.participant else ""
            lines.append(f"## {t.index}. {t.role}{who}")
            lines.append("")
            facts = [f"model: {t.model or '-'}", f"status: {t.status}",
                     f"latency: {_fmt_seconds(t.latency_seconds)}",
                     f"tokens: {t.usage.mark}{t.usage.prompt} in"
                     + (f" ({t.usage.cached} cached)" if t.usage.cached else "")
                     + f" / {t.usage.mark}{t.usage.completion} out"]
            lines.append("*" + " · ".join(facts) + "*")
            lines.append("")
            routing = (t.metadata or {}).get("routing")
            if routing and routing.get("reason"):
                lines.append(f"> routed by {routing['router']}: {routing['reason']}")
                lines.append("")
            if t.status == "completed":
                lines.append((t.response or "").strip())
            elif t.error:
                lines.append(f"> error: {t.error}")
            elif t.status == "skipped":
                lines.append("> skipped (its `when` condition was false)")
            else:
                lines.append(f"> {t.status}")
            rows = t.subdialogue_tree()
            if rows:
                lines.append("")
                lines.append("Sub-dialogues:")
                lines.append("")
            for depth, e in rows:
                lines.append(f"{'  ' * (depth - 1)}- `{e.get('id')}` ({e.get('mode') or '-'}, "
                             f"{e.get('status')}): {_one_line(e.get('item'))}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"


@hookimpl
def register_exporters(register):
    register(JsonExporter())
    register(MarkdownExporter())
