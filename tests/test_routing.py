"""Routing by capability, hard budgets, and what the record says about both."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlg

from .routing_support import Scripted, market

MARKET = {
    "grok-4": {"capabilities": ["reasoning", "analysis"], "quality": 95,
               "price": {"input": 3, "output": 15}},
    "claude-sonnet": {"capabilities": ["analysis", "reasoning"], "quality": 92,
                      "price": {"input": 3, "output": 15}},
    "claude-opus": {"capabilities": ["reasoning", "analysis"], "quality": 97,
                    "price": {"input": 15, "output": 75}},
    "mini": {"capabilities": ["analysis"], "quality": 60,
             "price": {"input": 0.1, "output": 0.4}},
}
SC31 = {"name": "moe", "turns": [
    {"id": "hypothesis", "role": "hypothesis", "requires": ["reasoning"], "prefer": "grok",
     "prompt": "Hypotheses about {{ topic }}"},
    {"id": "validation", "role": "validation", "requires": ["analysis"], "prefer": "claude",
     "prompt": "Validate them"},
    {"id": "synthesis", "role": "synthesis", "requires": ["reasoning", "analysis"],
     "prompt": "Synthesise"}], "inputs": {"topic": {}}}


def test_seed_sc3_1_turns_go_to_the_declared_optimum():
    """The seed's SC3.1: each turn on the model best at what it requires."""
    models, registry = market(MARKET)
    hits = 0
    for _ in range(20):
        d = dlg.Orchestrator(pool=models, registry=registry, store=None).run_sync(
            SC31, topic="who wrote Shakespeare")
        assert d.status == "completed"
        hits += d.turns[0].model == "grok-4"
        hits += d.turns[1].model == "claude-sonnet"
        hits += d.turns[2].model in ("grok-4", "claude-opus")
    assert hits / 60 >= 0.9
    routing = d.turns[0].metadata["routing"]
    assert routing["router"] == "capabilities" and routing["pool_name"] == "grok-4"
    assert "needs reasoning" in routing["reason"] and "preferred 'grok'" in routing["reason"]


def test_participants_still_pin_their_models():
    models, registry = market(MARKET)
    mode = {"name": "pin", "participants": {"judge": None}, "turns": [
        {"id": "a", "role": "A", "participant": "judge", "requires": ["reasoning"],
         "prompt": "x"},
        {"id": "b", "role": "B", "requires": ["analysis"], "prompt": "y"}]}
    d = dlg.Orchestrator(pool=models, registry=registry, models={"judge": models["mini"]},
                         store=None).run_sync(mode)
    assert d.turns[0].model == "mini"  # pinned, although it lacks reasoning
    assert d.turns[1].model in ("grok-4", "claude-sonnet", "claude-opus")
    assert "participant 'judge' is bound to it" in d.turns[0].metadata["routing"]["reason"]


def test_quality_maximum_against_minimum_cost():
    models, registry = market(MARKET)
    best = dlg.Orchestrator(pool=models, registry=registry, store=None,
                            constraints={"quality": "maximum"}).run_sync(SC31, topic="x")
    cheap = dlg.Orchestrator(pool=models, registry=registry, store=None,
                             constraints={"quality": "minimum_cost"}).run_sync(SC31, topic="x")
    assert best.turns[2].model == "claude-opus"
    assert best.turns[1].model == "claude-opus"  # the best of the preferred
    assert cheap.turns[1].model == "claude-sonnet"  # the cheapest of the preferred
    assert cheap.total_cost_usd < best.total_cost_usd


