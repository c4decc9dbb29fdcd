"""Retries, fallbacks and cool-downs: how a turn survives a model's failure.

A call that fails with a transient error (5xx; a timeout; a dropped connection) is
retried with exponential backoff and full jitter. An error that retrying cannot fix (bad
key, bad request, unknown model) moves straight on to the next candidate model: the
participant's own fallbacks, then the registry's chains for the model and for the
capabilities the turn requires. A model that keeps failing is cooled down and skipped for
a while by every dialogue in the process.

A rate limit (429) is not an outage: it is waited out on the same model as the
provider's headers say (``dlg.models.ratelimits``), without counting toward the model's
cool-down or its attempts, and every dialogue in the process waits for the window the
provider named. Only the turn's timeout, the caller's deadline or
``RetryPolicy.max_rate_limit_wait`` end the wait, and the error says it was rate-limited.

LangChain's ``with_retry``/``with_fallbacks`` do not honour Retry-After or say which model
answered, so dlg runs this small loop itself and records every attempt on the turn.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from dlg.models.attempts import Attempt, RetryPolicy, billed_input
from dlg.models.pacing import pacer
from dlg.models.ratelimits import RateGate, RateWait, gate, is_rate_limit, wait_from_headers
from dlg.models.ratelimits import status_of as _status

__all__ = [
    "AllCandidatesFailed",
    "Attempt",
    "CoolDowns",
    "RetryPolicy",
    "call_resilient",
    "classify",
    "cooldowns",
    "gate",
]

log = logging.getLogger("dlg.resilience")
DEFAULT_POLICY = RetryPolicy()
_TRANSIENT_NAMES = ("Timeout", "Connection", "Connect", "RemoteProtocol", "ReadError",
                    "ServerDisconnected", "ServiceUnavailable", "Overloaded", "RateLimit",
                    "InternalServer")


class AllCandidatesFailed(Exception):
    """Every candidate model failed; ``attempts`` says how, in order."""

    def __init__(self, attempts: list[Attempt]):
        self.attempts = attempts
        # the cause to show: the first error retrying could not fix (a bad key, a bad
        # request), else the last one
        cause = next((a for a in attempts if not a.transient), attempts[-1])
        tried = sorted({a.model for a in attempts})
        more = f" (after {len(attempts)} attempts on {', '.join(tried)})" if len(
            attempts) > 1 else ""
        super().__init__(f"{cause.model}: {cause.error}{more}")


_AUTH_NAMES = ("Authentication", "PermissionDenied", "Unauthorized", "Forbidden")


def is_auth_error(exc: BaseException) -> bool:
    """Whether the provider refused the credentials: a 401 or 403, or an SDK error named
    so. Falling back to another model would hide the real cause and may cost more."""
    if _status(exc) in (401, 403):
        return True
    return any(key in cls.__name__ for cls in type(exc).__mro__ for key in _AUTH_NAMES)


def classify(exc: BaseException) -> tuple[bool, float | None]:
    """(transient?, Retry-After seconds) for an exception a model call raised."""
    status = _status(exc)
    if status is not None:
        if status == 429 and not is_rate_limit(exc):  # a quota spent, not a rate
            return False, None
        transient = status in (408, 409, 425, 429) or status >= 500
        return transient, wait_from_headers(exc) if transient else None
    if isinstance(exc, TimeoutError | ConnectionError):
        return True, None
    names = [cls.__name__ for cls in type(exc).__mro__]
    return any(key in name for name in names for key in _TRANSIENT_NAMES), None


@dataclass
class CoolDowns:
    """Models that failed ``threshold`` times in a row rest for ``seconds`` (process-wide)."""

    threshold: int = 3
    seconds: float = 30.0
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def cooling(self, model: str) -> bool:
        until = self._until.get(model)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._until[model]
            self._failures.pop(model, None)
            return False
        return True

    def failed(self, model: str) -> None:
        n = self._failures.get(model, 0) + 1
        self._failures[model] = n
        if n >= self.threshold:
            self._until[model] = time.monotonic() + self.seconds

    def succeeded(self, model: str) -> None:
        self._failures.pop(model, None)
        self._until.pop(model, None)

    def reset(self) -> None:
        self._failures.clear()
        self._until.clear()


cooldowns = CoolDowns()


def _backoff(policy: RetryPolicy, retry: int) -> float:
    """Full jitter: uniform in [0, base * 2**retry], capped."""
    return random.uniform(0, min(policy.max_delay, policy.base_delay * 2**retry))


def _candidates(primary: Any, fallbacks: Any, label: Callable[[Any], str],
                cool: CoolDowns, attempts: list[Attempt], tried: list[str],
                started: bool) -> Any:
    """The models to try, in order: the primary unless it is resting, then the usable
    fallbacks (asked for only when the primary failed), then a resting primary if
    nothing else could be tried. A function, not a closure: thousands of calls may be in
    flight, and a closure gives each a cell per captured name. ``started``: the primary's
    first try was made already (it goes first whatever its cool-down says now)."""
    primary_cooling = not started and cool.cooling(label(primary))
    if not primary_cooling:
        yield primary
    rest = fallbacks(attempts) if callable(fallbacks) else fallbacks
    yield from [c for c in rest if label(c) not in tried and not cool.cooling(label(c))]
    if primary_cooling and not attempts:  # everything is resting: try the primary
        yield primary


def _affordable(call: Any, candidate: Any, attempts: list[Attempt]) -> bool:
    """Whether ``call`` may make another attempt on ``candidate`` after ``attempts``
    failed: a call that has ``affordable`` says (a budget's turn), else it may."""
    check = getattr(call, "affordable", None)
    return check is None or bool(check(candidate, attempts))


def _attempt(call: Callable[[Any], Awaitable[Any]], candidate: Any, timeout: float | None
             ) -> Awaitable[Any]:
    """``call(candidate)`` to await, under ``timeout`` if one is set (without one, no
    coroutine frame of its own while the model works). A ``call`` that ``owns_timeout``
    applies it itself (once the call's turn under a rate limit's pacing has come)."""
    if timeout and not getattr(call, "owns_timeout", False):
        return _timed(call(candidate), timeout)
    return call(candidate)


async def _timed(pending: Awaitable[Any], timeout: float) -> Any:
    with anyio.fail_after(timeout):
        return await pending


def _as_is(result: Any, candidate: Any, attempts: list[Attempt]
           ) -> tuple[Any, Any, list[Attempt]]:
    return result, candidate, attempts


async def call_resilient(
    primary: Any,
    call: Callable[[Any], Awaitable[Any]],
    *,
    fallbacks: Callable[[list[Attempt]], Sequence[Any]] | Sequence[Any] = (),
    label: Callable[[Any], str] = str,
    policy: RetryPolicy = DEFAULT_POLICY,
    timeout: float | None = None,
    cool: CoolDowns | None = None,
    finish: Callable[[Any, Any, list[Attempt]], Any] = _as_is,
    held: RateGate | None = None,
) -> Any:
    """Try ``call(primary)``, then each fallback; return (result, candidate used, failed
    attempts), or what ``finish`` makes of them. ``fallbacks`` may be a function, called
    only if the primary fails.
    ``label`` names a candidate (spec string or model) for cool-downs and records.
    A function ``fallbacks`` gets the failed attempts so far, so it can leave out models
    the user did not name after an authentication error (``Attempt.auth``) or a rate
    limit (``Attempt.rate_limited``). ``held``: the rate-limit gate (the process's).
    A ``call`` with a ``waited(seconds)`` method is told the seconds it waited on rate
    limits (429s, and a window held after one) once it ends, if it waited (a turn's
    call adds them to the turn's record); the first try's path, when it answers, has no
    such wait and nothing to tell.
    Raises ``AllCandidatesFailed`` when every candidate failed.
    """
    cool = cooldowns if cool is None else cool
    held = gate if held is None else held
    first: Exception | None = None
    model = label(primary)
    if policy.attempts > 0 and not cool.cooling(model) and not held.closed(model):
        # the usual case, the primary answering at once, in this small frame; the
        # retries and fallbacks (their lists and generator) only when it fails
        try:
            result = await _attempt(call, primary, timeout)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            first = exc
        else:
            cool.succeeded(model)
            return finish(result, primary, [])
    return finish(*await _with_retries(primary, call, fallbacks, label, policy, timeout, cool,
                                       first, held))


async def _with_retries(primary: Any, call: Callable[[Any], Awaitable[Any]], fallbacks: Any,
                        label: Callable[[Any], str], policy: RetryPolicy,
                        timeout: float | None, cool: CoolDowns, first: Exception | None,
                        held: RateGate) -> tuple[Any, Any, list[Attempt]]:
    """``call_resilient`` after the primary's first try (which failed with ``first``, or
    was not made because the primary is resting or held by its rate limit)."""
    limits = RateWait(policy, timeout, held)
    try:
        return await _retrying(primary, call, fallbacks, label, policy, timeout, cool, first,
                               held, limits)
    finally:
        told = getattr(call, "waited", None) if limits.waited > 0 else None
        if told is not None:
            told(limits.waited)


async def _retrying(primary: Any, call: Callable[[Any], Awaitable[Any]], fallbacks: Any,
                    label: Callable[[Any], str], policy: RetryPolicy, timeout: float | None,
                    cool: CoolDowns, first: Exception | None, held: RateGate,
                    limits: RateWait) -> tuple[Any, Any, list[Attempt]]:
    attempts: list[Attempt] = []
    tried: list[str] = []
    for candidate in _candidates(primary, fallbacks, label, cool, attempts, tried,
                                 first is not None):
        model = label(candidate)
        tried.append(model)
        outages = 0
        while outages < policy.attempts:
            try:
                if first is not None:  # the primary's first try, made by call_resilient
                    failed, first = first, None
                    raise failed
                if attempts and not _affordable(call, candidate, attempts):
                    # a budget: what was billed so far and this attempt's worst case do
                    # not fit the turn's reservation and what is left
                    attempts.append(Attempt(model, "the budget cannot pay for another "
                                            "attempt", False))
                    raise AllCandidatesFailed(attempts)
                if held.closed(model):
                    last = attempts[-1] if attempts and attempts[-1].model == model else None
                    refused = await limits.at_gate(model, last)
                    if refused is not None:
                        attempts.append(Attempt(model, refused, True, rate_limited=True))
                        break
                result = await _attempt(call, candidate, timeout)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:
                # nothing reads an attempt's traceback; kept, it would hold this frame
                # (and the turn's state) in a reference cycle with the exception
                exc.__traceback__ = None
                if isinstance(exc, TimeoutError) and timeout:
                    message = f"timed out after {timeout:g}s"
                else:
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
                transient, retry_after = classify(exc)
                if transient and is_rate_limit(exc):  # not an outage: wait, same model
                    if isinstance(candidate, str):  # its limits learned, its calls slowed
                        pacer.refused(model, exc)
                    attempt = Attempt(model, message, True, rate_limited=True)
                    attempts.append(attempt)
                    if (retry_after is not None and retry_after > policy.max_retry_after
                            and _others(fallbacks, label, cool, attempts, tried)):
                        break  # a long wait, and the user named a model to go to
                    if not await limits.after(model, attempt, retry_after):
                        break
                    continue
                outages += 1
                cool.failed(model)
                attempt = Attempt(model, message, transient, auth=is_auth_error(exc),
                                  billed=billed_input(exc, _status(exc)))
                attempts.append(attempt)
                if not transient or outages == policy.attempts or cool.cooling(model):
                    break
                delay = retry_after if retry_after is not None else _backoff(policy,
                                                                             outages - 1)
                if delay > policy.max_retry_after:
                    break
                attempt.waited = delay
                if log.isEnabledFor(logging.INFO):
                    from dlg.observability.redact import redact

                    log.info("%s failed (%s); retrying in %.2fs", redact(model),
                             redact(message), delay,
                             extra={"event": "model.retry", "model": redact(model),
                                    "delay_s": round(delay, 3), "retry": outages})
                await anyio.sleep(delay)
            else:
                cool.succeeded(model)
                return result, candidate, attempts
    if not attempts:
        attempts.append(Attempt(label(primary), "no model could be tried", False))
    raise AllCandidatesFailed(attempts)


def _others(fallbacks: Any, label: Callable[[Any], str], cool: CoolDowns,
            attempts: list[Attempt], tried: list[str]) -> bool:
    """Whether there is a fallback to move on to (after a rate limit, a function
    ``fallbacks`` offers only the ones the user named)."""
    rest = fallbacks(attempts) if callable(fallbacks) else fallbacks
    return any(label(c) not in tried and not cool.cooling(label(c)) for c in rest)
