"""The ``pdf`` exporter, through fpdf2 (``pip install 'dlg-orchestrator[pdf]'``).

Text is set in a Unicode TrueType font: ``DLG_PDF_FONT`` if set, else DejaVu Sans or
another common system font; with none found, a core font is used and characters it
cannot show are replaced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dlg.plugin import hookimpl

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)


def _font() -> str | None:
    for path in (os.environ.get("DLG_PDF_FONT"), *FONT_CANDIDATES):
        if path and Path(path).is_file():
            return path
    return None


class PdfExporter:
    name = "pdf"
    extension = "pdf"
    binary = True  # never written to a terminal
    description = "A PDF transcript with per-turn model, latency, tokens and cost"

    def export(self, dialogue: Any) -> bytes:
        try:
            from fpdf import FPDF
        except ModuleNotFoundError:
            from dlg.plugin import ExportError

            raise ExportError("PDF export needs fpdf2: pip install 'dlg-orchestrator[pdf]'"
                              ) from None
        pdf = FPDF(format="A4")
        pdf.set_auto_page_break(auto=True, margin=15)
        font = _font()
        if font:
            pdf.add_font("body", "", font)
            family = "body"

            def clean(text: str) -> str:
                return text
        else:
            family = "helvetica"

            def clean(text: str) -> str:
                return text.encode("latin-1", "replace").decode("latin-1")

        pdf.set_title(clean(f"{dialogue.mode}: {dialogue.inputs.get('topic', dialogue.id)}"))
        pdf.set_creator("dlg")
        pdf.add_page()
        pdf.set_font(family, size=16)
        pdf.multi_cell(0, 8, clean(f"{dialogue.mode}: {dialogue.inputs.get('topic', '')}"),
                       new_x="LMARGIN", new_y="NEXT")
        m = dialogue.metrics
        pdf.set_font(family, size=9)
        pdf.multi_cell(0, 5, clean(
            f"dialogue {dialogue.id} · {dialogue.status} · {m.turns_completed}/"
            f"{len(dialogue.turns)} turns · {m.total_latency_seconds:.2f}s · "
            f"{dialogue.usage.mark}{m.total_tokens} tokens · ${m.total_cost_usd:.5f}"
            + (" (~ marks estimated token counts)" if dialogue.usage.estimated else "")),
            new_x="LMARGIN", new_y="NEXT")
        for t in dialogue.turns:
            pdf.ln(3)
            pdf.set_font(family, size=12)
            who = f" ({t.participant})" if t.participant else ""
            pdf.multi_cell(0, 6, clean(f"{t.index}. {t.role}{who}"), new_x="LMARGIN",
                           new_y="NEXT")
            pdf.set_font(family, size=8)
            latency = f"{t.latency_seconds:.2f}s" if t.latency_seconds is not None else "-"
            cost = f" · ${t.cost_usd:.5f}" if t.cost_usd else ""
            if t.waited_seconds is not None:
                latency += f" (waited {t.waited_seconds:.2f}s on rate limits)"
            pdf.multi_cell(0, 4, clean(f"{t.model or '-'} · {t.status} · {latency} · "
                                       f"{t.usage.mark}{t.usage.prompt} in / {t.usage.mark}"
                                       f"{t.usage.completion} out{cost}"),
                           new_x="LMARGIN", new_y="NEXT")
            pdf.set_font(family, size=10)
            body = (t.response or "").strip() if t.status == "completed" else (
                t.error or t.status)
            pdf.multi_cell(0, 5, clean(body or "-"), new_x="LMARGIN", new_y="NEXT")
        return bytes(pdf.output())


@hookimpl
def register_exporters(register):
    register(PdfExporter())
