"""A provider's response headers, read as hostile input: what the rate-limit waits
(``dlg.models.ratelimits``) and the pacer (``dlg.models.pacing``) both read.

Core knows one header name, HTTP's own ``retry-after`` (seconds, or an HTTP date). The
rest are a provider's: its plugin states them in a neutral form, ``RateHeaders``, with
the provider it registers (``register(name, factory, rate_headers=RateHeaders(...))``,
or ``register(rate_headers=...)`` for headers any provider may send). Core reads limits,
waits and resets through what the plugins registered (``known``).
"""

from __future__ import annotations

from typing import Any

from dlg.contracts import RateHeaders

__all__ = ["MAX_HEADER_CHARS", "RateHeaders", "header", "known", "reports_limits"]

MAX_HEADER_CHARS = 64  # a longer value is not believed


def known() -> tuple[RateHeaders, ...]:
    """Every provider's registered rate-limit headers (none if the plugins cannot load)."""
    from dlg import registrations

    try:
        return tuple(registrations.rate_headers().values())
    except Exception:  # a broken plugin is reported where models are made, not here
        return ()


def reports_limits(provider: str) -> bool:
    """Whether ``provider``'s plugin said its answered calls state their limits."""
    from dlg import registrations

    try:
        found = registrations.rate_headers().get(provider)
    except Exception:
        return False
    return found is not None and found.answered and bool(found.limits)


def header(headers: Any, name: str) -> str | None:
    """A header's value, stripped; None when it is missing, empty, longer than
    ``MAX_HEADER_CHARS`` or the mapping itself is broken."""
    try:
        value = headers.get(name)
    except Exception:  # a broken mapping is no header
        return None
    if value is None:
        return None
    value = str(value).strip()
    return value if 0 < len(value) <= MAX_HEADER_CHARS else None
