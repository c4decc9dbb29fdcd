"""Limits paced before they bite: calls to a model with known requests and tokens per
minute (from the spec, the registry or the provider's headers) wait for their turn,
shared by every dialogue in the process, against a real OpenAI-compatible server on
127.0.0.1 that enforces a window."""

from __future__ import annotations

import time

import pytest

import dlg
from dlg.errors import ModelError
from dlg.models.catalog import ModelRegistry
from dlg.models.pacing import HEADROOM, MAX_LIMIT, Limiter, Schedule, pacer

from .servers import LimitedOpenAI

pytest.importorskip("langchain_openai")

from .test_rate_limits import FAST, MODE

ROWS = [{"topic": f"topic {i}"} for i in range(30)]
# one turn a dialogue: where a test is about a batch's first burst or first 429, the second
# turns only doubled the seconds it waited out the server's window
ONE = {**MODE, "turns": MODE["turns"][:1]}


def compat(server: LimitedOpenAI, options: str = "") -> str:
    return f"openai-compatible:test-model?base_url={server.base_url}{options}"


async def test_a_batch_paced_by_the_registry_s_limits_is_almost_never_refused():
    """30 two-turn dialogues at concurrency 10 against 20 requests a second, the limit
    in the registry: at most 2% of the requests are refused (unpaced, a third were)."""
    with LimitedOpenAI(requests=20, window=1.0) as server:
        registry = ModelRegistry.load()
        registry.add({"models": {"openai-compatible:test-model": {"rpm": 20 * 60}}}, "t")
        result = await dlg.batch(MODE, ROWS, concurrency=10, model=compat(server),
                                 retry=FAST, registry=registry, batch_id="paced")
    assert result.totals["statuses"] == {"completed": 30}
    assert server.answered == 60
    assert server.refused <= 0.02 * len(server.requests)
    assert pacer.for_label(compat(server), registry).rpm == 1200


async def test_a_spec_s_rpm_and_tpm_pace_the_calls_and_are_not_sent_to_the_provider():
    with LimitedOpenAI(requests=20, window=1.0, tokens=400) as server:
        spec = compat(server, "&rpm=1200&tpm=24000")
        result = await dlg.batch(MODE, ROWS[:20], concurrency=10, model=spec, retry=FAST,
                                 batch_id="paced-spec")
    assert result.totals["statuses"] == {"completed": 20}
    assert server.refused <= 0.02 * len(server.requests)
    assert all(set(r["body"]) & {"rpm", "tpm"} == set() for r in server.requests)
    limiter = pacer.for_label(spec, None)
    assert (limiter.rpm, limiter.tpm) == (1200, 24000)
    assert limiter.completion < 256  # the answers' real size was learned


async def test_limits_are_learned_from_a_429_s_headers():
    """No limit given, and a server whose answers do not state its limits: the first
    429's x-ratelimit-limit-* headers (per minute) are learned, and the calls after it are
    paced; the batch completes."""
    with LimitedOpenAI(requests=15, window=1.0, tokens=3000, answered_headers=False) as server:
        spec = compat(server)
        result = await dlg.batch(ONE, ROWS[:20], concurrency=10, model=spec, retry=FAST,
                                 batch_id="learned")
    assert result.totals["statuses"] == {"completed": 20}
    assert server.refused > 0  # it had to learn
    limiter = pacer.for_label(spec, None)
    assert limiter.learned == {"rpm": 15 * 60, "tpm": 3000 * 60}
    assert limiter.cwnd is not None  # the 429 turned the adaptive window on


async def test_a_model_whose_answers_state_its_limits_starts_slowly_and_is_not_refused():
    """No limit given, 20 one-turn dialogues at once against 8 requests a second;
    OpenAI's answers state the limits (x-ratelimit-*): one call goes until the first
    answer's headers say them, then the calls are paced by them. Before, the first burst
    of 20 went out together and more than half of it was refused."""
    with LimitedOpenAI(requests=8, window=1.0) as server:
        spec = compat(server)
        result = await dlg.batch(ONE, ROWS[:20], concurrency=20, model=spec, retry=FAST,
                                 batch_id="slow-start")
    assert result.totals["statuses"] == {"completed": 20}
    # Before, 11 of the first burst were refused. Paced requests can still reach the
    # server bunched when the machine is busy (its clock is not the client's), so a
    # few refusals are allowed: the test is about the burst, not the schedule's jitter.
    assert server.refused <= 3
    limiter = pacer.for_label(spec, None)
    assert limiter.learned == {"rpm": 8 * 60}
    assert not limiter.probing  # paced by the learned limit, no longer held to one call
    assert limiter.cwnd is None or server.refused  # a 429 halves the calls in flight


