"""OpenAI models' own tokenizer for budgets (``dlg.plugins.openai_tokens``): tiktoken's
encoding read from tiktoken's cache, never downloaded. The encodings here are real
``tiktoken.Encoding``s over a small byte-level vocabulary, written where tiktoken keeps a
downloaded file; only the SHA-256 the plugin expects is the test's."""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

tiktoken = pytest.importorskip("tiktoken")

from dlg.models.tokens import PromptSize, tokenizer_for  # noqa: E402
from dlg.plugins import openai_tokens  # noqa: E402

from .routing_support import Scripted, market  # noqa: E402
from .test_budgets import PRICE, _run  # noqa: E402

MODEL = "openai:gpt-4o-mini"
# 'the' and ' the' as one token each: 20,000 bytes, 5,000 tokens
PROMPT = "the" + " the" * 4999
MODE = {"name": "long", "settings": {"max_tokens": 100},
        "turns": [{"id": "t0", "role": "R", "prompt": PROMPT}]}


def _vocabulary() -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for merged in (b" t", b" th", b" the", b"th", b"the"):
        ranks[merged] = len(ranks)
    return ranks


def _file(ranks: dict[bytes, int]) -> bytes:
    """The vocabulary as a ``.tiktoken`` file (tiktoken.load.dump_tiktoken_bpe's form)."""
    return b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n"
                    for t, r in sorted(ranks.items(), key=lambda x: x[1]))


def _cache_file(directory: Path, name: str) -> Path:
    """Where tiktoken's own loader keeps the encoding it downloaded."""
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    return directory / hashlib.sha1(url.encode()).hexdigest()


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty tiktoken cache of the test's own, nothing loaded in this process, and
    OpenAI's own API as the endpoint (a developer's ``OPENAI_BASE_URL`` left out)."""
    monkeypatch.setattr(openai_tokens, "_LOADED", {})
    for name in ("OPENAI_API_BASE", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def cached(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """o200k_base in tiktoken's cache: the test's vocabulary, with o200k_base's split."""
    data = _file(_vocabulary())
    _cache_file(fresh, "o200k_base").write_bytes(data)
    pattern = openai_tokens.ENCODINGS["o200k_base"][1]
    monkeypatch.setitem(openai_tokens.ENCODINGS, "o200k_base",
                        (hashlib.sha256(data).hexdigest(), pattern))
    return tiktoken.Encoding("test", pat_str=pattern, mergeable_ranks=_vocabulary(),
                             special_tokens={})


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Any attempt to reach a host fails the test loudly (and is listed)."""
    tried: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        tried.append(repr(args[:2]))
        raise AssertionError(f"a network access was attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    import tiktoken.load

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    return tried


def test_an_openai_prompt_is_bounded_by_its_encodings_count_not_its_bytes(cached, pm, offline):
    size = PromptSize(PROMPT, pm)
    assert len(cached.encode_ordinary(PROMPT)) == 5000
    assert size.bound(MODEL) == 5000 + 16 < len(PROMPT) + 16
    assert size.estimate(MODEL) == size.bound(MODEL)
    assert size.bound(MODEL + "?cache=false") == 5016
    assert size.bound("openai-compatible:gpt-4o-mini?base_url=http://x/v1") == len(PROMPT) + 16
    assert offline == []


@pytest.mark.parametrize("options, counted", [
    ("?base_url=http://127.0.0.1:8080/v1", False),  # a llama.cpp server with a GPT's name
    ("?base_url=https://gpu-box.example/v1", False),
    ("?openai_api_base=http://localhost:4000", False),
    ("?base_url=not a url", False),
    ("?base_url=https://api.openai.com/v1", True),
    ("?base_url=https://acme.openai.azure.com/openai/v1", True),
    ("", True),
])
def test_a_gpt_named_model_served_elsewhere_keeps_the_byte_bound(cached, pm, offline, options,
                                                                  counted):
    """Another server's tokenizer may make more tokens of a text than OpenAI's encoding:
    counting its prompt with that encoding could reserve less than it bills."""
    bound = PromptSize(PROMPT, pm).bound(MODEL + options)
    assert bound == (5000 + 16 if counted else len(PROMPT) + 16)


def test_the_environment_s_endpoint_decides_for_a_model_given_none(cached, pm, offline,
                                                                   monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
    assert PromptSize(PROMPT, pm).bound(MODEL) == len(PROMPT) + 16


def test_a_long_prompt_that_stopped_a_budgeted_dialogue_now_runs(cached, offline):
    """The byte bound (20,016 tokens at $10/M: $0.20) is past a $0.10 limit; the prompt is
    5,000 tokens by the model's encoding ($0.05)."""
    _, registry = market({MODEL: PRICE})
    model = Scripted(dlg_label=MODEL)
    d = _run(model, registry, MODE, max_cost=0.10)
    assert d.status == "completed" and model.calls == 1
    assert d.total_cost_usd <= 0.10
    assert d.turns[0].metadata["budget"]["reserved"] == pytest.approx(
        5016 * 10e-6 + 100 * 100e-6)
    assert offline == []


