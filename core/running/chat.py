"""``dlg.chat_model``: any model behind one ``chat``/``stream`` interface, outside a
dialogue, with the same retries, fallbacks and cost as a turn (the seed's SC1.3)."""

from __future__ import annotations

from typing import Any

from dlg.models.calls import ChatResult, build_messages, call_model
from dlg.models.pool import ModelPool

__all__ = ["ChatModel", "chat_model"]


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
        from dlg.running.api import Orchestrator

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
    from dlg.running.api import Orchestrator

    return ChatModel(model, fallbacks=fallbacks,
                     orchestrator=Orchestrator(**orchestrator_options))
