"""A batch's saved results: how it stands, ``dlg show --batch BATCH`` (``batch_status``);
in one document, ``dlg export --batch BATCH`` (``dlg.export_batch``); or deleted,
``dlg rm --batch BATCH`` (``delete_batch``). None of these runs anything.

The dialogues are read from the store one at a time, in the order of the batch's rows,
and written as they are read, so a batch of thousands is never held in memory at once. A
format that can hold many dialogues in one document (an exporter with
``export_all(dialogues)``: ``jsonl``, ``csv``) writes one file, or stdout; any other
format writes one file per dialogue into a folder. Rows whose dialogue never started
(the batch's total was spent first) have nothing saved and are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlg.errors import DlgError, ExportError
from dlg.running.batches.items import BatchResult
from dlg.running.batches.saved import BatchDialogues, batch_dialogues

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Store

__all__ = ["batch_status", "delete_batch", "export_batch", "render_batch", "write_batch"]


def export_batch(batch_id: str, format: str = "jsonl", path: str | Path | None = None, *,
                 store: Store | str | None = None,
                 pm: pluggy.PluginManager | None = None) -> str | bytes | Path:
    """Export every saved dialogue of a batch. A format that holds many dialogues
    (``jsonl``, ``csv``) is returned as one document, or written to ``path`` (a file, or
    a folder to put ``BATCH.EXT`` in); any other format needs ``path``, a folder, and
    writes one file per dialogue into it. Returns what was written: the text, the file or
    the folder."""
    dialogues = batch_dialogues(batch_id, store, pm=pm)
    if path is not None:
        return write_batch(dialogues, format, path, pm=pm)
    parts: list[Any] = list(render_batch(dialogues, format, pm=pm))
    return b"".join(parts) if parts and isinstance(parts[0], bytes) else "".join(parts)


def render_batch(dialogues: BatchDialogues, format: str, *,
                 pm: pluggy.PluginManager | None = None) -> Iterator[str | bytes]:
    """The batch's dialogues as one document of ``format``, in parts as they are read:
    ``ExportError`` for a format that writes one dialogue a file, or an exporter that
    fails."""
    from dlg.records.export import get_exporter

    exporter = get_exporter(format, pm)
    if not hasattr(exporter, "export_all"):
        raise ExportError(f"the {format} format writes one dialogue a file: give a folder "
                          "to write the batch's into (or use jsonl or csv for one file)")
    try:
        yield from exporter.export_all(dialogues)
    except (DlgError, OSError):  # the store's, or dlg's own
        raise
    except Exception as exc:
        raise ExportError(f"exporter '{format}' failed: {type(exc).__name__}: {exc}") from exc


def write_batch(dialogues: BatchDialogues, format: str, path: str | Path, *,
                pm: pluggy.PluginManager | None = None) -> Path:
    """Write a batch's dialogues (``batch_dialogues``) as ``format`` to ``path``: see
    ``export_batch``. Returns the file or the folder written."""
    from dlg.records.export import get_exporter, write_atomically, write_export

    exporter = get_exporter(format, pm)
    target = Path(path)
    if not hasattr(exporter, "export_all") and target.is_dir():
        for dialogue in dialogues:
            write_export(dialogue, format, target, pm)
        return target
    if target.is_dir():  # a batch id is made of the characters ids may hold
        target = target / f"{dialogues.batch_id}.{exporter.extension}"
    write_atomically(target, render_batch(dialogues, format, pm=pm))
    return target


def delete_batch(batch_id: str, store: Store | str | None = None, *,
                 pm: pluggy.PluginManager | None = None) -> list[str]:
    """Delete a batch: each of its saved dialogues (with their sub-dialogues, as
    ``dlg.records.store.delete_dialogue`` does) and then its record, so it can no longer
    be resumed. Returns the dialogue ids deleted. ``DialogueBusyError`` if one of them
    is running: the dialogues deleted before it stay deleted, the batch's record is
    kept, and running the same command again finishes the job."""
    from dlg.records.store import DialogueNotFoundError, delete_dialogue

    dialogues = batch_dialogues(batch_id, store, pm=pm)
    deleted: list[str] = []
    for item in dialogues.items:
        try:
            deleted += delete_dialogue(item.dialogue_id, dialogues.store)
        except DialogueNotFoundError:  # a row that never started: nothing was saved
            continue
    forget = getattr(dialogues.store, "delete_batch", None)
    if forget is not None:
        forget(batch_id)
    return deleted


def batch_status(batch_id: str, store: Store | str | None = None, *,
                 pm: pluggy.PluginManager | None = None) -> BatchResult:
    """How a batch stands, as saved, without running anything: a ``BatchResult`` with
    each dialogue's status and figures (``pending``: nothing saved yet), and the batch's
    ``max_total_cost``. A batch running elsewhere (another process, a Ray cluster) shows
    its dialogues as far as they were saved."""
    from dlg.records import record as R
    from dlg.records.store import as_dialogue

    dialogues = batch_dialogues(batch_id, store, pm=pm)
    record, saved, items = dialogues.record, dialogues.store, dialogues.items
    read = getattr(saved, "headers", None)  # one query for them all, where it can
    headers = read([i.dialogue_id for i in items]) if read is not None else {}
    for item in items:
        header = headers.get(item.dialogue_id)
        if isinstance(header, dict) and header.get("status") not in (
                None, R.RUNNING, R.PENDING):
            # a header is rewritten when its dialogue ends: current. Nothing ran here, so
            # it is not marked as kept from before a run
            item.kept(header, before_run=False)
            continue
        found = saved.load(item.dialogue_id)  # running: its turns are newer than its header
        if found is not None:
            item.record(as_dialogue(found))
    limit = record.get("max_total_cost")
    name = record.get("mode_name") or record.get("mode")
    return BatchResult(id=batch_id, mode=name if isinstance(name, str) else "?",
                       items=items,
                       max_total_cost=limit if isinstance(limit, int | float) else None)
