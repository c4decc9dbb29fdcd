"""Rate limits: which errors are a provider's rate limit, how long its headers say to
wait, the gate that holds every call to a model in the process until then, and one
call's waiting on them (``RateWait``), with what bounds it.

A rate limit is not an outage: the model is up and will answer once its window resets.
``dlg.models.resilience`` waits it out (not counting it toward a model's cool-down or
its attempts); this module reads the wait from the 429's headers:

- the waits a provider's plugin registered (``dlg.models.headers.RateHeaders``), e.g.
  OpenAI's ``retry-after-ms``, then HTTP's ``retry-after`` (seconds, or an HTTP date);
- the resets it registered (OpenAI's ``x-ratelimit-reset-*``, "6s", "1m0s", "250ms";
  Anthropic's ``anthropic-ratelimit-*-reset``, RFC 3339 times): the one whose
  remaining count is 0 first.

Headers are hostile input: a value that is not a number, is negative, not finite, longer
than ``dlg.models.headers.MAX_HEADER_CHARS`` or asks for more than ``MAX_HEADER_WAIT`` is
not believed (the caller backs off with jitter instead).
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from typing import TYPE_CHECKING, Any

import anyio

from dlg.models.headers import RateHeaders, header, known

if TYPE_CHECKING:
    from dlg.models.attempts import Attempt, RetryPolicy

__all__ = ["MAX_HEADER_WAIT", "RateGate", "RateWait", "gate", "is_rate_limit", "status_of",
           "wait_from_headers"]

log = logging.getLogger("dlg.resilience")
MAX_HEADER_WAIT = 86_400.0  # a day: a header asking for longer is not believed
_RATE_NAMES = ("RateLimit", "ResourceExhausted", "TooManyRequests")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+")


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an SDK error carries, if any."""
    for obj in (exc, getattr(exc, "response", None)):
        code = getattr(obj, "status_code", None) or getattr(obj, "status", None)
        if isinstance(code, int):
            return code
    return None


def is_rate_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is a provider's rate limit: a 429 or an SDK error named so, unless
    its text is one a provider's plugin registered as no rate limit (``RateHeaders``'s
    ``not_limits``: a quota spent is billing, and waiting does not end it)."""
    status = status_of(exc)
    if status is not None and status != 429:
        return False
    if status is None and not any(key in cls.__name__ for cls in type(exc).__mro__
                                  for key in _RATE_NAMES):
        return False
    texts = [t for h in known() for t in h.not_limits]
    if not texts:
        return True
    said = str(exc)
    return not any(t in said for t in texts)


def _sane(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_HEADER_WAIT else None


def _number(value: str, unit: float = 1.0) -> float | None:
    """Seconds from a number of ``unit`` seconds, if it is believable."""
    try:
        return _sane(float(value) * unit)
    except ValueError:
        return None


def _duration(value: str) -> float | None:
    """OpenAI's reset times, Go durations: "6s", "1m0s", "250ms", "1h2m3.5s"."""
    if _DURATIONS.fullmatch(value) is None:
        return _number(value)  # a bare number of seconds
    return _sane(sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(value)))


def _date(value: str, rfc3339: bool) -> float | None:
    """Seconds from now until an HTTP date or an RFC 3339 time (0 if past)."""
    from datetime import datetime

    try:
        if rfc3339:
            when = datetime.fromisoformat(value)
        else:
            import email.utils

            when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        return _sane(max(0.0, when.timestamp() - time.time()))
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _read(text: str, form: str) -> float | None:
    """Seconds from a header's value in one of ``dlg.models.headers.FORMATS``."""
    if form == "seconds":
        return _number(text)
    if form == "ms":
        return _number(text, 0.001)
    if form == "duration":
        return _duration(text)
    if form == "rfc3339":
        return _date(text, rfc3339=True)
    seconds = _number(text)  # "http-date": a number of seconds, or a date
    return seconds if seconds is not None else _date(text, rfc3339=False)


def _resets(headers: Any, scheme: RateHeaders) -> float | None:
    """The reset of the limit that ran out (remaining 0), else the latest reset given."""
    found: list[tuple[bool, float]] = []
    for reset, remaining, form in scheme.resets:
        text = header(headers, reset)
        if text is None:
            continue
        seconds = _read(text, form)
        if seconds is None:
            continue
        found.append((bool(remaining) and header(headers, remaining) == "0", seconds))
    if not found:
        return None
    spent = [s for out, s in found if out]
    return max(spent or [s for _, s in found])