async def test_a_server_whose_answers_state_no_limit_is_not_slowed_after_its_first_answer():
    """The same provider against a server that states no limits: after the first
    answer, nothing waits (no limiter), as before the slow start."""
    from .servers import FakeOpenAI

    with FakeOpenAI(reply="fine") as server:
        spec = f"openai-compatible:test-model?base_url={server.base_url}"
        result = await dlg.batch(MODE, ROWS[:6], concurrency=6, model=spec, retry=FAST,
                                 batch_id="no-limit")
    assert result.totals["statuses"] == {"completed": 6}
    assert pacer.for_label(spec, None) is None


@pytest.mark.parametrize("value", ["0", "-5", "1e12", "soon", "nan", "inf", "1.5",
                                   str(MAX_LIMIT + 1), "9" * 80, ""])
def test_hostile_limit_headers_are_ignored(value):
    limiter = Limiter(pacer, "k")
    assert limiter.learn({"x-ratelimit-limit-requests": value,
                          "anthropic-ratelimit-tokens-limit": value}) is False
    assert limiter.learned == {} and limiter.rpm is None
    assert limiter.learn({"anthropic-ratelimit-requests-limit": "50",
                          "anthropic-ratelimit-input-tokens-limit": "8000",
                          "anthropic-ratelimit-tokens-limit": "9000"}) is True
    assert limiter.learned == {"rpm": 50, "tpm": 8000}


def test_a_broken_headers_mapping_is_no_limit():
    class Broken:
        def get(self, name):
            raise RuntimeError("boom")

        def __bool__(self):
            return True

    assert Limiter(pacer, "k").learn(Broken()) is False


@pytest.mark.parametrize("options,said", [
    ("rpm=abc", "the option 'rpm' must be a number of requests per minute"),
    ("tpm=0", "the option 'tpm' must be a number of tokens per minute"),
    ("rate_window=-1", "the option 'rate_window' must be the seconds"),
])
async def test_a_bad_limit_option_is_a_clear_error(options, said):
    with LimitedOpenAI(requests=5, window=1.0) as server:
        spec = compat(server, f"&{options}")
        with pytest.raises(ModelError, match=said):
            await dlg.Orchestrator(model=spec, store=None).run(MODE, topic="x")
        assert server.requests == []


def test_the_schedule_paces_requests_and_tokens_and_gives_back_unused_tokens():
    s = Schedule()
    assert s.reserve(100.0, 60 / HEADROOM, None, 0) == 0  # one a second at the headroom
    assert s.reserve(100.0, 60 / HEADROOM, None, 0) == pytest.approx(1.0)
    t = Schedule()
    assert t.reserve(0.0, None, 600 / HEADROOM, 20) == 0  # ten tokens a second
    assert t.reserve(0.0, None, 600 / HEADROOM, 5) == pytest.approx(2.0)
    t.settle(0.0, 10, 2.5)  # the first call used 10 of its 20
    assert t.reserve(0.0, None, 600 / HEADROOM, 5) == pytest.approx(1.5)
    t.settle(0.0, 100, 0.2)  # only what is still to come of a call's share comes back
    assert t.reserve(0.0, None, 600 / HEADROOM, 0) == pytest.approx(1.8)
    t.reserve(0.0, None, 1, 0)  # a lower limit from another process is kept
    assert t.tpm == 1


async def test_the_adaptive_window_halves_on_a_429_and_grows_when_clear():
    limiter = Limiter(pacer, "k")
    limiter.in_flight = 15
    limiter.backoff()
    assert limiter.cwnd == 8
    limiter.backoff()  # the same burst's 429s: once a second
    assert limiter.cwnd == 8
    limiter.in_flight = 0
    for _ in range(8):
        await limiter.acquire(0)
        await limiter.release(0, 0.0, 0, None, refused=False)
    assert 8.9 < limiter.cwnd < 9.1


def test_dlg_batch_s_progress_shows_the_time_spent_waiting_on_a_limit(tmp_path):
    import json
    import re

    from click.testing import CliRunner

    from dlg.cli import cli

    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps(MODE))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"topic": "t{i}"}}\n' for i in range(6)))
    with LimitedOpenAI(requests=10, window=1.0) as server:
        ran = CliRunner().invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-c", "4",
                                       "-m", compat(server, "&rpm=600"), "--id", "w"])
    assert ran.exit_code == 0, ran.output
    last = next(line for line in ran.output.splitlines() if line.startswith("[6/6]"))
    assert re.search(r" · \d+\.\ds waiting on rate limits$", last), last


