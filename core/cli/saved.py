"""Saved dialogues: ``dlg ls``, ``dlg show``, ``dlg export``, ``dlg rm``."""

from __future__ import annotations

import json
from typing import Any

import click

from dlg.cli.base import (
    EXIT_FAILED,
    EXIT_USAGE,
    DlgClickError,
    _format_for,
    _saved,
    _store,
    _write_export,
    cli,
    store_option,
)
from dlg.cli.terminal import echo, one_line, write_bytes


@cli.command("ls")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many to list, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def list_command(limit: int, as_json: bool, store: str | None) -> None:
    """List saved dialogues, newest first. One saved running that no live process holds
    (its process was killed, or crashed) is listed as interrupted, with the command that
    continues it."""
    from dlg.records.store import INTERRUPTED, interrupted

    opened = _store(store)
    rows = interrupted(opened, opened.list()[:limit])
    if as_json:
        echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        echo("no saved dialogues", err=True)
        return
    width = max(24, *(len(r["id"]) for r in rows))  # a batch's ids are longer
    echo(f"{'id':<{width}}  {'mode':<14}  {'status':<12}  {'turns':>5}  {'tokens':>7}  "
         f"{'cost':>8}  topic")
    for r in rows:
        if r.get("status") == "unreadable":
            echo(f"{r['id']:<{width}}  {'-':<14}  unreadable  ({one_line(str(r.get('error')))})")
            continue
        topic = one_line(str((r.get("inputs") or {}).get("topic", "")))[:40]
        cost = f"${r['total_cost_usd']:.4f}" if r.get("total_cost_usd") else "-"
        mode = ("↳ " if r.get("parent") else "") + one_line(str(r["mode"]))  # a sub-dialogue
        echo(f"{r['id']:<{width}}  {mode[:14]:<14}  {r['status']:<12}  "
             f"{r['turns_completed']:>2}/{r['turns']:<2}  {r.get('total_tokens') or 0:>7}"
             f"  {cost:>8}  {topic}")
    # a sub-dialogue continues with the dialogue that spawned it
    stopped = [r["id"] for r in rows if r.get("status") == INTERRUPTED and not r.get("parent")]
    if stopped:
        echo("")
    for dialogue_id in stopped:
        echo(f"{dialogue_id} was interrupted (the process running it is gone): "
             f"`dlg resume {dialogue_id}` continues it")


