"""OpenAI through langchain-openai: ``openai:gpt-4o``. Key: ``OPENAI_API_KEY``.

Also ``openai-compatible:MODEL?base_url=URL`` for any server speaking the OpenAI API
(vLLM, LM Studio, llama.cpp's server, OpenRouter); its key comes from ``api_key_env``
(an option naming an environment variable), else ``OPENAI_COMPATIBLE_API_KEY``, else none.

OpenAI caches prompt prefixes by itself and routes requests by a ``prompt_cache_key``:
dlg sends one per dialogue (a hash of its id), so a dialogue's turns reach the machine
that holds their prefix. ``?cache=false`` sends none. (Not sent to ``openai-compatible``
servers, which may refuse fields they do not know; give ``prompt_cache_key`` in
``model_kwargs`` there.)
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from dlg.plugin import env_secret, hint_of, hookimpl, missing_key, missing_package, no_retries


def _check(model, options):
    return missing_package("langchain_openai", "openai") or missing_key(
        options, "OPENAI_API_KEY", options_named=("api_key", "openai_api_key"))


def _own_client(options):
    """An HTTP client for the model's async calls of its own. langchain-openai otherwise
    shares one per base URL across the whole process, and its pooled keep-alive
    connections belong to the event loop that opened them: in the next loop (the next
    task on a reused Ray worker, the next ``run_sync``) a call read them from the closed
    loop and failed with "Event loop is closed". ``dlg.models.pool`` makes a model per
    event loop, so each loop's calls go through a client of its own."""
    if "openai_proxy" in options:  # langchain-openai makes a client of its own for it
        return {}
    import openai

    return {"http_async_client": openai.DefaultAsyncHttpxClient()}


def cache_key(dialogue_id: str) -> str:
    """The ``prompt_cache_key`` of a dialogue: opaque, short, the same for all its turns."""
    return "dlg-" + hashlib.sha256(dialogue_id.encode("utf-8", "replace")).hexdigest()[:24]


@functools.cache
def _chat_openai() -> Any:
    """``ChatOpenAI`` that sends a ``prompt_cache_key`` per dialogue (dlg's ``dlg_cache``
    argument), unless the call gives its own."""
    from typing import ClassVar

    from langchain_openai import ChatOpenAI

    class CacheKeyChatOpenAI(ChatOpenAI):
        dlg_cache_hint: ClassVar[bool] = True
        dlg_cache: bool = True

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None,
                                 **kwargs: Any) -> dict:
            hint = hint_of(kwargs)
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            if self.dlg_cache and hint is not None and hint.key:
                payload.setdefault("prompt_cache_key", cache_key(hint.key))
            return payload

    return CacheKeyChatOpenAI


def _make(model, options):
    options = dict(options)
    cache = options.pop("cache", True)
    if not isinstance(cache, bool):
        raise ValueError(f"option 'cache' takes true or false (given {cache!r})")
    # stream_usage: a streamed answer reports its real token counts, not an estimate
    return _chat_openai()(model=model or "gpt-4o-mini", dlg_cache=cache,
                          **{"stream_usage": True, **_own_client(options),
                             **no_retries(options)})


def _check_compatible(model, options):
    if "base_url" not in options:
        return "needs a base_url option, e.g. openai-compatible:MODEL?base_url=http://host/v1"
    return missing_package("langchain_openai", "openai")


def _make_compatible(model, options):
    from langchain_openai import ChatOpenAI

    options = dict(options)
    key_env = options.pop("api_key_env", "OPENAI_COMPATIBLE_API_KEY")
    api_key = options.pop("api_key", None) or env_secret(key_env) or "not-needed"
    return ChatOpenAI(model=model or "default", api_key=api_key,
                      **{"stream_usage": True, **_own_client(options),
                         **no_retries(options)})


@hookimpl
def register_models(register):
    register("openai", _make, check=_check, description="OpenAI (OPENAI_API_KEY)")
    register("openai-compatible", _make_compatible, check=_check_compatible,
             description="Any OpenAI-compatible server (base_url=...)")
