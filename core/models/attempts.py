"""A model call's retry policy and the record of one failed attempt: what the retry loop
(``dlg.models.resilience``) and the rate-limit waits (``dlg.models.ratelimits``) share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Attempt", "RetryPolicy", "billed_input"]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # per model, the first try included
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0  # the longest single wait for a Retry-After
    # the most one call waits on rate limits in all (the turn's timeout bounds it too)
    max_rate_limit_wait: float = 600.0


@dataclass
class Attempt:
    model: str
    error: str
    transient: bool
    waited: float = 0.0
    auth: bool = False  # the provider refused the credentials (401/403)
    rate_limited: bool = False  # the provider's rate limit (429), not an outage
    # it reached the provider, which is presumed to bill its input (``billed_input``)
    billed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "error": self.error, "transient": self.transient,
               "waited": round(self.waited, 3)}
        if self.auth:
            out["auth"] = True
        if self.rate_limited:
            out["rate_limited"] = True
        if self.billed:
            out["billed"] = True
        return out


def billed_input(exc: BaseException, status: int | None) -> bool:
    """The billing policy for a failed attempt: one that reached the provider is assumed
    to have its input billed, unless the provider says otherwise. Reached: the provider
    answered with a server error (5xx) or the answer never came back in time (the request
    went out; a timeout or a broken read). Not billed: a refusal before any work (a 4xx:
    a bad request, the key refused, a rate limit), or a connection never made. A provider
    that says what it billed (``exc.billed``, true or false) is believed."""
    said = getattr(exc, "billed", None)
    if isinstance(said, bool):
        return said
    if status is not None:
        return status >= 500
    if isinstance(exc, TimeoutError):
        return True
    names = [cls.__name__ for cls in type(exc).__mro__]
    return any(n in ("ReadTimeout", "ReadError", "RemoteProtocolError", "APITimeoutError")
               for n in names)