def _table(dialogue: Any, status: str | None = None) -> str:
    """``status``: as listed, when not as saved (``interrupted``)."""
    lines = [f"{dialogue.id} · {dialogue.mode} · {status or dialogue.status}"]
    for key, value in dialogue.inputs.items():
        lines.append(f"  {key}: {value}")
    if dialogue.error:
        lines.append(f"  error: {dialogue.error}")
    lines.append("")
    # a column for the waiting on rate limits when a turn recorded some (a limit known)
    paced = any(t.waited_seconds is not None for t in dialogue.turns)
    lines.append(f"{'#':>2}  {'turn':<16} {'participant':<12} {'model':<26} {'status':<9} "
                 f"{'latency':>8} " + (f"{'waited':>8} " if paced else "")
                 + f"{'in':>6} {'out':>6} {'cost':>9}")
    for t in dialogue.turns:
        model = (t.model or "-") + (" *" if t.replaced else "")
        latency = f"{t.latency_seconds:.2f}s" if t.latency_seconds is not None else "-"
        waited = f"{t.waited_seconds:.2f}s" if t.waited_seconds is not None else "-"
        cost = f"${t.cost_usd:.5f}" if t.cost_usd else "-"
        lines.append(f"{t.index:>2}  {t.id[:16]:<16} {(t.participant or '-')[:12]:<12} "
                     f"{model[:26]:<26} {t.status:<9} {latency:>8} "
                     + (f"{waited:>8} " if paced else "")
                     + f"{t.usage.mark + str(t.usage.prompt):>6} "
                     f"{t.usage.mark + str(t.usage.completion):>6} {cost:>9}")
    m = dialogue.metrics
    lines.append("")
    lines.append(f"total: {m.turns_completed}/{len(dialogue.turns)} turns · wall "
                 f"{m.total_latency_seconds:.2f}s · model time {m.total_model_seconds:.2f}s · "
                 f"{dialogue.usage.mark}{m.prompt_tokens} in + {m.completion_tokens} out = "
                 f"{m.total_tokens} tokens · ${m.total_cost_usd:.5f}")
    if paced:
        lines.append("waited: seconds a turn's call waited on rate limits (paced ahead of a "
                     "limit, and after 429s), part of its latency")
    if dialogue.usage.estimated:
        lines.append("token counts marked ~ are estimates: the provider reported none")
    if dialogue.usage.cached or dialogue.usage.cache_written:
        from dlg.models.caching import dialogue_saved_usd

        saved = dialogue_saved_usd(dialogue)
        share = dialogue.usage.cached / m.prompt_tokens if m.prompt_tokens else 0.0
        line = (f"prompt cache: {dialogue.usage.cached} of {m.prompt_tokens} prompt tokens "
                f"({share:.0%}) were read from the provider's cache")
        if dialogue.usage.cache_written:
            line += f", {dialogue.usage.cache_written} written to it"
        if saved >= 5e-6:
            line += f"; ${saved:.5f} saved"
        elif saved <= -5e-6:
            line += f"; ${-saved:.5f} more for the cache writes"
        lines.append(line)
    slowest = max((t for t in dialogue.turns if t.latency_seconds), default=None,
                  key=lambda t: t.latency_seconds)
    costliest = max((t for t in dialogue.turns if t.cost_usd), default=None,
                    key=lambda t: t.cost_usd)
    if slowest is not None:
        lines.append(f"slowest turn: {slowest.id} ({slowest.latency_seconds:.2f}s on "
                     f"{slowest.model})")
    if costliest is not None:
        lines.append(f"costliest turn: {costliest.id} (${costliest.cost_usd:.5f} on "
                     f"{costliest.model})")
    budget = dialogue.metadata.get("budget") if dialogue.metadata else None
    if budget:
        within = f", within {budget['within']}" if budget.get("within") else ""
        held = budget.get("held_for_billing")
        held = (f"; ${held:.5f} held for failed attempts the provider may have billed "
                f"above their estimate") if isinstance(held, (int, float)) and held else ""
        lines.append(f"budget: ${budget['spent']:.5f} spent of ${budget['max_cost']:g} "
                     f"(${budget['left']:.5f} left{within}{held})")
    stopped = dialogue.metadata.get("stopped") if dialogue.metadata else None
    if stopped:
        lines.append(f"stopped ({stopped['status']}) by {stopped['by']}: {stopped['reason']}")
    routed = [t for t in dialogue.turns if t.metadata and t.metadata.get("routing")
              and t.metadata["routing"].get("reason")]
    from dlg.running.routing import budget_note

    for t in routed:
        r = t.metadata["routing"] if t.metadata else {}
        note = budget_note(r)
        # a fallback after a failure answered in its place (marked * in the table)
        answered = (f"; {t.model} answered in its place (a fallback)"
                    if t.model and t.model != r["model"] and t.replaced else "")
        lines.append(f"turn {t.id} routed by {r['router']} to {r['model']}"
                     + (f", as {note}" if note else "") + f": {r['reason']}{answered}")
    if m.substitutions or m.retries:
        lines.append(f"fallbacks: {m.substitutions} turns (marked *) · retries: {m.retries}")
    for phase, state in ((dialogue.metadata or {}).get("loops") or {}).items():
        rounds = state.get("rounds")
        lines.append(f"loop {phase}: {rounds} round{'s' if rounds != 1 else ''}, "
                     f"{state.get('status')}" + (f": {state['reason']}"
                                                 if state.get("reason") else ""))
    parent = dialogue.metadata.get("parent") if dialogue.metadata else None
    if parent:
        lines.append(f"sub-dialogue of {parent['id']} (turn {parent['turn']}, depth "
                     f"{parent['depth']}, item {str(parent.get('item'))[:60]!r})")
    for t in dialogue.turns:
        rows = t.subdialogue_tree()
        if rows:
            lines.append(f"sub-dialogues of turn {t.id}:")
        for depth, e in rows:
            cost = f"${e['cost_usd']:.5f}" if e.get("cost_usd") else "-"
            lines.append(f"{'  ' * depth}└ {e.get('id')} · {e.get('mode') or '-'} · "
                         f"{e.get('status')} · {e.get('turns', 0)} turns · {cost} · "
                         f"{str(e.get('item'))[:50]}")
    loop = dialogue.metadata.get("event_loop") if dialogue.metadata else None
    if loop:
        lines.append(f"event loop: longest block {loop['max_block_ms']:.0f} ms, "
                     f"{loop['blocks_over_threshold']} blocks over {loop['threshold_ms']:.0f} ms")
    return "\n".join(lines)


@cli.command("show")
@click.argument("dialogue_id", required=False)
@click.option("--batch", "batch_id", metavar="BATCH",
              help="Show how this batch stands instead, as saved (nothing is run).")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON.")
@click.option("--text", is_flag=True, help="Also print every turn's text.")
@click.option("--all", "show_all", is_flag=True,
              help="With --batch: list every dialogue (past 50, only those not ended).")
