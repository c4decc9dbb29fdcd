"""Pacing: calls to a rate-limited model spaced so that its limits do not bite.

A limit belongs to a provider's model at an endpoint with a key (``Pacer.key``): every
dialogue in the process that calls it shares one ``Limiter``. Its requests and tokens
per minute come from the spec (``?rpm=500&tpm=30000``), the model registry (``rpm``,
``tpm``) and the provider's headers (the names its plugin registered,
``dlg.models.headers.RateHeaders``: OpenAI's ``x-ratelimit-limit-*``, Anthropic's
``anthropic-ratelimit-*``), the lowest of those given. Before a call is sent it reserves
a request and its tokens (the prompt's estimate plus ``max_tokens``, else the completions
seen so far) and waits for its turn; after, the reservation is settled with the tokens
the provider counted.

A model whose limits are not known yet, of a provider whose plugin says its responses
state them, starts slowly: ``SLOW_START`` calls in flight until a response's headers say
the limits (then paced by them), or say none (then nothing waits). Other models with no
known limit never wait. A 429 turns on an adaptive concurrency window for the model
(AIMD: halved on a 429, one more call for each window of calls answered), and its
headers' limits are learned. Headers are hostile input: a limit that is not a whole
number from 1 to ``MAX_LIMIT``, or longer than a few characters, is ignored.

The schedule itself (``Schedule``: when the next request and token may go) sits behind
``SharedLimits``, so that several processes can share one (the Ray executor's actor):
``pacer.share(store)``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol

import anyio

from dlg.models.headers import header, known, reports_limits

__all__ = ["HEADROOM", "LIMIT_OPTIONS", "Limiter", "Pacer", "Schedule", "SharedLimits",
           "option_problem", "pacer", "without_limit_options"]

LIMIT_OPTIONS = frozenset({"rpm", "tpm", "rate_window"})
HEADROOM = 0.97  # pace at this share of a limit: clocks and windows are not aligned
MAX_LIMIT = 10**9
MAX_WINDOW = 86_400.0
MAX_CONCURRENCY = 512  # an adaptive window that grows past this is dropped
FIRST_COMPLETION = 256  # tokens reserved for an answer before any was seen
SLOW_START = 1  # calls in flight to a model whose limits its headers will state


def _limit(value: Any) -> float | None:
    """A limit as a header or an option gives it: a whole number from 1 to MAX_LIMIT."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and 1 <= value <= MAX_LIMIT else None
    text = str(value).strip()
    if not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= MAX_LIMIT:
        return None
    return float(text)


def option_problem(options: Mapping[str, Any]) -> str | None:
    """What is wrong with a spec's ``rpm``, ``tpm`` or ``rate_window`` option, if any."""
    for name, what in (("rpm", "requests per minute"), ("tpm", "tokens per minute")):
        if name in options and _limit(options[name]) is None:
            return (f"the option '{name}' must be a number of {what} from 1 to "
                    f"{MAX_LIMIT:,} (given {options[name]!r:.40})")
    if "rate_window" in options:
        value = options["rate_window"]
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not 0 < value <= MAX_WINDOW):
            return ("the option 'rate_window' must be the seconds a provider's limit "
                    f"headers count over, above 0 and at most a day (given {value!r:.40})")
    return None


def without_limit_options(options: dict[str, Any]) -> dict[str, Any]:
    """A spec's options without the ones pacing reads (the provider is not given them)."""
    if not LIMIT_OPTIONS.intersection(options):
        return options
    return {k: v for k, v in options.items() if k not in LIMIT_OPTIONS}


