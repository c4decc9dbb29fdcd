"""Listing the saved batches without loading them: each batch's header.

A header is what a list of batches shows: ``id``, ``mode`` (its name), ``created_at``
(seconds since the epoch, or None), ``rows`` (how many rows of inputs it has),
``statuses`` (its saved dialogues, ``BATCH-NNNNN``, counted by status; a row with
nothing saved is in none), ``running`` (the ids of those saved ``running``, so a caller
can tell the interrupted ones: ``dlg.records.store.interrupted``), ``tokens`` and
``cost_usd`` (their turns' totals).

A store that keeps batches lists them with ``batch_headers()`` (the built-in stores read
neither a batch's rows nor its dialogues); ``batch_headers(store)`` here falls back, for a
store without it, to what any store can do: its ``batches()`` records (or the batch ids
its dialogues' ids name, each loaded with ``load_batch``) and ``list()``'s summaries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlg.contracts import Store

__all__ = ["batch_header", "batch_headers", "batch_of", "batch_row", "count_dialogues"]


def batch_header(batch_id: str, mode: Any, created_at: Any, rows: Any) -> dict[str, Any]:
    """A header with no dialogue counted yet."""
    return {"id": batch_id, "mode": mode if isinstance(mode, str) else None,
            "created_at": created_at if isinstance(created_at, int | float)
            and not isinstance(created_at, bool) else None,
            "rows": rows if isinstance(rows, int) and not isinstance(rows, bool) else 0,
            "statuses": {}, "running": [], "tokens": 0, "cost_usd": 0.0}


def of_record(record: dict[str, Any]) -> dict[str, Any]:
    """The header of a batch record (``save_batch``'s), nothing counted yet."""
    rows = record.get("rows")
    return batch_header(str(record.get("id")), record.get("mode_name") or record.get("mode"),
                        record.get("created_at"), len(rows) if isinstance(rows, list) else 0)


def batch_row(dialogue_id: str) -> tuple[str, int] | None:
    """The batch and row a dialogue id names, as ``item_id`` writes them: ``BATCH-NNNNN``,
    the row in ASCII digits padded to five (``BATCH-123456`` past row 99,999, never a
    longer one with a leading zero), or None."""
    batch_id, _, row = dialogue_id.rpartition("-")
    if (not batch_id or len(row) < 5 or not row.isascii() or not row.isdigit()
            or (len(row) > 5 and row[0] == "0")):
        return None
    return batch_id, int(row)


def batch_of(dialogue_id: str) -> str | None:
    """The batch a dialogue id ``BATCH-NNNNN`` names (``batch_row``), or None."""
    found = batch_row(dialogue_id)
    return found[0] if found is not None else None


def count_dialogues(headers: dict[str, dict[str, Any]],
                    summaries: list[dict[str, Any]]) -> None:
    """Count ``list()``'s summaries of the batches' dialogues into their ``headers``: a
    dialogue is a batch's row when its id is ``BATCH-NNNNN``, NNNNN one of the batch's
    rows, and it has no parent (a sub-dialogue, or any other dialogue whose id merely
    looks like a row's, is not counted)."""
    for summary in summaries:
        found = batch_row(str(summary.get("id")))
        header = headers.get(found[0]) if found is not None else None
        if header is None or found is None or summary.get("parent") or found[1] >= header["rows"]:
            continue
        status = str(summary.get("status"))
        header["statuses"][status] = header["statuses"].get(status, 0) + 1
        if status == "running":
            header["running"].append(summary["id"])
        header["tokens"] += int(summary.get("total_tokens") or 0)
        header["cost_usd"] = round(header["cost_usd"]
                                   + float(summary.get("total_cost_usd") or 0), 12)


def batch_headers(store: Store) -> list[dict[str, Any]]:
    """Every batch the store keeps, as headers, newest first (none in a store that
    keeps no batches)."""
    own = getattr(store, "batch_headers", None)
    if own is not None:
        found = [h for h in own() if isinstance(h, dict) and "id" in h]
    else:
        found = _fallback(store)
    return sorted(found, key=lambda h: h.get("created_at") or 0, reverse=True)


def _fallback(store: Store) -> list[dict[str, Any]]:
    load = getattr(store, "load_batch", None)
    if load is None:
        return []
    summaries = store.list()
    listed = getattr(store, "batches", None)
    if listed is not None:
        records = [r for r in listed() if isinstance(r, dict) and "id" in r]
    else:
        ids = {b for s in summaries
               if not s.get("parent") and (b := batch_of(str(s.get("id")))) is not None}
        records = [r for r in map(load, sorted(ids)) if isinstance(r, dict)]
    headers = {str(r["id"]): of_record(r) for r in records}
    count_dialogues(headers, summaries)
    return list(headers.values())
