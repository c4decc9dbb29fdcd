"""Where dlg keeps files of its own: the data directory (saved dialogues), the cache
directory, and caching a value in it.

``DLG_DATA_DIR`` moves the data directory (else the user's data directory, ``dlg``).
``DLG_CACHE_DIR`` moves the cache (else the user's cache directory, ``dlg``);
``DLG_NO_CACHE=1`` turns every cache off. Caches only make things faster: one that cannot
be read or written is skipped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

__all__ = ["cache_path", "cached", "data_dir", "user_dir", "write_json"]

T = TypeVar("T")

# the XDG base directories: (variable, default under the home directory)
_XDG = {"data": ("XDG_DATA_HOME", ".local/share"), "cache": ("XDG_CACHE_HOME", ".cache"),
        "config": ("XDG_CONFIG_HOME", ".config")}


def user_dir(kind: str) -> Path:
    """The user's ``data``, ``cache`` or ``config`` directory for dlg, as platformdirs
    gives it. On Linux with an absolute ``HOME`` this reads the XDG variables itself:
    importing platformdirs costs 5 ms of every ``dlg`` command's start-up."""
    variable, default = _XDG[kind]
    home = os.environ.get("HOME", "")
    if sys.platform.startswith("linux") and os.path.isabs(home):
        base = os.environ.get(variable, "")
        return Path(base if os.path.isabs(base) else os.path.join(home, default), "dlg")
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")("dlg"))


def data_dir() -> Path:
    """Where stores keep saved dialogues by default: ``DLG_DATA_DIR``, else the user's
    data directory (``~/.local/share/dlg`` on Linux)."""
    base = os.environ.get("DLG_DATA_DIR")
    return Path(base) if base else user_dir("data")


def cache_path(*parts: str) -> Path | None:
    """A path under the cache directory, or None when caching is off."""
    if os.environ.get("DLG_NO_CACHE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return None
    base = os.environ.get("DLG_CACHE_DIR")
    return (Path(base) if base else user_dir("cache")).joinpath(*parts)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then a rename, so
    readers and other writers never see half a file); a failure is ignored."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # only when something is written (the cache is read far more)

        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, default=str)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written is only slower


def cached(name: str, key: Any, make: Callable[[], T]) -> T:
    """``make()``, kept in the cache file ``name`` and reused while ``key`` (any JSON
    value) is unchanged."""
    path = cache_path(name)
    if path is not None:
        try:
            entry = json.loads(path.read_text("utf-8"))
            if entry["key"] == key:  # json.loads gives Any: this is what make() gave
                return cast(T, entry["value"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    value = make()
    if path is not None:
        write_json(path, {"key": key, "value": value})
    return value
