"""A rate limit slows dlg down and never fails a dialogue: 429s from a real
OpenAI-compatible server on 127.0.0.1 that enforces a window are waited out per its
headers, apart from outages; only the user's deadline ends the wait, and says so."""

from __future__ import annotations

import anyio
import pytest

import dlg
from dlg.models.resilience import cooldowns

from .servers import FakeOpenAI, LimitedOpenAI

pytest.importorskip("langchain_openai")

MODE = {"name": "pair", "inputs": {"topic": {"required": True}},
        "participants": {"a": None, "b": None},
        "turns": [{"id": "first", "role": "First", "participant": "a",
                   "prompt": "Open on {{ topic }}"},
                  {"id": "second", "role": "Second", "participant": "b", "prompt": "Reply"}]}
FAST = dlg.RetryPolicy(base_delay=0.01)


def compat(server: FakeOpenAI) -> str:
    return f"openai-compatible:test-model?base_url={server.base_url}"


async def test_a_batch_against_a_rate_limit_fails_no_dialogue():
    """The issue's failure, scaled down: 20 one-turn dialogues at concurrency 8 against
    12 requests a second (its answers state no limit, so the 429s teach it). Before,
    three 429s in a row cooled the model down for the whole process, and every later 429
    failed its dialogue at once."""
    rows = [{"topic": f"topic {i}"} for i in range(20)]
    one = {**MODE, "turns": MODE["turns"][:1]}  # a second turn only doubled the wait
    with LimitedOpenAI(requests=12, window=1.0, answered_headers=False) as server:
        result = await dlg.batch(one, rows, concurrency=8, model=compat(server),
                                 retry=FAST, batch_id="limited")
    assert result.totals["statuses"] == {"completed": 20}
    assert server.answered == 20 and server.refused > 0  # the limit did bite
    assert not cooldowns.cooling(compat(server))
    turns = [t for item in result.items for t in dlg.load_dialogue(item.dialogue_id).turns]
    limited = [a for t in turns for a in t.attempts or ()]
    assert limited and all(a["rate_limited"] and a["transient"] for a in limited)
    assert all(t.model == compat(server) and t.replaced == () for t in turns)


async def test_rate_limits_do_not_cool_the_model_down_for_other_dialogues():
    """Five 429s in a row (more than the cool-down's three) and the attempt budget of
    outages (3) are waited out on the same model."""
    with FakeOpenAI(["429:0.05"] * 5 + ["ok"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST, store=None).run(
            MODE, topic="x")
    assert d.status == "completed", d.error
    attempts = d.turns[0].attempts
    assert len(attempts) == 5 and all(a["rate_limited"] for a in attempts)
    assert all(a["waited"] >= 0.05 for a in attempts)
    assert not cooldowns.cooling(compat(server))


@pytest.mark.parametrize("header", ["1e12", "-5", "soon", "nan", "inf", "0"])
async def test_hostile_retry_after_neither_hangs_nor_crashes(header):
    """A Retry-After that is huge, negative or not a number is not believed: dlg backs
    off with jitter (the policy's short delays here) and tries again."""
    with FakeOpenAI([f"429:{header}", f"429:{header}", "ok"]) as server, anyio.fail_after(30):
        d = await dlg.Orchestrator(model=compat(server), retry=FAST, store=None).run(
            MODE, topic="x")
    assert d.status == "completed", d.error
    attempts = d.turns[0].attempts
    assert [a["rate_limited"] for a in attempts] == [True, True]
    assert all(a["waited"] <= 1.0 for a in attempts)


async def test_a_timeout_that_ends_while_rate_limited_fails_saying_so():
    """The turn's timeout bounds the waiting: a provider that keeps refusing fails the
    turn once the next wait would pass it, with a message that says it was rate-limited
    (not an outage, not a cool-down)."""
    # refused for 0.5 s, then the next wait would pass the 1 s: the second 429 fails it
    with FakeOpenAI(["429:0.5"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST, timeout=1.0,
                                   store=None).run(MODE, topic="x")
    assert d.status == "failed"
    error = d.turns[0].error
    assert error.startswith(f"{compat(server)}: rate-limited: ")
    assert "the turn's timeout of 1s" in error
    assert all(a["rate_limited"] for a in d.turns[0].attempts)
    assert not cooldowns.cooling(compat(server))


async def test_a_long_retry_after_waits_rather_than_move_to_a_model_not_named():
    """Past the cap (RetryPolicy.max_retry_after) the wait is capped, not abandoned: no
    fallback was named, so the registry's chain is not used."""
    from dlg.models.catalog import ModelRegistry

    registry = ModelRegistry.load()
    registry.add({"models": {"openai-compatible:test-model": {"fallbacks": ["echo"]}}}, "t")
    policy = dlg.RetryPolicy(base_delay=0.01, max_retry_after=0.2)
    with FakeOpenAI(["429:30", "ok"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=policy, registry=registry,
                                   store=None).run(MODE, topic="x")
    assert d.status == "completed", d.error
    assert d.turns[0].model == compat(server)
    assert [a["waited"] for a in d.turns[0].attempts] == [pytest.approx(0.2, abs=0.05)]


async def test_a_long_retry_after_moves_to_a_fallback_the_user_named():
    mode = {**MODE, "participants": {"a": {"fallbacks": ["echo"]}, "b": None}}
    policy = dlg.RetryPolicy(base_delay=0.01, max_retry_after=1)
    with FakeOpenAI(["429:30", "ok"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=policy, store=None).run(
            mode, topic="x")
    assert d.status == "completed", d.error
    assert d.turns[0].model == "echo" and d.turns[0].replaced == (compat(server),)
    assert d.turns[0].attempts[0]["rate_limited"] is True
