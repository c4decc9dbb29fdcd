"""Model specs, chat-model creation, and the one call the kernel makes to a model.

A model spec is ``provider[:model][?option=value&...]``: ``echo``, ``openai:gpt-4o``,
``ollama:llama3:8b`` (the model name may contain ':'), ``echo?latency=0.2``. Providers are
registered by plugins (``register_models``); every provider returns a LangChain
``BaseChatModel``, and a ``BaseChatModel`` instance can be used anywhere a spec can.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .errors import ModelError, UnknownModelError
from .record import TokenUsage

__all__ = [
    "ChatModel",
    "ChatResult",
    "ModelPool",
    "ModelSpec",
    "build_messages",
    "call_model",
    "chat",
    "chat_model",
    "default_model_spec",
    "model_label",
    "resolve_secrets",
    "without_redacted",
]


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    model: str = ""
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        if not text:
            raise ModelError("an empty model spec: expected provider[:model], e.g. 'echo'")
        base, _, query = text.partition("?")
        provider, _, model = base.partition(":")
        if not provider:
            raise ModelError(f"'{text}' has no provider: expected provider[:model]")
        options = tuple((k, _coerce(v)) for k, v in parse_qsl(query, keep_blank_values=True))
        if query:
            from .redact import remember, secrets_in_spec

            remember(*secrets_in_spec(text))  # kept out of every record from now on
        return cls(provider, model, options)

    def __str__(self) -> str:
        out = self.provider + (f":{self.model}" if self.model else "")
        if self.options:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.options)
        return out


def default_model_spec(pm: Any = None) -> str | None:
    """``DLG_MODEL`` if set, else the registered provider with the highest default priority."""
    env = os.environ.get("DLG_MODEL", "").strip()
    if env:
        return env
    from . import registry

    candidates = [p for p in registry.model_providers(pm).values()
                  if p.default_priority is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.default_priority or 0).name


def model_label(model: Any) -> str:
    """A short name for a chat-model instance, for records and the CLI."""
    for attr in ("dlg_label", "model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_secrets(options: dict[str, Any]) -> dict[str, Any]:
    """Options with secret references filled in from the environment: a value
    ``env:NAME`` is the variable NAME, and ``${NAME}`` inside a value is replaced by it
    (``base_url=https://me:${PROXY_PASSWORD}@proxy/v1``). The spec keeps the reference,
    so records and a later resume hold no secret. Raises ``ModelError`` for a variable
    that is not set."""
    out = dict(options)
    for key, value in options.items():
        if not isinstance(value, str) or ("env:" not in value and "${" not in value):
            continue

        def lookup(name: str, key: str = key) -> str:
            found = os.environ.get(name)
            if not found:
                raise ModelError(f"the model option '{key}' names the environment variable "
                                 f"{name}, which is not set")
            from .redact import remember

            remember(found)
            return found

        if value.startswith("env:") and _ENV_REF.fullmatch("${" + value[4:] + "}"):
            out[key] = lookup(value[4:])
        else:
            out[key] = _ENV_REF.sub(lambda m: lookup(m.group(1)), value)
    return out


def without_redacted(spec: str) -> str | None:
    """A saved spec with its redacted secret options dropped (so the provider falls back
    to its key from the environment); None if a secret cannot be dropped (a password in a
    URL)."""
    from .redact import REDACTED

    if REDACTED not in spec:
        return spec
    base, _, query = spec.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if v != REDACTED]
    if any(REDACTED in v for _, v in kept):
        return None
    return base + ("?" + "&".join(f"{k}={v}" for k, v in kept) if kept else "")


class ModelPool:
    """Creates chat models lazily, once per spec, for one dialogue (or one orchestrator)."""

    def __init__(self, pm: Any = None, registry: Any = None):
        self._pm = pm
        self._registry = registry  # a ModelRegistry, a function returning one, or None
        self._models: dict[str, Any] = {}
        self._safe_labels: dict[str, str] = {}

    def problem(self, spec: str) -> str | None:
        """Why ``spec`` cannot run here (unknown provider, missing package or key), if so."""
        from . import registry

        parsed = ModelSpec.parse(spec)
        providers = registry.model_providers(self._pm)
        provider = providers.get(parsed.provider)
        if provider is None:
            import difflib

            close = difflib.get_close_matches(parsed.provider, list(providers), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            return (f"no provider '{parsed.provider}' is installed{hint} "
                    f"(installed: {', '.join(sorted(providers))})")
        try:
            options = resolve_secrets(dict(parsed.options))
        except ModelError as exc:
            return str(exc)
        return provider.problem(parsed.model, options, self._registry)

    def check(self, spec: str) -> None:
        """Raise now if ``spec`` cannot run: an unknown provider, a missing package or key."""
        problem = self.problem(spec)
        if problem is None:
            return
        if problem.startswith("no provider"):
            raise UnknownModelError(f"'{spec}' is not a known model: {problem}")
        raise ModelError(f"'{spec}' cannot run: {problem}")

    @staticmethod
    def label(spec_or_model: Any) -> str:
        """The model's name: the spec itself, or a model instance's name."""
        return spec_or_model if isinstance(spec_or_model, str) else model_label(spec_or_model)

    def safe_label(self, spec_or_model: Any) -> str:
        """``label`` with secrets (``?api_key=...``) redacted, for records and logs;
        computed once per label (redaction scans the environment, so it is not free)."""
        label = self.label(spec_or_model)
        safe = self._safe_labels.get(label)
        if safe is None:
            from .redact import redact

            safe = self._safe_labels[label] = redact(label)
        return safe

    def cached(self, spec_or_model: Any) -> tuple[Any, str] | None:
        """The model if it needs no creating (an instance, or a spec already made)."""
        if not isinstance(spec_or_model, str):
            return spec_or_model, model_label(spec_or_model)
        model = self._models.get(spec_or_model)
        return None if model is None else (model, spec_or_model)

    async def aget(self, spec_or_model: Any) -> tuple[Any, str]:
        """``get`` for async code: a model that must be created (which imports its
        provider's package) is created in a worker thread, off the event loop."""
        found = self.cached(spec_or_model)
        if found is not None:
            return found
        import anyio

        return await anyio.to_thread.run_sync(self.get, spec_or_model)

    def get(self, spec_or_model: Any) -> tuple[Any, str]:
        """The chat model for a spec (or instance), and its label."""
        if not isinstance(spec_or_model, str):
            return spec_or_model, model_label(spec_or_model)
        model = self._models.get(spec_or_model)
        if model is None:
            from . import registry

            self.check(spec_or_model)
            parsed = ModelSpec.parse(spec_or_model)
            provider = registry.model_providers(self._pm)[parsed.provider]
            try:
                model = provider.make(parsed.model, resolve_secrets(dict(parsed.options)),
                                      self._registry)
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(
                    f"provider '{parsed.provider}' could not create '{spec_or_model}': "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._models[spec_or_model] = model
        return model, spec_or_model


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


def estimate_tokens(text: str) -> int:
    """A provider-independent estimate (about four characters a token)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _usage(meta: Any, messages: Any, text: str) -> TokenUsage:
    if meta:
        return TokenUsage(int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0)))
    prompt_text = messages if isinstance(messages, str) else "\n".join(
        _text_of(m) for m in messages)
    return TokenUsage(estimate_tokens(prompt_text), estimate_tokens(text), estimated=True)


async def chat(model: Any, messages: str | list[Any], settings: Mapping[str, Any], label: str,
               on_chunk: Any = None) -> ChatResult:
    """Send ``messages`` (a prompt string or a message list) to a LangChain chat model and
    return text, usage and latency. With ``on_chunk``, stream: ``await on_chunk(text)``
    for each piece as it arrives."""
    kwargs: dict[str, Any] = {}
    if settings:
        kwargs = {k: v for k, v in settings.items() if k != "extra"}
        kwargs.update(settings.get("extra") or {})
    started = time.perf_counter()
    if on_chunk is None:
        message = await model.ainvoke(messages, **kwargs)
        text = _text_of(message)
        meta = getattr(message, "usage_metadata", None)
    else:
        message, parts = None, []
        async for chunk in model.astream(messages, **kwargs):
            message = chunk if message is None else message + chunk
            piece = _text_of(chunk)
            if piece:
                parts.append(piece)
                await on_chunk(piece)
        text = "".join(parts)
        meta = getattr(message, "usage_metadata", None) if message is not None else None
    latency = time.perf_counter() - started
    return ChatResult(text=text, usage=_usage(meta, messages, text), model=label,
                      latency_seconds=latency, raw=message)


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


async def call_model(
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
    on_attempt: Any = None,
) -> ChatResult:
    """The one way dlg calls a model, for turns and for ``ChatModel`` alike.

    Tries ``primary``, retrying transient errors, then the named ``fallbacks``, then the
    registry's chains for the model and the capabilities ``requires`` (not after an
    authentication error: a bad key is not hidden by a model the user never named). Only
    models that can run here are tried. The result says which model answered, what it
    cost, which models it replaced and every failed attempt; ``AllCandidatesFailed`` if
    none answered. ``on_attempt(label)`` hears of each model as it is tried.
    """
    from .resilience import RetryPolicy, call_resilient

    primary_label = pool.label(primary)

    def candidates(failed: Any) -> list[Any]:
        chain = list(fallbacks)
        if registry is not None and not any(a.auth for a in failed):
            chain.extend(registry.fallbacks_for(primary_label, requires))
        return [c for c in dict.fromkeys(chain)
                if c != primary and c != primary_label and pool.problem(c) is None]

    async def attempt(candidate: Any) -> ChatResult:
        model, _ = await pool.aget(candidate)
        name = pool.safe_label(candidate)
        if on_attempt is not None:
            on_attempt(name)
        return await chat(model, messages, settings, name, on_chunk)

    result, _, failures = await call_resilient(
        primary, attempt, fallbacks=candidates, label=pool.label,
        policy=policy or RetryPolicy(), timeout=timeout)
    result.attempts = tuple(failures)
    result.replaced = tuple(dict.fromkeys(
        pool.safe_label(a.model) for a in failures if a.model != result.model))
    if registry is not None:
        result.cost_usd = registry.cost(result.model, result.usage.prompt,
                                        result.usage.completion)
    return result


class ChatModel:
    """Any model behind one interface (the seed's SC1.3)::

        model = dlg.chat_model("openai:gpt-4o", fallbacks=["anthropic:claude-haiku-4-5"])
        result = await model.chat("Explain entanglement", context=[...], temperature=0.7)
        text, tokens = result
        async for piece in model.stream("Tell me more"):
            ...

    Calls are retried on transient errors and fall back to ``fallbacks`` and then to the
    registry's chains; ``result.model`` says who answered and ``result.cost_usd`` what it
    cost.
    """

    def __init__(self, model: Any, *, fallbacks: Any = (), orchestrator: Any = None):
        from .api import Orchestrator

        self.orchestrator = orchestrator or Orchestrator()
        self.model = model
        self.fallbacks = list(fallbacks)
        self.last: ChatResult | None = None
        if isinstance(model, str):
            self.orchestrator.pool.check(model)

    @property
    def name(self) -> str:
        return ModelPool.label(self.model)

    async def _call(self, prompt: str, context: Any, system: str | None,
                    settings: dict[str, Any], on_chunk: Any) -> ChatResult:
        timeout = settings.pop("timeout", None)
        result = await call_model(
            self.orchestrator.pool, self.model,
            build_messages(prompt, system=system, context=context), settings,
            registry=self.orchestrator.registry, fallbacks=self.fallbacks,
            policy=self.orchestrator.retry, timeout=timeout, on_chunk=on_chunk)
        self.last = result
        return result

    async def chat(self, prompt: str, context: Any = (), *, system: str | None = None,
                   **settings: Any) -> ChatResult:
        """The answer to ``prompt`` after ``context`` (earlier texts, (role, text) pairs or
        LangChain messages), with usage, cost, model used and latency."""
        return await self._call(prompt, context, system, settings, None)

    async def stream(self, prompt: str, context: Any = (), *, system: str | None = None,
                     **settings: Any) -> Any:
        """Yield the answer's text as it arrives; ``self.last`` has the full result after.

        Retries and fallbacks apply until the first piece arrives.
        """
        import anyio

        send, receive = anyio.create_memory_object_stream[str](100)

        async def produce() -> None:
            async with send:
                await self._call(prompt, context, system, settings, send.send)

        async with anyio.create_task_group() as tg, receive:
            tg.start_soon(produce)
            async for piece in receive:
                yield piece


def chat_model(model: Any, *, fallbacks: Any = (), **orchestrator_options: Any) -> ChatModel:
    """A model spec (or LangChain chat model) behind dlg's unified ``chat``/``stream``."""
    from .api import Orchestrator

    return ChatModel(model, fallbacks=fallbacks,
                     orchestrator=Orchestrator(**orchestrator_options))
