"""A saved batch read back from the store: its record (mode, rows, options) and its
dialogues, one at a time, in the order of its rows (``batch_dialogues``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dlg.running.batches.items import batch_items

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Store
    from dlg.records.record import Dialogue

__all__ = ["BatchDialogues", "batch_dialogues"]


class BatchDialogues:
    """The saved dialogues of a batch, in row order (iterate once); ``missing`` counts
    the rows passed over because nothing was saved for them."""

    def __init__(self, batch_id: str, store: Store | str | None = None, *,
                 pm: pluggy.PluginManager | None = None):
        from dlg.records.store import DialogueNotFoundError, open_store

        self.store = open_store(store, pm=pm)
        load = getattr(self.store, "load_batch", None)
        record = load(batch_id) if load is not None else None
        if not isinstance(record, dict):
            raise DialogueNotFoundError(f"no saved batch '{batch_id}' in this store "
                                        "(`dlg ls` lists its dialogues as BATCH-NNNNN)")

        self.record: dict[str, Any] = record
        self.batch_id = batch_id
        rows = self.record.get("rows")
        self.items = batch_items(batch_id, rows if isinstance(rows, list) else [])
        self.missing = 0
        self.written = 0

    def __iter__(self) -> Iterator[Dialogue]:
        from dlg.records.store import as_dialogue

        for item in self.items:
            saved = self.store.load(item.dialogue_id)
            if saved is None:
                self.missing += 1
                continue
            self.written += 1
            yield as_dialogue(saved)


def batch_dialogues(batch_id: str, store: Store | str | None = None, *,
                    pm: pluggy.PluginManager | None = None) -> BatchDialogues:
    """The saved dialogues of batch ``batch_id``, in row order, loaded as they are read.
    ``DialogueNotFoundError`` (a ``DlgError``) if the store holds no such batch."""
    return BatchDialogues(batch_id, store, pm=pm)
