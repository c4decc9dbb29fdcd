"""Scripted models with names, prices and usage, for routing and budget tests."""

from __future__ import annotations

import random
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from dlg import hookimpl
from dlg.models.catalog import ModelRegistry


class Scripted(BaseChatModel):
    """Answers ``NAME says ...``; reports usage no larger than a real tokenizer could
    (prompt tokens at most the prompt's bytes, completion tokens at most max_tokens)."""

    dlg_label: str = "scripted"
    seed: int = 0
    completion: int = 50  # tokens it would like to write
    random_usage: bool = False
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self.calls += 1
        rng = random.Random(f"{self.seed}-{self.calls}")
        text = " ".join(str(m.content) for m in messages)
        prompt_bytes = len(text.encode("utf-8"))
        max_tokens = kwargs.get("max_tokens") or 10_000
        if self.random_usage:
            prompt = rng.randint(max(1, prompt_bytes // 8), prompt_bytes)
            completion = rng.randint(1, max_tokens)
        else:
            prompt = max(1, prompt_bytes // 4)
            completion = min(self.completion, max_tokens)
        message = AIMessage(
            content=f"{self.dlg_label} says " + "word " * min(completion, 50),
            usage_metadata={"input_tokens": prompt, "output_tokens": completion,
                            "total_tokens": prompt + completion})
        return ChatResult(generations=[ChatGeneration(message=message)])


def market(entries: dict[str, dict[str, Any]]) -> tuple[dict[str, Scripted], ModelRegistry]:
    """Scripted models named as given, and a registry that knows their capabilities,
    quality and prices (``{"grok-4": {"capabilities": [...], "quality": 95,
    "price": {"input": 3, "output": 15}}}``)."""
    registry = ModelRegistry.load()
    registry.add({"models": {name: {k: v for k, v in e.items() if k != "completion"}
                             for name, e in entries.items()}}, "test market")
    models = {name: Scripted(dlg_label=name, completion=e.get("completion", 50))
              for name, e in entries.items()}
    return models, registry


class FixedRouter:
    """A plugin's router that sends every turn to ``echo?words=1``."""

    def select(self, request: Any) -> str:
        return "echo?words=1"


class FixedRouterPlugin:
    """Registers ``FixedRouter`` as the router ``fixed``."""

    @hookimpl
    def register_routers(self, register: Any) -> None:
        register("fixed", FixedRouter())
