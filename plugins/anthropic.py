"""Anthropic through langchain-anthropic: ``anthropic:claude-sonnet-4-5``.

Key: ``ANTHROPIC_API_KEY``. ``?cache=true`` turns on Anthropic's prompt caching for the
model (a ``cache_control`` breakpoint that follows the conversation): a repeated prefix,
such as a structured answer's repair request or the same mode run again, is then read
from the cache at a tenth of the input price, while writing it costs a quarter more
once. dlg records the tokens read from the cache (``turn.usage.cached``) and prices
them as such.
"""

from __future__ import annotations

import functools

from dlg.plugin import hookimpl, missing_key, missing_package, no_retries

EPHEMERAL = {"type": "ephemeral"}


def _check(model, options):
    return missing_package("langchain_anthropic", "anthropic") or missing_key(
        options, "ANTHROPIC_API_KEY", options_named=("api_key", "anthropic_api_key"))


@functools.cache
def _chat_anthropic():
    """``ChatAnthropic`` with an HTTP client of its own for async calls. langchain-anthropic
    shares one per base URL across the whole process, whose pooled connections belong to
    the event loop that opened them: in the next loop a call read them from the closed
    one ("Event loop is closed"). ``dlg.models.pool`` makes a model per event loop, and
    closes it (``aclose``) when that loop ends."""
    from functools import cached_property

    import anthropic
    from langchain_anthropic import ChatAnthropic

    class OwnClientChatAnthropic(ChatAnthropic):
        @cached_property
        def _async_client(self) -> anthropic.AsyncClient:
            http = (anthropic.DefaultAsyncHttpxClient(proxy=self.anthropic_proxy)
                    if self.anthropic_proxy else anthropic.DefaultAsyncHttpxClient())
            return anthropic.AsyncClient(**self._client_params, http_client=http)

        async def aclose(self) -> None:
            client = self.__dict__.get("_async_client")  # made at the first async call
            if client is not None:
                await client.close()

    return OwnClientChatAnthropic


def _make(model, options):
    ChatAnthropic = _chat_anthropic()

    options = dict(options)
    cache = options.pop("cache", False)
    if cache:
        options["model_kwargs"] = {**(options.get("model_kwargs") or {}),
                                   "cache_control": EPHEMERAL}
    return ChatAnthropic(model=model or "claude-haiku-4-5", **no_retries(options))


@hookimpl
def register_models(register):
    register("anthropic", _make, check=_check, description="Anthropic (ANTHROPIC_API_KEY)")