def test_seed_sc3_3_and_v4_a_hard_budget():
    """The seed's SC3.3 and V4: max_cost is never passed; the dialogue completes or stops
    as cost_limited, saved, with the turns it could pay for."""
    models, registry = market({k: {**v, "completion": 400} for k, v in MARKET.items()})
    loop = dlg.load_mode("loop")
    free = dlg.Orchestrator(pool=models, registry=registry, store=None,
                            constraints={"quality": "maximum"}).run_sync(loop, topic="AI safety")
    assert free.total_cost_usd > 0.05
    limited = dlg.Orchestrator(pool=models, registry=registry, max_cost=0.05).run_sync(
        loop, topic="AI safety")
    assert limited.total_cost_usd <= 0.05
    assert limited.status in ("completed", "cost_limited")
    assert limited.turns_completed >= 3
    assert limited.metadata["budget"]["max_cost"] == 0.05
    assert dlg.load_dialogue(limited.id).status == limited.status
    # the budget moved turns to cheaper models or fewer tokens before it stopped anything
    assert any(t.metadata and t.metadata.get("budget") for t in limited.turns)


def test_a_budget_refuses_models_whose_price_is_unknown():
    d = dlg.Orchestrator(model=Scripted(dlg_label="nobody-knows"), max_cost=1.0,
                         store=None).run_sync({"name": "u", "turns": [
                             {"id": "a", "role": "A", "prompt": "x"}]})
    assert d.status == "cost_limited" and d.turns[0].status == "pending"
    assert "cannot pay for turn 'a'" in d.metadata["stopped"]["reason"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prices=st.lists(st.tuples(st.floats(0.01, 80), st.floats(0.01, 120)), min_size=1,
                    max_size=4),
    budget=st.floats(0.0005, 0.2),
    structure=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
)
def test_property_no_overspend(prices, budget, structure, seed):
    """Random prices, random usage (never more than a real tokenizer could report),
    random parallel phases: a dialogue never spends past max_cost."""
    entries = {f"m{i}": {"capabilities": ["analysis"], "quality": 50 + i,
                         "price": {"input": p_in, "output": p_out}}
               for i, (p_in, p_out) in enumerate(prices)}
    models, registry = market(entries)
    for i, model in enumerate(models.values()):
        model.random_usage, model.seed = True, seed + i
    phases = [{"id": f"p{n}", "structure": "parallel" if width > 1 else "sequential",
               "turns": [{"id": f"t{n}_{k}", "role": "R", "requires": ["analysis"],
                          "prompt": "go " * (seed % 50 + 1)} for k in range(width)]}
              for n, width in enumerate(structure)]
    mode = {"name": "prop", "structure": "mixed", "phases": phases}
    d = dlg.Orchestrator(pool=models, registry=registry, max_cost=budget,
                         store=None).run_sync(mode)
    assert d.status in ("completed", "cost_limited")
    assert d.total_cost_usd <= budget + 1e-12, (d.total_cost_usd, budget)


