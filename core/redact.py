"""Keeping secrets out of logs, saved dialogues and exports.

``redact(text)`` replaces the values of secret-looking environment variables (names
ending in KEY, TOKEN, SECRET or PASSWORD), API-key-shaped strings and bearer tokens, and
secret options in model specs (``?api_key=...``), with ``[REDACTED]``.
"""

from __future__ import annotations

import os
import re

__all__ = ["REDACTED", "redact"]

REDACTED = "[REDACTED]"
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.I)
# each pattern's group "keep", if any, is kept before the replacement
_PATTERNS = [
    re.compile(r"\b(?:sk|rk|pk|xai|gsk)-[A-Za-z0-9_\-]{12,}"),  # sk-..., xai-..., ...
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"(?i)(?P<keep>bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)(?P<keep>[?&](?:api_key|apikey|key|token|secret|password)=)"
               r"[^&\s'\")]+"),
]


def _replace(match: re.Match[str]) -> str:
    keep = match.groupdict().get("keep") or ""
    return keep + REDACTED


def _env_secrets() -> list[str]:
    return sorted((v for k, v in os.environ.items()
                   if _SECRET_ENV.search(k) and v and len(v) >= 6), key=len, reverse=True)


def redact(text: str | None) -> str | None:
    """``text`` with every secret we can recognise replaced by ``[REDACTED]``."""
    if not text:
        return text
    for value in _env_secrets():
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(_replace, text)
    return text
