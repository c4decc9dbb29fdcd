"""Retries, backoff, Retry-After, cool-downs and fallbacks, without a network."""

from __future__ import annotations

import time

import anyio
import pytest

import dlg
from dlg.models.ratelimits import RateGate
from dlg.models.resilience import (
    AllCandidatesFailed,
    CoolDowns,
    RetryPolicy,
    call_resilient,
    classify,
)


class StatusError(Exception):
    def __init__(self, status, headers=None, text=""):
        super().__init__(f"status {status}{' ' + text if text else ''}")
        self.status_code = status
        self.response = type("R", (), {"headers": headers or {}, "status_code": status})()


class APIConnectionError(Exception):
    pass


@pytest.mark.parametrize(("exc", "expected"), [
    (StatusError(429, {"retry-after": "2"}), (True, 2.0)),
    (StatusError(429, {"retry-after-ms": "1500"}), (True, 1.5)),
    (StatusError(429, {"x-ratelimit-reset-requests": "1m0s"}), (True, 60.0)),
    (StatusError(429, {"x-ratelimit-reset-requests": "6s", "x-ratelimit-reset-tokens": "250ms",
                       "x-ratelimit-remaining-tokens": "0"}), (True, 0.25)),
    (StatusError(429, {"anthropic-ratelimit-requests-reset": "2001-01-01T00:00:00Z"}),
     (True, 0.0)),
    # hostile or broken headers are not believed (the caller backs off with jitter)
    (StatusError(429, {"retry-after": "1e12"}), (True, None)),
    (StatusError(429, {"retry-after-ms": "1e15", "retry-after": "3"}), (True, 3.0)),
    (StatusError(429, {"retry-after-ms": "120000"}), (True, 120.0)),
    (StatusError(429, {"retry-after": "-5"}), (True, None)),
    (StatusError(429, {"retry-after": "nan"}), (True, None)),
    (StatusError(429, {"retry-after": "soon"}), (True, None)),
    (StatusError(429, {"x-ratelimit-reset-requests": "9999999h"}), (True, None)),
    (StatusError(429, {"retry-after": "1" * 500}), (True, None)),
    # OpenAI's spent quota is billing, not a rate: waiting does not end it
    (StatusError(429, {"retry-after": "1"}, "insufficient_quota"), (False, None)),
    (StatusError(503), (True, None)),
    (StatusError(401), (False, None)),
    (StatusError(400), (False, None)),
    (TimeoutError(), (True, None)),
    (ConnectionResetError(), (True, None)),
    (APIConnectionError("dropped"), (True, None)),
    (ValueError("bad"), (False, None)),
])
def test_classify(exc, expected):
    assert classify(exc) == expected


def script(*outcomes):
    calls = []

    async def call(model):
        calls.append(model)
        outcome = outcomes[min(len(calls) - 1, len(outcomes) - 1)]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call, calls


async def test_transient_errors_are_retried_on_the_same_model():
    call, calls = script(StatusError(503), StatusError(503), "ok")
    result, used, attempts = await call_resilient(
        "m", call, policy=RetryPolicy(base_delay=0.001), cool=CoolDowns(threshold=99))
    assert (result, used, calls) == ("ok", "m", ["m", "m", "m"])
    assert [a.transient for a in attempts] == [True, True]


async def test_fatal_errors_go_to_the_next_model_without_retry():
    call, calls = script(StatusError(401), "ok")
    result, used, attempts = await call_resilient("a", call, fallbacks=["b"],
                                                  cool=CoolDowns(threshold=99))
    assert (result, used, calls) == ("ok", "b", ["a", "b"])
    assert len(attempts) == 1 and not attempts[0].transient


async def test_fallbacks_are_only_computed_when_needed():
    asked = []

    def fallbacks(failed):
        asked.append(1)
        return ["b"]

    call, _ = script("ok")
    await call_resilient("a", call, fallbacks=fallbacks)
    assert asked == []


async def test_retry_after_too_long_moves_on():
    call, calls = script(StatusError(429, {"retry-after": "3600"}), "ok")
    _, used, attempts = await call_resilient("a", call, fallbacks=["b"],
                                             cool=CoolDowns(threshold=99))
    assert used == "b" and calls == ["a", "b"] and attempts[0].waited == 0


async def test_everything_failing_raises_with_all_attempts():
    call, _ = script(StatusError(500))
    with pytest.raises(AllCandidatesFailed) as info:
        await call_resilient("a", call, fallbacks=["b"],
                             policy=RetryPolicy(attempts=2, base_delay=0.001),
                             cool=CoolDowns(threshold=99))
    assert [a.model for a in info.value.attempts] == ["a", "a", "b", "b"]
    assert str(info.value) == "b: StatusError: status 500 (after 4 attempts on a, b)"


async def test_a_model_that_keeps_failing_is_cooled_down_for_everyone():
    cool = CoolDowns(threshold=2, seconds=60)
    call, calls = script(StatusError(500), StatusError(500), "ok")
    _, used, _ = await call_resilient("a", call, fallbacks=["b"], cool=cool,
                                      policy=RetryPolicy(base_delay=0.001))
    assert used == "b" and cool.cooling("a") and calls == ["a", "a", "b"]
    # a second dialogue skips the resting model entirely
    call2, calls2 = script("ok")
    _, used2, _ = await call_resilient("a", call2, fallbacks=["b"], cool=cool)
    assert used2 == "b" and calls2 == ["b"]


