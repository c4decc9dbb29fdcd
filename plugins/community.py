"""Any chat model of langchain-community by its class name: ``community:ChatLlamaCpp``.

``community:CLASS?option=value&...`` makes ``langchain_community.chat_models.CLASS`` with
those options as keyword arguments, so the dozens of chat models LangChain's community
package carries (Tongyi, Baichuan, LlamaCpp, MLX, Hunyuan, ...) run in dlg without a
plugin of their own: ``dlg run debate --model "community:ChatTongyi?model_name=qwen-max"``.
A model class that needs another package says which when it is made.

langchain-community is no longer actively maintained upstream (its import warns so);
providers with a package of their own (``openai``, ``anthropic``, ``ollama``, ...) are the
better choice where one exists. Its warnings are kept out of dlg's output.
"""

from __future__ import annotations

import warnings

from dlg.plugin import hookimpl, missing_package


def _chat_models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import langchain_community.chat_models as chat_models
    return chat_models


def _check(model, options):
    problem = missing_package("langchain_community", "community")
    if problem:
        return problem
    names = sorted(_chat_models().__all__)
    if not model:
        return f"name a chat model class, e.g. community:ChatLlamaCpp (one of {len(names)})"
    if model not in names:
        import difflib

        close = difflib.get_close_matches(model, names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (f"langchain-community has no chat model '{model}': {hint}its chat models "
                f"are {', '.join(names)}")
    return None


def _make(model, options):
    with warnings.catch_warnings():  # deprecation notices of a sunset package
        warnings.simplefilter("ignore")
        cls = getattr(_chat_models(), model)
        return cls(**options)


@hookimpl
def register_models(register):
    register("community", _make, check=_check,
             description="Any langchain-community chat model by class name")
