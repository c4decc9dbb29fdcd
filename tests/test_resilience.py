"""Retries, backoff, Retry-After, cool-downs and fallbacks, without a network."""

from __future__ import annotations

import anyio
import pytest

import dlg
from dlg.models.resilience import (
    AllCandidatesFailed,
    CoolDowns,
    RetryPolicy,
    call_resilient,
    classify,
)


class StatusError(Exception):
    def __init__(self, status, headers=None):
        super().__init__(f"status {status}")
        self.status_code = status
        self.response = type("R", (), {"headers": headers or {}, "status_code": status})()


class APIConnectionError(Exception):
    pass


@pytest.mark.parametrize(("exc", "expected"), [
    (StatusError(429, {"retry-after": "2"}), (True, 2.0)),
    (StatusError(429, {"retry-after-ms": "1500"}), (True, 1.5)),
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
