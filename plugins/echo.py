"""The ``echo`` model provider: deterministic, offline, free; for tests and dry runs.

``echo`` answers with the start of its prompt; ``echo?latency=0.5`` waits half a second
first; ``echo?words=20`` keeps at most 20 words. It reports token usage (one word, one
token) so metrics work end to end without a paid model.
"""

from __future__ import annotations

from typing import Any

from dlg.plugin import hookimpl


def _make(model_name: str, options: dict[str, Any]) -> Any:
    from .echo_model import EchoChatModel

    known = {"latency", "words", "fail"}
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"unknown echo option(s) {sorted(unknown)}; known: {sorted(known)}")
    return EchoChatModel(
        latency=float(options.get("latency", 0.0)),
        max_words=int(options.get("words", 60)),
        fail=str(options.get("fail", "")),
        dlg_label="echo" + (f":{model_name}" if model_name else ""),
    )


# free, so dialogues under a budget dry-run on it; no capabilities, so registry queries
# for real work never answer with it
CATALOG = {"models": {"echo": {
    "description": "Deterministic offline stand-in that echoes its prompt",
    "quality": 1, "price": {"input": 0, "output": 0}, "latency": 0.0, "local": True}}}


@hookimpl
def register_models(register):
    register("echo", _make, description="Deterministic offline model that echoes its prompt",
             catalog=CATALOG)
