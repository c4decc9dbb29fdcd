"""bench/bench_routing.py judges the learned router honestly: ties go to the cheaper
baseline, cost is checked as the total spent as well as the mean of per-seed ratios, and
the skeptic's scenarios are what their docstring says."""

from __future__ import annotations

import random
import statistics

import pytest

from tests.bench_support import BENCHES, load_bench

BENCH = BENCHES / "bench_routing.py"


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path))  # restored after: the bench sets it
    return load_bench("bench_routing", monkeypatch)


def _results(bench, quality, per_seed_cost):
    return {p: [(quality.get(p, 50.0), per_seed_cost.get(p, 10.0))] * 2
            for p in bench.POLICIES}


def test_a_tie_is_judged_against_the_cheaper_baseline(bench):
    """Always-best and epsilon-greedy tie on quality (90.1): the learned router, at 142.7%
    of always-best's cost, is compared with always-best (100%), not with epsilon-greedy
    (185.5%), and misses on cost."""
    quality = {"always-best": 90.1, "epsilon-greedy": 90.1, "learned": 90.7}
    cost = {"always-best": 100.0, "epsilon-greedy": 185.5, "learned": 142.7}
    ok, text = bench.verdict(_results(bench, quality, cost), dict(cost), "learned")
    assert not ok
    assert "best baseline (always-best (ties epsilon-greedy), 90.1%" in text
    assert "MISSED (mean cost, total cost)" in text


def test_cost_is_checked_as_a_total_too(bench):
    """A mean of per-seed ratios under the baseline's does not hide more money spent in
    total (a seed where the baseline is cheap weighs little in the total)."""
    quality = {"epsilon-greedy": 95.0, "learned": 95.5}
    cost = {"always-best": 100.0, "epsilon-greedy": 120.0, "learned": 90.0}
    totals = {**{p: 10.0 for p in bench.POLICIES}, "always-best": 100.0,
              "epsilon-greedy": 60.0, "learned": 75.0}
    ok, text = bench.verdict(_results(bench, quality, cost), totals, "learned")
    assert not ok and text.endswith("MISSED (total cost)")
    totals["learned"] = 55.0
    ok, text = bench.verdict(_results(bench, quality, cost), totals, "learned")
    assert ok and text.endswith(": ok")


def test_the_skeptics_scenarios_are_what_they_say(bench):
    """close: the runner-up within 0.02 of the best on every task; biased-judge: one model
    scored 0.1 above its quality, the truth left alone; degrade-recover: the best model
    loses 0.25 from dialogue 40 to 99 only; price-change: new prices from dialogue 100,
    in the catalog the routers see and in the cost; few: 20 dialogues; many-models: 12."""
    close = bench.Market("close", 3)
    for quality in close.quality.values():
        first, second = sorted(quality.values())[-2:][::-1]
        assert 0 <= first - second <= 0.02
    biased = bench.Market("biased-judge", 3)
    (flattered, bias), = biased.bias.items()
    assert bias == 0.1 and flattered in biased.models
    judge, truth = random.Random(1), 0.5
    scores = [biased.score(judge, truth, flattered) for _ in range(2000)]
    assert 0.58 <= statistics.mean(scores) <= 0.62
    assert biased.true(0, "task0", flattered) == biased.quality["task0"][flattered]
    back = bench.Market("degrade-recover", 3)
    drop = [back.quality["task0"][back.degraded] - back.true(i, "task0", back.degraded)
            for i in (39, 40, 99, 100)]
    assert drop[0] == drop[3] == 0 and drop[1] == drop[2] > 0
    prices = bench.Market("price-change", 3)
    model = prices.models[0]
    assert prices.prices(99) == prices.price and prices.prices(100) != prices.price
    late = prices.registry_at(100).get(model)
    assert late.cost_per_million != prices.registry_at(99).get(model).cost_per_million
    assert prices.cost(100, model) != prices.cost(99, model)
    assert bench.Market("few", 3).dialogues == 20
    assert len(bench.Market("many-models", 3).models) == 12


def test_the_recovery_windows_upper_bounds_are_what_they_say(bench):
    """settled: the market as it is at its end, unchanged throughout (degrade's model
    degraded from dialogue 0, degrade-recover's never); told: the policy forgets the
    changed model exactly at the change, so a full-feedback learner told of the
    degradation leaves the model at once, and one not told keeps it while its old scores
    outweigh the new."""
    down = bench.Market("degrade", 3)
    steady = bench.settled(down)
    model = down.degraded
    assert steady.true(0, "task0", model) == down.true(150, "task0", model) < (
        down.true(0, "task0", model))
    assert down.true(0, "task0", model) == down.quality["task0"][model]  # left alone
    back = bench.settled(bench.Market("degrade-recover", 3))
    assert all(back.true(i, "task0", m) == back.quality["task0"][m]
               for i in (0, 50, 150) for m in back.models)
    told: list[str] = []
    not_told: list[str] = []
    bench.run(down, "full-feedback", 3, told=True, picks=told)
    bench.run(down, "full-feedback", 3, picks=not_told)
    after = slice(300, 330)  # the turns of dialogues 100-109
    assert not_told[297:300].count(model) >= 1  # it was picked before the change
    assert told[after].count(model) == 0 < not_told[after].count(model)
