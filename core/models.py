"""Model specs, chat-model creation, and the one call the kernel makes to a model.

A model spec is ``provider[:model][?option=value&...]``: ``echo``, ``openai:gpt-4o``,
``ollama:llama3:8b`` (the model name may contain ':'), ``echo?latency=0.2``. Providers are
registered by plugins (``register_models``); every provider returns a LangChain
``BaseChatModel``, and a ``BaseChatModel`` instance can be used anywhere a spec can.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .errors import ModelError, UnknownModelError
from .record import TokenUsage

__all__ = ["ChatResult", "ModelPool", "ModelSpec", "chat", "default_model_spec", "model_label"]


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


class ModelPool:
    """Creates chat models lazily, once per spec, for one dialogue (or one orchestrator)."""

    def __init__(self, pm: Any = None):
        self._pm = pm
        self._models: dict[str, Any] = {}

    def check(self, spec: str) -> None:
        """Raise ``UnknownModelError`` now if ``spec`` names no registered provider."""
        from . import registry

        parsed = ModelSpec.parse(spec)
        providers = registry.model_providers(self._pm)
        if parsed.provider not in providers:
            import difflib

            close = difflib.get_close_matches(parsed.provider, list(providers), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownModelError(
                f"'{spec}' is not a known model: no provider '{parsed.provider}' is "
                f"installed{hint} (installed: {', '.join(sorted(providers))})"
            )

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
                model = provider.factory(parsed.model, dict(parsed.options))
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
    text: str
    usage: TokenUsage
    model: str
    latency_seconds: float
    raw: Any = None


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


async def chat(model: Any, messages: str | list[Any], settings: Mapping[str, Any], label: str
               ) -> ChatResult:
    """Send ``messages`` (a prompt string or a message list) to a LangChain chat model and
    return text, usage and latency."""
    kwargs = {k: v for k, v in settings.items() if k != "extra"}
    kwargs.update(settings.get("extra") or {})
    started = time.perf_counter()
    message = await model.ainvoke(messages, **kwargs)
    latency = time.perf_counter() - started
    text = _text_of(message)
    meta = getattr(message, "usage_metadata", None)
    if meta:
        usage = TokenUsage(int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0)))
    else:
        prompt_text = messages if isinstance(messages, str) else "\n".join(
            _text_of(m) for m in messages)
        usage = TokenUsage(estimate_tokens(prompt_text), estimate_tokens(text), estimated=True)
    return ChatResult(text=text, usage=usage, model=label, latency_seconds=latency, raw=message)
