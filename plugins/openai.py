"""OpenAI through langchain-openai: ``openai:gpt-4o``. Key: ``OPENAI_API_KEY``.

Also ``openai-compatible:MODEL?base_url=URL`` for any server speaking the OpenAI API
(vLLM, LM Studio, llama.cpp's server, OpenRouter); its key comes from ``api_key_env``
(an option naming an environment variable), else ``OPENAI_COMPATIBLE_API_KEY``, else none.
"""

from __future__ import annotations

from dlg.plugin import env_secret, hookimpl, missing_key, missing_package, no_retries


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


def _make(model, options):
    from langchain_openai import ChatOpenAI

    # stream_usage: a streamed answer reports its real token counts, not an estimate
    return ChatOpenAI(model=model or "gpt-4o-mini", **{"stream_usage": True,
                                                       **_own_client(options),
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
