"""Exports: JSON (against its schema), Markdown, HTML (also in a real browser), PDF."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def panel():
    orchestrator = dlg.Orchestrator(model="echo?latency=0.05", store=None)
    return orchestrator.run_sync("panel", topic="Cities & <cars>")


def test_json_export_matches_its_schema(panel):
    from jsonschema import Draft202012Validator, FormatChecker

    schema = json.loads((ROOT / "schemas" / "dialogue.schema.json").read_text())
    data = json.loads(panel.export("json"))
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(data)
    assert data["metrics"]["total_tokens"] == sum(t["usage"]["total"] for t in data["turns"])


def test_every_export_has_the_turns(panel):
    md = panel.export("markdown")
    assert md.count("\n## ") == 4
    html = panel.export("html")
    assert html.count('class="turn-row"') == 4
    assert "Cities &amp; &lt;cars&gt;" in html and "<cars>" not in html  # escaped
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # self-contained


def test_html_timeline_shows_parallel_turns_overlapping(panel):
    import re

    html = panel.export("html")
    bars = {m["turn"]: (float(m["left"]), float(m["width"])) for m in re.finditer(
        r'class="bar \w+" data-turn="(?P<turn>\w+)" style="left:(?P<left>[\d.]+)%;'
        r'width:(?P<width>[\d.]+)%', html)}
    experts = [bars[t] for t in ("technical", "ethical", "economic")]
    # the three experts ran together: every pair of bars overlaps
    for a_left, a_width in experts:
        for b_left, b_width in experts:
            assert a_left < b_left + b_width and b_left < a_left + a_width
    synthesis_left = bars["synthesis"][0]
    assert all(left + width <= synthesis_left + 0.5 for left, width in experts)


def test_pdf_export(panel, tmp_path):
    data = panel.export("pdf")
    assert data[:5] == b"%PDF-" and data.rstrip().endswith(b"%%EOF")
    path = panel.export("pdf", tmp_path / "d.pdf")
    assert path.read_bytes()[:5] == b"%PDF-"


def test_export_cli_and_formats_from_extensions(tmp_path):
    runner = CliRunner()
    runner.invoke(cli, ["run", "detective", "-t", "x", "-m", "echo", "-q"],
                  catch_exceptions=False)
    (saved,) = dlg.list_dialogues()
    for ext, start in (("md", b"# detective"), ("html", b"<!DOCTYPE html>"),
                       ("pdf", b"%PDF-"), ("json", b"{")):
        out = tmp_path / f"d.{ext}"
        result = runner.invoke(cli, ["export", saved["id"][:12], "--out", str(out)],
                               catch_exceptions=False)
        assert result.exit_code == 0 and out.read_bytes().startswith(start), result.output
    result = runner.invoke(cli, ["export", saved["id"], "--format", "markdown"])
    assert result.stdout.startswith("# detective: x\n")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
        "google-chrome")


@pytest.mark.slow
def test_html_report_renders_in_a_headless_browser(panel, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (.ci/run installs Debian's package)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    report = tmp_path / "report.html"
    report.write_text(panel.export("html"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="turn-row"') == 4
    assert 'id="status">completed<' in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1000,1400",
                    report.as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_estimated_token_counts_are_marked_everywhere_a_person_reads_them():
    from dlg.records.record import TokenUsage

    d = dlg.run_sync({"name": "e", "turns": [{"id": "a", "role": "A", "prompt": "hi"}]},
                     model="echo", store=None)
    d.turns[0].usage = TokenUsage(10, 20, estimated=True)
    markdown = d.export("markdown")
    assert "tokens: ~10 in / ~20 out" in markdown
    assert "Token counts marked ~ are estimates" in markdown
    html = d.export("html")
    assert "<td class='n'>~10</td>" in html and "~30 tokens (estimated)" in html
    from dlg.cli import _table

    table = _table(d)
    assert "    ~10    ~20" in table
    assert "token counts marked ~ are estimates" in table
    d.turns[0].usage = TokenUsage(10, 20)
    assert "~" not in d.export("markdown") and "estimate" not in _table(d)


def test_html_report_renders_markdown_and_never_the_answers_own_html(recorder):
    answer = ("# Findings\n\n**Bees** matter:\n\n- pollination\n- honey\n\n"
              "<script>alert(1)</script> [click](javascript:alert(1)) `code`")
    mode = {"name": "m", "turns": [{"id": "a", "role": "A" * 80, "prompt": "hi"}]}
    d = dlg.run_sync(mode, model=recorder([answer]), store=None)
    html = d.export("html")
    assert "<h1>Findings</h1>" in html and "<strong>Bees</strong>" in html
    assert "<li>pollination</li>" in html and "<code>code</code>" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    # the timeline's bars stay inside it, and a long role is cut with a tooltip
    assert f'title="{"A" * 80}">1. {"A" * 80}</span>' in html


@pytest.mark.parametrize(("ext", "start"), [
    ("md", b"# detective"), ("markdown", b"# detective"), ("MD", b"# detective"),
    ("html", b"<!DOCTYPE html>"), ("htm", b"<!DOCTYPE html>"),
    ("jsonl", b'{"format": "dlg.dialogue/1", "id": '), ("csv", b"dialogue_id,"),
    ("pdf", b"%PDF-"), ("json", b"{\n")])
def test_out_takes_the_format_from_every_extension_an_exporter_writes(tmp_path, ext, start):
    """``--out x.markdown`` (or ``.htm``) wrote JSON under that name: the format comes
    from every extension an exporter declares, for run and export alike."""
    runner = CliRunner()
    out = tmp_path / f"run.{ext}"
    ran = runner.invoke(cli, ["run", "detective", "-t", "x", "-m", "echo", "-q", "-o",
                              str(out)])
    assert ran.exit_code == 0 and out.read_bytes().startswith(start), ran.output
    (saved,) = dlg.list_dialogues()
    out = tmp_path / f"export.{ext}"
    exported = runner.invoke(cli, ["export", saved["id"], "-o", str(out)])
    assert exported.exit_code == 0 and out.read_bytes().startswith(start), exported.output


def test_an_out_extension_no_exporter_writes_is_refused_unless_a_format_is_given(tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.txt"
    ran = runner.invoke(cli, ["run", "detective", "-t", "x", "-m", "echo", "-q", "-o",
                              str(out)])
    assert ran.exit_code == 2 and not out.exists()
    assert ran.stderr == (
        f"Error: --out {out}: no export format writes '.txt' files (formats: csv (.csv), "
        "html (.html, .htm), json (.json), jsonl (.jsonl), markdown (.md, .markdown), "
        "pdf (.pdf)); name the format with --format (-f)\n")
    assert dlg.list_dialogues() == []  # refused before anything ran (and was paid for)
    ran = runner.invoke(cli, ["run", "detective", "-t", "x", "-m", "echo", "-q", "-o",
                              str(out), "-f", "markdown"])
    assert ran.exit_code == 0 and out.read_text().startswith("# detective"), ran.output
    (saved,) = dlg.list_dialogues()
    refused = runner.invoke(cli, ["export", saved["id"], "-o", str(tmp_path / "e.docx")])
    assert refused.exit_code == 2 and "no export format writes '.docx' files" in \
        refused.stderr
    batch = runner.invoke(cli, ["export", "--batch", "b", "-o", str(tmp_path / "b.xlsx")])
    assert batch.exit_code == 2 and "no export format writes '.xlsx' files" in batch.stderr
    # a file without an extension, or a folder, is json as before
    plain = runner.invoke(cli, ["export", saved["id"], "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0 and json.loads((tmp_path / "plain").read_text())["id"] \
        == saved["id"]
# evaluated, its first part would show 823543: no width, count or time on the page has it
HOSTILE = "{{ 7**7 }}{% raw %}</style><script>alert(1)</script>{{ self }}"


def test_html_report_shows_template_syntax_and_markup_from_a_dialogue_as_text(recorder):
    """The report is a Jinja template: what a dialogue holds (an answer, a topic, an error,
    a sub-dialogue's answer) is data, escaped, and never rendered as a template."""
    answer = (f"# {HOSTILE}\n\n{HOSTILE}\n\n[click](javascript:alert(1)) "
              "[js](JAVASCRIPT:alert(1)) <a href=\"javascript:alert(1)\">a</a>\n\n"
              f"```\n{HOSTILE}\n```")
    mode = {"name": "m", "inputs": {"topic": {}},
            "turns": [{"id": "a", "role": "A", "prompt": "hi"},
                      {"id": "b", "role": "B", "prompt": "hi"}]}
    d = dlg.run_sync(mode, topic=HOSTILE, model=recorder([answer, "two"]), store=None)
    d.turns[1].status, d.turns[1].error = "failed", HOSTILE
    d.turns[0].metadata = {"routing": {"router": HOSTILE, "reason": HOSTILE}, "subdialogues": [
        {"id": HOSTILE, "mode": HOSTILE, "item": HOSTILE, "status": HOSTILE,
         "answer": HOSTILE}]}
    html = d.export("html")
    body = html.split("<body>", 1)[1]
    shown = "{{ 7**7 }}{% raw %}&lt;/style&gt;&lt;script&gt;alert(1)&lt;/script&gt;{{ self }}"
    # the topic (title, heading, inputs), the answer (heading, paragraph, code block), the
    # error, the routing facts and the sub-dialogue row (id, mode, status, item, answer)
    assert html.count(shown) == 2 + 1 + 3 + 1 + 2 + 5
    assert "823543" not in body and "<script" not in html and "</style>" not in body
    assert html.count("</style>") == 1
    assert "<a " not in body and "[click](javascript:alert(1))" in body  # no link made
    assert "<h1>{{ 7**7 }}" in html and "<b>{{ 7**7 }}" in html  # Markdown still rendered
