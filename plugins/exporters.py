"""The built-in exporters: ``json`` (the full Dialogue record), ``markdown``, and the two
that hold many dialogues in one document (``export_all``: a batch's, ``dlg export --batch``):
``jsonl`` (a record a line) and ``csv`` (a turn a row)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from dlg.plugin import cache_note, dialogue_saved_usd, hookimpl, saved_usd


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


def _cached(usage: Any, saved: float) -> str:
    note = cache_note(usage, saved)
    return f" ({note})" if note else ""


class MarkdownExporter:
    name = "markdown"
    extension = "md"
    extensions = ("md", "markdown")
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
        cache = _cached(dialogue.usage, dialogue_saved_usd(dialogue))
        if cache:
            lines.append(f"- Prompt cache: {m.prompt_tokens} in{cache}")
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
                     *([f"waited on rate limits: {_fmt_seconds(t.waited_seconds)}"]
                       if t.waited_seconds is not None else []),
                     f"tokens: {t.usage.mark}{t.usage.prompt} in"
                     + _cached(t.usage, saved_usd(t.metadata))
                     + f" / {t.usage.mark}{t.usage.completion} out"]
            lines.append("*" + " · ".join(facts) + "*")
            lines.append("")
            routing = (t.metadata or {}).get("routing")
            if routing and routing.get("reason"):
                from dlg.plugin import budget_note

                note = budget_note(routing)
                lines.append(f"> routed by {routing['router']}: {routing['reason']}"
                             + (f"; {note}" if note else ""))
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


class JsonLinesExporter:
    """The full record of each dialogue on one line (JSON Lines): read it back with
    ``pandas.read_json(path, lines=True)``, ``jq``, or a loop over ``json.loads``."""

    name = "jsonl"
    extension = "jsonl"
    description = "The full dialogue record on one line; a batch's dialogues, a line each"

    def export(self, dialogue: Any) -> str:
        return json.dumps(dialogue.to_dict(), ensure_ascii=False) + "\n"

    def export_all(self, dialogues: Iterable[Any]) -> Iterator[str]:
        for dialogue in dialogues:
            yield self.export(dialogue)


CSV_COLUMNS = ("dialogue_id", "mode", "dialogue_status", "inputs", "turn", "turn_id",
               "round", "role", "participant", "model", "status", "prompt_tokens",
               "completion_tokens", "cost_usd", "latency_seconds", "response", "error",
               "cached_tokens", "cache_saved_usd", "waited_seconds")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula


def _cell(value: Any) -> Any:
    """A value for a CSV cell. Text a spreadsheet would read as a formula (a model's
    answer starting with ``=HYPERLINK(...)``, say) gets a ``'`` before it, as OWASP
    advises; the jsonl export keeps every text exact."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return "" if value is None else value


class CsvExporter:
    """A turn a row, for spreadsheets: the dialogue (id, mode, status, its inputs as
    JSON), then the turn's place, model, status, tokens, cost, latency, answer and
    error, then the prompt tokens read from the provider's cache and what that saved,
    and the seconds the turn waited on rate limits (empty: it never waited), last, so
    that older readers' columns keep their places."""

    name = "csv"
    extension = "csv"
    description = "A turn a row: model, status, tokens, cost, latency and answer"

    def export(self, dialogue: Any) -> str:
        return "".join(self.export_all([dialogue]))

    def export_all(self, dialogues: Iterable[Any]) -> Iterator[str]:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")

        def flushed() -> str:
            text = buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            return text

        writer.writerow(CSV_COLUMNS)
        yield flushed()
        for d in dialogues:
            inputs = json.dumps(d.inputs, ensure_ascii=False, sort_keys=True)
            for t in d.turns:
                writer.writerow([_cell(v) for v in (
                    d.id, d.mode, d.status, inputs, t.index, t.turn_id, t.round, t.role,
                    t.participant, t.model, t.status, t.usage.prompt, t.usage.completion,
                    t.cost_usd, t.latency_seconds, t.response, t.error, t.usage.cached,
                    round(saved_usd(t.metadata), 10),
                    round(t.waited_seconds, 3) if t.waited_seconds is not None else None)])
            yield flushed()


@hookimpl
def register_exporters(register):
    register(JsonExporter())
    register(MarkdownExporter())
    register(JsonLinesExporter())
    register(CsvExporter())
