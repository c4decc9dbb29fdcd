"""Anthropic through langchain-anthropic: ``anthropic:claude-sonnet-4-5``.

Key: ``ANTHROPIC_API_KEY``. Anthropic caches a prompt's prefix where the request marks a
breakpoint (``cache_control``); dlg marks them for you (``?cache=false`` turns it off):
at the end of the earlier turns a prompt repeats (the next turn's prompt starts with the
same bytes, so it reads them from the cache: Anthropic looks back block by block from a
breakpoint), at the end of a conversation's history before its last message, and at the
end of the system text: at most 4 in all, as Anthropic allows, those already in the
request counted. A read costs a tenth of the input price, a write a quarter more; dlg
records both (``turn.usage.cached``, ``turn.usage.cache_written``) and prices them so.
"""

from __future__ import annotations

import functools
from typing import Any

from dlg.plugin import (
    CacheHint,
    RateHeaders,
    hint_of,
    hookimpl,
    missing_key,
    missing_package,
    no_retries,
    split_stable,
)

EPHEMERAL = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4  # Anthropic refuses a request with more
# what Anthropic's 429s say of its limits (per minute) and when each resets (RFC 3339);
# langchain-anthropic keeps no answered call's headers, so limits are learned from 429s
_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
RATE_HEADERS = RateHeaders(
    limits={"anthropic-ratelimit-requests-limit": "rpm",
            "anthropic-ratelimit-tokens-limit": "tpm",
            "anthropic-ratelimit-input-tokens-limit": "tpm"},
    resets=tuple((f"anthropic-ratelimit-{k}-reset", f"anthropic-ratelimit-{k}-remaining",
                  "rfc3339") for k in _KINDS))


def _check(model, options):
    return missing_package("langchain_anthropic", "anthropic") or missing_key(
        options, "ANTHROPIC_API_KEY", options_named=("api_key", "anthropic_api_key"))


@functools.cache
def _chat_anthropic() -> Any:
    """``ChatAnthropic`` with an HTTP client of its own for async calls. langchain-anthropic
    shares one per base URL across the whole process, whose pooled connections belong to
    the event loop that opened them: in the next loop a call read them from the closed
    one ("Event loop is closed"). ``dlg.models.pool`` makes a model per event loop, and
    closes it (``aclose``) when that loop ends."""
    from functools import cached_property
    from typing import ClassVar

    import anthropic
    from langchain_anthropic import ChatAnthropic

    class OwnClientChatAnthropic(ChatAnthropic):
        dlg_cache_hint: ClassVar[bool] = True  # takes dlg's ``dlg_cache`` argument
        dlg_cache: bool = True  # place breakpoints (``?cache=false``: none)

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None,
                                 **kwargs: Any) -> dict:
            hint = hint_of(kwargs)
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            if self.dlg_cache:
                place_breakpoints(payload, hint)
            return payload

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
    cache = options.pop("cache", True)
    if not isinstance(cache, bool):
        raise ValueError(f"option 'cache' takes true or false (given {cache!r})")
    return ChatAnthropic(model=model or "claude-haiku-4-5", dlg_cache=cache,
                         **no_retries(options))


def _blocks(content: Any) -> list[Any]:
    """A message's (or the system's) content as a list of blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content if isinstance(content, list) else []


def _marks(payload: dict[str, Any]) -> int:
    """The breakpoints a request has already (the user's own count too)."""
    count = 1 if "cache_control" in payload else 0  # Anthropic's automatic one
    places = [payload.get("system"), *(m.get("content") for m in payload.get("messages") or ()
                                       if isinstance(m, dict)), payload.get("tools")]
    for place in places:
        if isinstance(place, list):
            count += sum(1 for b in place if isinstance(b, dict) and "cache_control" in b)
    return count


def _mark(block: Any) -> bool:
    """Put a breakpoint on ``block`` if it can take one (a text block, not empty)."""
    if (isinstance(block, dict) and block.get("type") == "text" and block.get("text")
            and "cache_control" not in block):
        block["cache_control"] = dict(EPHEMERAL)
        return True
    return False


def place_breakpoints(payload: dict[str, Any], hint: CacheHint | None) -> None:
    """Mark the stable prefix of a Messages API request for Anthropic's prompt cache, in
    place: (1) the end of the earlier turns the turn's prompt (the first user message)
    repeats (``hint.ends``; the message is cut there into one text block per earlier
    turn, so the next turn's request, with one more, finds this one's prefix at a block
    boundary); (2) the end of the history before the last message (a repair request's);
    (3) the end of the system text. At most ``MAX_BREAKPOINTS`` in all, those already
    there counted. The mode's last turn (``hint.last``) marks where the turn before it
    did, one block earlier: it reads that prefix and pays for no write no turn reads."""
    left = MAX_BREAKPOINTS - _marks(payload)
    messages = [m for m in payload.get("messages") or () if isinstance(m, dict)]
    if left <= 0 or not messages:
        return
    first = next((m for m in messages if m.get("role") == "user"), None)
    ends = hint.stable_ends() if hint is not None else ()
    if ends and first is not None and isinstance(first.get("content"), str):
        parts = split_stable(first["content"], ends)
        rest = parts.pop()
        if parts:
            if rest.strip():
                parts.append(rest)
                stable = len(parts) - 1
            else:  # nothing of its own after them: blocks of only whitespace are refused
                parts[-1] += rest
                stable = len(parts)
            blocks = [{"type": "text", "text": part} for part in parts]
            first["content"] = blocks
            # the mode's last turn reads where the turn before it wrote and writes
            # nothing more: no later turn would read it, and a write costs a quarter more
            at = stable - 2 if hint is not None and hint.last else stable - 1
            if at >= 0:
                left -= _mark(blocks[at])
    if left > 0 and len(messages) > 1:
        history = _blocks(messages[-2].get("content"))
        if history and _mark(history[-1]):
            messages[-2]["content"] = history
            left -= 1
    if left > 0 and payload.get("system"):
        system = _blocks(payload["system"])
        if system and _mark(system[-1]):
            payload["system"] = system


@hookimpl
def register_models(register):
    register("anthropic", _make, check=_check, description="Anthropic (ANTHROPIC_API_KEY)",
             rate_headers=RATE_HEADERS)