class Schedule:
    """When the next request and the next token of one limit may go: virtual scheduling
    (GCRA with no burst) at ``HEADROOM`` of the limits. Plain arithmetic on a clock the
    caller gives, so that another process (a Ray actor) can hold it; the lowest limits
    it was ever given are kept, so one process's learned limit paces the others."""

    __slots__ = ("next_request", "next_token", "rpm", "tpm")

    def __init__(self) -> None:
        self.next_request = self.next_token = 0.0
        self.rpm: float | None = None
        self.tpm: float | None = None

    def reserve(self, now: float, rpm: float | None, tpm: float | None, tokens: int) -> float:
        """Reserve one request of ``tokens``: the seconds from ``now`` until it may go."""
        if rpm and (self.rpm is None or rpm < self.rpm):
            self.rpm = rpm
        if tpm and (self.tpm is None or tpm < self.tpm):
            self.tpm = tpm
        start = max(now, self.next_request if self.rpm else now,
                    self.next_token if self.tpm else now)
        if self.rpm:
            self.next_request = start + 60.0 / (self.rpm * HEADROOM)
        if self.tpm:
            self.next_token = start + max(0, tokens) * 60.0 / (self.tpm * HEADROOM)
        return start - now

    def settle(self, now: float, refund: int, future: float) -> None:
        """Give back the ``refund`` tokens a call reserved and did not use (negative: it
        used more, which is added). Only what is still to come of the call's share of the
        schedule (``future`` seconds of it) can be given back: time that has passed is
        gone, and giving it back would let the next calls go together."""
        if not self.tpm or not refund:
            return
        seconds = refund * 60.0 / (self.tpm * HEADROOM)
        if seconds > 0:
            seconds = min(seconds, max(0.0, future))
        self.next_token = max(now, self.next_token - seconds)


class SharedLimits(Protocol):
    """Where the schedules live: this process (``InProcess``), or one shared by several."""

    async def reserve(self, key: str, rpm: float | None, tpm: float | None,
                      tokens: int) -> float: ...

    async def settle(self, key: str, refund: int, future: float) -> None: ...


class InProcess:
    """The schedules of this process."""

    def __init__(self) -> None:
        self.schedules: dict[str, Schedule] = {}

    async def reserve(self, key: str, rpm: float | None, tpm: float | None,
                      tokens: int) -> float:
        schedule = self.schedules.get(key) or self.schedules.setdefault(key, Schedule())
        return schedule.reserve(time.monotonic(), rpm, tpm, tokens)

    async def settle(self, key: str, refund: int, future: float) -> None:
        schedule = self.schedules.get(key)
        if schedule is not None:
            schedule.settle(time.monotonic(), refund, future)


