"""Keeping secrets out of logs, saved dialogues and exports.

``redact(text)`` replaces with ``[REDACTED]``: the values of secret-looking environment
variables (names ending in KEY, TOKEN, SECRET or PASSWORD), the secrets dlg has read
(``remember``: from model specs, the variables they name, a provider's key variable),
API-key-shaped strings, bearer tokens, the credentials of an ``Authorization:`` header,
secret options in model specs (``?api_key=...``) and passwords in URLs
(``http://user:PASSWORD@host``).

``redact_values(text)`` replaces only the known values (environment and remembered) and an
``Authorization:`` header's credentials: it is what model answers go through, so an answer
that repeats a key is stored without it while an answer that merely shows what a key looks
like is left alone.
"""

from __future__ import annotations

import os
import re
from typing import Any, overload
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["REDACTED", "StreamRedactor", "is_secret_option", "redact", "redact_attempt",
           "redact_values", "remember", "secrets_in_spec"]

REDACTED = "[REDACTED]"
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.I)
# a model spec's option that holds a secret: api_key, key, token, secret, password, and a
# provider's own name for one (openai_api_key, access_token, client_secret, ...)
_SECRET_OPTION = r"(?:key|(?:[a-z0-9]+_)*(?:api_?key|token|secret|password))"
_SECRET_OPTION_NAME = re.compile(f"(?i){_SECRET_OPTION}")


def is_secret_option(name: str) -> bool:
    """Whether a model spec's option ``name`` holds a secret (``api_key``,
    ``openai_api_key``, ``token``, ...; ``api_key_env`` names one, and is none)."""
    return _SECRET_OPTION_NAME.fullmatch(name) is not None

# each pattern's group "keep", if any, is kept before the replacement
# an Authorization header's credentials, however short, as text or in JSON or a dict's
# repr (redact_values applies it, so redact does too)
_HEADER = re.compile(r"(?i)(?P<keep>\bauthorization[\"']?\s*[:=]\s*[\"']?"
                     r"(?:(?:bearer|basic|token|digest)\s+)?+)(?!\[REDACTED\])[^\s\"',;}]+")
_PATTERNS = [
    re.compile(r"\b(?:sk|rk|pk|xai|gsk)-[A-Za-z0-9_\-]{12,}"),  # sk-..., xai-..., ...
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),  # Google API keys
    re.compile(r"(?i)(?P<keep>bearer\s+)[A-Za-z0-9._\-]{8,}"),
    # (a reference to a secret, env:NAME or ${NAME}, is no secret and is kept)
    re.compile(rf"(?i)(?P<keep>[?&]{_SECRET_OPTION}=)"
               r"(?!env:[A-Za-z_]|\$\{)[^&\s'\")]+"),
    # a password in a URL's user information: scheme://user:PASSWORD@host
    re.compile(r"(?i)(?P<keep>\b[a-z][a-z0-9+.\-]*://[^/\s:@?#]*:)(?!\$\{)[^@\s/?#]+(?=@)"),
]
_remembered: set[str] = set()
_REFERENCE = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def remember(*values: str | None) -> None:
    """Treat these values as secrets from now on (for this process)."""
    for value in values:
        if value and len(value) >= 8 and value != REDACTED:
            _remembered.add(value)


def secrets_in_spec(text: str) -> list[str]:
    """The secret values a model spec carries: secret options and URL passwords."""
    _, _, query = text.partition("?")
    found = []
    for key, value in parse_qsl(query, keep_blank_values=False):
        if is_secret_option(key):
            if not _REFERENCE.fullmatch(value):
                found.append(value)
        elif "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.extend({password, unquote(password)})
    return found


def _replace(match: re.Match[str]) -> str:
    keep = match.groupdict().get("keep") or ""
    return keep + REDACTED


_secret_names: tuple[int, list[str]] = (-1, [])


