"""OpenAI through langchain-openai: ``openai:gpt-4o``. Key: ``OPENAI_API_KEY``.

Also ``openai-compatible:MODEL?base_url=URL`` for any server speaking the OpenAI API
(vLLM, LM Studio, llama.cpp's server, OpenRouter); its key comes from ``api_key_env``
(an option naming an environment variable), else ``OPENAI_COMPATIBLE_API_KEY``, else none.

OpenAI caches prompt prefixes by itself and routes requests by a ``prompt_cache_key``:
dlg sends one per dialogue (a hash of its id), so a dialogue's turns reach the machine
that holds their prefix. ``?cache=false`` sends none. (Not sent to ``openai-compatible``
servers, which may refuse fields they do not know; give ``prompt_cache_key`` in
``model_kwargs`` there.)

A turn's output schema (dlg's neutral ``json_schema``) is sent as OpenAI's structured
output, ``response_format={"type": "json_schema", ...}`` with ``strict`` false (a mode's
schema need not meet OpenAI's strict subset); dlg still asks for the JSON in the prompt
and checks the answer. ``?native_schema=false`` sends none, for a server that does not
take one; a server that refuses it (400 or 422) gets the request again without it, and
no more for that model.

A budget counts an ``openai:`` model's prompts with the model's own encoding (tiktoken's),
where its file is already in tiktoken's cache: ``dlg.plugins.openai_tokens``. Never for
``openai-compatible`` servers, whose models count their own way.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import os
from typing import Any

from dlg.plugin import (
    RateHeaders,
    env_secret,
    hint_of,
    hookimpl,
    missing_key,
    missing_package,
    no_retries,
)
from dlg.plugins.openai_tokens import tokenizer

# what OpenAI's responses say of its limits (every response, not only a 429): the limits
# per minute, what is left and when each resets ("6s", "1m0s", "250ms"); a 429 also says
# how long to wait in milliseconds. Servers speaking its API often send the same.
RATE_HEADERS = RateHeaders(
    limits={"x-ratelimit-limit-requests": "rpm", "x-ratelimit-limit-tokens": "tpm"},
    waits=(("retry-after-ms", "ms"),),
    resets=(("x-ratelimit-reset-requests", "x-ratelimit-remaining-requests", "duration"),
            ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens", "duration")),
    answered=True,
    not_limits=("insufficient_quota",))  # a 429 for a spent quota: billing, not a rate
_NAMES = frozenset([*RATE_HEADERS.limits, *(n for r in RATE_HEADERS.resets for n in r[:2])])
# the limit headers of this task's latest response (set by the HTTP client's hook, in
# the task that made the call; langchain-openai's include_response_headers cannot be
# had together with a response_format)
_SEEN: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "dlg_openai_headers", default=None)


async def _seen(response: Any) -> None:
    """The HTTP client's response hook: keep the response's limit headers for the call."""
    _SEEN.set({k: v for k, v in response.headers.items() if k.lower() in _NAMES} or None)


def _with_headers(message: Any) -> None:
    """Put the call's limit headers in its answer's ``response_metadata["headers"]``,
    where dlg's pacer reads them."""
    headers = _SEEN.get()
    meta = getattr(message, "response_metadata", None)
    if headers and isinstance(meta, dict):
        meta["headers"] = headers


def _check(model, options):
    return _bad_schema_option(options) or missing_package("langchain_openai", "openai") or (
        missing_key(options, "OPENAI_API_KEY", options_named=("api_key", "openai_api_key")))


def _bad_schema_option(options):
    value = options.get("native_schema", True)
    if isinstance(value, bool):
        return None
    return f"native_schema is true or false, not '{value}'"


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

    tls, sync, sockets = _tls()
    library = _http_library(openai.DefaultAsyncHttpxClient)
    return {"http_async_client": openai.DefaultAsyncHttpxClient(
        verify=tls, event_hooks={"response": [_seen]},
        **_transport(library.AsyncHTTPTransport, tls, sockets)), "http_client": sync}


# per SSL_CERT_FILE, SSL_CERT_DIR and socket options: the process's TLS context,
# synchronous client, and the socket options of its clients
_TLS: dict[tuple[Any, ...], tuple[Any, Any, tuple[tuple[int, int, int], ...]]] = {}