class Limiter:
    """One limit's pacing in this process: its limits, and the adaptive concurrency
    window (None until a 429)."""

    __slots__ = ("_waiters", "completion", "configured", "counted", "cwnd", "in_flight",
                 "key", "learned", "pacer", "probing", "ratio", "slowed", "window")

    def __init__(self, pacer: Pacer, key: str, window: float = 60.0):
        self.pacer, self.key, self.window = pacer, key, window
        self.configured: dict[str, float] = {}  # from the spec and the registry
        self.learned: dict[str, float] = {}  # from the provider's headers, per minute
        self.cwnd: float | None = None
        self.slowed = -math.inf  # when the window was last halved
        self.in_flight = 0
        self.completion = float(FIRST_COMPLETION)
        self.ratio = 1.0  # the provider's prompt tokens per token of dlg's estimate
        self.counted = 0  # answers whose tokens the provider counted
        self.probing = False  # a slow start: no limit known until a response's headers
        self._waiters: list[anyio.Event] = []

    @property
    def rpm(self) -> float | None:
        return self._lowest("rpm")

    @property
    def tpm(self) -> float | None:
        return self._lowest("tpm")

    def _lowest(self, name: str) -> float | None:
        found = [v for v in (self.configured.get(name), self.learned.get(name)) if v]
        return min(found) if found else None

    def configure(self, rpm: float | None, tpm: float | None) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None:
                current = self.configured.get(name)
                self.configured[name] = value if current is None else min(current, value)

    def learn(self, headers: Any) -> bool:
        """Take the limits a provider's headers state (per ``window`` seconds, by the
        names the providers' plugins registered); whether any was believed. A slow start
        ends when one is."""
        if not headers:
            return False
        found: dict[str, float] = {}
        for scheme in known():
            for name, kind in scheme.limits.items():
                text = header(headers, name)
                value = None if text is None else _limit(text)
                if value is None:
                    continue
                per_minute = value * 60.0 / self.window
                # several token limits (Anthropic's input and total): the lowest binds
                found[kind] = min(found.get(kind, per_minute), per_minute)
        self.learned.update(found)
        if found and self.probing:
            self.probing = False
            self.cwnd = None
            self._wake()
        return bool(found)

    def estimate(self, prompt_tokens: int, max_tokens: Any) -> int:
        """The tokens to reserve for a call: its prompt (dlg's estimate, scaled to what
        the provider counted for the calls before) and its answer's most."""
        prompt = math.ceil(prompt_tokens * self.ratio)
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
            return prompt + max_tokens
        return prompt + math.ceil(self.completion)

    async def acquire(self, tokens: int) -> tuple[float, float]:
        """Wait for a place in the concurrency window and the call's turn in the
        schedule: the seconds waited, and when (``time.monotonic``) the call's share of
        the tokens' schedule ends (``-inf``: it goes unscheduled, no limit known yet)."""
        started = time.monotonic()
        while self.cwnd is not None and self.in_flight >= self.cwnd:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)
        self.in_flight += 1
        try:
            rpm, tpm = self.rpm, self.tpm
            if rpm or tpm:
                delay = await self.pacer.store.reserve(self.key, rpm, tpm, tokens)
                if delay > 0:
                    await anyio.sleep(delay)
        except BaseException:
            self._release()
            raise
        now = time.monotonic()
        if not (rpm or tpm):
            return now - started, -math.inf
        return now - started, now + (tokens * 60.0 / (tpm * HEADROOM) if tpm else 0.0)

    def _release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        if self._waiters:
            for event in self._waiters:  # each looks again: one may have been cancelled
                event.set()
            self._waiters.clear()

    async def release(self, reserved: int, ends: float, estimated: int,
                      counted: tuple[int, int] | None, refused: bool) -> None:
        """A call ended: settle its ``reserved`` tokens (its share of the schedule
        ``ends`` then; ``estimated``: dlg's estimate of its prompt) with the prompt and
        answer tokens the provider ``counted``, if it did, and grow the concurrency
        window if it was answered."""
        self._release()
        if self.probing and not refused:  # answered, and its headers stated no limit
            self.pacer.unlimited(self)
            return
        if counted is not None:
            prompt, completion = counted
            if self.tpm:  # counts are hostile input: no answered call used more than the
                # tokens of a minute (the provider refuses it); 10**14 waited for years
                prompt, completion = (min(prompt, math.ceil(self.tpm)),
                                      min(completion, math.ceil(self.tpm)))
            # the first answer replaces the guesses (FIRST_COMPLETION, a ratio of 1): moved
            # a quarter of the way, the next calls of a fresh limiter reserved 3 to 6
            # times the tokens of a short answer, and the schedule's tokens, not its
            # requests, held them back (a Ray worker's first dozen calls, each learning
            # on its own). Not an empty answer, nor a prompt count outside the ratio's
            # bounds (a provider reporting 0): one such answer then made every next call
            # reserve nothing for its answer, or a quarter of its prompt, and go at once
            first = self.counted == 0
            self.counted += 1
            self.completion += ((completion - self.completion)
                                * (1.0 if first and completion > 0 else 0.25))
            if estimated > 0:
                seen = min(4.0, max(0.25, prompt / estimated))
                self.ratio += ((seen - self.ratio)
                               * (1.0 if first and seen == prompt / estimated else 0.25))
            refund, future = reserved - prompt - completion, ends - time.monotonic()
            # nothing to settle when it used less and its share has passed (time gone is
            # not given back): no round trip to a shared schedule (a Ray actor) for it
            if self.tpm and ends != -math.inf and (refund < 0 or (refund and future > 0)):
                await self.pacer.store.settle(self.key, refund, future)
        if ends == -math.inf and not refused and (self.rpm or self.tpm):
            # it went before any limit was known (a slow start's call, one per process:
            # each Ray worker's) and its answer stated them: it takes its place in the
            # schedule now, as the provider counted it (the calls after it wait for it)
            used = reserved if counted is None else sum(counted)
            await self.pacer.store.reserve(self.key, self.rpm, self.tpm, used)
        if not refused and self.cwnd is not None:
            self.cwnd += 1 / self.cwnd
            if self.cwnd > MAX_CONCURRENCY:
                self.cwnd = None

    def backoff(self) -> None:
        """A 429: halve the calls in flight allowed (at least one); once a second, as the
        429s of calls sent together say the same thing."""
        now = time.monotonic()
        if now - self.slowed < 1.0:
            return
        self.slowed = now
        base = self.in_flight + 1 if self.cwnd is None else min(self.cwnd, self.in_flight + 1)
        self.cwnd = max(1.0, base / 2)


