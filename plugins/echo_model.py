"""The echo chat model: a LangChain ``BaseChatModel`` that answers deterministically.

Asked for JSON matching a schema (a turn's ``output``, which dlg passes as ``json_schema``
to models with ``dlg_json_schema``), it answers with the simplest object that matches:
each required and named property, the fewest array items allowed (at least one), the
lowest number allowed, the first of an ``enum``, and words of the prompt for text. So
every mode, structured turns and sub-dialogues included, shows its structure offline.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


def _words(messages: list[BaseMessage]) -> int:
    return sum(len(str(m.content).split()) for m in messages)


def example(schema: Any, words: list[str], depth: int = 0) -> Any:
    """The simplest value matching ``schema`` (see the module), text from ``words``."""
    if not isinstance(schema, dict) or depth > 16:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("oneOf", "anyOf", "allOf"):
        if schema.get(key):
            return example(schema[key][0], words, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        names = list(dict.fromkeys([*schema.get("required", []), *props]))
        return {n: example(props.get(n, {}), words, depth + 1) for n in names}
    if kind == "array":
        # a schema comes from a mode: a minItems or minLength of millions is not made
        count = min(max(1, int(schema.get("minItems", 1))), 100)
        count = min(count, int(schema.get("maxItems", count)))
        item = schema.get("items") or {}
        return [example(item, words[i:] + words[:i], depth + 1) for i in range(count)]
    if kind in ("number", "integer"):
        value: Any = 0
        if "minimum" in schema:
            value = schema["minimum"]
        elif "exclusiveMinimum" in schema:
            value = schema["exclusiveMinimum"] + 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = " ".join(["echo:", *words[:8]])
    low, high = min(int(schema.get("minLength", 0)), 10_000), schema.get("maxLength")
    text = text.ljust(low, ".")
    return text[:int(high)] if high is not None else text


class EchoChatModel(BaseChatModel):
    """Echoes the last paragraph of the last message (or answers a schema with the
    simplest object that matches it), with configurable latency."""

    latency: float = 0.0
    max_words: int = 60
    fail: str = ""  # "always" raises on every call (for failure tests)
    dlg_label: str = "echo"
    dlg_json_schema: bool = True  # answers JSON matching a turn's output schema

    @property
    def _llm_type(self) -> str:
        return "dlg-echo"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"latency": self.latency, "max_words": self.max_words}

    def _answer(self, messages: list[BaseMessage], max_tokens: int | None,
                schema: Any = None) -> ChatResult:
        if self.fail == "always":
            raise RuntimeError("echo model asked to fail")
        last = str(messages[-1].content).strip() if messages else ""
        paragraph = last.split("\n\n")[-1]
        limit = min(self.max_words, max_tokens or self.max_words)
        if schema is not None:  # the question's words, not the instruction's and schema's
            words = last.split("\n\n")[0].split()[:limit]
            text = json.dumps(example(schema, words), ensure_ascii=False)
        else:
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
        return self._answer(messages, kwargs.get("max_tokens"), kwargs.get("json_schema"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            await anyio.sleep(self.latency)
        return self._answer(messages, kwargs.get("max_tokens"), kwargs.get("json_schema"))