def _tls() -> tuple[Any, Any, tuple[tuple[int, int, int], ...]]:
    """The TLS context the OpenAI SDK's HTTP client makes by default (``verify=True``),
    made once per process, a synchronous client using it, and the socket options the
    clients set (``_socket_options``). Each client otherwise makes its own context,
    reading the CA bundle (about 20 ms): two a model (dlg's async client,
    langchain-openai's sync one per base URL), 40 ms for each model made. The context is
    made by the SDK's own HTTP library (``create_ssl_context()``, ``httpx2`` for openai 3,
    ``httpx`` before), so its trust is the client's: ``SSL_CERT_FILE``/``SSL_CERT_DIR``
    when set (a change of either makes a new one), else the library's default. The sync
    client is only for a synchronous ``invoke``: dlg's calls are async."""
    sockets = _socket_options()
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"), sockets)
    made = _TLS.get(key)
    if made is None:
        import openai

        library = _http_library(openai.DefaultHttpxClient)
        tls = library.create_ssl_context()
        sync = openai.DefaultHttpxClient(verify=tls,
                                         **_transport(library.HTTPTransport, tls, sockets))
        made = _TLS[key] = (tls, sync, sockets)
    return made


def _socket_options() -> tuple[tuple[int, int, int], ...]:
    """The socket options langchain-openai sets on the clients it makes by default
    (TCP keepalive and ``TCP_USER_TIMEOUT``, so that a silent peer is found in about two
    minutes; ``LANGCHAIN_OPENAI_TCP_*`` tune them, ``LANGCHAIN_OPENAI_TCP_KEEPALIVE=0``
    turns them off), taken from the installed langchain-openai itself; none when a proxy
    is set in the environment (a transport of one's own would shadow it, so it sets none
    then either), or when that langchain-openai sets none (older versions)."""
    try:
        from langchain_openai.chat_models._client_utils import (
            _resolve_socket_options,
            _should_bypass_socket_options_for_proxy_env,
        )
    except ImportError:
        return ()
    if _should_bypass_socket_options_for_proxy_env(
            http_socket_options=None, http_client=None, http_async_client=None,
            openai_proxy=None):
        return ()
    return tuple(_resolve_socket_options(None))


def _transport(kind: type, tls: Any, sockets: tuple[tuple[int, int, int], ...]) -> dict:
    """A client's ``transport`` keyword setting ``sockets``, as langchain-openai makes it
    (the SDK's connection limits on it: a client ignores its own ``limits`` when given a
    transport), or nothing when there are none."""
    if not sockets:
        return {}
    from langchain_openai.chat_models._client_utils import _DEFAULT_CONNECTION_LIMITS

    return {"transport": kind(verify=tls, socket_options=list(sockets),
                              limits=_DEFAULT_CONNECTION_LIMITS)}


def _http_library(client: type) -> Any:
    """The module (``httpx2`` or ``httpx``) whose ``Client`` the SDK's client extends."""
    import importlib

    for base in client.__mro__:
        root = base.__module__.partition(".")[0]
        if root in ("httpx", "httpx2"):
            return importlib.import_module(root)
    raise RuntimeError(f"{client!r} is not an httpx client")  # pragma: no cover


def cache_key(dialogue_id: str) -> str:
    """The ``prompt_cache_key`` of a dialogue: opaque, short, the same for all its turns."""
    return "dlg-" + hashlib.sha256(dialogue_id.encode("utf-8", "replace")).hexdigest()[:24]


def _response_format(schema: Any) -> dict[str, Any]:
    """A JSON Schema as OpenAI's ``response_format`` (its name: letters, digits, _ or -)."""
    return {"type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": False}}