def _known_values() -> list[str]:
    """Secret values now: the environment's secret-looking variables, then remembered ones.

    Called for every model answer, so the scan of the environment's names is redone only
    when variables are added or removed; the values of those names are read each time
    (a changed key is seen at once)."""
    global _secret_names
    count, names = _secret_names
    if count != len(os.environ):
        names = [k for k in os.environ if _SECRET_ENV.search(k)]
        _secret_names = (len(os.environ), names)
    env = (v for k in names if (v := os.environ.get(k)) and len(v) >= 6)
    return sorted({*env, *_remembered}, key=len, reverse=True)


@overload
def redact_values(text: str) -> str: ...
@overload
def redact_values(text: None) -> None: ...
def redact_values(text: str | None) -> str | None:
    """``text`` with every known secret value (environment, remembered) and the
    credentials of an ``Authorization:`` header replaced."""
    if not text:
        return text
    for value in _known_values():
        if value in text:
            text = text.replace(value, REDACTED)
    if "uthorization" in text or "UTHORIZATION" in text:
        text = _HEADER.sub(_replace, text)
    return text


@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...
def redact(text: str | None) -> str | None:
    """``text`` with every secret we can recognise replaced by ``[REDACTED]``."""
    if not text:
        return text
    text = redact_values(text)
    for pattern in _PATTERNS:
        text = pattern.sub(_replace, text)
    return text


class StreamRedactor:
    """``redact_values`` for text that arrives in pieces (a streamed answer), before anyone
    sees it. A secret may be split across pieces, so the end of the text that could still
    become one is held back until more text, or the end (``flush``), shows whether it
    does: an end that begins a known secret, and an ``Authorization:`` header whose
    credentials have not ended. What was given out is never taken back, and only what is
    held back is looked at again: a long answer in many small pieces costs time in
    proportion to its length."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""  # what arrived and was not given out yet

    def feed(self, piece: str) -> str:
        """What can be shown now that ``piece`` arrived (nothing, while all may be a
        secret's beginning)."""
        held = self._held + piece
        cut = _safe_cut(held)
        self._held = held[cut:]
        return redact_values(held[:cut]) if cut else ""

    def flush(self) -> str:
        """The rest, once the text is complete."""
        held, self._held = self._held, ""
        return redact_values(held)


def _safe_cut(text: str) -> int:
    """How much of ``text`` can be redacted and given out now: up to where a known secret
    may begin at its end, or an ``Authorization:`` header's credentials are still
    arriving, and never through a secret or a header that the cut would split."""
    cut = len(text) - _secret_begun(text)
    header = _OPEN_HEADER.search(text)
    if header is not None:
        cut = min(cut, header.start())
    if len(text) - cut > MAX_HELD:  # no credential is that long: give out all but the end
        cut = len(text) - MAX_HELD
    elif "uthorization" in text or "UTHORIZATION" in text:
        for match in _HEADER.finditer(text):
            if match.start() < cut < match.end():
                cut = match.start()
    for value in _known_values():  # a whole secret before the cut stays whole
        start = text.find(value, max(0, cut - len(value) + 1))
        if 0 <= start < cut < start + len(value):
            cut = start
    return cut


MAX_HELD = 8192  # the most of a stream held back for an Authorization header's credentials


def _secret_begun(text: str) -> int:
    """How many characters at the end of ``text`` begin a known secret (0: none)."""
    longest = 0
    for value in _known_values():
        for k in range(min(len(value) - 1, len(text)), longest, -1):
            if text.endswith(value[:k]):
                longest = k
                break
    return longest


# an Authorization header at the end of a text, its credentials not ended yet
_OPEN_HEADER = re.compile(r"(?i)\bauthorization[\"']?\s*[:=]?\s*[\"']?"
                          r"(?:(?:bearer|basic|token|digest)\s*)?[^\s\"',;}]*$"
                          r"|(?i:\b(?:a|au|aut|auth|autho|author|authori|authoriz|authoriza|"
                          r"authorizat|authorizati|authorizatio))$")


def redact_attempt(attempt: dict[str, Any]) -> dict[str, Any]:
    return {**attempt, "model": redact(attempt["model"]), "error": redact(attempt["error"])}