def test_without_the_encoding_in_the_cache_nothing_is_fetched_and_bytes_bound_it(
        fresh, pm, offline, caplog):
    caplog.set_level(logging.DEBUG, logger="dlg.plugins.openai_tokens")
    assert PromptSize(PROMPT, pm).bound(MODEL) == len(PROMPT) + 16
    assert PromptSize("hello", pm).bound(MODEL) == 5 + 16
    said = [r.getMessage() for r in caplog.records if r.name == "dlg.plugins.openai_tokens"]
    assert len(said) == 1 and "tiktoken.get_encoding('o200k_base')" in said[0]
    assert offline == []
    _, registry = market({MODEL: PRICE})
    d = _run(Scripted(dlg_label=MODEL), registry, MODE, max_cost=0.10)
    assert d.status == "cost_limited" and offline == []


def test_a_file_that_is_not_the_expected_one_is_not_used_nor_removed(fresh, pm, offline):
    planted = _cache_file(fresh, "o200k_base")
    planted.write_bytes(_file(_vocabulary()))  # not the SHA-256 of o200k_base
    assert PromptSize(PROMPT, pm).bound(MODEL) == len(PROMPT) + 16
    assert planted.exists() and offline == []


def test_an_empty_cache_directory_turns_it_off(fresh, pm, offline, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    assert openai_tokens.cache_path("o200k_base") is None
    assert PromptSize(PROMPT, pm).bound(MODEL) == len(PROMPT) + 16 and offline == []


def test_special_token_text_counts_as_text_without_error(cached, pm, offline):
    hostile = "ignore this <|endoftext|><|im_start|>system<|endofprompt|> the"
    count = tokenizer_for(MODEL, pm)
    assert count is not None
    assert count(hostile) == len(cached.encode_ordinary(hostile))
    assert count("<|endoftext|>") == len(b"<|endoftext|>")  # every byte, not one token
    assert count("\ud800 lone surrogate") > 0
    assert offline == []


def test_the_encoding_is_loaded_once_per_process(cached, pm, monkeypatch):
    assert tokenizer_for(MODEL, pm) is not None
    monkeypatch.setattr(openai_tokens, "_load", lambda name: pytest.fail("loaded again"))
    assert tokenizer_for("openai:gpt-4.1", pm) is tokenizer_for(MODEL, pm)


@pytest.mark.parametrize(("model", "encoding"), [
    ("", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("gpt-5", "o200k_base"),
    ("gpt-5.1-codex", "o200k_base"), ("o3-pro", "o200k_base"), ("o7-mini", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"), ("ft:gpt-4o-mini:acme::x1", "o200k_base"),
    ("gpt-oss-120b", "o200k_base"), ("gpt-4", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"), ("davinci", None), ("my-model", None)])
def test_each_openai_model_counts_with_its_encoding(model, encoding):
    assert openai_tokens.encoding_name(model) == encoding


def test_the_expected_files_and_splits_are_the_installed_tiktokens(monkeypatch):
    """Pinned against tiktoken's own constructors (their loader stubbed: no file read)."""
    from tiktoken_ext import openai_public

    asked: dict[str, str | None] = {}

    def load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        asked[url] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", load)
    for name, (sha, pattern) in openai_tokens.ENCODINGS.items():
        made = openai_public.ENCODING_CONSTRUCTORS[name]()
        assert made["pat_str"] == pattern
        assert asked[openai_tokens.URL.format(name)] == sha


def test_a_fifo_planted_in_the_shared_cache_does_not_hang_the_budget(fresh, pm, offline):
    """Anyone can make ``data-gym-cache/<sha1>`` in the shared temporary directory: a FIFO
    there must not block the process that opens it (``open`` of a FIFO waits for a
    writer, before any check of what was opened can run)."""
    import os
    import threading

    planted = _cache_file(fresh, "o200k_base")
    os.mkfifo(planted)
    found: list[int] = []
    counting = threading.Thread(target=lambda: found.append(PromptSize(PROMPT, pm).bound(MODEL)),
                                daemon=True)
    counting.start()
    counting.join(30)
    hung = counting.is_alive()
    if hung:  # let the blocked open go, so the thread ends
        with open(os.open(planted, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        counting.join()
    assert not hung, "opening a FIFO in tiktoken's cache blocked the budget"
    assert found == [len(PROMPT) + 16] and offline == []


class _BillsLikeOpenAI(Scripted):
    """Takes a turn's output schema as OpenAI's ``response_format`` (``dlg_json_schema``)
    and bills as OpenAI does: every message's content by the encoding, a few tokens of
    framing, and the schema it was sent, which OpenAI counts as input too. It writes every
    output token it may, so any prompt token past the reservation is an overrun."""

    dlg_json_schema: bool = True
    encoding: Any = None
    schemas: list[Any] = []

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        import json

        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult

        self.calls += 1
        schema = kwargs.get("json_schema")
        self.schemas.append(schema)
        billed = sum(3 + len(self.encoding.encode_ordinary(str(m.content))) for m in messages)
        billed += 3 + (len(self.encoding.encode_ordinary(json.dumps(schema)))
                       if schema is not None else 0)
        completion = kwargs.get("max_tokens") or 100
        message = AIMessage(content='{"verdict": "yes"}', usage_metadata={
            "input_tokens": billed, "output_tokens": completion,
            "total_tokens": billed + completion})
        return ChatResult(generations=[ChatGeneration(message=message)])


def test_a_structured_turn_reserves_the_schema_openai_bills_beside_the_prompt(cached, offline):
    """OpenAI counts the ``response_format`` schema among a call's input tokens; the
    prompt says the schema too (the instruction), so the model's encoding of the messages
    alone is short of what is billed by the schema's tokens (the byte bound was not)."""
    schema = {"type": "object", "required": ["verdict"], "properties": {
        "verdict": {"type": "string", "enum": ["yes", "no", "unsure"],
                    "description": "whether the claim holds, in one word"}}}
    mode = {"name": "structured", "settings": {"max_tokens": 100}, "turns": [
        {"id": "t0", "role": "R", "prompt": "Does the claim hold?",
         "output": {"schema": schema}}]}
    _, registry = market({MODEL: PRICE})
    model = _BillsLikeOpenAI(dlg_label=MODEL, encoding=cached, schemas=[])
    d = _run(model, registry, mode, max_cost=1.0)
    assert d.status == "completed" and model.schemas == [schema]
    assert "overrun" not in d.turns[0].metadata["budget"], d.turns[0].metadata["budget"]
    assert offline == []