def test_router_and_budget_from_the_mode_and_the_cli(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dlg.cli import cli

    mode = tmp_path / "routed.yaml"
    mode.write_text(
        "name: routed\ninputs: {topic: {}}\nrouter: capabilities\n"
        "models: [echo, 'echo?words=3']\nconstraints: {quality: maximum}\n"
        "turns:\n  - {id: a, role: A, requires: [analysis], prompt: '{{ topic }}'}\n")
    result = CliRunner().invoke(cli, ["run", str(mode), "--topic", "bees", "--max-cost", "1",
                                      "-q", "--no-stream"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [saved] = dlg.list_dialogues()
    d = dlg.load_dialogue(saved["id"])
    assert d.metadata["routing"]["router"] == "capabilities"
    assert d.metadata["routing"]["constraints"] == {"quality": "maximum", "max_cost": 1.0}
    shown = CliRunner().invoke(cli, ["show", d.id], catch_exceptions=False).output
    assert "routed by capabilities" in shown and "budget: $" in shown


@pytest.mark.parametrize("bad", ["nosuch", "capabilitys"])
def test_unknown_router_is_a_clear_error(bad):
    with pytest.raises(dlg.DlgError, match=f"'{bad}' is not a known router"):
        dlg.Orchestrator(router=bad, model="echo", store=None).run_sync(
            {"name": "r", "turns": [{"id": "a", "role": "A", "prompt": "x"}]})
    from click.testing import CliRunner

    from dlg.cli import cli

    ran = CliRunner().invoke(cli, ["run", "debate", "-t", "x", "-m", "echo", "--router", bad])
    assert ran.exit_code == 2  # bad usage, as a misspelt participant is


def test_seed_sc3_2_the_learned_router_comes_to_prefer_the_best():
    """The seed's SC3.2: equal at first; after 100 rated dialogues the learned router
    prefers the model that does the task best."""
    import random

    entries = {name: {"capabilities": ["analysis"], "quality": 80,
                      "price": {"input": 1, "output": 2}} for name in ("grok", "claude")}
    models, registry = market(entries)
    hidden = {"grok": 0.55, "claude": 0.8}  # what a judge would score, on average
    mode = {"name": "s", "turns": [{"id": "synthesis", "role": "synthesis",
                                    "requires": ["analysis"], "prompt": "x"}]}
    orchestrator = dlg.Orchestrator(pool=models, registry=registry, router="learned?seed=7")
    stats = orchestrator.routing_stats()
    assert stats.get("synthesis", {}) == {}  # equal: nothing learned yet
    rng = random.Random(1)
    chosen = []
    for _ in range(100):
        d = orchestrator.run_sync(mode)
        name = d.turns[0].metadata["routing"]["pool_name"]
        chosen.append(name)
        orchestrator.rate(d.id, "synthesis", min(1.0, max(0.0, rng.gauss(hidden[name], 0.1))))
    stats = orchestrator.routing_stats()["synthesis"]
    best = max(stats, key=lambda m: stats[m].mean)
    assert best == "claude"
    assert chosen[-20:].count("claude") >= 16  # it now prefers the best


def test_the_learned_router_starts_equal():
    """With no scores and equal priors, each model is as likely to be tried."""
    import anyio

    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing import RouteRequest

    entries = {name: {"capabilities": ["analysis"], "quality": 80,
                      "price": {"input": 1, "output": 2}} for name in ("grok", "claude")}
    models, registry = market(entries)
    mode = dlg.load_mode({"name": "s", "turns": [
        {"id": "t", "role": "synthesis", "requires": ["analysis"], "prompt": "x"}]})
    router = LearnedRouter(seed=3)
    request = RouteRequest(turn=mode.turns[0], mode=mode, bindings={}, default=None,
                           pool=models, registry=registry)
    picks = [anyio.run(router.route, request).name for _ in range(400)]
    assert 0.4 < picks.count("grok") / 400 < 0.6


def test_dlg_rate_and_routing_stats():
    from click.testing import CliRunner

    from dlg.cli import cli

    models, registry = market({"m": {"capabilities": ["analysis"], "quality": 50,
                                     "price": {"input": 1, "output": 1}}})
    d = dlg.Orchestrator(pool=models, registry=registry).run_sync(
        {"name": "r", "turns": [{"id": "a", "role": "Judge", "requires": ["analysis"],
                                 "prompt": "x"}]})
    runner = CliRunner()
    out = runner.invoke(cli, ["rate", d.id, "a", "8"], catch_exceptions=False).output
    assert out == "m on 'judge': 1 score, mean 0.80\n"
    assert "judge\n  m  n=1     mean 0.800" in runner.invoke(
        cli, ["routing", "stats"], catch_exceptions=False).output
    bad = runner.invoke(cli, ["rate", d.id, "a", "11"])  # bad usage, as documented
    assert bad.exit_code == 2 and "a quality score is from 0 to 10" in bad.output
    missing = runner.invoke(cli, ["rate", d.id, "zz", "5"])
    assert missing.exit_code == 2 and "has no turn 'zz'" in missing.output
    unknown = runner.invoke(cli, ["rate", "nosuch", "a", "5"])
    assert unknown.exit_code == 2 and "no saved dialogue 'nosuch'" in unknown.output


def test_exports_say_why_each_model_was_chosen_and_what_was_spent():
    models, registry = market(MARKET)
    d = dlg.Orchestrator(pool=models, registry=registry, max_cost=1.0, store=None).run_sync(
        SC31, topic="x")
    markdown = d.export("markdown")
    assert "> routed by capabilities: needs reasoning" in markdown
    assert f"- Budget: ${d.total_cost_usd:.5f} spent of $1" in markdown
    html = d.export("html")
    assert "routed by capabilities: needs reasoning" in html and "<b>$" in html


def test_a_cooling_model_is_not_routed_to():
    from dlg.models.resilience import cooldowns

    models, registry = market(MARKET)
    for _ in range(3):
        cooldowns.failed("grok-4")
    d = dlg.Orchestrator(pool=models, registry=registry, store=None).run_sync(SC31, topic="x")
    assert d.turns[0].model != "grok-4"
    assert "2 of 4 pool models eligible" in d.turns[0].metadata["routing"]["reason"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.floats(0.0005, 0.05), seed=st.integers(0, 1000))
def test_property_no_overspend_with_structured_repairs(budget, seed):
    """Repairs of structured answers reserve their worst case too."""
    entries = {"m": {"capabilities": ["analysis"], "quality": 50,
                     "price": {"input": 5, "output": 40}}}
    models, registry = market(entries)
    models["m"].random_usage, models["m"].seed = True, seed  # never valid JSON: repairs
    mode = {"name": "rep", "turns": [
        {"id": f"t{i}", "role": "R", "requires": ["analysis"], "prompt": "go",
         "output": {"schema": {"type": "object"}, "retries": 3}} for i in range(3)]}
    d = dlg.Orchestrator(pool=models, registry=registry, max_cost=budget,
                         store=None).run_sync(mode)
    assert d.total_cost_usd <= budget + 1e-12


def test_dlg_run_routes_over_its_pool_as_dlg_run_does(monkeypatch, tmp_path):
    """``dlg.run(pool=...)`` and ``run_sync`` forced the ``participants`` router, so the
    pool went unused; the default is the mode's router, else ``capabilities`` with a pool
    (docs/routing.md), as for ``dlg run --pool``."""
    monkeypatch.setenv("DLG_MODEL", "echo?words=1")  # what the participants router picks
    mode = {"name": "pooled", "turns": [{"id": "a", "role": "A", "prompt": "hi"}]}
    d = dlg.run_sync(mode, pool=["echo?words=3"], store=None)
    assert d.turns[0].model == "echo?words=3"
    assert d.turns[0].metadata["routing"]["router"] == "capabilities"
    d = anyio.run(lambda: dlg.run(mode, pool={"three": "echo?words=3"}, store=None))
    assert d.turns[0].model == "echo?words=3"
    assert d.turns[0].metadata["routing"]["pool_name"] == "three"
    # a mode's router: is kept over the pool's default
    own = {**mode, "router": "participants"}
    assert dlg.run_sync(own, pool=["echo?words=3"], store=None).turns[0].model == \
        "echo?words=1"
    # and the caller's router over both
    assert dlg.run_sync(mode, pool=["echo?words=3"], router="participants",
                        store=None).turns[0].model == "echo?words=1"


def test_show_names_the_model_that_answered_when_the_budget_moved_a_turn():
    """Under a budget, prepare may plan a turn on a cheaper fallback than the router's
    pick: `dlg show`'s table named the model that answered and its routing line the
    router's pick. The record (and so the line) names what ran, and says the budget
    moved it; learning routers rate the model that answered."""
    from dlg.cli.saved import _table

    models, registry = market({k: {**v, "completion": 400} for k, v in MARKET.items()})
    d = dlg.Orchestrator(pool=models, registry=registry, max_cost=0.02, store=None,
                         constraints={"quality": "maximum"}).run_sync(SC31, topic="x")
    moved = [t for t in d.turns if t.metadata["routing"].get("budget_moved_from")]
    assert moved, [t.metadata for t in d.turns]
    table = _table(d)
    for t in d.turns:
        routing = t.metadata["routing"]
        assert routing["model"] == t.model  # the line and the table agree
        assert f"turn {t.id} routed by capabilities to {t.model}" in table
    t = moved[0]
    routing = t.metadata["routing"]
    assert routing["pool_name"] == t.model != routing["budget_moved_from"]
    assert (f"turn {t.id} routed by capabilities to {t.model}, as the budget "
            f"(${routing['budget_left']:.5f} left) could not pay for the router's pick "
            f"{routing['budget_moved_from']}: needs ") in table
    assert "could not pay for the router's pick" in d.export("markdown")
    assert "could not pay for the router&#39;s pick" in d.export("html")
    # a fallback that answered after the routed model failed: the line says so
    class Down(Scripted):
        def _generate(self, *args, **kwargs):
            raise ConnectionError("down")

    models, registry = market(MARKET)
    models["claude-opus"] = Down(dlg_label="claude-opus")
    mode = {"name": "one", "turns": [{"id": "a", "role": "A", "requires": ["reasoning"],
                                      "prompt": "x"}]}
    d = dlg.Orchestrator(pool=models, registry=registry, store=None,
                         constraints={"quality": "maximum"}).run_sync(mode)
    assert d.turns[0].replaced == ("claude-opus",) and d.turns[0].model == "grok-4"
    assert "turn a routed by capabilities to claude-opus: needs reasoning; " in _table(d)
    assert _table(d).count("; grok-4 answered in its place (a fallback)\n") == 1


def _learned_request(entries, role="synthesis", store=None, pool=None):
    """A real RouteRequest for one turn over a scripted market, with a quality store."""
    from dlg.running.routing import RouteRequest

    models, registry = market(entries)
    mode = dlg.load_mode({"name": "s", "turns": [
        {"id": "t", "role": role, "requires": ["analysis"], "prompt": "x"}]})
    return RouteRequest(turn=mode.turns[0], mode=mode, bindings={}, default=None,
                        pool=pool or models, registry=registry,
                        quality=(lambda: store) if store is not None else None)


def _picks(router, request, n=200):
    return [anyio.run(router.route, request).name for _ in range(n)]


EQUAL = {name: {"capabilities": ["analysis"], "quality": 80,
                "price": {"input": 1, "output": 2}} for name in ("grok", "claude")}


def test_the_learned_router_forgets_a_model_that_got_worse(tmp_path):
    """After 40 good scores, a model that starts scoring badly loses the task within ten
    scores: its statistics restart from the recent ones (an average of all 50 would
    still put it first), in the store, saved next to the old fields."""
    import random

    from dlg.plugins.learned_router import LearnedRouter
    from dlg.records.store import open_store
    from dlg.running.routing.learning import QualityStat, record_quality

    store = open_store("diskcache", path=str(tmp_path / "q"))
    rng = random.Random(5)
    for _ in range(40):
        record_quality(store, "synthesis", "grok", rng.gauss(0.9, 0.05))
        record_quality(store, "synthesis", "claude", rng.gauss(0.7, 0.05))
    for _ in range(10):  # grok got worse
        record_quality(store, "synthesis", "grok", rng.gauss(0.45, 0.05))
    router = LearnedRouter(seed=1, exploration=0.5)
    picks = _picks(router, _learned_request(EQUAL, store=store))
    assert picks.count("claude") >= 190
    saved = store.quality("synthesis")["grok"]
    assert saved["changes"] >= 1 and saved["since_n"] < 50 and saved["since_mean"] < 0.7
    assert saved["n"] == 50  # every score still counts in the totals `dlg routing stats` shows
    # statistics saved before the recent ones were kept still read, and go on learning
    old = QualityStat.from_dict({"n": 3, "mean": 0.5, "m2": 0.02})
    assert (old.n, old.since_n, old.w, old.recent) == (3, 3, 3.0, 0.5)
    assert old.add(0.8).to_dict()["n"] == 4
    # and a steady model's noise is not taken for a change
    steady = QualityStat()
    for _ in range(300):
        steady = steady.add(min(1.0, max(0.0, rng.gauss(0.7, 0.15))))
    assert steady.changes <= 1 and steady.since_n >= 200


def test_the_learned_router_tries_again_a_model_that_changed_once():
    """A model whose statistics restarted low is not written off: as scores on the task
    go to other models, its belief widens (a random walk, at the rate the pair has
    changed), so it is tried again and a recovery can be seen; a model that never changed
    keeps its spread."""
    import random

    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    store, rng = _Memory(), random.Random(5)
    for _ in range(40):
        record_quality(store, "synthesis", "grok", rng.gauss(0.9, 0.05))
        record_quality(store, "synthesis", "claude", rng.gauss(0.7, 0.05))
    for _ in range(10):  # grok got worse: its statistics restart low
        record_quality(store, "synthesis", "grok", rng.gauss(0.45, 0.05))
    assert store.quality("synthesis")["grok"]["changes"] == 1
    request = _learned_request(EQUAL, store=store)
    assert _picks(LearnedRouter(seed=1, exploration=1.0), request).count("grok") <= 2
    for _ in range(45):  # only claude is scored on the task for a while
        record_quality(store, "synthesis", "claude", rng.gauss(0.7, 0.05))
    assert _picks(LearnedRouter(seed=1, exploration=1.0), request).count("grok") >= 10
    reason = anyio.run(LearnedRouter(seed=1).route, request).reason
    assert "restarted 1x on a change, last scored 45 scores on the task ago, which " \
           "widen its spread from ±0.01" in reason
    assert "claude: estimate 0.70±0.0" in reason  # claude never changed: still sure


def test_the_learned_router_shares_what_other_tasks_taught():
    """A task with no scores yet: a model that beat its catalog quality on the other
    tasks is believed better here too (and one that fell short, worse), so the router
    does not start from the catalog alone."""
    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    entries = {"grok": {**EQUAL["grok"], "quality": 60},
               "claude": {**EQUAL["claude"], "quality": 80}}

    store = _Memory()
    for task in ("hypothesis", "critique", "summary"):
        for score in (0.9, 0.92, 0.88, 0.91, 0.9):
            record_quality(store, task, "grok", score)
            record_quality(store, task, "claude", score - 0.35)
    request = _learned_request(entries, role="synthesis", store=store)
    picks = _picks(LearnedRouter(seed=2, exploration=0.3), request)
    assert picks.count("grok") >= 180  # the catalog alone says claude
    reason = anyio.run(LearnedRouter(seed=2, exploration=0.3).route, request).reason
    assert "grok: estimate" in reason and "from 15 scores on other tasks" in reason


def test_the_learned_router_cost_weight_trades_quality_for_price():
    """``learned?cost_weight=W``: with 0 the better, pricier model; with 0.5 the cheap one,
    nearly as good; a bad value is a clear error."""
    from dlg.plugins.learned_router import LearnedRouter

    entries = {"opus": {"capabilities": ["analysis"], "quality": 90,
                        "price": {"input": 15, "output": 75}},
               "mini": {"capabilities": ["analysis"], "quality": 84,
                        "price": {"input": 0.25, "output": 2}}}
    request = _learned_request(entries)
    quality_first = LearnedRouter().with_options(cost_weight="0", seed="1", exploration="0.2")
    cheap_first = LearnedRouter().with_options(cost_weight="0.5", seed="1", exploration="0.2")
    assert _picks(quality_first, request).count("opus") >= 180
    assert _picks(cheap_first, request).count("mini") >= 180
    models, registry = market(entries)
    mode = {"name": "c", "turns": [{"id": "a", "role": "A", "requires": ["analysis"],
                                    "prompt": "x"}]}
    d = dlg.Orchestrator(pool=models, registry=registry, store=None,
                         router="learned?cost_weight=0.5&seed=3").run_sync(mode)
    assert "cost_weight 0.5" in d.turns[0].metadata["routing"]["reason"]
    with pytest.raises(dlg.DlgError, match="cost_weight is a number, not 'lots'"):
        dlg.Orchestrator(pool=models, registry=registry, store=None,
                         router="learned?cost_weight=lots").run_sync(mode)


def test_the_learned_router_explains_its_pick():
    """The Route's reason names the pick's estimate and spread, its prior and the cost
    term, and the runner-up's."""
    from dlg.plugins.learned_router import LearnedRouter

    route = anyio.run(LearnedRouter(seed=4).route,
                      _learned_request({**EQUAL, "claude": {**EQUAL["claude"], "price": {
                          "input": 10, "output": 20}}}))
    reason = route.reason
    assert reason.startswith("task 'synthesis' (0 scores, exploring 0% of the spread), score "
                             "noise ±0.20 (a prior is worth 1.0 scores), cost_weight 0.08: "
                             "picked " + route.name)
    assert f"{route.name}: estimate 0.80±0.00 (n=0; prior 0.80 = catalog 0.80)" in reason
    assert "cost term -" in reason and "/Mtok), drew " in reason
    assert "; next best " in reason and "2 of 2 pool models eligible" in reason


class _Memory:
    """A quality store in memory (the two methods learning routers use)."""

    def __init__(self):
        self.rows = {}

    def update_quality(self, task, model, update):
        self.rows[(task, model)] = update(self.rows.get((task, model)))
        return self.rows[(task, model)]

    def quality(self, task=None):
        return dict(self.rows) if task is None else {
            m: d for (t, m), d in self.rows.items() if t == task}


THREE = {name: {"capabilities": ["analysis"], "quality": q, "price": {"input": 1, "output": 2}}
         for name, q in (("grok", 82), ("claude", 75), ("gemini", 70))}


def test_the_learned_router_explores_a_task_only_as_it_recurs():
    """A task seen for the first time goes to the model the prior ranks first (exploring
    a task that may never come back does not pay); one with many scores still tries a
    model it knows nothing of (a new one joining the pool)."""
    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    store = _Memory()
    fresh = _picks(LearnedRouter(seed=5), _learned_request(THREE, store=store))
    assert fresh.count("grok") == 200
    for score in (0.8, 0.85, 0.78, 0.82) * 25:  # 100 scores on the task, grok and claude
        record_quality(store, "synthesis", "grok", score)
        record_quality(store, "synthesis", "claude", score - 0.05)
    reason = anyio.run(LearnedRouter(seed=5).route, _learned_request(THREE, store=store)).reason
    assert "(200 scores, exploring 87% of the spread)" in reason
    picks = _picks(LearnedRouter(seed=5), _learned_request(THREE, store=store))
    assert 10 <= picks.count("gemini") <= 120  # never scored here: tried, not taken


def test_the_learned_router_trusts_few_scores_less_from_a_noisy_judge():
    """How far a few scores move a model from its prior depends on the judge's noise,
    pooled over every task and model: three scores of 0.95 from a judge that scatters by
    0.3 move the estimate less than the same three from a steady judge."""
    import random

    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    estimates = {}
    for noise in (0.02, 0.3):
        store, rng = _Memory(), random.Random(3)
        for task in ("critique", "summary", "plan"):
            for _ in range(30):
                record_quality(store, task, "claude", min(1, max(0, rng.gauss(0.6, noise))))
        for score in (0.95, 0.95, 0.95):
            record_quality(store, "synthesis", "grok", score)
        reason = anyio.run(LearnedRouter(seed=1).route,
                           _learned_request(THREE, store=store)).reason
        estimates[noise] = float(reason.split("grok: estimate ")[1][:4])
    assert estimates[0.02] >= 0.93 and estimates[0.3] <= estimates[0.02] - 0.02


def test_the_learned_router_shares_less_from_a_noisy_judge():
    """What other tasks teach of a model (here: 0.1 above its catalog quality, on average)
    is shrunk more when the judge is noisy: from scores of 0.4 and 1.0 it is a smaller
    shift than from steady scores of 0.7, though both average 0.7."""
    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    entries = {name: {**THREE[name], "quality": 60} for name in ("gemini", "claude")}
    shifts = {}
    for name, scores in (("steady", (0.7, 0.7)), ("noisy", (0.4, 1.0))):
        store = _Memory()
        for task in ("critique", "summary"):
            for score in scores * 10:
                record_quality(store, task, "gemini", score)
        reason = anyio.run(LearnedRouter(seed=1).route,
                           _learned_request(entries, store=store)).reason
        shifts[name] = float(reason.split("catalog 0.60 ")[1].split(" from 40 scores")[0])
    assert shifts["steady"] >= 0.08 and shifts["noisy"] <= shifts["steady"] / 2


def test_the_learned_router_counts_a_task_scored_often_as_about_one_task():
    """A model is scored most where it was picked, that is where it does well: 50 scores
    0.2 above its catalog quality on one task and 2 scores 0.1 below it on each of three
    others teach a shift near the mean over the four tasks (-0.025), not the +0.16 of the
    56 scores pooled: a task scored often counts once."""
    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    entries = {name: {**THREE[name], "quality": 60} for name in ("gemini", "claude")}
    store = _Memory()
    for _ in range(50):
        record_quality(store, "critique", "gemini", 0.8)
    for task in ("summary", "plan", "hypothesis"):
        for _ in range(2):
            record_quality(store, task, "gemini", 0.5)
    reason = anyio.run(LearnedRouter(seed=1).route, _learned_request(entries, store=store)).reason
    shift = float(reason.split("catalog 0.60 ")[1].split(" from 56 scores")[0])
    assert -0.03 <= shift <= 0.07



def test_the_learned_router_shift_is_diluted_by_tasks_a_model_was_never_scored_on():
    """As measured (session 5, dilution), kept: a model's shift is the sum of what the other
    tasks say of it over EVERY other task in the store, a task it was never scored on
    counting as 0. A model 0.1 above its catalog quality on 5 tasks (6 scores each) is
    believed +0.05 better on a new task when those are all the store holds, +0.01 in a store
    of 50 tasks. Dividing by the tasks it was scored on plus 3 instead (+0.04 and +0.05)
    changed no scenario of bench_routing.py beyond noise, and left the model of
    test_the_learned_router_shares_what_other_tasks_taught unpicked."""
    from dlg.plugins.learned_router import LearnedRouter
    from dlg.running.routing.learning import record_quality

    entries = {name: {**THREE[name], "quality": 60} for name in ("gemini", "claude")}
    shifts = {}
    for tasks in (6, 50):
        store = _Memory()
        for i in range(tasks):
            for score in (0.55, 0.65) * 3:
                record_quality(store, f"task{i}", "claude", score)
        for i in range(5):
            for score in (0.65, 0.75) * 3:
                record_quality(store, f"task{i}", "gemini", score)
        reason = anyio.run(LearnedRouter(seed=1).route,
                           _learned_request(entries, store=store)).reason
        shifts[tasks] = float(
            reason.split("gemini: estimate")[1].split("catalog 0.60 ")[1].split(" from")[0])
    assert shifts[6] >= 0.04 and shifts[50] <= 0.015
