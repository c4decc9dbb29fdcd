"""Where dlg keeps files of its own: the cache directory.

``DLG_CACHE_DIR`` moves it (else the user's cache directory, ``dlg``); ``DLG_NO_CACHE=1``
turns every cache off. Caches only make things faster: one that cannot be read or
written is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_path"]


def cache_path(*parts: str) -> Path | None:
    """A path under the cache directory, or None when caching is off."""
    if os.environ.get("DLG_NO_CACHE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return None
    base = os.environ.get("DLG_CACHE_DIR")
    if not base:
        from platformdirs import user_cache_dir

        base = user_cache_dir("dlg")
    return Path(base).joinpath(*parts)
