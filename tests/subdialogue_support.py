"""A model that answers sub-dialogue modes by the prompt, and the modes themselves."""

from __future__ import annotations

import json
from typing import Any

import anyio
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

SUBTOPICS = ["alpha", "beta", "gamma"]

PLAN = {"type": "object", "required": ["subtopics"],
        "properties": {"subtopics": {"type": "array", "items": {"type": "string"}}}}

CHILD = """\
name: explore
inputs:
  topic: {required: true}
turns:
  - id: look
    role: Look
    prompt: "TURN look {{ topic }} (parent {{ parent.item if parent else '-' }})"
  - {id: sum, role: Sum, context_from: [look], prompt: "TURN sum {{ topic }}"}
"""

PARENT = """\
name: tree
inputs:
  topic: {required: true}
turns:
  - id: split
    role: Planner
    prompt: "SPLIT {{ topic }}"
    output:
      schema: PLAN
    spawn: {mode: explore.yaml, for_each: data.subtopics, concurrency: 3}
  - id: merge
    role: Merger
    context_from: [split]
    prompt: |
      TURN merge {% for s in turns.split.subdialogues %}[{{ s.item }}: {{ s.answer }}]{%
      endfor %}
""".replace("PLAN", json.dumps(PLAN))


class Tree(BaseChatModel):
    """``SPLIT ...`` gets the subtopics as JSON, ``LIST ...`` as a bulleted list; anything
    else ``answer to LAST LINE``.
    Counts how many calls are in flight at once (``peak``)."""

    latency: float = 0.0
    broken: str = ""  # a prompt holding this fails (a child that breaks)
    subtopics: list[str] = SUBTOPICS
    calls: list[str] = []
    running: int = 0
    peak: int = 0
    dlg_label: str = "tree"

    @property
    def _llm_type(self) -> str:
        return "tree"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:  # pragma: no cover - async is used
        raise NotImplementedError

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        prompt = str(messages[-1].content).strip()
        if self.broken and self.broken in prompt:
            raise ValueError(f"{self.broken!r} is broken")
        self.calls.append(prompt)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if self.latency:
                await anyio.sleep(self.latency)
        finally:
            self.running -= 1
        if prompt.startswith("SPLIT"):
            text = json.dumps({"subtopics": self.subtopics})
        elif prompt.startswith("LIST"):
            text = "Subtopics:\n" + "\n".join(f"- {s}" for s in self.subtopics)
        else:
            text = "answer to " + prompt.splitlines()[-1]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(
            content=text,
            usage_metadata={"input_tokens": 5, "output_tokens": 5, "total_tokens": 10}))])
