"""The cache of loaded modes, keyed by content: running a mode again skips parsing,
validation and inheritance while neither it nor the files it extends or includes changed.
``DLG_CACHE_DIR`` moves it; ``DLG_NO_CACHE=1`` turns it off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dlg.errors import ModeError
from dlg.language.source import SourceDoc, read_source
from dlg.paths import write_json

if TYPE_CHECKING:
    import pluggy

    from dlg.language.inherit import Layout
    from dlg.language.mode import Mode

__all__ = ["get", "put"]




def _cache_dir() -> Path | None:
    from dlg.paths import cache_path

    return cache_path("modes")


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_key(doc: SourceDoc) -> str:
    from dlg._version import __version__

    return _sha(f"{__version__}\0{doc.identity}\0{doc.text}")


def get(doc: SourceDoc, pm: pluggy.PluginManager | None) -> dict[str, Any] | None:
    """The cached entry for ``doc`` if every file it was built from is unchanged."""
    directory = _cache_dir()
    if directory is None:
        return None
    try:
        # json.loads gives Any: an entry ``put`` wrote (a damaged one fails below)
        entry = cast(dict[str, Any], json.loads(
            (directory / f"{_cache_key(doc)}.json").read_text("utf-8")))
        for dep in entry["deps"]:
            if dep["kind"] == "mode":
                base = Path(dep["base"]) if dep["base"] else None
                text = read_source(dep["ref"], relative_to=base, pm=pm).text
            else:
                text = Path(dep["ref"]).read_text("utf-8")
            if _sha(text) != dep["sha"]:
                return None
        return entry
    except (OSError, ValueError, KeyError, TypeError, ModeError):
        return None


def put(doc: SourceDoc, mode: Mode, layout: Layout, template_files: list[str]) -> None:
    """Keep ``mode`` for ``doc``, with the hashes of the files it was built from."""

    directory = _cache_dir()
    if directory is None:
        return
    deps = []
    for child, parent in zip(layout.docs, layout.docs[1:], strict=False):
        deps.append({"kind": "mode", "ref": child.data["extends"],
                     "base": str(child.base_dir) if child.base_dir else None,
                     "sha": _sha(parent.text)})
    for path in template_files:
        deps.append({"kind": "file", "ref": path, "sha": _sha(Path(path).read_text("utf-8"))})
    entry = {
        "mode": mode.to_dict(), "source": mode.source, "extends_chain": mode.extends_chain,
        "template_dirs": mode.template_dirs, "deps": deps,
    }
    write_json(directory / f"{_cache_key(doc)}.json", entry)
