"""Calling a model: one answer with its usage and latency (``chat``), and the one path
every call takes with retries, fallbacks and cost (``call_model``).

Every provider returns a LangChain ``BaseChatModel``; a ``BaseChatModel`` instance can be
used anywhere a spec can.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from dlg.models.caching import cache_saving
from dlg.models.pool import ModelPool
from dlg.models.spec import endpoint
from dlg.records.record import TokenUsage

__all__ = ["MAX_ANSWER", "ChatResult", "build_messages", "call_model", "chat",
           "estimate_tokens", "unique", "valid_text"]

# characters of an answer that are kept: about 500,000 tokens, past any model's output
# limit. A broken or hostile endpoint can send far more; the rest would be held in the
# record, saved, and sent on in the next turns' prompts.
MAX_ANSWER = 2_000_000


@dataclass
class ChatResult:
    """One model answer: text, token usage, cost, the model that answered, latency.

    Unpacks as ``text, tokens = result`` (tokens as {"prompt", "completion", "total"}).
    """

    text: str
    usage: TokenUsage
    model: str
    latency_seconds: float
    raw: Any = None
    cost_usd: float | None = None
    # what the provider's prompt cache saved: the cost without it less ``cost_usd``
    # (negative when cache writes cost more than reads gave back); None: nothing cached
    saved_usd: float | None = None
    replaced: tuple[str, ...] = ()  # models that failed before ``model`` answered
    attempts: tuple[Any, ...] = ()  # the failed attempts (dlg.resilience.Attempt)

    def __iter__(self) -> Any:
        return iter((self.text, self.usage.to_dict()))


def _text_of(message: Any) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def valid_text(text: str) -> str:
    """``text`` with any lone surrogate (a ``\\ud800`` escape in a provider's JSON, which
    no file, store or terminal can take) replaced by U+FFFD, as a decoder replaces a bad
    byte. An answer is paid for, so it is kept, not refused."""
    from dlg.language.limits import is_text

    if is_text(text):
        return text
    import re

    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def estimate_tokens(text: str) -> int:
    """A provider-independent estimate (about four characters a token)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _count(value: Any) -> int:
    """A token count as a provider reported it: a whole number from 0 to 10**15, else
    ``ValueError``. A negative count would have given back budget it never had."""
    if type(value) is int and 0 <= value < 10**15:
        return value
    raise ValueError(value)


def _usage(meta: Any, messages: Any, text: str, length: int) -> TokenUsage:
    """The provider's counts, or an estimate (``length``: the whole answer's characters,
    what was cut included: it was paid for). Counts that are not counts (negative, not
    numbers) are estimated too."""
    if meta:
        try:
            prompt = _count(meta.get("input_tokens", 0))
            completion = _count(meta.get("output_tokens", 0))
            details = meta.get("input_token_details")
            if not details:  # no cache reads or writes (most answers)
                return TokenUsage(prompt, completion)
            return TokenUsage(prompt, completion,
                              cached=_count(details.get("cache_read") or 0),
                              cache_written=_count(details.get("cache_creation") or 0))
        except (AttributeError, ValueError):
            pass
    prompt_text = messages if isinstance(messages, str) else "\n".join(
        _text_of(m) for m in messages)
    completion = math.ceil(length / 4) if length > len(text) else estimate_tokens(text)
    return TokenUsage(estimate_tokens(prompt_text), completion, estimated=True)


def _cut(text: str, length: int) -> str:
    """``text`` (of an answer ``length`` characters long) within ``MAX_ANSWER``, saying so
    when it was cut."""
    if length <= MAX_ANSWER:
        return text
    import logging

    logging.getLogger("dlg.models").warning(
        "an answer of %d characters was cut at %d", length, MAX_ANSWER,
        extra={"event": "answer.cut", "characters": length})
    return (text[:MAX_ANSWER] + f"\n\n[dlg cut this answer at {MAX_ANSWER:,} characters; it "
            f"was {length:,}]")


