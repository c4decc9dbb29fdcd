"""A budget's prompt counts: the model's own tokenizer where one is registered (a tighter
bound than bytes), the best estimate for billed failures, and what a stop says when not
even the first turn fits."""

from __future__ import annotations

from typing import Any

import pytest

import dlg
from dlg.models.tokens import PromptSize, register_tokenizer, unregister_tokenizer
from dlg.running.budget import Budget
from dlg.running.budget import PromptSize as Exported

from .routing_support import Scripted, market
from .test_budgets import PRICE, THREE, Failing, _run

LONG = ("lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 350).strip()
ONE_LONG = {"name": "long", "settings": {"max_tokens": 100},
            "turns": [{"id": "t0", "role": "R", "prompt": LONG}]}


def _words(text: str) -> int:
    """A stand-in for a model's tokenizer: about a token a word plus punctuation."""
    return len(text.split()) + text.count(",") + text.count(".")


@pytest.fixture
def tokenizer():
    register_tokenizer("big", _words)
    yield _words
    unregister_tokenizer("big")


def test_a_registered_tokenizer_bounds_the_prompt_tighter_than_its_bytes(tokenizer):
    size = PromptSize(LONG)
    assert Exported is PromptSize
    assert size.bound("big") == _words(LONG) + 16 < size.bound("other") == len(LONG) + 16
    assert size.estimate("other") == -(-len(LONG) // 4) + 6  # four characters a token, 3 a message
    assert size.estimate("big") == size.bound("big")


def test_a_tokenizer_that_breaks_leaves_the_byte_bound():
    def broken(text: str) -> int:
        raise RuntimeError("no vocabulary")

    register_tokenizer("flaky", broken)
    try:
        assert PromptSize("héllo").bound("flaky") == len("héllo".encode()) + 16
    finally:
        unregister_tokenizer("flaky")


def test_the_first_turn_runs_when_the_tokenizer_shows_it_fits(tokenizer):
    """The byte bound (20,000 tokens at $10/M: $0.20) is past a $0.10 limit; the prompt is
    about 5,000 tokens ($0.05), which the model's tokenizer shows."""
    _, registry = market({"big": PRICE})
    model = Scripted(dlg_label="big")
    d = _run(model, registry, ONE_LONG, max_cost=0.10)
    assert d.status == "completed" and model.calls == 1
    assert d.total_cost_usd <= 0.10


def test_when_not_even_the_first_turn_fits_the_reason_says_by_how_much_and_the_estimate():
    _, registry = market({"big": PRICE})
    model = Scripted(dlg_label="big")
    d = _run(model, registry, ONE_LONG, max_cost=0.10)
    assert d.status == "cost_limited" and model.calls == 0
    reason = d.metadata["stopped"]["reason"]
    bound = len(LONG) + 16
    worst = bound * 10e-6 + 64 * 100e-6
    assert f"a prompt of at most {bound} tokens, estimated {-(-len(LONG) // 4) + 6}" in reason
    assert f"its least worst case, on big, is ${worst:.6f}" in reason
    assert f"${worst - 0.10:.6f} more than is left" in reason


def test_a_turn_whose_every_attempt_failed_is_charged_the_estimate_not_the_bound():
    """The provider bills what it counted (about four characters a token here), not the
    prompt's bytes: the ledger keeps to the bill."""
    _, registry = market({"big": PRICE})
    model = Failing(dlg_label="big", failures=10)
    d = _run(model, registry, ONE_LONG, max_cost=1.0)
    first = d.turns[0]
    billed = [a for a in first.attempts if a.get("billed")]
    assert first.status == "failed" and billed
    bill = len(billed) * (len(LONG) // 4) * 10e-6  # what Scripted would report
    assert first.cost_usd == pytest.approx(len(billed) * (-(-len(LONG) // 4) + 6) * 10e-6)
    assert first.cost_usd < 1.01 * bill
    assert d.metadata["budget"]["spent"] == round(first.cost_usd, 10)


def test_billed_failures_are_counted_by_the_models_tokenizer(tokenizer):
    _, registry = market({"big": PRICE})
    model = Failing(dlg_label="big", failures=10)
    d = _run(model, registry, ONE_LONG, max_cost=1.0)
    first = d.turns[0]
    n = sum(1 for a in first.attempts if a.get("billed"))
    assert first.cost_usd == pytest.approx(n * (_words(LONG) + 16) * 10e-6)


def test_budget_methods_take_a_plain_count_too():
    _, registry = market({"big": PRICE})
    budget = Budget(1.0, registry)
    assert budget.worst_case("big", 1000, 10) == pytest.approx(1000 * 10e-6 + 10 * 100e-6)
    held = budget.reserve("big", PromptSize("x" * 400), 10)
    assert held.amount == pytest.approx((400 + 16) * 10e-6 + 10 * 100e-6)


def test_the_summarisers_calls_are_charged_to_the_budget(tmp_path: Any):
    """Under a limit, what the summariser cost is in the dialogue's ledger, the reading
    turn's cost and the dialogue's total."""
    from .test_compression import Billed, _long

    class Priced(Billed):
        dlg_label: str = "big"

    _, registry = market({"big": PRICE})
    d = dlg.Orchestrator(model=Priced(), registry=registry, store=None,
                         max_cost=5.0).run_sync(_long("Answer."))
    assert d.status == "completed"
    last = d.turn("last")
    bill = last.metadata["context"]["summariser"]
    assert bill["calls"] == 5 and bill["cost_usd"] > 0
    assert last.cost_usd > bill["cost_usd"]
    assert d.metadata["budget"]["spent"] == pytest.approx(d.total_cost_usd, abs=1e-9)
    assert d.total_cost_usd == pytest.approx(sum(t.cost_usd or 0 for t in d.turns))


# -- turns running at once under one limit wait for each other's reservations --------

PARALLEL = {"name": "wide", "structure": "parallel",
            "turns": [{"id": f"p{k}", "role": "R", "prompt": "go"} for k in range(3)]}
COSTLY = {"price": {"input": 15, "output": 75}}  # 4,096 tokens out: $0.31


def test_a_parallel_turn_waits_for_its_siblings_reservations_rather_than_stop():
    """The first turn's worst case takes nearly all of a $0.25 limit; its answer costs
    $0.004. The turns beside it wait for that reservation to be settled, then run."""
    _, registry = market({"big": COSTLY})
    model = Scripted(dlg_label="big")
    d = _run(model, registry, PARALLEL, max_cost=0.25)
    assert d.status == "completed" and model.calls == 3, d.metadata.get("stopped")
    assert d.total_cost_usd < 0.02


def test_sub_dialogues_running_at_once_share_the_limit_without_stopping(tmp_path: Any):
    """The seed's tree: three sub-dialogues at once under a $0.25 limit, the whole tree
    costing well under a cent."""
    from .subdialogue_support import CHILD, PARENT, Tree

    (tmp_path / "tree.yaml").write_text(PARENT)
    (tmp_path / "explore.yaml").write_text(CHILD)
    _, registry = market({"tree": COSTLY})
    d = dlg.Orchestrator(model=Tree(calls=[]), registry=registry, store=None,
                         retry=dlg.RetryPolicy(base_delay=0.0), max_cost=0.25
                         ).run_sync(tmp_path / "tree.yaml", topic="t")
    assert d.status == "completed", d.metadata.get("stopped")
    assert d.total_cost_usd < 0.25


def test_a_tokenizer_counts_in_a_worker_thread_never_on_the_event_loop():
    """Loading an encoding takes about 0.2 s (tiktoken's, once per process) and counting a
    long transcript takes more each turn: neither may stall every other dialogue and the
    viewer sharing the event loop. A budgeted dialogue with a structured turn (a repair
    too) counts every prompt in a worker thread."""
    import contextlib

    import sniffio

    on_loop: list[str] = []

    def counting(text: str) -> int:
        with contextlib.suppress(sniffio.AsyncLibraryNotFoundError):  # a worker thread
            on_loop.append(sniffio.current_async_library())
        return _words(text)

    register_tokenizer("big", counting)
    try:
        _, registry = market({"big": PRICE})
        mode = {"name": "two", "settings": {"max_tokens": 100}, "turns": [
            {"id": "t0", "role": "R", "prompt": LONG},
            {"id": "t1", "role": "R", "prompt": "again",
             "output": {"schema": {"type": "object", "required": ["x"]}, "retries": 1}}]}
        d = _run(Scripted(dlg_label="big"), registry, mode, max_cost=1.0)
    finally:
        unregister_tokenizer("big")
    assert d.turns[0].status == "completed" and d.turns[1].status in ("completed", "failed")
    assert on_loop == []


# -- a provider's tokenizer hook is asked once per label per plugin manager ----------


def _hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The prompts counted in a worker thread (``anyio.to_thread.run_sync`` of a
    ``PromptSize``'s ``count``), one entry a hop."""
    import anyio.to_thread

    hops: list[Any] = []
    real = anyio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(getattr(fn, "__self__", None), PromptSize):
            hops.append(args)
        return await real(fn, *args, **kw)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


def test_an_openai_model_without_its_encoding_takes_no_thread_hop_after_its_first_turn(
        pm, monkeypatch):
    """No encoding in tiktoken's cache (the tests' TIKTOKEN_CACHE_DIR is empty): the
    provider's tokenizer is asked on the first turn, in a worker thread, and says none;
    the next turns are bounded by bytes on the event loop, without asking it again."""
    from dlg.plugins import openai_tokens

    asked: list[str] = []
    named = openai_tokens.encoding_name
    monkeypatch.setattr(openai_tokens, "encoding_name",
                        lambda model: asked.append(model) or named(model))
    hops = _hops(monkeypatch)
    _, registry = market({"openai:gpt-4o-mini": PRICE})
    model = Scripted(dlg_label="openai:gpt-4o-mini")
    d = _run(model, registry, THREE, max_cost=1.0)
    assert d.status == "completed" and model.calls == 3
    assert asked == ["gpt-4o-mini"] and len(hops) == 1
    assert d.turns[2].metadata["budget"]["reserved"] == pytest.approx(
        (len(d.turns[2].prompt.encode()) + 16) * 10e-6 + 100 * 100e-6)


def _acme(asked: list[str]) -> Any:
    """A provider whose tokenizer counts ``acme:big`` (by words) and not ``acme:plain``."""
    from dlg import hookimpl

    def tokenizer(model: str, options: dict[str, Any]) -> Any:
        asked.append(model)
        return _words if model == "big" else None

    class Acme:
        @hookimpl
        def register_models(self, register: Any) -> None:
            register("acme", lambda name, options: Scripted(dlg_label=f"acme:{name}"),
                     tokenizer=tokenizer)

    return Acme()


def test_a_providers_tokenizer_is_asked_once_per_label_per_plugin_manager(pm, monkeypatch):
    """A label with a count still counts every turn's prompt in a worker thread; one
    without takes one hop, on its first turn. A plugin manager made later asks again
    (nothing kept from the first one poisons it)."""
    from dlg.plugin_manager import build_plugin_manager, reset_plugin_manager

    asked: list[str] = []
    pm.register(_acme(asked), name="acme")
    hops = _hops(monkeypatch)
    _, registry = market({"acme:big": PRICE, "acme:plain": PRICE})
    for label in ("acme:big", "acme:plain"):
        assert _run(Scripted(dlg_label=label), registry, THREE, max_cost=1.0
                    ).status == "completed"
    assert asked == ["big", "plain"]
    assert len(hops) == 3 + 1  # each of big's turns, plain's first
    later = build_plugin_manager(autoload=False)
    later.register(_acme(asked), name="acme")
    reset_plugin_manager(later)
    d = _run(Scripted(dlg_label="acme:big"), registry, THREE, max_cost=1.0)
    assert asked == ["big", "plain", "big"] and len(hops) == 3 + 1 + 3
    assert d.turns[0].metadata["budget"]["reserved"] == pytest.approx(
        (_words(d.turns[0].prompt) + 16) * 10e-6 + 100 * 100e-6)


def test_a_provider_is_asked_again_once_its_plugin_managers_plugins_change(pm):
    """The answers kept are those of the plugins registered when asked: a plugin added
    later (which may register the provider anew) is asked."""
    from dlg import hookimpl
    from dlg.models.tokens import has_tokenizer

    asked: list[str] = []
    pm.register(_acme(asked), name="acme")
    assert PromptSize("a b c", pm).bound("acme:plain") == len("a b c") + 16
    assert not has_tokenizer("acme:plain", pm) and asked == ["plain"]

    class Counts:
        @hookimpl
        def register_models(self, register: Any) -> None:
            register("acme", lambda name, options: None, tokenizer=lambda m, o: _words)

    pm.register(Counts(), name="acme-counts")
    assert has_tokenizer("acme:plain", pm)
    assert PromptSize("a b c", pm).bound("acme:plain") == 3 + 16


def test_a_slow_providers_tokenizer_holds_up_no_other_labels_ask(pm):
    """One provider's tokenizer loading slowly (a worker thread of one dialogue) keeps no
    other label waiting: another dialogue's worker, or the event loop weighing a registry
    fallback after a failure (``Budget.allows``), asks its own provider at once."""
    import threading

    from dlg import hookimpl

    loading, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow(model: str, options: dict[str, Any]) -> Any:
        loading.set()
        release.wait(60)  # a deadlock guard only: the test sets it
        return _words

    class Slow:
        @hookimpl
        def register_models(self, register: Any) -> None:
            register("slow", lambda name, options: None, tokenizer=slow)
            register("fast", lambda name, options: None, tokenizer=lambda m, o: _words)

    pm.register(Slow(), name="slow")
    first = threading.Thread(target=lambda: PromptSize("a b", pm).bound("slow:x"))
    first.start()
    try:
        assert loading.wait(60)
        other = threading.Thread(
            target=lambda: PromptSize("a b c", pm).bound("fast:y") == 3 + 16 and done.set())
        other.start()
        other.join(30)  # a deadlock guard: it returns at once unless held up
        assert done.is_set()
    finally:
        release.set()
        first.join()
    assert PromptSize("a b", pm).bound("slow:x") == 2 + 16


def test_the_answers_kept_per_plugin_manager_are_bounded(pm):
    """A long-running process (``dlg serve``, a batch of thousands of specs) keeps at most
    ``MAX_ASKED`` labels' answers per plugin manager, the oldest dropped first (asked
    again if seen again)."""
    from dlg import hookimpl
    from dlg.models import tokens

    asked: list[str] = []

    class Counts:
        @hookimpl
        def register_models(self, register: Any) -> None:
            register("acme", lambda name, options: None,
                     tokenizer=lambda m, o: asked.append(m) or _words)

    pm.register(Counts(), name="acme")
    for n in range(tokens.MAX_ASKED + 50):
        assert PromptSize("a b c", pm).bound(f"acme:m{n}") == 3 + 16
    assert len(tokens._ASKED[pm]) == tokens.MAX_ASKED
    PromptSize("a b c", pm).bound(f"acme:m{tokens.MAX_ASKED + 49}")  # kept: not asked again
    assert len(asked) == tokens.MAX_ASKED + 50
    PromptSize("a b c", pm).bound("acme:m0")  # dropped: asked again
    assert asked[-1] == "m0" and len(asked) == tokens.MAX_ASKED + 51


def test_a_registry_fallbacks_prompt_is_counted_in_a_worker_thread_too(pm):
    """After the primary fails, the budget weighs the model registry's fallback for it on
    the event loop (``Budget.allows``, ``Budget.covers``): its provider was asked and the
    prompt counted for it in the worker thread before the call, never there."""
    import contextlib

    import sniffio

    from dlg import hookimpl

    on_loop: list[str] = []

    def counting(text: str) -> int:
        with contextlib.suppress(sniffio.AsyncLibraryNotFoundError):  # a worker thread
            on_loop.append(sniffio.current_async_library())
        return _words(text)

    def tokenizer(model: str, options: dict[str, Any]) -> Any:
        with contextlib.suppress(sniffio.AsyncLibraryNotFoundError):
            on_loop.append(f"asked for {model} on {sniffio.current_async_library()}")
        return counting

    class Acme:
        @hookimpl
        def register_models(self, register: Any) -> None:
            register("acme", lambda name, options: Failing(dlg_label=f"acme:{name}",
                                                            failures=10) if name == "a"
                     else Scripted(dlg_label=f"acme:{name}"), tokenizer=tokenizer)

    pm.register(Acme(), name="acme")
    _, registry = market({"acme:a": {**PRICE, "fallbacks": ["acme:b"]}, "acme:b": PRICE})
    mode = {"name": "one", "settings": {"max_tokens": 100},
            "turns": [{"id": "t0", "role": "R", "prompt": LONG}]}
    d = _run("acme:a", registry, mode, max_cost=1.0)
    first = d.turns[0]
    assert first.status == "completed" and first.model == "acme:b"
    assert on_loop == []


def test_a_registry_fallbacks_provider_is_asked_once_off_the_loop_without_a_hop_a_turn(
        pm, monkeypatch):
    """A primary with no tokenizer and a registry fallback with one: the fallback's
    provider is asked once, in the worker thread of the first turn; the later turns take
    no thread for a model they may never try."""
    import contextlib

    import sniffio

    from dlg import hookimpl

    asked: list[str] = []

    def tokenizer(model: str, options: dict[str, Any]) -> Any:
        where = "thread"
        with contextlib.suppress(sniffio.AsyncLibraryNotFoundError):
            where = sniffio.current_async_library()
        asked.append(f"{model} on {where}")
        return _words

    class Two:
        @hookimpl
        def register_models(self, register: Any) -> None:
            register("plain", lambda name, options: Scripted(dlg_label=f"plain:{name}"))
            register("acme", lambda name, options: Scripted(dlg_label=f"acme:{name}"),
                     tokenizer=tokenizer)

    pm.register(Two(), name="two")
    hops = _hops(monkeypatch)
    _, registry = market({"plain:a": {**PRICE, "fallbacks": ["acme:b"]}, "acme:b": PRICE})
    d = _run("plain:a", registry, THREE, max_cost=1.0)
    assert d.status == "completed"
    assert asked == ["b on thread"] and len(hops) == 1
