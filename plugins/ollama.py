"""Ollama through langchain-ollama: ``ollama:llama3.2``, ``ollama:qwen2.5:7b``.

No key. The server is ``base_url`` (an option), else ``OLLAMA_HOST``, else localhost.
"""

from __future__ import annotations

import os

from dlg.plugin import hookimpl, missing_package


def _check(model, options):
    if not model:
        return "needs a model name, e.g. ollama:llama3.2"
    return missing_package("langchain_ollama", "ollama")


def _make(model, options):
    from langchain_ollama import ChatOllama

    options = dict(options)
    if "base_url" not in options and os.environ.get("OLLAMA_HOST"):
        options["base_url"] = os.environ["OLLAMA_HOST"]
    return ChatOllama(model=model, **options)


@hookimpl
def register_models(register):
    register("ollama", _make, check=_check, description="Ollama server (no key)")
