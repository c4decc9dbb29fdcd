"""The real OpenAI adapter (langchain-openai) against a real HTTP server on 127.0.0.1:
answers, streaming, retries on 429 (honouring Retry-After) and 500, timeouts on a hung
server, and fallbacks."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

from .servers import FakeOpenAI

pytest.importorskip("langchain_openai")

MODE = {"name": "pair", "participants": {"a": None, "b": None},
        "turns": [{"id": "first", "role": "First", "participant": "a", "prompt": "Say hi"},
                  {"id": "second", "role": "Second", "participant": "b", "prompt": "Reply"}]}
FAST = dlg.RetryPolicy(base_delay=0.01)


def compat(server: FakeOpenAI) -> str:
    return f"openai-compatible:test-model?base_url={server.base_url}"


async def test_openai_adapter_answers_with_real_usage(monkeypatch):
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        d = await dlg.run(MODE, model="openai:gpt-4o-mini")
    assert d.status == "completed"
    assert d.turns[0].response == "Hello from the server"
    assert not d.turns[0].usage.estimated
    assert d.turns[0].usage.completion == 4
    assert server.requests[0]["body"]["model"] == "gpt-4o-mini"
    assert server.requests[0]["auth"] == "Bearer sk-test-not-real"
    # priced from the registry: gpt-4o-mini is $0.15 / $0.60 per million tokens
    usage = d.turns[0].usage
    assert d.turns[0].cost_usd == pytest.approx((usage.prompt * 0.15 + 4 * 0.6) / 1e6)


async def test_missing_key_is_caught_before_the_first_turn(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(dlg.ModelError, match="'openai:gpt-4o' cannot run: needs an API key: "
                                              "set OPENAI_API_KEY"):
        await dlg.run(MODE, model="openai:gpt-4o")


async def test_a_key_given_in_the_spec_is_enough(monkeypatch):
    """``api_key=env:NAME`` is the documented way to give a key as a reference; the
    check used to ask for OPENAI_API_KEY all the same, and refuse to run."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("WORK_OPENAI_KEY", "sk-work-not-real")
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        d = await dlg.run(MODE, model="openai:gpt-4o-mini?api_key=env:WORK_OPENAI_KEY",
                          store=None)
    assert d.status == "completed", d.error
    assert server.requests[0]["auth"] == "Bearer sk-work-not-real"
    assert d.participants["a"] == "openai:gpt-4o-mini?api_key=env:WORK_OPENAI_KEY"
    # a literal key in a spec that cannot run is not repeated in the error
    with pytest.raises(dlg.UnknownModelError, match=r"^'openaj:gpt-4o\?api_key=\[REDACTED\]' "
                                                     "is not a known model"):
        await dlg.run(MODE, model="openaj:gpt-4o?api_key=sk-literal-0123456789")


async def test_rate_limit_honours_retry_after_and_keeps_the_model():
    with FakeOpenAI(["429:1", "ok"]) as server:
        started = time.monotonic()
        d = await dlg.Orchestrator(model=compat(server), retry=FAST).run(MODE)
        elapsed = time.monotonic() - started
    assert d.status == "completed"
    first = d.turns[0]
    assert first.model == compat(server) and first.replaced == ()
    # a little past Retry-After, so the calls a reset frees do not all go at once
    assert first.attempts == [{"model": compat(server), "error": first.attempts[0]["error"],
                               "transient": True, "rate_limited": True,
                               "waited": pytest.approx(1.05, abs=0.05)}]
    assert "RateLimitError" in first.attempts[0]["error"]
    assert elapsed >= 1.0
    assert len(server.requests) == 3


