"""Exporting a dialogue through a registered exporter plugin."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dlg.errors import ExportError, UnknownExporterError
from dlg.records.stamps import ID_CHARACTERS

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Exporter
    from dlg.hookspecs import Dialogue  # the record type, named without importing it

__all__ = ["export", "format_for_path", "formats_by_extension", "get_exporter", "render_export",
           "write_atomically", "write_export"]


def get_exporter(name: str, pm: pluggy.PluginManager | None = None) -> Exporter:
    from dlg import registrations

    exporters = registrations.exporters(pm)
    if name not in exporters:
        raise UnknownExporterError(
            f"'{name}' is not a known export format (installed: {', '.join(sorted(exporters))})"
        )
    return exporters[name]


def extensions_of(exporter: Exporter) -> tuple[str, ...]:
    """The file extensions an exporter writes: its ``extension``, then any more it
    declares (``extensions = ("md", "markdown")``), lowercase and without the dot."""
    more = getattr(exporter, "extensions", None) or ()
    if isinstance(more, str):  # one given as a string, not a tuple of them
        more = (more,)
    found = [str(e).lstrip(".").lower() for e in (exporter.extension, *more)]
    return tuple(e for i, e in enumerate(found) if e and e not in found[:i])


def formats_by_extension(pm: pluggy.PluginManager | None = None) -> dict[str, str]:
    """Extension -> format name, for every exporter: its own ``extension`` wins over
    another's further ``extensions``, which win over a format's name (``.markdown``)."""
    from dlg import registrations

    exporters = registrations.exporters(pm)
    out = {name.lower(): name for name in exporters}
    for name, exporter in exporters.items():
        out.update({e: name for e in extensions_of(exporter)[1:]})
    out.update({extensions_of(e)[0]: name for name, e in exporters.items()
                if extensions_of(e)})
    return out


def format_for_path(path: str | Path, pm: pluggy.PluginManager | None = None) -> str | None:
    """The format a file's extension names (``d.markdown``: markdown), None for a file
    without one; an extension no exporter writes is an ``UnknownExporterError`` that
    lists the formats and their extensions (never a silent JSON file named ``.md``)."""
    from dlg import registrations

    ext = Path(path).suffix.lstrip(".").lower()
    if not ext:
        return None
    known = formats_by_extension(pm)
    if ext in known:
        return known[ext]
    listed = ", ".join(f"{n} (" + ", ".join(f".{x}" for x in extensions_of(e)) + ")"
                       for n, e in sorted(registrations.exporters(pm).items()))
    raise UnknownExporterError(f"no export format writes '.{ext}' files (formats: {listed})")


def export(dialogue: Dialogue, format: str = "json", path: str | Path | None = None,
           pm: pluggy.PluginManager | None = None) -> str | bytes | Path:
    """Render ``dialogue`` as ``format``; with ``path``, write it there and return the path."""
    if path is None:
        return render_export(dialogue, format, pm)
    return write_export(dialogue, format, path, pm)


def render_export(dialogue: Dialogue, format: str = "json",
                  pm: pluggy.PluginManager | None = None) -> str | bytes:
    """``dialogue`` as ``format`` (text, or bytes for a binary format such as pdf)."""
    exporter = get_exporter(format, pm)
    try:
        data: str | bytes = exporter.export(dialogue)
    except Exception as exc:
        raise ExportError(f"exporter '{format}' failed: {type(exc).__name__}: {exc}") from exc
    return data


def write_export(dialogue: Dialogue, format: str, path: str | Path,
                 pm: pluggy.PluginManager | None = None) -> Path:
    """Write ``dialogue`` as ``format`` to ``path`` (a file, or a directory to put
    ``ID.EXT`` in), atomically; return the file written."""
    exporter = get_exporter(format, pm)
    data = render_export(dialogue, format, pm)
    path = Path(path)
    if path.is_dir():  # an id saved by another tool could hold '/' or '..': not here
        # the characters ``check_id`` allows; any other becomes _
        name = re.sub(f"[^{ID_CHARACTERS}]", "_", dialogue.id).lstrip(".") or "dialogue"
        path = path / f"{name}.{exporter.extension}"
    write_atomically(path, [data])
    return path


def write_atomically(path: Path, parts: Iterable[str | bytes]) -> None:
    """Write ``parts`` (text as UTF-8) to ``path`` as they come, through a ``.tmp`` beside
    it renamed at the end: a reader never sees half a file, and a failure (a missing
    folder, no permission, a full disk: an ``ExportError`` naming the file; anything
    else as it is) leaves no ``.tmp`` behind. Text UTF-8 cannot hold (a lone surrogate)
    is written as its ``\\udXXX`` escape, which inside a JSON string reads back as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                out.write(part if isinstance(part, bytes) else part.encode(
                    "utf-8", "backslashreplace"))
        tmp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write {path}: {exc.strerror or type(exc).__name__}"
                              ) from None
        raise
