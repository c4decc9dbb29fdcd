"""Exporting a dialogue through a registered exporter plugin."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExportError, UnknownExporterError

if TYPE_CHECKING:
    from .record import Dialogue

__all__ = ["export", "get_exporter"]


def get_exporter(name: str, pm: Any = None) -> Any:
    from . import registry

    exporters = registry.exporters(pm)
    if name not in exporters:
        raise UnknownExporterError(
            f"'{name}' is not a known export format (installed: {', '.join(sorted(exporters))})"
        )
    return exporters[name]


def export(dialogue: Dialogue, format: str = "json", path: str | Path | None = None,
           pm: Any = None) -> str | bytes | Path:
    """Render ``dialogue`` as ``format``; with ``path``, write it there and return the path."""
    exporter = get_exporter(format, pm)
    try:
        data = exporter.export(dialogue)
    except Exception as exc:
        raise ExportError(f"exporter '{format}' failed: {type(exc).__name__}: {exc}") from exc
    if path is None:
        return data
    path = Path(path)
    if path.is_dir():
        path = path / f"{dialogue.id}.{exporter.extension}"
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)
    return path
