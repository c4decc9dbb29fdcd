"""Provider prompt caching: passed through where the provider has it, and recorded.

Real adapters (langchain-openai, langchain-anthropic) against real HTTP servers on
127.0.0.1 that report cached prompt tokens as the providers do."""

from __future__ import annotations

import pytest

import dlg
from dlg.models.catalog import ModelRegistry

from .servers import FakeAnthropic, FakeOpenAI

ONE = {"name": "one", "turns": [{"id": "a", "role": "A", "prompt": "Say hi"}]}


def priced(spec: str) -> ModelRegistry:
    registry = ModelRegistry.load()
    registry.add({"models": {spec: {"price": {"input": 3.0, "output": 15.0,
                                              "cached_input": 0.3}}}}, "test")
    return registry


def test_cached_tokens_read_by_openai_are_recorded_and_priced_as_cached(monkeypatch):
    pytest.importorskip("langchain_openai")
    with FakeOpenAI(cached=1) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        d = dlg.Orchestrator(model="openai:gpt-4o-mini", registry=priced(
            "openai:gpt-4o-mini"), store=None).run_sync(ONE)
    usage = d.turns[0].usage
    assert usage.prompt == 2 and usage.cached == 1 and usage.to_dict()["cached"] == 1
    # one token at $3/M, one at the cached $0.30/M, four out at $15/M
    assert d.turns[0].cost_usd == pytest.approx((3.0 + 0.3 + 4 * 15.0) / 1e6)


def test_anthropic_prompt_caching_is_asked_for_with_cache_true(monkeypatch):
    pytest.importorskip("langchain_anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    with FakeAnthropic(input_tokens=2000, cache_read=1500) as server:
        spec = f"anthropic:claude-haiku-4-5?cache=true&base_url={server.base_url}"
        d = dlg.Orchestrator(model=spec, registry=priced("anthropic:claude-haiku-4-5"),
                             store=None).run_sync(ONE)
        plain = dlg.Orchestrator(model=spec.replace("cache=true&", ""), store=None,
                                 registry=priced("anthropic:claude-haiku-4-5")).run_sync(ONE)
    assert d.status == plain.status == "completed", (d.error, plain.error)
    cached, uncached = (r["body"] for r in server.requests)
    assert cached["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in uncached
    usage = d.turns[0].usage
    assert usage.prompt == 2000 and usage.cached == 1500
    assert d.turns[0].cost_usd == pytest.approx((500 * 3.0 + 1500 * 0.3 + 3 * 15.0) / 1e6)
    # in the record (as its schema says) and shown where people read usage
    import json

    from jsonschema import Draft202012Validator

    from tests.conftest import ROOT

    schema = json.loads((ROOT / "schemas" / "dialogue.schema.json").read_text())
    Draft202012Validator(schema).validate(json.loads(d.export("json")))
    assert "2000 in (1500 cached)" in d.export("markdown")
    assert "1500 cached" in d.export("html")


def test_each_event_loop_gets_its_own_anthropic_client(monkeypatch):
    """As for openai (tests/test_openai_adapter.py): langchain-anthropic shares an HTTP
    client per base URL across the process, and on a server that keeps connections alive
    the next event loop's call read them from the closed one."""
    pytest.importorskip("langchain_anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    with FakeAnthropic(keep_alive=True) as server:
        spec = f"anthropic:claude-haiku-4-5?base_url={server.base_url}"
        orchestrator = dlg.Orchestrator(model=spec, store=None)
        for fresh in (True, True, False, False):
            run = dlg.Orchestrator(model=spec, store=None) if fresh else orchestrator
            d = run.run_sync(ONE)
            assert d.status == "completed", [t.error for t in d.turns]
    assert len(server.requests) == 4
