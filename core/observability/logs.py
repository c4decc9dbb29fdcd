"""Structured logs: JSON lines (or readable text) with correlation ids, no secrets.

Every record from the ``dlg`` logger (and from any library, while dlg's handler is
installed) carries the dialogue id (the correlation id), the turn id and a span id of
the work it came from, and goes through ``redact`` so no API key reaches a log.

``configure(json=True, level="INFO")`` installs a stderr handler; ``dlg run --log-json``
and ``DLG_LOG=json`` do it from the command line (``DLG_LOG_LEVEL`` sets the level).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from dlg.observability.context import current
from dlg.observability.printable import visible
from dlg.observability.redact import redact

__all__ = [
    "CorrelationFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "logger",
    "unconfigure",
]

logger = logging.getLogger("dlg")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class CorrelationFilter(logging.Filter):
    """Adds the current dialogue/turn/span ids to each record (the formatters redact the
    finished text, so the record's message and arguments are left as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, event, message, ids, fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", record.name),
            "message": record.getMessage(),
        }
        extras = _extras(record)
        extras.pop("event", None)
        if "dialogue_id" in extras:
            out["correlation_id"] = extras["dialogue_id"]
        out.update(extras)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        # json escapes C0 controls; visible also escapes DEL and C1 (the same JSON value)
        return visible(redact(json.dumps(out, default=str, ensure_ascii=False)), lines=False)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL event message [dialogue/turn]`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        ids = "/".join(str(v) for v in (getattr(record, "dialogue_id", None),
                                        getattr(record, "turn_id", None)) if v)
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        event = getattr(record, "event", record.name)
        text = f"{when} {record.levelname:<7} {event} {record.getMessage()}"
        # one record, one line, and nothing a terminal would act on (a model's error text)
        return visible(redact(text + (f" [{ids}]" if ids else "")), lines=False)


_handler: logging.Handler | None = None


def configure(*, json_lines: bool | None = None, level: str | int | None = None,
              stream: Any = None) -> logging.Handler:
    """Send logs to ``stream`` (stderr): JSON lines or text, at ``level``.

    Defaults come from ``DLG_LOG`` (``json`` or ``text``) and ``DLG_LOG_LEVEL``.
    """
    global _handler
    if json_lines is None:
        json_lines = os.environ.get("DLG_LOG", "").lower() == "json"
    given = "DLG_LOG_LEVEL" if level is None and os.environ.get("DLG_LOG_LEVEL") else None
    if level is None:
        level = os.environ.get("DLG_LOG_LEVEL") or ("INFO" if json_lines else "WARNING")
    level_no = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(level_no, int):
        from dlg.errors import DlgError

        raise DlgError(f"{given + '=' if given else ''}{level!r} is not a log level: give "
                       "DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.addFilter(CorrelationFilter())
    _handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(_handler)
    logger.setLevel(level_no)
    root.setLevel(level_no)
    return _handler


def unconfigure() -> None:
    """Remove the handler ``configure`` installed (tests, embedders)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