@store_option
def show_command(dialogue_id: str | None, batch_id: str | None, as_json: bool, text: bool,
                 show_all: bool, store: str | None) -> None:
    """Show a saved dialogue: per-turn model, status, latency, tokens and cost; or a
    batch's dialogues and totals (--batch)."""
    if (dialogue_id is None) == (batch_id is None):
        raise DlgClickError("give a DIALOGUE_ID, or --batch BATCH", EXIT_USAGE)
    if batch_id is not None:
        _show_batch(batch_id, as_json, show_all, store)
        return
    dialogue = _saved(dialogue_id or "", store)
    if as_json:
        echo(json.dumps(dialogue.to_dict(), indent=2, ensure_ascii=False))
        return
    from dlg.records.store import INTERRUPTED, interrupted

    (listed,) = interrupted(_store(store), [{"id": dialogue.id, "status": dialogue.status}])
    echo(_table(dialogue, listed["status"]))
    if listed["status"] == INTERRUPTED and not dialogue.metadata.get("parent"):
        echo(f"interrupted (the process running it is gone): `dlg resume {dialogue.id}` "
             "continues it")
    if text:
        from dlg.records.export import export

        echo("")
        echo(export(dialogue, "markdown"), nl=False)



@cli.command("export")
@click.argument("dialogue_id", required=False)
@click.option("--batch", "batch_id", metavar="BATCH",
              help="Export every saved dialogue of this batch instead: jsonl (the default) "
                   "or csv in one file, any other format a file each into a folder.")
@click.option("--format", "-f", "fmt", metavar="NAME",
              help="json, jsonl, csv, markdown, html, pdf, or a plugin's (default: from "
                   "--out, or json; jsonl for --batch).")
@click.option("--out", "-o", type=click.Path(dir_okay=True, writable=True),
              help="The file (or directory) to write; stdout if omitted.")
@store_option
def export_command(dialogue_id: str | None, batch_id: str | None, fmt: str | None,
                   out: str | None, store: str | None) -> None:
    """Export a saved dialogue, or a batch's dialogues (--batch)."""
    if (dialogue_id is None) == (batch_id is None):
        raise DlgClickError("give a DIALOGUE_ID, or --batch BATCH", EXIT_USAGE)
    if batch_id is None:
        _write_export(_saved(dialogue_id or "", store), _format_for(fmt, out) or "json", out)
        return
    _export_batch(batch_id, fmt, out, store)


def _show_batch(batch_id: str, as_json: bool, show_all: bool, store: str | None) -> None:
    from dlg.cli.batch import summary_table
    from dlg.running.batches.export import batch_status

    result = batch_status(batch_id, _store(store))  # no such batch: exit 2, as for an id
    if as_json:
        echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        echo(summary_table(result, None if show_all else 50, ran=False))


def _export_batch(batch_id: str, fmt: str | None, out: str | None, store: str | None
                  ) -> None:
    """``dlg export --batch``: jsonl unless a format is given or --out's extension says."""
    import os

    from dlg.records.export import get_exporter
    from dlg.running.batches.export import render_batch, write_batch
    from dlg.running.batches.saved import batch_dialogues

    named = _format_for(fmt, out)  # also refuses an --out whose folder is missing
    chosen: str = fmt or (named if named and out and os.path.splitext(out)[1] else "jsonl")
    if out is None and not hasattr(get_exporter(chosen), "export_all"):
        raise DlgClickError(f"the {chosen} format writes one dialogue a file: give --out "
                            "FOLDER (or use jsonl or csv for one file)", EXIT_USAGE)
    dialogues = batch_dialogues(batch_id, _store(store))
    if out is None:
        for chunk in render_batch(dialogues, chosen):
            if isinstance(chunk, bytes):
                write_bytes(chunk)
            else:
                echo(chunk, nl=False)
    else:
        echo(f"wrote {write_batch(dialogues, chosen, out)}", err=True)
    if dialogues.missing:
        echo(f"{dialogues.written} dialogues; {dialogues.missing} rows of the batch have "
             "none saved (never started)", err=True)


@cli.command("rm")
@click.argument("dialogue_ids", nargs=-1, metavar="[DIALOGUE_ID]...")
@click.option("--batch", "batch_id", metavar="BATCH",
              help="Delete every dialogue of this batch, and the batch itself.")
@store_option
def rm_command(dialogue_ids: tuple[str, ...], batch_id: str | None, store: str | None
               ) -> None:
    """Delete saved dialogues (whole ids, as `dlg ls` shows them) with their
    sub-dialogues, or a batch (--batch). A dialogue running elsewhere is not deleted."""
    from dlg.records.store import DialogueBusyError, delete_dialogue

    if not dialogue_ids and batch_id is None:
        raise DlgClickError("give the DIALOGUE_IDs to delete, or --batch BATCH", EXIT_USAGE)
    opened = _store(store)
    try:
        for dialogue_id in dialogue_ids:
            deleted = delete_dialogue(dialogue_id, opened)
            children = len(deleted) - 1
            echo(f"deleted {dialogue_id}" + (f" and {children} sub-dialogue"
                                            f"{'s' if children > 1 else ''}"
                                            if children else ""))
        if batch_id is not None:
            from dlg.running.batches.export import delete_batch

            deleted = delete_batch(batch_id, opened)
            echo(f"deleted batch {batch_id}: {len(deleted)} dialogues")
    except DialogueBusyError as exc:  # (not found: exit 2, as DlgGroup says for any command)
        raise DlgClickError(f"{exc}; nothing of it was deleted", EXIT_FAILED) from None
