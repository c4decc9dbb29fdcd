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


def test_anthropic_cache_reads_and_writes_are_recorded_and_priced(monkeypatch):
    pytest.importorskip("langchain_anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    with FakeAnthropic(input_tokens=2000, cache_read=1500) as server:
        spec = f"anthropic:claude-haiku-4-5?base_url={server.base_url}"
        d = dlg.Orchestrator(model=spec, registry=priced("anthropic:claude-haiku-4-5"),
                             store=None).run_sync(ONE)
    assert d.status == "completed", d.error
    usage = d.turns[0].usage
    assert usage.prompt == 2000 and usage.cached == 1500
    assert d.turns[0].cost_usd == pytest.approx((500 * 3.0 + 1500 * 0.3 + 3 * 15.0) / 1e6)
    saved = 1500 * (3.0 - 0.3) / 1e6
    assert d.turns[0].metadata["cache"]["saved_usd"] == pytest.approx(saved)
    # in the record (as its schema says) and shown where people read usage
    import json

    from jsonschema import Draft202012Validator

    from tests.conftest import ROOT

    schema = json.loads((ROOT / "schemas" / "dialogue.schema.json").read_text())
    Draft202012Validator(schema).validate(json.loads(d.export("json")))
    assert "2000 in (1500 cached, $0.00405 saved)" in d.export("markdown")
    assert "1500 cached" in d.export("html") and "$0.00405 saved" in d.export("html")


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


# -- breakpoints, cache keys and a layout the caches can use (a local server that caches
# as the provider does: tests/cache_servers.py)

FOUR = {"name": "four", "inputs": {"topic": {"required": True}},
        "system": "A debate on {{ topic }}. Argue in good faith.",
        "participants": {"pro": None, "con": None},
        "turns": [{"id": f"t{i}", "role": "Pro" if i % 2 else "Con",
                   "participant": "pro" if i % 2 else "con",
                   "prompt": f"Make point {i} on {{{{ topic }}}}."} for i in range(1, 5)]}
LONG = ("  An answer long enough to be worth caching, with a claim, a reason and an example "
        "that the other side will have to answer in the turns that follow this one.\n\n")


def _marked(body):
    blocks = [b for b in (body["system"] if isinstance(body.get("system"), list) else [])]
    for m in body["messages"]:
        if isinstance(m["content"], list):
            blocks += m["content"]
    return [b for b in blocks if "cache_control" in b]


def test_anthropic_marks_the_stable_prefix_by_default_so_the_next_turn_reads_it(monkeypatch):
    """Before: ``cache`` was off unless asked (no breakpoint, nothing read), and with
    ``?cache=true`` one breakpoint at the end of the whole prompt, which the next turn's
    prompt (one block with one more turn in it) never matched."""
    pytest.importorskip("langchain_anthropic")
    from .cache_servers import CachingAnthropic

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    registry = ModelRegistry.load()
    registry.add({"models": {"anthropic:claude-sonnet-4-5": {"price": {
        "input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75}}}}, "test")
    with CachingAnthropic(answer=lambda body: LONG, minimum=40) as server:
        spec = f"anthropic:claude-sonnet-4-5?base_url={server.base_url}"
        d = dlg.Orchestrator(model=spec, registry=registry, store=None).run_sync(
            FOUR, inputs={"topic": "tides"})
        off = dlg.Orchestrator(model=spec + "&cache=false", registry=registry,
                               store=None).run_sync(FOUR, inputs={"topic": "tides"})
    assert d.status == off.status == "completed", (d.error, off.error)
    bodies = [r["body"] for r in server.requests]
    first, _, third, fourth = bodies[:4]
    # turn 1 reads nothing earlier: only the system text is marked
    assert [b["text"] for b in _marked(first)] == ["A debate on tides. Argue in good faith."]
    # later turns: the prompt is cut into one block per earlier turn, the last one marked
    # (the mode's last turn marks where the turn before it did: it writes nothing new)
    content = fourth["messages"][0]["content"]
    assert [b["text"][:8] for b in content] == ["### Pro ", "\n\n### Co", "\n\n### Pr",
                                                "\n\nMake p"]
    assert "cache_control" in content[1] and len(_marked(fourth)) == 2
    assert "cache_control" in third["messages"][0]["content"][1]
    # the same bytes as the turn before's blocks: the server found them
    assert [b["text"] for b in content[:2]] == [
        b["text"] for b in third["messages"][0]["content"][:2]]
    assert "".join(b["text"] for b in content) == d.turns[3].prompt
    usage = [t.usage for t in d.turns]
    assert [u.cached > 0 for u in usage] == [False, False, True, True]
    assert usage[3].cached == server.usage[3]["cached"]
    assert usage[2].cache_written == server.usage[2]["written"] > 0
    assert usage[3].cache_written == 0 and usage[3].cached == usage[2].cached + usage[
        2].cache_written
    # priced as read and written, and what that saved kept on the turn
    u = usage[3]
    paid = ((u.prompt - u.cached - u.cache_written) * 3.0 + u.cached * 0.3
            + u.cache_written * 3.75 + u.completion * 15.0) / 1e6
    assert d.turns[3].cost_usd == pytest.approx(paid)
    assert d.turns[3].metadata["cache"]["saved_usd"] == pytest.approx(
        (u.prompt * 3.0 + u.completion * 15.0) / 1e6 - paid)
    # ?cache=false: no breakpoint anywhere, nothing read
    assert not any(_marked(b) or "cache_control" in b for b in bodies[4:])
    assert all(t.usage.cached == 0 for t in off.turns)


def test_anthropic_breakpoints_stay_within_four_with_the_users_own(monkeypatch):
    from dlg.models.caching import CacheHint
    from dlg.plugins.anthropic import place_breakpoints

    text = "### A\nfirst\n\n### B\nsecond\n\nNow you."
    ends = (len("### A\nfirst"), len("### A\nfirst\n\n### B\nsecond"))
    payload = {"system": "Be brief.", "messages": [
        {"role": "user", "content": text},
        {"role": "assistant", "content": "not JSON"},
        {"role": "user", "content": "Again, as JSON."}]}
    place_breakpoints(payload, CacheHint("d1", ends))
    assert len(_marked(payload)) == 3  # the earlier turns, the history, the system
    assert "".join(b["text"] for b in payload["messages"][0]["content"]) == text
    own = [{"type": "text", "text": f"mine {i}", "cache_control": {"type": "ephemeral"}}
           for i in range(3)]
    payload = {"system": own, "messages": [{"role": "user", "content": text}]}
    place_breakpoints(payload, CacheHint("d1", ends))
    assert len(_marked(payload)) == 4  # three of the user's and one of dlg's
    # hostile offsets (past the end, backwards, not ints) cut nothing wrongly
    payload = {"messages": [{"role": "user", "content": text}]}
    place_breakpoints(payload, CacheHint("d1", (10**9, -5, "x", 3, 2)))  # type: ignore[arg-type]
    assert "".join(b["text"] for b in payload["messages"][0]["content"]) == text


def test_openai_gets_a_prompt_cache_key_per_dialogue(monkeypatch):
    """Before: no ``prompt_cache_key`` was sent."""
    pytest.importorskip("langchain_openai")
    from .cache_servers import CachingOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    with CachingOpenAI(answer=lambda body: LONG) as server:
        spec = f"openai:gpt-4.1?base_url={server.base_url}"
        one = dlg.Orchestrator(model=spec, store=None).run_sync(FOUR, inputs={"topic": "a"})
        two = dlg.Orchestrator(model=spec, store=None).run_sync(FOUR, inputs={"topic": "b"})
        dlg.Orchestrator(model=spec + "&cache=false", store=None).run_sync(
            FOUR, inputs={"topic": "c"})
        dlg.Orchestrator(model=f"openai-compatible:m?base_url={server.base_url}",
                         store=None).run_sync(FOUR, inputs={"topic": "d"})
    assert one.status == two.status == "completed"
    keys = [r["body"].get("prompt_cache_key") for r in server.requests]
    assert len(set(keys[:4])) == len(set(keys[4:8])) == 1 and keys[0] != keys[4]
    assert keys[0].startswith("dlg-") and one.id not in keys[0]  # opaque
    assert keys[8:] == [None] * 8  # cache=false, and an openai-compatible server


def test_a_turns_prompt_starts_with_the_one_before_it_for_the_built_in_modes(monkeypatch):
    """The system text and the earlier turns are the same bytes in every later turn's
    prompt (answers with stray whitespace too), so a provider's prefix cache hits:
    wherever a turn reads what the turn before it read and that turn too, its system
    text is the one before's and its prompt starts with the one before's, up to that
    turn's own request (what it alone is asked; the answer it got follows it). The local
    server caches as OpenAI does, in smaller steps here."""
    pytest.importorskip("langchain_openai")
    from .cache_servers import CachingOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    checked = {}
    for name in ("debate", "podcast", "pipeline", "loop", "detective"):
        mode = dlg.load_mode(name)
        with CachingOpenAI(answer=lambda body: LONG) as server:
            server.minimum, server.step = 64, 16
            d = dlg.Orchestrator(model=f"openai:gpt-4.1?base_url={server.base_url}",
                                 store=None).run_sync(mode, inputs={"topic": "tides"})
        assert d.status == "completed", (name, d.error)
        pairs = 0
        for (t1, r1), (t2, r2) in zip(zip(mode.turns, d.turns, strict=True),
                                      list(zip(mode.turns, d.turns, strict=True))[1:],
                                      strict=False):
            if t2.context_from != (*t1.context_from, t1.id):
                continue  # its templates read other turns: nothing to share
            own = r2.prompt.index(f"### {r1.role} ({r1.participant})\n")
            assert r2.prompt[own:].startswith(
                f"### {r1.role} ({r1.participant})\n{LONG.strip()}\n\n"), name
            assert r1.prompt.startswith(r2.prompt[:own]), name  # the bytes before it
            assert r1.system == r2.system, name  # a turn's instruction is not in it
            pairs += 1
        checked[name] = (pairs, sum(t.usage.cached for t in d.turns))
    assert {n: p for n, (p, _) in checked.items()} == {
        "debate": 5, "podcast": 9, "pipeline": 2, "loop": 7, "detective": 4}
    # read from the cache: every mode whose turns share a prefix past the system text;
    # detective too, since its turns' instructions follow the transcript (before, they
    # were system text, different in each turn, and nothing of it was read)
    assert [n for n, (_, cached) in checked.items() if cached] == [
        "debate", "podcast", "loop", "detective"]


def test_dlg_show_says_what_the_prompt_cache_read_and_saved(monkeypatch):
    """Before: ``dlg show`` said the tokens read, not the share nor the money saved."""
    pytest.importorskip("langchain_anthropic")
    from click.testing import CliRunner

    from dlg.cli import cli

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    with FakeAnthropic(input_tokens=2000, cache_read=1500) as server:
        d = dlg.Orchestrator(model=f"anthropic:claude-haiku-4-5?base_url={server.base_url}",
                             registry=priced("anthropic:claude-haiku-4-5")).run_sync(ONE)
    shown = CliRunner().invoke(cli, ["show", d.id], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert ("prompt cache: 1500 of 2000 prompt tokens (75%) were read from the provider's "
            "cache; $0.00405 saved") in shown.output
    lines = dlg.Orchestrator(model="echo").run_sync(ONE).export("csv").splitlines()
    header = next(iter(__import__("csv").reader([lines[0]])))
    # after the columns older readers know (only the turn's wait on rate limits after)
    assert header[-3:] == ["cached_tokens", "cache_saved_usd", "waited_seconds"]