async def test_each_turn_records_its_wait_for_a_paced_limit_and_a_model_with_none_records_nothing():
    """Turns paced by a limit record the seconds they waited (``waited_seconds``): in all,
    what the pacer counted for the batch (what ``dlg batch``'s progress shows). A model
    with no limit waits for nothing and records nothing."""
    with LimitedOpenAI(requests=50, window=1.0) as server:
        spec = compat(server, "&rpm=600")
        before = pacer.waited
        result = await dlg.batch(MODE, ROWS[:3], concurrency=3, model=spec, retry=FAST,
                                 batch_id="waits")
        counted = pacer.waited - before
    assert result.totals["statuses"] == {"completed": 3}
    turns = [t for i in result.items for t in dlg.load_dialogue(i.dialogue_id).turns]
    waits = [t.waited_seconds for t in turns]
    assert all(w is not None and w >= 0 for w in waits)
    assert sum(waits) == pytest.approx(counted, abs=0.01)
    assert max(waits) >= 0.05  # six calls at 10 a second: the last waited its turn
    plain = await dlg.Orchestrator(model="echo", store=None).run(MODE, topic="x")
    assert [t.waited_seconds for t in plain.turns] == [None, None]
    assert all("waited_seconds" not in t for t in plain.to_dict()["turns"])


async def test_a_turn_s_waits_after_429s_are_recorded_with_its_pacing():
    from .servers import FakeOpenAI

    with FakeOpenAI(["429:0.05"] * 2 + ["ok"] * 2) as server:
        d = await dlg.Orchestrator(model=f"openai-compatible:m?base_url={server.base_url}",
                                   retry=FAST, store=None).run(MODE, topic="x")
    assert d.status == "completed", d.error
    first, second = d.turns
    waited = sum(a["waited"] for a in first.attempts)
    assert waited >= 0.1 and first.waited_seconds == pytest.approx(waited, abs=0.01)
    assert second.waited_seconds is not None  # paced: the 429 made the model a limiter
    assert dlg.Dialogue.from_dict(d.to_dict()).turns[0].waited_seconds == pytest.approx(
        waited, abs=0.01)


def test_a_turn_s_wait_shows_in_dlg_show_the_exports_and_the_dialogue_page():
    from click.testing import CliRunner
    from starlette.testclient import TestClient

    from dlg.cli import cli
    from dlg.records.store import open_store
    from dlg.serve.app import create_app

    d = dlg.run_sync(MODE, {"topic": "x"}, model="echo")
    d.turns[0].waited_seconds = 1.25
    open_store(None).save(d.to_dict())
    shown = CliRunner().invoke(cli, ["show", d.id], catch_exceptions=False).output
    header = next(line for line in shown.splitlines() if "latency" in line)
    assert "waited" in header
    first = next(line for line in shown.splitlines() if " first " in line)
    second = next(line for line in shown.splitlines() if " second " in line)
    assert "1.25s" in first and "1.25s" not in second
    assert "waited on rate limits: 1.25s" in d.export("markdown")
    rows = d.export("csv").splitlines()
    assert rows[0].endswith(",waited_seconds") and rows[1].endswith(",1.25")
    assert rows[2].endswith(",")  # the turn that never waited: empty
    assert "<th>waited</th>" in d.export("html")
    page = TestClient(create_app(None), base_url="http://127.0.0.1").get(f"/d/{d.id}").text
    assert "waited on rate limits 1.25s" in page
    plain = dlg.run_sync(MODE, {"topic": "x"}, model="echo")  # never waited: as before
    assert "waited" not in CliRunner().invoke(cli, ["show", plain.id]).output
    assert "waited" not in plain.export("markdown") and "<th>waited</th>" not in plain.export(
        "html")


class _Recorded:
    """A shared schedule (as the Ray executor's actor holds one) that records its calls."""

    def __init__(self) -> None:
        from dlg.models.pacing import InProcess

        self.inner, self.calls = InProcess(), []

    async def reserve(self, key, rpm, tpm, tokens):
        self.calls.append(("reserve", tokens))
        return await self.inner.reserve(key, rpm, tpm, tokens)

    async def settle(self, key, refund, future):
        self.calls.append(("settle", refund))
        await self.inner.settle(key, refund, future)


def _limited(rpm=None, tpm=None):
    from dlg.models.pacing import Pacer

    paced = Pacer()
    paced.share(_Recorded())
    limiter = Limiter(paced, "k")
    limiter.configure(rpm, tpm)
    return paced, limiter


