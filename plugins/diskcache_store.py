"""The store dlg used by default before the `sqlite` store: diskcache, in the user's data
directory. Still selectable (`--store diskcache`); the `sqlite` store copies it in.

Each save writes the whole dialogue record in one SQLite transaction, so a crash at any
instant leaves either the previous record or the new one, never a mix. The directory is
``DLG_DATA_DIR`` (or the ``path`` option), else ``dlg/dialogues`` in the user data dir.
"""

from __future__ import annotations

import builtins
import json
import os
from pathlib import Path
from typing import Any

from dlg.plugin import RowWrites, batch_header, count_dialogues, hookimpl


class DiskcacheStore(RowWrites):
    name = "diskcache"

    def __init__(self, path: str | os.PathLike[str] | None = None):
        import diskcache

        if path is None:
            from dlg.plugin import data_dir

            path = data_dir() / "dialogues"
        self.path = Path(path)
        # large records go to files written beside the database; the row that points at
        # them is updated in the same transaction, so saves stay atomic
        # dialogues are never evicted: no culling queries on every write either
        self._cache = diskcache.Cache(str(self.path), eviction_policy="none",
                                      size_limit=2**40, cull_limit=0)

    # A dialogue is a header row (the record without its turns, plus a summary for
    # `dlg ls`) and one row per turn, so saving after a turn writes that turn and the
    # header only. Every save is one SQLite transaction.

    def _write(self, header: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        header = dict(header)
        mode_document = header.pop("mode_document", None)
        with self._cache.transact():
            if mode_document is not None:  # stored once per mode version, not per save
                self._cache.set(f"mode:{header['mode_hash']}",
                                json.dumps(mode_document, ensure_ascii=False))
            self._cache.set(f"dialogue:{header['id']}", json.dumps(header, ensure_ascii=False))
            for turn in turns:
                self._cache.set(f"turn:{header['id']}:{turn['id']}",
                                json.dumps(turn, ensure_ascii=False))

    def load(self, dialogue_id: str) -> dict[str, Any] | None:
        blob = self._cache.get(f"dialogue:{dialogue_id}")
        if blob is None:
            return None
        header = json.loads(blob)
        turns = []
        for turn_id in header.pop("turn_ids", []):
            row = self._cache.get(f"turn:{dialogue_id}:{turn_id}")
            if row is not None:
                turns.append(json.loads(row))
        for key in ("summary", "turn_statuses", "turn_models"):
            header.pop(key, None)
        mode_document = self._cache.get(f"mode:{header.get('mode_hash')}")
        if mode_document is not None:
            header["mode_document"] = json.loads(mode_document)
        return {**header, "turns": turns}

    def list(self) -> list[dict[str, Any]]:
        """Summaries, newest first. A row that cannot be read is listed as ``unreadable``
        with the reason, and does not hide the others."""
        out = []
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith("dialogue:"):
                try:
                    blob = self._cache.get(key)
                    if blob is not None:
                        found = json.loads(blob)["summary"]
                        if not isinstance(found, dict):
                            raise TypeError("the summary is not a mapping")
                        out.append(found)
                except Exception as exc:  # one bad row must not hide the others
                    out.append({"id": key.removeprefix("dialogue:"), "status": "unreadable",
                                "error": f"{type(exc).__name__}: {exc}", "mode": None,
                                "turns": 0, "turns_completed": 0})
        return sorted(out, key=lambda s: str(s.get("created_at") or ""), reverse=True)

    def delete(self, dialogue_id: str) -> bool:
        with self._cache.transact():
            blob = self._cache.get(f"dialogue:{dialogue_id}")
            if blob is None:
                return False
            for turn_id in json.loads(blob).get("turn_ids", []):
                self._cache.delete(f"turn:{dialogue_id}:{turn_id}")
            self._cache.delete(f"dialogue:{dialogue_id}")
            self._cache.delete(f"lease:{dialogue_id}")
        return True

    def save_batch(self, record: dict[str, Any]) -> None:
        """Keep a batch (``dlg batch``): its mode, rows and options, by its id."""
        with self._cache.transact():
            self._cache.set(f"batch:{record['id']}", json.dumps(record, ensure_ascii=False))
            self._cache.set(f"batchhead:{record['id']}", json.dumps(_head(record)))

    def load_batch(self, batch_id: str) -> dict[str, Any] | None:
        blob = self._cache.get(f"batch:{batch_id}")
        return json.loads(blob) if blob is not None else None

    def delete_batch(self, batch_id: str) -> bool:
        """Forget a batch's record (its dialogues are deleted one by one, before)."""
        with self._cache.transact():
            self._cache.delete(f"batchhead:{batch_id}")
            return bool(self._cache.delete(f"batch:{batch_id}"))

    def batch_headers(self) -> builtins.list[dict[str, Any]]:
        """Every batch's header (``dlg.records.batch_headers``): its mode, creation time and
        number of rows, kept beside its record (one kept by an earlier dlg is read once
        and its header kept), its dialogues counted from their summaries."""
        heads: dict[str, dict[str, Any]] = {}
        for key in builtins.list(self._cache.iterkeys()):
            if not (isinstance(key, str) and key.startswith("batch:")):
                continue
            batch_id = key.removeprefix("batch:")
            blob = self._cache.get(f"batchhead:{batch_id}")
            if blob is None:
                record = self.load_batch(batch_id)
                if not isinstance(record, dict):
                    continue
                head = _head(record)
                self._cache.set(f"batchhead:{batch_id}", json.dumps(head))
            else:
                head = json.loads(blob)
            heads[batch_id] = batch_header(batch_id, head.get("mode"), head.get("created_at"),
                                           head.get("rows"))
        count_dialogues(heads, self.list())
        return builtins.list(heads.values())

    def batches(self) -> builtins.list[dict[str, Any]]:
        """Every batch kept here (for copying this store into another)."""
        return [json.loads(self._cache.get(key)) for key in self._cache.iterkeys()
                if isinstance(key, str) and key.startswith("batch:")]

    def acquire(self, dialogue_id: str, lease: dict[str, Any], is_live: Any
                ) -> dict[str, Any] | None:
        """Write ``lease`` for the dialogue unless another live one is there (returned)."""
        key = f"lease:{dialogue_id}"
        with self._cache.transact():
            current = self._cache.get(key)
            if current is not None:
                held = json.loads(current)
                if held.get("token") != lease["token"] and is_live(held):
                    return held
            self._cache.set(key, json.dumps(lease))
        return None

    def leases(self, dialogue_ids: builtins.list[str]) -> dict[str, dict[str, Any]]:
        """The leases held on those of ``dialogue_ids`` that have one, read only."""
        out = {}
        for dialogue_id in dialogue_ids:
            current = self._cache.get(f"lease:{dialogue_id}")
            if current is not None:
                out[dialogue_id] = json.loads(current)
        return out

    def release(self, dialogue_id: str, token: str) -> None:
        key = f"lease:{dialogue_id}"
        with self._cache.transact():
            current = self._cache.get(key)
            if current is not None and json.loads(current).get("token") == token:
                self._cache.delete(key)

    # Quality statistics for learning routers: one row per (task, model), updated in a
    # transaction, so processes sharing the store learn together.

    def update_quality(self, task: str, model: str, update: Any) -> dict[str, Any]:
        """Replace the (task, model) statistics by ``update(old or None)``, atomically."""
        key = f"quality:{task}"
        with self._cache.transact():
            blob = self._cache.get(key)
            models = json.loads(blob) if blob is not None else {}
            models[model] = update(models.get(model))
            self._cache.set(key, json.dumps(models))
        return models[model]

    def quality(self, task: str | None = None) -> dict[Any, Any]:
        """One task's statistics by model (one read), or every (task, model) pair's."""
        if task is not None:
            blob = self._cache.get(f"quality:{task}")
            return json.loads(blob) if blob is not None else {}
        out = {}
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith("quality:"):
                for model, data in json.loads(self._cache.get(key) or "{}").items():
                    out[(key.removeprefix("quality:"), model)] = data
        return out

    def close(self) -> None:
        self._cache.close()


def _head(record: dict[str, Any]) -> dict[str, Any]:
    """What a batch's header needs of its record: not its rows, only how many."""
    rows = record.get("rows")
    return {"mode": record.get("mode_name") or record.get("mode"),
            "created_at": record.get("created_at"),
            "rows": len(rows) if isinstance(rows, builtins.list) else 0}


@hookimpl
def register_stores(register):
    register("diskcache", DiskcacheStore)