class Pacer:
    """The process's limiters, by limit and by the model specs that call it; see the
    module docstring."""

    def __init__(self) -> None:
        self.store: SharedLimits = InProcess()
        self.waited = 0.0  # seconds calls spent waiting for their turn, in all
        self._limiters: dict[str, Limiter] = {}
        self._labels: dict[str, Limiter | None] = {}
        self._unlimited: set[str] = set()  # limits whose headers stated none

    def share(self, store: SharedLimits | None) -> None:
        """Keep the schedules in ``store`` (None: in this process) from now on."""
        self.store = store if store is not None else InProcess()

    def reset(self) -> None:
        self.store, self.waited = InProcess(), 0.0
        self._limiters.clear()
        self._labels.clear()
        self._unlimited.clear()

    @staticmethod
    def key(label: str) -> tuple[str, dict[str, Any]]:
        """A spec's limit (provider, model, endpoint, a fingerprint of a key given in the
        spec; a key from the environment is one per process) and its options."""
        from dlg.models.spec import ModelSpec, endpoint
        from dlg.observability.redact import is_secret_option

        try:
            parsed = ModelSpec.parse(label)
        except Exception:  # a chat model's name, not a spec
            return label, {}
        options = dict(parsed.options)
        secrets = "".join(f"{k}={v}" for k, v in sorted(options.items(), key=str)
                          if is_secret_option(k))
        fingerprint = hashlib.sha256(secrets.encode()).hexdigest()[:12] if secrets else ""
        where = "&".join(f"{k}={v}" for k, v in endpoint(label))
        return f"{parsed.provider}:{parsed.model}|{where}|{fingerprint}", options

    def for_label(self, label: str, registry: Any) -> Limiter | None:
        """The limiter calls to ``label`` wait on, or None if nothing limits them."""
        try:
            return self._labels[label]
        except KeyError:
            pass
        key, options = self.key(label)
        rpm, tpm = _limit(options.get("rpm")), _limit(options.get("tpm"))
        info = registry.get(label) if registry is not None and label in registry else None
        if info is not None:
            rpm = min(filter(None, (rpm, _limit(getattr(info, "rpm", None)))), default=None)
            tpm = min(filter(None, (tpm, _limit(getattr(info, "tpm", None)))), default=None)
        limiter = self._limiters.get(key)
        if limiter is None and (rpm or tpm):
            limiter = self._new(key, options)
        elif limiter is None and key not in self._unlimited and reports_limits(
                key.partition(":")[0]):
            limiter = self._new(key, options)  # a slow start until its headers say
            limiter.probing, limiter.cwnd = True, float(SLOW_START)
        if limiter is not None:
            limiter.configure(rpm, tpm)
            if limiter.probing and (limiter.rpm or limiter.tpm):
                limiter.probing, limiter.cwnd = False, None
        self._labels[label] = limiter
        return limiter

    def unlimited(self, limiter: Limiter) -> None:
        """A slow start's response stated no limit: calls to its model no longer wait
        (until a 429 says otherwise)."""
        limiter.probing, limiter.cwnd = False, None
        limiter._wake()
        if self._limiters.get(limiter.key) is limiter and not (limiter.rpm or limiter.tpm):
            del self._limiters[limiter.key]
            self._unlimited.add(limiter.key)
            for label in [k for k, v in self._labels.items() if v is limiter]:
                del self._labels[label]

    def _new(self, key: str, options: Mapping[str, Any]) -> Limiter:
        window = options.get("rate_window")
        if window is None or option_problem({"rate_window": window}) is not None:
            window = 60.0
        limiter = self._limiters[key] = Limiter(self, key, float(window))
        return limiter

    def refused(self, label: str, exc: BaseException) -> None:
        """A call to ``label`` got a 429 (``exc``): learn its headers' limits and back
        off its concurrency."""
        key, options = self.key(label)
        self._unlimited.discard(key)
        limiter = self._limiters.get(key) or self._new(key, options)
        limiter.probing = False  # the 429 turns on the adaptive window instead
        limiter.learn(getattr(getattr(exc, "response", None), "headers", None))
        limiter.backoff()
        if self._labels.get(label) is not limiter:
            self._labels.pop(label, None)  # found again, with its configured limits


pacer = Pacer()