async def test_the_first_answer_replaces_the_guessed_answer_size():
    """Before any answer a call reserves 256 tokens for it; the first answer's real size
    replaces that guess (it moved a quarter of the way: a fresh limiter's next calls, a
    Ray worker's first dozen, reserved 3 to 6 times a short answer's tokens and waited
    on the tokens' schedule rather than the requests')."""
    _, limiter = _limited(rpm=6000, tpm=10**6)
    assert limiter.estimate(100, None) == 100 + 256
    _, ends = await limiter.acquire(356)
    await limiter.release(356, ends, 100, (120, 40), refused=False)
    assert limiter.completion == 40 and limiter.ratio == pytest.approx(1.2)
    assert limiter.estimate(100, None) == 120 + 40
    _, ends = await limiter.acquire(160)
    await limiter.release(160, ends, 100, (120, 80), refused=False)  # then an average
    assert limiter.completion == 50


async def test_a_call_that_went_before_its_limits_were_known_takes_its_place_after():
    """A slow start's call goes unscheduled (no limit known); when its answer states the
    limits it takes its place in the schedule, so that the calls after it wait for it (a
    Ray worker's each: four such calls went beside the schedule's in its first window)."""
    paced, limiter = _limited()
    limiter.probing, limiter.cwnd = True, 1.0
    _, ends = await limiter.acquire(300)
    assert paced.store.calls == []  # nothing known: nothing asked of the schedule
    limiter.learn({"x-ratelimit-limit-requests": "60", "x-ratelimit-limit-tokens": "6000"})
    await limiter.release(300, ends, 280, (100, 20), refused=False)
    assert paced.store.calls == [("reserve", 120)]  # what the provider counted
    schedule = paced.store.inner.schedules["k"]
    assert schedule.rpm == 60 and schedule.next_request > 0


async def test_a_settlement_that_gives_nothing_back_is_not_sent():
    """A call that used less than it reserved, whose share of the tokens' schedule has
    passed, has nothing to give back (time gone is not given back): no round trip to the
    shared schedule for it. One that used more, or whose share is still to come, is sent."""
    paced, limiter = _limited(rpm=6000, tpm=600_000)  # short waits; the same settlements
    _, ends = await limiter.acquire(300)
    await limiter.release(300, ends - 60.0, 100, (100, 50), refused=False)  # share passed
    assert [c for c in paced.store.calls if c[0] == "settle"] == []
    _, ends = await limiter.acquire(300)
    await limiter.release(300, ends, 100, (100, 500), refused=False)  # used more
    _, ends = await limiter.acquire(300)
    await limiter.release(300, ends + 60.0, 100, (100, 50), refused=False)  # still to come
    assert [c for c in paced.store.calls if c[0] == "settle"] == [("settle", -300),
                                                                  ("settle", 150)]


async def test_an_empty_first_answer_or_a_zero_prompt_count_does_not_replace_the_guesses():
    """The first answer replaces the guessed answer size and prompt ratio, but not an
    empty answer (0 tokens) nor a prompt count past the ratio's bounds (a provider that
    reports 0): one such answer made every next call reserve its prompt alone, or a
    quarter of it, and a burst of them went together past the tokens' limit."""
    _, limiter = _limited(rpm=6000, tpm=10**6)
    _, ends = await limiter.acquire(356)
    await limiter.release(356, ends, 100, (100, 0), refused=False)  # an empty answer
    assert limiter.estimate(100, None) == 100 + 192  # moved a quarter, as before
    _, limiter = _limited(rpm=6000, tpm=10**6)
    _, ends = await limiter.acquire(356)
    await limiter.release(356, ends, 1000, (0, 40), refused=False)  # no prompt counted
    assert limiter.ratio == pytest.approx(0.8125) and limiter.completion == 40


async def test_a_hostile_token_count_holds_the_schedule_back_a_minute_at_most():
    """A provider counting an absurd answer (10**14 tokens; a count is believed up to
    10**15) is believed only up to the tokens of a minute: neither the next calls'
    reservations nor the settlement pushed the shared schedule years ahead."""
    paced, limiter = _limited(rpm=6000, tpm=6000)
    _, ends = await limiter.acquire(356)
    await limiter.release(356, ends, 100, (100, 10**14), refused=False)
    assert limiter.estimate(100, None) <= 100 + 6000
    schedule = paced.store.inner.schedules["k"]
    assert schedule.next_token - time.monotonic() < 3 * 60.0