async def test_server_errors_are_retried():
    with FakeOpenAI(["500", "500", "ok"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST).run(MODE)
    assert d.status == "completed"
    assert [a["transient"] for a in d.turns[0].attempts] == [True, True]
    assert d.metrics.retries == 2 and d.metrics.substitutions == 0


async def test_hung_server_times_out_and_falls_back():
    mode = {**MODE, "participants": {"a": {"fallbacks": ["echo"]}, "b": {"fallbacks": ["echo"]}},
            "timeout": 0.3}
    with FakeOpenAI(["hang:3"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST).run(mode)
    assert d.status == "completed"
    first = d.turns[0]
    assert first.model == "echo"
    assert first.replaced == (compat(server),)
    assert [a["error"] for a in first.attempts] == ["timed out after 0.3s"] * 3


async def test_auth_error_is_not_retried_but_falls_through():
    mode = {**MODE, "participants": {"a": {"fallbacks": ["echo"]}, "b": {"fallbacks": ["echo"]}}}
    with FakeOpenAI(["401"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST).run(mode)
    assert d.status == "completed"
    assert [(a["transient"], t.model) for t in d.turns for a in t.attempts] == [
        (False, "echo"), (False, "echo")]
    assert "AuthenticationError" in d.turns[0].attempts[0]["error"]


async def test_no_fallback_means_the_turn_fails_with_every_attempt_recorded():
    with FakeOpenAI(["400"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST).run(MODE)
    assert d.status == "failed"
    assert d.turns[0].error.startswith(f"{compat(server)}: ")
    assert "Error code: 400" in d.turns[0].error
    assert len(d.turns[0].attempts) == 1


async def test_streaming_over_sse():
    pieces = []

    class Listener:
        def turn_chunk(self, dialogue, turn, text):
            pieces.append(text)

    with FakeOpenAI(reply="one two three four") as server:
        d = await dlg.Orchestrator(model=compat(server), observers=[Listener()]).run(MODE)
    assert pieces[:4] == ["one", " two", " three", " four"]
    assert d.turns[0].response == "one two three four"
    assert d.turns[0].usage.completion == 4 and not d.turns[0].usage.estimated


def test_cli_tells_the_user_about_a_substitution(write_mode, monkeypatch):
    with FakeOpenAI(["401"]) as server:
        path = write_mode(
            "name: s\nparticipants:\n  a:\n    fallbacks: [echo]\n"
            "turns: [{id: t, role: T, participant: a, prompt: hi}]\n")
        result = CliRunner().invoke(cli, ["run", str(path), "--model", compat(server), "-q"],
                                    catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stderr == (
        f"↪ [1/1] T · echo answered in place of {compat(server)} "
        "(OpenAIAuthenticationError: Error code: 401 - fault 401)\n")


async def test_unified_chat_interface():
    """The seed's SC1.3: one chat() for any model, returning text and token usage."""
    with FakeOpenAI(reply="Entangled particles share one state") as server:
        for spec in (compat(server), "echo"):
            model = dlg.chat_model(spec)
            response, tokens = await model.chat(
                prompt="Explain quantum entanglement",
                context=["Earlier: we discussed spin."], temperature=0.7)
            assert isinstance(response, str) and response
            assert "prompt" in tokens and "completion" in tokens
            assert tokens["total"] == tokens["prompt"] + tokens["completion"]
        pieces = [p async for p in dlg.chat_model(compat(server)).stream("More please")]
    assert "".join(pieces) == "Entangled particles share one state"
    sent = server.requests[0]["body"]
    assert sent["temperature"] == 0.7
    assert [m["role"] for m in sent["messages"]] == ["user", "user"]


async def test_model_fallback_chain_seed_v3():
    """The seed's SC1.4 and V3: the primary is down; the first fallback answers."""
    with FakeOpenAI(["500"]) as down, FakeOpenAI(reply="fallback here") as up:
        primary, backup = compat(down), f"openai-compatible:grok-3?base_url={up.base_url}"
        mode = {"name": "v3", "participants": {"p": {"model": primary,
                                                     "fallbacks": [backup, "echo"]}},
                "turns": [{"id": f"t{i}", "role": "R", "participant": "p", "prompt": "x"}
                          for i in range(3)]}
        d = await dlg.Orchestrator(retry=FAST).run(mode)
    assert d.status == "completed"
    assert all(t.model != primary for t in d.turns)
    assert any(t.model == backup for t in d.turns)


async def test_auth_error_does_not_fall_back_to_a_model_the_user_never_named(monkeypatch):
    """A 401 must not be hidden by the registry's chain (maybe a pricier model). (The
    model is given no endpoint option: one given an endpoint keeps to it whatever the
    error, see below.)"""
    from dlg.models.catalog import ModelRegistry

    registry = ModelRegistry.load()
    registry.add({"models": {"openai:gpt-4o-mini": {"fallbacks": ["echo"]}}}, "t")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    model = "openai:gpt-4o-mini"
    with FakeOpenAI(["401"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        assert registry.fallbacks_for(model) == ["echo"]
        d = await dlg.Orchestrator(model=model, retry=FAST, registry=registry,
                                   store=None).run(MODE)
        assert d.status == "failed"
        assert d.turns[0].model == model
        assert d.turns[0].error == (f"{model}: OpenAIAuthenticationError: Error "
                                    "code: 401 - fault 401")
        assert d.turns[0].attempts[0]["auth"] is True
        # a transient error still uses the registry's chain: its models at the endpoint
        # the model's calls go to (``OPENAI_BASE_URL``; not echo, see below)
    registry.add({"models": {model: {"fallbacks": ["echo", "openai:gpt-4o"]}}}, "t2")
    with FakeOpenAI(choose=lambda body: "500" if body["model"] == "gpt-4o-mini" else "ok"
                    ) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        d = await dlg.Orchestrator(model=model, retry=FAST, registry=registry,
                                   store=None).run(MODE)
        assert d.status == "completed" and d.turns[0].model == "openai:gpt-4o"


async def test_a_retry_on_the_same_model_is_not_called_a_fallback(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="dlg")
    with FakeOpenAI(["500", "ok"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST, store=None).run(MODE)
    assert d.status == "completed" and d.turns[0].replaced == ()
    messages = [r.getMessage() for r in caplog.records]
    assert "turn first: " + compat(server) + " answered after 1 failed attempt" in messages
    assert not [m for m in messages if "in place of" in m]


# -- a model at an endpoint the user chose stays there -------------------------------------


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("failure", ["closed port", "500", "401"])
async def test_a_model_given_an_endpoint_never_falls_back_to_another_endpoint(
        failure, tmp_path, monkeypatch):
    """``openai:gpt-4o?base_url=http://127.0.0.1:9/v1`` fell back, on a connection error,
    to the registry's ``openai:gpt-5`` at the provider's public endpoint (here a second
    server standing in for it): the prompt and the key went to a host the user never
    named. The registry's chains, the model's own and its capabilities', point there."""
    registry = tmp_path / "models.yaml"
    with FakeOpenAI() as public, FakeOpenAI([failure if failure != "closed port" else "ok"]
                                            ) as private:
        registry.write_text(
            "models:\n  openai:gpt-4o:\n    fallbacks: ['openai:gpt-5']\n"
            f"fallbacks:\n  analysis: ['openai:gpt-4.1', "
            f"'openai-compatible:x?base_url={public.base_url}']\n")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.setenv("OPENAI_BASE_URL", public.base_url)  # the "public" endpoint
        endpoint = _closed_port_url() if failure == "closed port" else private.base_url
        mode = {"name": "one", "turns": [{"id": "a", "role": "A", "prompt": "Say hi",
                                          "requires": ["analysis"]}]}
        d = await dlg.Orchestrator(model=f"openai:gpt-4o?base_url={endpoint}", retry=FAST,
                                   registry=str(registry), store=None).run(mode)
        assert public.requests == []
        assert d.status == "failed"
        assert {a["model"] for a in d.turns[0].attempts} == {
            f"openai:gpt-4o?base_url={endpoint}"}


async def test_fallbacks_the_user_named_or_at_the_same_endpoint_are_still_tried(
        tmp_path, monkeypatch):
    """A participant's own fallbacks are named by the user, and a registry model at the
    very endpoint the user gave goes nowhere new: both are still tried."""
    registry = tmp_path / "models.yaml"
    with FakeOpenAI() as other, FakeOpenAI(["500", "500", "500", "ok"]) as private:
        same = f"openai-compatible:y?base_url={private.base_url}"
        registry.write_text("models:\n  openai-compatible:test-model:\n"
                            f"    fallbacks: ['openai:gpt-5', '{same}']\n")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.setenv("OPENAI_BASE_URL", other.base_url)
        orchestrator = dlg.Orchestrator(model=compat(private), retry=FAST,
                                        registry=str(registry), store=None)
        d = await orchestrator.run({"name": "one", "turns": [
            {"id": "a", "role": "A", "prompt": "Say hi"}]})
        assert d.status == "completed", d.error
        assert d.turns[0].model == same and other.requests == []
        named = f"openai-compatible:z?base_url={other.base_url}"
        d = await orchestrator.run({"name": "two", "participants": {
            "p": {"fallbacks": [named]}}, "turns": [
            {"id": "a", "role": "A", "participant": "p", "prompt": "Say hi"}]})
        assert d.turns[0].model == named and len(other.requests) == 1


@pytest.mark.parametrize("failure", ["closed port", "500"])
async def test_a_model_whose_endpoint_is_from_the_environment_keeps_to_it(
        failure, tmp_path, monkeypatch):
    """``openai:gpt-4o`` with ``OPENAI_BASE_URL`` set (no endpoint in the spec) fell back
    to registry models at other endpoints (here a second server standing in for the
    public one, never called): it keeps to its endpoint as one given ``base_url`` does.
    The registry's models at that endpoint, and fallbacks the user named, are tried."""
    registry = tmp_path / "models.yaml"
    with FakeOpenAI() as public, FakeOpenAI([failure if failure != "closed port" else "ok"]
                                            ) as private:
        other = f"openai-compatible:x?base_url={public.base_url}"
        registry.write_text(
            f"models:\n  openai:gpt-4o:\n    fallbacks: ['{other}', 'echo', 'openai:gpt-5']\n"
            f"fallbacks:\n  analysis: ['openai:gpt-4.1', '{other}']\n")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.delenv("OPENAI_API_BASE", raising=False)
        endpoint = _closed_port_url() if failure == "closed port" else private.base_url
        monkeypatch.setenv("OPENAI_BASE_URL", endpoint)
        mode = {"name": "one", "turns": [{"id": "a", "role": "A", "prompt": "Say hi",
                                          "requires": ["analysis"]}]}
        orchestrator = dlg.Orchestrator(model="openai:gpt-4o", retry=FAST,
                                        registry=str(registry), store=None)
        d = await orchestrator.run(mode)
        assert public.requests == []
        assert d.status == "failed"
        # only models at the same endpoint were tried (the openai models, through it)
        assert {a["model"] for a in d.turns[0].attempts} <= {
            "openai:gpt-4o", "openai:gpt-5", "openai:gpt-4.1"}
        if failure == "500":
            assert {r["body"]["model"] for r in private.requests} == {
                "gpt-4o", "gpt-5", "gpt-4.1"}
        named = f"openai-compatible:z?base_url={public.base_url}"
        d = await orchestrator.run({"name": "two", "participants": {
            "p": {"fallbacks": [named]}}, "turns": [
            {"id": "a", "role": "A", "participant": "p", "prompt": "Say hi"}]})
        assert d.turns[0].model == named and len(public.requests) == 1


async def test_a_chat_openai_object_whose_endpoint_is_from_the_environment_keeps_to_it(
        tmp_path, monkeypatch):
    """A ``ChatOpenAI`` given as an object (no ``base_url``; ``OPENAI_BASE_URL`` set) calls
    that endpoint, but fell back to registry models at others (here a second server
    standing in for the public one, never called): it keeps to it as a spec does."""
    from langchain_openai import ChatOpenAI

    registry = tmp_path / "models.yaml"
    with FakeOpenAI() as public, FakeOpenAI(["500"]) as private:
        other = f"openai-compatible:x?base_url={public.base_url}"
        registry.write_text(f"fallbacks:\n  analysis: ['{other}', 'echo', 'openai:gpt-4.1']\n")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.delenv("OPENAI_API_BASE", raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", private.base_url)
        given = ChatOpenAI(model="gpt-4o", max_retries=0)
        assert given.openai_api_base is None  # the client reads the variable itself
        mode = {"name": "one", "turns": [{"id": "a", "role": "A", "prompt": "Say hi",
                                          "requires": ["analysis"]}]}
        d = await dlg.Orchestrator(model=given, retry=FAST, registry=str(registry),
                                   store=None).run(mode)
        assert public.requests == []
        assert d.status == "failed"
        assert {a["model"] for a in d.turns[0].attempts} == {"gpt-4o", "openai:gpt-4.1"}
        assert {r["body"]["model"] for r in private.requests} == {"gpt-4o", "gpt-4.1"}


def test_each_event_loop_gets_its_own_http_client():
    """Each ``run_sync`` runs its own event loop, as each task on a reused Ray worker
    does. A model (and the HTTP client it holds) made in one loop and reused in the next
    read its pooled keep-alive connection from the closed loop: "Event loop is closed",
    the turn failed after every attempt, on a server that answered every request."""
    with FakeOpenAI(keep_alive=True) as server:
        for _ in range(3):  # a new orchestrator each time: langchain's clients are shared
            d = dlg.Orchestrator(model=compat(server), store=None, retry=FAST).run_sync(MODE)
            assert d.status == "completed", [t.error for t in d.turns]
        orchestrator = dlg.Orchestrator(model=compat(server), store=None, retry=FAST)
        for _ in range(3):  # the same orchestrator, and its models, in each new loop
            d = orchestrator.run_sync(MODE)
            assert d.status == "completed", [t.error for t in d.turns]
            assert [t.model for t in d.turns] == [compat(server)] * 2
    assert len(server.requests) == 12  # one request a turn: nothing was retried


def test_a_local_batch_runs_again_in_a_new_event_loop():
    """A local batch with more rows than its concurrency, twice on one orchestrator, each
    in its own event loop: the models made to check them before the first batch, and
    those the first batch used, are not reused by the second."""
    import anyio

    rows = [{} for _ in range(6)]
    with FakeOpenAI(keep_alive=True) as server:
        orchestrator = dlg.Orchestrator(model=compat(server), store=None, retry=FAST)
        for _ in range(2):
            result = anyio.run(lambda: orchestrator.batch(MODE, rows, concurrency=2))
            assert result.totals["statuses"] == {"completed": 6}, [
                i.error for i in result.items]
    assert len(server.requests) == 24


SCHEMA = {"type": "object", "properties": {"sections": {"type": "array",
                                                        "items": {"type": "string"}}},
          "required": ["sections"]}
STRUCTURED = {"name": "plan", "turns": [
    {"id": "plan", "role": "Planner", "prompt": "Plan it.", "output": {"schema": SCHEMA}},
    {"id": "again", "role": "Planner", "prompt": "Plan it again.",
     "output": {"schema": SCHEMA}}]}
SENT = {"type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False}}
REPLY = '{"sections": ["intro", "end"]}'


class Chunks:
    """Makes the orchestrator stream (a turn_chunk listener)."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def turn_chunk(self, dialogue, turn, text):
        self.pieces.append(text)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "openai-compatible"])
async def test_an_output_schema_is_sent_as_openais_structured_output(provider, stream,
                                                                     monkeypatch):
    observers = [Chunks()] if stream else []
    with FakeOpenAI(reply=REPLY, pieces=7) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = compat(server) if provider == "openai-compatible" else "openai:gpt-4o-mini"
        d = await dlg.Orchestrator(model=model, observers=observers).run(STRUCTURED)
    assert d.status == "completed", d.error
    assert [t.data for t in d.turns] == [{"sections": ["intro", "end"]}] * 2
    assert [r["body"]["response_format"] for r in server.requests] == [SENT, SENT]
    assert [bool(r["body"].get("stream")) for r in server.requests] == [stream, stream]
    # the instruction stays in the prompt: it works on every model
    assert "matching this JSON Schema" in d.turns[0].prompt
    if stream:
        assert "".join(observers[0].pieces) == REPLY * 2


async def test_native_schema_false_sends_none():
    with FakeOpenAI(reply=REPLY) as server:
        d = await dlg.Orchestrator(model=compat(server) + "&native_schema=false").run(
            STRUCTURED)
    assert d.status == "completed", d.error
    assert d.turns[0].data == {"sections": ["intro", "end"]}
    assert ["response_format" in r["body"] for r in server.requests] == [False, False]
    assert "matching this JSON Schema" in server.requests[0]["body"]["messages"][0]["content"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_server_that_refuses_a_response_format_is_asked_again_without(stream):
    """A server that does not take ``response_format`` (a 400) gets the request again
    without it, and no more of them: the answer is held to the schema by the prompt."""
    observers = [Chunks()] if stream else []

    def refuse(body):
        return "400" if "response_format" in body else "ok"

    with FakeOpenAI(reply=REPLY, choose=refuse) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST,
                                   observers=observers).run(STRUCTURED)
    assert d.status == "completed", d.error
    assert [t.data for t in d.turns] == [{"sections": ["intro", "end"]}] * 2
    assert ["response_format" in r["body"] for r in server.requests] == [True, False, False]
    assert [t.attempts for t in d.turns] == [None, None]  # no failed attempt recorded


async def test_a_request_refused_for_another_reason_still_fails_clearly():
    with FakeOpenAI(["400"]) as server:
        d = await dlg.Orchestrator(model=compat(server), retry=FAST).run(STRUCTURED)
    assert d.status == "failed"
    assert d.turns[0].error.startswith(f"{compat(server)}: ")
    assert "Error code: 400" in d.turns[0].error
    # once with the schema, once without: the second answer is the error
    assert ["response_format" in r["body"] for r in server.requests] == [True, False]


async def test_a_native_schema_that_is_not_a_boolean_is_a_clear_error():
    spec = "openai-compatible:m?base_url=http://127.0.0.1:9/v1&native_schema=off"
    with pytest.raises(dlg.ModelError, match=r"cannot run: native_schema is true or false, "
                                              r"not 'off'"):
        await dlg.run(STRUCTURED, model=spec, store=None)
