"""A model call's retry policy and the record of one failed attempt: what the retry loop
(``dlg.models.resilience``) and the rate-limit waits (``dlg.models.ratelimits``) share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Attempt", "RetryPolicy"]


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

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "error": self.error, "transient": self.transient,
               "waited": round(self.waited, 3)}
        if self.auth:
            out["auth"] = True
        if self.rate_limited:
            out["rate_limited"] = True
        return out