async def test_a_failure_is_the_primarys_even_if_others_cooled_it_down_meanwhile():
    """While the primary's first try was in flight, other dialogues' failures put it to
    rest: its failure is still recorded as its own, and the fallback answers."""
    cool = CoolDowns(threshold=2, seconds=60)

    async def call(model):
        if model == "a":
            cool.failed("a")
            cool.failed("a")
            raise StatusError(500)
        return "ok"

    result, used, attempts = await call_resilient(
        "a", call, fallbacks=["b"], cool=cool, policy=RetryPolicy(base_delay=0.001))
    assert (result, used) == ("ok", "b")
    assert [(a.model, a.error) for a in attempts] == [("a", "StatusError: status 500")]


async def test_backoff_waits_grow_and_are_jittered():
    from dlg.models.resilience import _backoff

    policy = RetryPolicy(base_delay=1, max_delay=5)
    for retry in range(5):
        assert 0 <= _backoff(policy, retry) <= min(5, 2**retry)


async def test_cancellation_is_never_retried():
    async def call(model):
        await anyio.sleep(10)

    with anyio.move_on_after(0.05) as scope:
        await call_resilient("a", call, fallbacks=["b"])
    assert scope.cancelled_caught


async def test_reliability_ten_percent_failures_no_failed_dialogue():
    """The issue's target, small: dialogues survive random model failures."""
    import random

    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    rng = random.Random(7)

    class Flaky(BaseChatModel):
        dlg_label: str = "flaky"

        @property
        def _llm_type(self):
            return "flaky"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            if rng.random() < 0.1:
                raise StatusError(503)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="ok"))])

    orchestrator = dlg.Orchestrator(model=Flaky(), retry=RetryPolicy(base_delay=0.0001))
    dialogues = [await orchestrator.run("debate", topic="x") for _ in range(20)]
    assert {d.status for d in dialogues} == {"completed"}
    assert sum(d.metrics.retries for d in dialogues) > 0


async def test_rate_limits_are_waited_out_and_are_not_outages():
    """Eight 429s in a row: past the three attempts and the cool-down's threshold,
    neither of which a rate limit counts toward."""
    cool = CoolDowns(threshold=2, seconds=60)
    call, calls = script(*[StatusError(429, {"retry-after-ms": "1"})] * 8, "ok")
    result, used, attempts = await call_resilient("a", call, fallbacks=["b"], cool=cool,
                                                  policy=RetryPolicy(base_delay=0.001),
                                                  held=RateGate())
    assert (result, used) == ("ok", "a") and len(calls) == 9
    assert all(a.rate_limited and a.waited > 0 for a in attempts)
    assert not cool.cooling("a")


async def test_outages_after_rate_limits_still_have_their_attempts():
    call, calls = script(StatusError(429), StatusError(503), StatusError(503), "ok")
    result, _, attempts = await call_resilient(
        "a", call, policy=RetryPolicy(attempts=3, base_delay=0.001),
        cool=CoolDowns(threshold=99), held=RateGate())
    assert result == "ok" and len(calls) == 4
    assert [a.rate_limited for a in attempts] == [True, False, False]


async def test_the_rate_limit_wait_has_a_cap_and_the_failure_says_rate_limited():
    call, _ = script(StatusError(429, {"retry-after-ms": "100"}))
    with pytest.raises(AllCandidatesFailed) as info:
        await call_resilient("a", call, policy=RetryPolicy(max_rate_limit_wait=0.25),
                             held=RateGate())
    assert str(info.value).startswith("a: rate-limited: StatusError: status 429; waited ")
    assert "the 0.25s a call may wait on rate limits (RetryPolicy.max_rate_limit_wait)" in str(
        info.value)


async def test_the_callers_deadline_ends_the_wait_with_a_rate_limited_error():
    call, _ = script(StatusError(429, {"retry-after": "5"}))
    with anyio.fail_after(2), pytest.raises(AllCandidatesFailed) as info:
        await call_resilient("a", call, held=RateGate())
    assert str(info.value).endswith("more would pass the caller's deadline")
    assert info.value.attempts[0].rate_limited


async def test_a_reset_one_call_was_told_holds_the_other_calls():
    """Concurrent dialogues on a model wait for the window the provider named rather than
    each be refused in turn: one 429 in all."""
    held = RateGate()
    opens = time.monotonic() + 0.3
    refused = []

    async def call(model):
        left = opens - time.monotonic()
        if left > 0:
            refused.append(model)
            raise StatusError(429, {"retry-after-ms": str(left * 1000 + 50)})
        return "ok"

    results = []

    async def dialogue():
        results.append(await call_resilient("a", call, held=held, cool=CoolDowns()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(dialogue)
        await anyio.sleep(0.05)  # the first is refused, and holds the model
        for _ in range(5):
            tg.start_soon(dialogue)
    assert refused == ["a"] and [r[0] for r in results] == ["ok"] * 6
    assert held.closed("a") is False
