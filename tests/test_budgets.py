"""Budgets that finish the dialogue: overruns, billed failed attempts, totals over
sub-dialogues, the cheapest-finish reserve and a batch total's admission."""

from __future__ import annotations

from typing import Any

import dlg

from .routing_support import Scripted, market


class OverReporting(Scripted):
    """Reports ``factor`` times the output tokens it was given room for."""

    factor: float = 3.0

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        out = super()._generate(messages, stop, run_manager, **kwargs)
        meta = out.generations[0].message.usage_metadata
        meta["output_tokens"] = int((kwargs.get("max_tokens") or 100) * self.factor)
        return out


class ServerError(Exception):
    """A provider's 500: the request reached it (its input presumed billed)."""

    status_code = 500


class Failing(Scripted):
    """Fails its first ``failures`` calls with ``error``, then answers."""

    failures: int = 1
    error: Any = ServerError

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            self.calls += 1
            raise self.error("the provider broke")
        return super()._generate(messages, stop, run_manager, **kwargs)


THREE = {"name": "three", "settings": {"max_tokens": 100}, "turns": [
    {"id": f"t{i}", "role": "R", "prompt": "go"} for i in range(3)]}
PRICE = {"capabilities": ["analysis"], "quality": 80, "price": {"input": 10, "output": 100}}


def _run(model: Any, registry: Any, mode: Any = THREE, **kw: Any) -> Any:
    return dlg.Orchestrator(model=model, registry=registry, store=None,
                            retry=dlg.RetryPolicy(base_delay=0.0), **kw).run_sync(mode)


def test_an_overrun_is_recorded_and_stops_the_dialogue_before_its_next_call():
    _, registry = market({"big": PRICE})
    model = OverReporting(dlg_label="big", factor=5.0)
    # one turn reserves ~$0.01 (100 tokens out at $100/M); it reports 500 tokens: $0.05
    d = _run(model, registry, max_cost=0.03)
    first = d.turns[0]
    assert first.status == "completed"
    assert first.metadata["budget"]["overrun"] > 0.03
    assert d.status == "cost_limited" and model.calls == 1
    assert "more than was reserved" in d.metadata["stopped"]["reason"]
    assert d.turns[1].status == "pending"


def test_an_overrun_within_the_limit_is_recorded_and_the_dialogue_goes_on():
    _, registry = market({"big": PRICE})
    model = OverReporting(dlg_label="big", factor=1.5)
    d = _run(model, registry, max_cost=1.0)
    assert d.status == "completed" and model.calls == 3
    assert all(t.metadata["budget"]["overrun"] > 0 for t in d.turns)
    assert d.metadata["budget"]["spent"] == round(d.total_cost_usd, 10)


def test_billed_failed_attempts_are_counted_in_the_ledger_and_the_turns_cost():
    _, registry = market({"big": PRICE})
    model = Failing(dlg_label="big", failures=2)
    d = _run(model, registry, max_cost=1.0)
    assert d.status == "completed"
    first = d.turns[0]
    assert [a.get("billed") for a in first.attempts] == [True, True]
    billed = first.metadata["budget"]["billed_failures"]
    assert billed > 0
    answer = registry.cost("big", first.usage.prompt, first.usage.completion)
    assert first.cost_usd == round(answer + billed, 12) or abs(
        first.cost_usd - (answer + billed)) < 1e-12
    assert abs(d.metadata["budget"]["spent"] - d.total_cost_usd) < 1e-9


def test_a_refusal_before_any_work_is_not_billed():
    class BadRequest(Exception):
        status_code = 400

    _, registry = market({"big": PRICE})
    model = Failing(dlg_label="big", failures=1, error=BadRequest)
    d = _run(model, registry, max_cost=1.0)
    first = d.turns[0]
    assert first.status == "failed" and not first.attempts[0].get("billed")
    assert not first.cost_usd and d.metadata["budget"]["spent"] == 0


