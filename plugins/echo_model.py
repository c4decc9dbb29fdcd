"""The echo chat model: a LangChain ``BaseChatModel`` that answers deterministically."""

from __future__ import annotations

import time
from typing import Any

import anyio
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


def _words(messages: list[BaseMessage]) -> int:
    return sum(len(str(m.content).split()) for m in messages)


class EchoChatModel(BaseChatModel):
    """Echoes the last paragraph of the last message, with configurable latency."""

    latency: float = 0.0
    max_words: int = 60
    fail: str = ""  # "always" raises on every call (for failure tests)
    dlg_label: str = "echo"

    @property
    def _llm_type(self) -> str:
        return "dlg-echo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"latency": self.latency, "max_words": self.max_words}

    def _answer(self, messages: list[BaseMessage], max_tokens: int | None) -> ChatResult:
        if self.fail == "always":
            raise RuntimeError("echo model asked to fail")
        last = str(messages[-1].content).strip() if messages else ""
        paragraph = last.split("\n\n")[-1]
        limit = min(self.max_words, max_tokens or self.max_words)
        words = paragraph.split()[:limit]
        text = "echo: " + " ".join(words)
        prompt_tokens = _words(messages)
        completion_tokens = len(text.split())
        message = AIMessage(
            content=text,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            response_metadata={"model_name": self.dlg_label},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        return self._answer(messages, kwargs.get("max_tokens"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            await anyio.sleep(self.latency)
        return self._answer(messages, kwargs.get("max_tokens"))