@functools.cache
def _chat_openai() -> Any:
    """``ChatOpenAI`` as dlg calls it: a ``prompt_cache_key`` per dialogue (from dlg's cache
    hint, unless the call gives its own or ``dlg_cache`` is off), and dlg's neutral
    ``json_schema`` as OpenAI's ``response_format``, asked again without it when the
    server refuses it (see the module)."""
    from collections.abc import AsyncIterator
    from typing import ClassVar

    import openai
    from langchain_openai import ChatOpenAI

    refused = (openai.BadRequestError, openai.UnprocessableEntityError)

    class DlgChatOpenAI(ChatOpenAI):
        dlg_cache_hint: ClassVar[bool] = True
        dlg_cache: bool = True  # send a prompt_cache_key (openai: yes; compatible: no)
        dlg_json_schema: bool = True  # turns with an output schema call it with json_schema

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None,
                                 **kwargs: Any) -> dict[str, Any]:
            hint = hint_of(kwargs)
            schema = kwargs.pop("json_schema", None)
            if schema is not None and self.dlg_json_schema:
                kwargs["response_format"] = _response_format(schema)
            payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop,
                                                                   **kwargs)
            if self.dlg_cache and hint is not None and hint.key:
                payload.setdefault("prompt_cache_key", cache_key(hint.key))
            return payload

        def _sends_schema(self, kwargs: dict[str, Any]) -> bool:
            return kwargs.get("json_schema") is not None and self.dlg_json_schema

        async def _agenerate(self, messages: Any, stop: list[str] | None = None,
                             run_manager: Any = None, **kwargs: Any) -> Any:
            sent = self._sends_schema(kwargs)
            _SEEN.set(None)
            try:
                result = await super()._agenerate(messages, stop, run_manager, **kwargs)
            except refused:
                if not sent:
                    raise
                kwargs.pop("json_schema")
                result = await super()._agenerate(messages, stop, run_manager, **kwargs)
                self.dlg_json_schema = False  # the server does not take one: no more
            if result.generations:
                _with_headers(result.generations[0].message)
            return result

        async def _astream(self, messages: Any, stop: list[str] | None = None,
                           run_manager: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
            sent, started = self._sends_schema(kwargs), False
            _SEEN.set(None)
            try:
                async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
                    if not started:
                        _with_headers(chunk.message)
                    started = True
                    yield chunk
                return
            except refused:
                if started or not sent:
                    raise
            kwargs.pop("json_schema")
            async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
                self.dlg_json_schema = False  # as in _agenerate
                yield chunk

    return DlgChatOpenAI


def _schema_option(options: dict[str, Any]) -> dict[str, Any]:
    """``native_schema`` (default true) as the model's ``dlg_json_schema``."""
    options = dict(options)
    options["dlg_json_schema"] = options.pop("native_schema", True)
    return options


def _make(model, options):
    options = _schema_option(options)
    if not {"base_url", "openai_api_base"} & options.keys() and not os.environ.get(
            "OPENAI_API_BASE") and os.environ.get("OPENAI_BASE_URL"):
        # where the openai client would send it anyway, said on the model: dlg then keeps
        # its fallbacks at that endpoint, as for one given ``base_url``
        options = {**options, "base_url": os.environ["OPENAI_BASE_URL"]}
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
    return _bad_schema_option(options) or missing_package("langchain_openai", "openai")


def _make_compatible(model, options):
    options = _schema_option(options)
    key_env = options.pop("api_key_env", "OPENAI_COMPATIBLE_API_KEY")
    api_key = options.pop("api_key", None) or env_secret(key_env) or "not-needed"
    # no prompt_cache_key: a compatible server may refuse a field it does not know
    return _chat_openai()(model=model or "default", api_key=api_key, dlg_cache=False,
                          **{"stream_usage": True, **_own_client(options),
                             **no_retries(options)})


def _endpoint_of(model: Any) -> str | None:
    """Where a ``ChatOpenAI`` given as an object sends its calls when it was given no
    ``base_url``: ``OPENAI_BASE_URL``, which its client reads (as ``_make`` says on a
    model it makes). None for any other object."""
    import sys

    module = sys.modules.get("langchain_openai")  # not imported: not one of its models
    if module is None or not isinstance(model, module.ChatOpenAI):
        return None
    if model.openai_api_base or os.environ.get("OPENAI_API_BASE"):
        return None  # an endpoint of its own, which dlg reads from the model
    return os.environ.get("OPENAI_BASE_URL") or None


@hookimpl
def register_models(register):
    register("openai", _make, check=_check, description="OpenAI (OPENAI_API_KEY)",
             rate_headers=RATE_HEADERS, endpoint_of=_endpoint_of, tokenizer=tokenizer)
    register("openai-compatible", _make_compatible, check=_check_compatible,
             description="Any OpenAI-compatible server (base_url=...)",
             rate_headers=RATE_HEADERS)