def test_a_turn_whose_every_attempt_failed_is_charged_what_was_billed():
    _, registry = market({"big": PRICE})
    model = Failing(dlg_label="big", failures=10)
    d = _run(model, registry, max_cost=1.0)
    first = d.turns[0]
    assert first.status == "failed" and first.cost_usd > 0
    assert d.metadata["budget"]["spent"] == round(first.cost_usd, 10)


def test_total_cost_includes_the_sub_dialogues(tmp_path):
    """``Dialogue.total_cost_usd`` is what the tree drew from its budget; the dialogue's
    own turns are ``own_cost_usd`` (and its metrics)."""
    from .subdialogue_support import CHILD, PARENT, Tree

    registry = dlg.ModelRegistry.load()
    registry.add({"models": {"tree": {"price": {"input": 1000, "output": 1000}}}}, "test")
    mode = tmp_path / "tree.yaml"
    mode.write_text(PARENT)
    (tmp_path / "explore.yaml").write_text(CHILD)
    d = dlg.Orchestrator(model=Tree(calls=[]), registry=registry, store=None).run_sync(
        mode, topic="t")
    assert d.status == "completed" and d.subdialogues
    children = sum(c.total_cost_usd for c in d.subdialogues)
    assert children > 0
    assert d.own_cost_usd == d.metrics.total_cost_usd
    assert abs(d.total_cost_usd - (d.own_cost_usd + children)) < 1e-9


def test_seed_sc3_3_the_loop_finishes_within_any_budget_above_ten_cents():
    """The seed's SC3.3 acceptance: "complete useful dialogue within any cost constraint
    >$0.10". The router wants the best model every turn; a greedy budget spends on it
    early and stops with turns unrun. Holding back the cheapest finish of the turns to
    come, every budget above $0.10 finishes all eight turns, and none is passed."""
    from .test_routing import MARKET

    entries = {k: {**v, "completion": 400} for k, v in MARKET.items() if k != "mini"}
    for limit in (0.101, 0.12, 0.15, 0.2, 0.5):
        models, registry = market(entries)
        d = dlg.Orchestrator(pool=models, registry=registry, store=None, max_cost=limit,
                             constraints={"quality": "maximum"}).run_sync(
                                 dlg.load_mode("loop"), topic="AI safety")
        assert d.status == "completed" and d.turns_completed == 8, (limit, d.status)
        assert d.total_cost_usd <= limit
        assert d.turns[0].model == "claude-opus"  # the best while the money allows
        assert d.turns[0].metadata["held_for_rest"] > 0


def test_a_batch_total_starts_only_the_dialogues_its_remainder_can_finish():
    """50 debates at once under a total that pays for about 15: a total that let every
    dialogue start left 1 finished and 49 part-done; admitted only while the remainder
    can finish them, as many finish as an oracle schedule would (>= 90% of it)."""
    import anyio

    models, registry = market({"m": {"capabilities": ["reasoning", "analysis"],
                                     "quality": 80, "price": {"input": 3, "output": 15},
                                     "completion": 300}})
    mode = dlg.load_mode("debate")
    one = dlg.Orchestrator(model=models["m"], registry=registry, store=None).run_sync(
        mode, topic="x")
    oracle = int(0.5 // one.total_cost_usd)
    rows = [{"topic": f"t{i}"} for i in range(50)]
    result = anyio.run(lambda: dlg.Orchestrator(
        model=models["m"], registry=registry, store=None).batch(
            mode, rows, concurrency=50, max_total_cost=0.5))
    statuses = result.totals["statuses"]
    assert statuses.get("completed", 0) >= 0.9 * oracle, (statuses, oracle)
    assert result.totals["cost_usd"] <= 0.5 + 1e-9
    part_done = [i for i in result.items if i.status == "cost_limited" and i.spent_usd > 0]
    assert len(part_done) <= 1