def _kwargs(model: Any, settings: Mapping[str, Any], schema: Mapping[str, Any] | None,
            cache: Any = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings:
        kwargs = {k: v for k, v in settings.items() if k != "extra"}
        kwargs.update(settings.get("extra") or {})
    if schema is not None and getattr(model, "dlg_json_schema", False):
        kwargs["json_schema"] = schema
    if cache is not None:
        takes = _TAKES_HINT.get(type(model))
        if takes is None:  # looked up once a class: pydantic's getattr misses are slow
            takes = _TAKES_HINT[type(model)] = bool(getattr(model, "dlg_cache_hint", False))
        if takes:
            kwargs["dlg_cache"] = cache  # dlg.models.caching: for the provider's prompt cache
    return kwargs


_TAKES_HINT: dict[type, bool] = {}  # chat model class -> takes a ``dlg_cache`` hint


def _result(message: Any, messages: Any, label: str, started: float,
            text: str | None = None, length: int | None = None) -> ChatResult:
    """A chat model's answer as a ``ChatResult``: its text (at most ``MAX_ANSWER``
    characters kept), usage and latency. ``length``: the whole answer's, when ``text`` is
    what a stream kept of it."""
    latency = time.perf_counter() - started
    if text is None:
        text = _text_of(message)
        if not text.isascii():
            text = valid_text(text)
    length = len(text) if length is None else length
    meta = getattr(message, "usage_metadata", None) if message is not None else None
    usage = _usage(meta, messages, text, length)
    return ChatResult(text=_cut(text, length), usage=usage, model=label,
                      latency_seconds=latency, raw=message)


async def chat(model: Any, messages: str | list[Any], settings: Mapping[str, Any], label: str,
               on_chunk: Any = None, schema: Mapping[str, Any] | None = None,
               cache: Any = None) -> ChatResult:
    """Send ``messages`` (a prompt string or a message list) to a LangChain chat model and
    return text, usage and latency. With ``on_chunk``, stream: ``await on_chunk(text)``
    for each piece as it arrives. ``schema`` (a JSON Schema the answer must match) goes to
    models that can hold their output to one (``dlg_json_schema = True``: they take a
    ``json_schema`` argument, as the embedded model does with a llama.cpp grammar).
    ``cache``: a ``dlg.models.caching.CacheHint``, for models that take one."""
    kwargs = _kwargs(model, settings, schema, cache)
    started = time.perf_counter()
    if on_chunk is None:
        return _result(await model.ainvoke(messages, **kwargs), messages, label, started)
    message, parts, length = None, [], 0
    async for chunk in model.astream(messages, **kwargs):
        piece = valid_text(_text_of(chunk))
        if length + len(piece) > MAX_ANSWER:  # past what is kept: counted, not held
            piece = piece[:max(0, MAX_ANSWER - length)]
            length += len(_text_of(chunk))
            chunk = chunk.model_copy(update={"content": piece})
        else:
            length += len(piece)
        message = chunk if message is None else message + chunk
        if piece:
            parts.append(piece)
            await on_chunk(piece)
    return _result(message, messages, label, started, "".join(parts), length)


def build_messages(prompt: str, *, system: str | None = None, context: Any = ()) -> Any:
    """The model input for a prompt: the prompt alone when there is no system text and no
    context (LangChain turns a string into one human message, faster than from a message
    we build), else a message list: the system text, the context (earlier texts,
    (role, text) pairs or LangChain messages), then the prompt."""
    if not system and not context:
        return prompt
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

    out: list[Any] = [SystemMessage(content=system)] if system else []
    for item in context or ():
        if isinstance(item, BaseMessage):
            out.append(item)
        elif isinstance(item, tuple):
            role, text = item
            kind = {"system": SystemMessage, "user": HumanMessage, "human": HumanMessage,
                    "assistant": AIMessage, "ai": AIMessage}.get(role, HumanMessage)
            out.append(kind(content=text))
        else:  # an earlier turn: a record or plain text
            out.append(HumanMessage(content=getattr(item, "text", None) or str(item)))
    out.append(HumanMessage(content=prompt))
    return out


class _Call:
    """One ``call_model``: what its attempts need, in one object rather than a closure
    per attempt function (thousands of calls can be in flight)."""

    __slots__ = ("allow", "cache", "fallbacks", "guard", "label", "messages", "on_chunk",
                 "pool", "primary", "record", "registry", "requires", "schema", "settings",
                 "started", "timeout")
    owns_timeout = True  # an attempt's timeout starts once its turn to call has come

    def __init__(self, pool: Any, primary: Any, messages: Any, settings: Any, registry: Any,
                 fallbacks: Any, requires: Any, on_chunk: Any, record: Any, allow: Any,
                 schema: Any, cache: Any = None, timeout: float | None = None,
                 guard: Any = None):
        self.pool, self.primary, self.messages, self.settings = pool, primary, messages, settings
        self.guard = guard
        self.registry, self.fallbacks, self.requires = registry, fallbacks, requires
        self.on_chunk, self.record, self.allow, self.schema = on_chunk, record, allow, schema
        self.label, self.started = "", 0.0  # of the attempt in progress
        self.cache = cache
        self.timeout = timeout

    def waited(self, seconds: float) -> None:
        """Add a wait on rate limits (pacing, or after a 429) to the turn's record."""
        if self.record is not None:
            self.record.waited_seconds = (self.record.waited_seconds or 0.0) + seconds

    def candidates(self, failed: Any) -> list[Any]:
        """The fallbacks to try after ``failed``: the named ones, then the registry's
        (not after an authentication error or a rate limit; for a model given an endpoint,
        or whose provider took one from the environment, only those at that endpoint),
        that can run here and are allowed."""
        primary, pool, allow = self.primary, self.pool, self.allow
        label = pool.label(primary)
        chain = list(self.fallbacks)
        if self.registry is not None and not any(a.auth or a.rate_limited for a in failed):
            found = self.registry.fallbacks_for(label, self.requires)
            chosen = endpoint(primary)
            if chosen:  # the prompt and the key go nowhere the user did not name
                found = [c for c in found if endpoint(c) == chosen]
            elif found:
                where = self._where(primary, primary)
                if where:  # an endpoint from the environment (OPENAI_BASE_URL): the same
                    found = [c for c in found if self._where(c, primary) == where]
            chain.extend(found)
        return [c for c in unique(chain)
                if (c != primary if isinstance(c, str) else c is not primary)
                and c != label
                and (not isinstance(c, str) or pool.problem(c) is None)
                and (allow is None or allow(c))]

    def affordable(self, candidate: Any, failed: Any) -> bool:
        """Whether another attempt on ``candidate`` may be made after the ``failed``
        ones (``guard``: a budget's, which counts what they were billed)."""
        return self.guard is None or self.guard(candidate, failed)

    def _where(self, candidate: Any, primary: Any) -> frozenset[str] | None:
        """Where ``candidate``'s calls go (the URLs), when ``primary`` was given no
        endpoint: one its spec gives; else, for a model of ``primary``'s provider (whose
        environment applies to it alike), the endpoint of the chat model its provider
        made (``OPENAI_BASE_URL``, ``OLLAMA_HOST``). A chat model given as an object: the
        endpoint it states, else the one its provider's plugin says it takes from the
        environment (``ModelPool.where``); after such a primary, whose provider dlg cannot
        name, any spec is made to see where it goes. None: another provider's model, or
        one that cannot be made here (not a candidate at an endpoint the user chose)."""
        pool: ModelPool = self.pool
        if not isinstance(candidate, str):
            return pool.where(candidate)
        given = endpoint(candidate)
        if given:
            return frozenset(v for _, v in given)
        if isinstance(primary, str) and (
                candidate.partition(":")[0] != primary.partition(":")[0]):
            return None
        try:
            made = pool.cached(candidate) or pool.get(candidate)
        except Exception:  # one that cannot be made here is no candidate anyway
            return None
        return pool.where(made[0])

    def __call__(self, candidate: Any) -> Awaitable[Any]:
        """The call to one candidate, to await. A model already made is called directly
        (no coroutine frame of its own while it works); one to make, in ``_made``. (The
        object itself is the attempt: no bound method to keep per call in flight.)"""
        if not isinstance(candidate, str):  # a chat model given as it is
            pending = self._chat(candidate, candidate)
        else:
            limiter = _PACER.for_label(candidate, self.registry)
            if limiter is not None:  # a limit to keep: wait for the call's turn first
                return self._paced(limiter, candidate)
            found = self.pool.cached(candidate)
            pending = (self._made(candidate) if found is None
                       else self._chat(found[0], candidate))
        return _timed(pending, self.timeout) if self.timeout else pending

    async def _made(self, candidate: Any) -> Any:
        model, _ = await self.pool.aget(candidate)
        return await self._chat(model, candidate)

    async def _paced(self, limiter: Any, candidate: str) -> ChatResult:
        """The call to ``candidate`` once ``limiter`` gives it its turn (the tokens it
        may use reserved), settled with the tokens the provider counted."""
        settings = self.settings or {}
        most = settings.get("max_tokens", (settings.get("extra") or {}).get("max_tokens"))
        estimated = _prompt_tokens(self.messages)
        reserved = limiter.estimate(estimated, most)
        found = self.pool.cached(candidate)  # made before its turn: it goes when given
        model = found[0] if found is not None else (await self.pool.aget(candidate))[0]
        waited, ends = await limiter.acquire(reserved)
        _PACER.waited += waited
        if waited > 0:
            self.waited(waited)
        counted = None
        answered = False
        try:
            pending = self._chat(model, candidate)
            result = self.finish(await (_timed(pending, self.timeout) if self.timeout
                                        else pending))
            answered = True
            if not result.usage.estimated:
                counted = (result.usage.prompt, result.usage.completion)
            meta = getattr(result.raw, "response_metadata", None)
            if isinstance(meta, Mapping):
                limiter.learn(meta.get("headers"))
            return result
        finally:
            await limiter.release(reserved, ends, estimated, counted, not answered)

    def _chat(self, model: Any, candidate: Any) -> Awaitable[Any]:
        """The attempt: streamed through ``chat``, else the model's own ``ainvoke`` (no
        frame of dlg's between the call path and the model; ``finish`` makes the result)."""
        name = self.pool.safe_label(candidate)
        if self.record is not None:
            self.record.model = name
        if self.on_chunk is not None:
            return chat(model, self.messages, self.settings, name, self.on_chunk, self.schema,
                        self.cache)
        self.label, self.started = name, time.perf_counter()
        # LangChain's ainvoke, on a model typed Any (no provider's class is imported here)
        answer: Awaitable[Any] = model.ainvoke(
            self.messages, **_kwargs(model, self.settings, self.schema, self.cache))
        return answer

    def finish(self, answer: Any) -> ChatResult:
        if isinstance(answer, ChatResult):
            return answer
        return _result(answer, self.messages, self.label, self.started)

    def result(self, answer: Any, candidate: Any, failures: list[Any]) -> ChatResult:
        """The call's result, from the answer that came and the attempts that failed."""
        result = self.finish(answer)
        if failures:
            result.attempts = tuple(failures)
            result.replaced = _replaced(self.pool, failures, result.model)
        if self.registry is not None:
            usage = result.usage
            result.cost_usd = self.registry.cost(result.model, usage.prompt,
                                                 usage.completion, usage.cached,
                                                 usage.cache_written)
            if (usage.cached or usage.cache_written) and result.cost_usd is not None:
                result.saved_usd = cache_saving(self.registry, result, self.record)
        return result


def _prompt_tokens(messages: Any) -> int:
    """An estimate of a prompt's tokens (about four characters a token)."""
    if isinstance(messages, str):
        return estimate_tokens(messages)
    return sum(estimate_tokens(_text_of(m)) for m in messages)


async def _timed(pending: Awaitable[Any], timeout: float) -> Any:
    import anyio

    with anyio.fail_after(timeout):
        return await pending


def _replaced(pool: Any, failures: list[Any], model: str) -> tuple[str, ...]:
    """The models that failed before ``model`` answered, once each, secrets redacted."""
    return tuple(dict.fromkeys(pool.safe_label(a.model) for a in failures
                               if a.model != model))


def unique(models: Any) -> list[Any]:
    """``models`` without repeats, in order: specs by value, chat models by identity
    (they need not be hashable)."""
    seen: set[Any] = set()
    out = []
    for m in models:
        key = m if isinstance(m, str) else ("instance", id(m))
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def call_model(
    pool: ModelPool,
    primary: Any,
    messages: Any,
    settings: Mapping[str, Any],
    *,
    registry: Any = None,
    fallbacks: Any = (),
    requires: Any = (),
    policy: Any = None,
    timeout: float | None = None,
    on_chunk: Any = None,
    record: Any = None,
    allow: Any = None,
    schema: Mapping[str, Any] | None = None,
    cache: Any = None,
    guard: Any = None,
) -> Awaitable[ChatResult]:
    """The one way dlg calls a model, for turns and for ``ChatModel`` alike: returns the
    call to await.

    Tries ``primary``, retrying transient errors, then the named ``fallbacks``, then the
    registry's chains for the model and the capabilities ``requires`` (not after an
    authentication error: a bad key is not hidden by a model the user never named; for a
    primary given an endpoint, ``base_url=...``, or whose provider took one from the
    environment, ``OPENAI_BASE_URL``, only those at that same endpoint: the prompt and the
    key go to no host the user did not name). Only
    models that can run here are tried. The result says which model answered, what it
    cost, which models it replaced and every failed attempt; ``AllCandidatesFailed`` if
    none answered. ``record``, if given, has its ``model`` set to each model as it is
    tried (a turn's record shows the one in flight); ``allow``, if given, must accept a
    fallback before it is tried (a budget uses it); ``guard``, if given, must accept
    every attempt after a failed one (``guard(candidate, failed_attempts)``: a budget
    counts what they were billed). ``schema``, ``cache``: see ``chat``.
    """
    resilience = _RESILIENCE or _resilience()
    call = _Call(pool, primary, messages, settings, registry, fallbacks, requires,
                 on_chunk, record, allow, schema, cache, timeout, guard)
    # no frame of its own while the model works: the resilient call's makes the result
    # what finish (call.result) makes: a ChatResult (the module is imported lazily: Any)
    result: Awaitable[ChatResult] = resilience.call_resilient(
        primary, call, fallbacks=call.candidates, label=pool.label,
        policy=policy or resilience.RetryPolicy(), timeout=timeout, finish=call.result)
    return result


_RESILIENCE: Any = None
_PACER: Any = None  # dlg.models.pacing.pacer, imported with resilience


def _resilience() -> Any:
    """``dlg.models.resilience``, imported by the first call rather than with this module
    (it imports anyio, which commands that call no model do without), and kept: an
    import statement in ``call_model`` cost half a microsecond a turn."""
    global _RESILIENCE, _PACER
    from dlg.models import resilience
    from dlg.models.pacing import pacer

    _RESILIENCE, _PACER = resilience, pacer
    return resilience
