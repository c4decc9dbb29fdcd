"""The default dialogue store: diskcache (SQLite) in the user's data directory.

Each save writes the whole dialogue record in one SQLite transaction, so a crash at any
instant leaves either the previous record or the new one, never a mix. The directory is
``DLG_DATA_DIR`` (or the ``path`` option), else ``dlg/dialogues`` in the user data dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dlg.hookspecs import hookimpl


class DiskcacheStore:
    name = "diskcache"

    def __init__(self, path: str | os.PathLike[str] | None = None):
        import diskcache

        if path is None:
            base = os.environ.get("DLG_DATA_DIR")
            if not base:
                from platformdirs import user_data_dir

                base = user_data_dir("dlg")
            path = Path(base) / "dialogues"
        self.path = Path(path)
        # large records go to files written beside the database; the row that points at
        # them is updated in the same transaction, so saves stay atomic
        self._cache = diskcache.Cache(str(self.path), eviction_policy="none",
                                      size_limit=2**40)

    def save(self, record: dict[str, Any]) -> None:
        summary = {k: record.get(k) for k in ("id", "mode", "status", "created_at",
                                                "started_at", "ended_at", "inputs")}
        summary["turns"] = len(record.get("turns", []))
        summary["turns_completed"] = sum(1 for t in record.get("turns", [])
                                         if t.get("status") == "completed")
        metrics = record.get("metrics") or {}
        summary["total_tokens"] = metrics.get("total_tokens")
        summary["total_cost_usd"] = metrics.get("total_cost_usd")
        blob = json.dumps(record, ensure_ascii=False)
        with self._cache.transact():
            self._cache.set(f"dialogue:{record['id']}", blob)
            self._cache.set(f"summary:{record['id']}", summary)

    def load(self, dialogue_id: str) -> dict[str, Any] | None:
        blob = self._cache.get(f"dialogue:{dialogue_id}")
        return None if blob is None else json.loads(blob)

    def list(self) -> list[dict[str, Any]]:
        out = []
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith("summary:"):
                summary = self._cache.get(key)
                if summary is not None:
                    out.append(summary)
        return sorted(out, key=lambda s: s.get("created_at") or "", reverse=True)

    def delete(self, dialogue_id: str) -> bool:
        with self._cache.transact():
            found = self._cache.delete(f"dialogue:{dialogue_id}")
            self._cache.delete(f"summary:{dialogue_id}")
        return bool(found)

    def close(self) -> None:
        self._cache.close()


@hookimpl
def register_stores(register):
    register("diskcache", DiskcacheStore)