def wait_from_headers(exc: BaseException) -> float | None:
    """The seconds a refused call's headers say to wait, or None if they say nothing
    believable."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    schemes = known()
    for scheme in schemes:
        for name, form in scheme.waits:
            text = header(headers, name)
            if text is not None and (seconds := _read(text, form)) is not None:
                return seconds
    text = header(headers, "retry-after")
    if text is not None and (seconds := _read(text, "http-date")) is not None:
        return seconds
    for scheme in schemes:
        found = _resets(headers, scheme)
        if found is not None:
            return found
    return None


class RateGate:
    """Per model (its spec: provider, model, base URL and a key given in it; a key from
    the environment is one per process), the time until which its provider said it would
    refuse calls. Every dialogue in the process waits for it rather than be refused too."""

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def closed(self, key: str) -> bool:
        """Whether calls to ``key`` must wait (cheap when nothing is held)."""
        return bool(self._until) and self.left(key) > 0

    def left(self, key: str) -> float:
        """Seconds until ``key`` may be called again (0 if now)."""
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            self._until.pop(key, None)
            return 0.0
        return left

    def hold(self, key: str, seconds: float) -> None:
        """A provider said ``key`` resets in ``seconds``: hold its calls until then."""
        until = time.monotonic() + seconds
        if until > self._until.get(key, 0.0):
            self._until[key] = until

    def reset(self) -> None:
        self._until.clear()


gate = RateGate()


def _later(seconds: float) -> float:
    """``seconds`` and up to a tenth more (at most a second): calls held for the same
    reset do not all go at the same instant."""
    return seconds + random.uniform(0, min(1.0, seconds / 10))


class RateWait:
    """One call's waiting on rate limits: how long it waited in all, and whether it may
    wait more (``RetryPolicy.max_rate_limit_wait``, the turn's timeout, the caller's
    deadline). Made only once a call was refused or held."""

    __slots__ = ("gate", "limited", "policy", "timeout", "waited")

    def __init__(self, policy: RetryPolicy, timeout: float | None, held: RateGate):
        self.policy, self.timeout, self.gate = policy, timeout, held
        self.waited = 0.0
        self.limited = 0  # 429s so far

    def delay(self, hinted: float | None) -> float:
        """The wait after a 429: what its headers said (at most ``max_retry_after``, and
        a little later, so the dialogues a reset frees do not all call at the same
        instant), else exponential backoff with jitter (never nothing)."""
        policy = self.policy
        if hinted is None or hinted <= 0:
            step: float = min(policy.max_delay, policy.base_delay * 2 ** min(self.limited - 1, 30))
            return step / 2 + random.uniform(0, step / 2)
        return min(policy.max_retry_after, _later(max(hinted, 0.01)))

    def over(self, delay: float) -> str | None:
        """Why waiting ``delay`` more is not allowed, or None if it is."""
        total = self.waited + delay
        if total > self.policy.max_rate_limit_wait:
            return (f"the {self.policy.max_rate_limit_wait:g}s a call may wait on rate "
                    "limits (RetryPolicy.max_rate_limit_wait)")
        if self.timeout and total > self.timeout:
            return f"the turn's timeout of {self.timeout:g}s"
        deadline = anyio.current_effective_deadline()
        if deadline != math.inf and anyio.current_time() + delay > deadline:
            return "the caller's deadline"
        return None

    async def after(self, model: str, attempt: Attempt, hinted: float | None) -> bool:
        """Wait after a 429 on ``model``, holding its other calls in the process when the
        headers named the reset; False (the attempt's error says why) if the wait is not
        allowed."""
        self.limited += 1
        delay = self.delay(hinted)
        if hinted is not None and hinted > 0:
            self.gate.hold(model, min(hinted, self.policy.max_retry_after))
        delay = max(delay, self.gate.left(model))
        why = self.over(delay)
        if why is not None:
            attempt.error = (f"rate-limited: {attempt.error}; waited {self.waited:.1f}s in "
                             f"all, and {delay:.1f}s more would pass {why}")
            return False
        attempt.waited = delay
        self._log(model, delay, attempt.error)
        await anyio.sleep(delay)
        self.waited += delay
        _waited(delay)
        return True

    async def at_gate(self, model: str, last: Attempt | None) -> str | None:
        """Wait until ``model``'s rate-limit window resets (a call was told when), adding
        the wait to ``last`` (the model's attempt before, if any); if the wait is not
        allowed, the error to record instead."""
        left = self.gate.left(model)
        delay = _later(left)
        why = self.over(delay)
        if why is not None:
            return (f"rate-limited: held {left:.1f}s more for the provider's window to "
                    f"reset; waited {self.waited:.1f}s in all, and that would pass {why}")
        if last is not None:
            last.waited += delay
        self._log(model, delay, "held for the provider's rate-limit window")
        await anyio.sleep(delay)
        self.waited += delay
        _waited(delay)
        return None

    def _log(self, model: str, delay: float, why: str) -> None:
        if log.isEnabledFor(logging.INFO):
            from dlg.observability.redact import redact

            log.info("%s rate-limited (%s); waiting %.2fs", redact(model), redact(why),
                     delay, extra={"event": "model.rate_limited", "model": redact(model),
                                   "delay_s": round(delay, 3),
                                   "waited_s": round(self.waited, 3)})


def _waited(seconds: float) -> None:
    """Count a wait on a rate limit with the pacer's (``dlg batch`` shows the sum)."""
    from dlg.models.pacing import pacer

    pacer.waited += seconds
