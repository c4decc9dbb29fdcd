"""Local servers on 127.0.0.1 with the prompt caches of OpenAI and Anthropic, for tests and
bench/bench_prompt_cache.py.

A token here is a word with the whitespace before it (``TOKEN``), and a message opens
with one token of its role; both servers count the same way, so their figures compare.

``CachingOpenAI`` caches as OpenAI's automatic prompt caching does: a request reads the
longest prefix of 1,024 tokens or more, in steps of 128, that an earlier request sent
(any request: its whole prompt is cached after it), and reports it as
``prompt_tokens_details.cached_tokens``. (OpenAI also routes by ``prompt_cache_key`` to
the machine that holds a prefix; one server holds them all, so the key changes nothing
here: it is recorded, not modelled.)

``CachingAnthropic`` caches as Anthropic's Messages API does: only at breakpoints
(``cache_control`` on a block, or the top-level one, which marks the last block). For
each breakpoint it looks for the longest prefix cached earlier that ends at that block
or at one of the 20 blocks before it, reads that, and writes the prefix up to the
breakpoint if it is ``minimum`` tokens or more (1,024 for Sonnet and Opus 4.1). More
than 4 breakpoints is a 400, as there. Usage reports ``input_tokens`` (read from no
cache), ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.

Both answer ``answer(body)`` (a function of the request; default a fixed reply) and keep
every request (``requests``) and its usage (``usage``: input, cached, written, and
``shared``: the longest prefix it shares with an earlier request, what a cache without
minimums, steps or breakpoints would read).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

try:
    from .servers import _Loopback
except ImportError:  # run from bench/, with tests/ on the path
    from servers import _Loopback  # type: ignore[import-not-found,no-redef]

TOKEN = re.compile(r"\s*\S+|\s+$")
LOOKBACK = 20  # blocks Anthropic looks back from a breakpoint
MAX_BREAKPOINTS = 4


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


class _Prefixes:
    """Hashes of token prefixes, extended one token at a time."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.length = 0

    def add(self, toks: list[str]) -> None:
        for t in toks:
            self.sha.update(t.encode() + b"\x00")
        self.length += len(toks)

    def digest(self) -> str:
        return self.sha.copy().hexdigest()


def _text(content: Any) -> list[str]:
    """A message's content as its text blocks (strings)."""
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or () if isinstance(b, dict)]


class _Caching(_Loopback):
    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None):
        self.answer = answer or (lambda body: "A fixed answer from the server.")
        self.cache: set[str] = set()
        self.usage: list[dict[str, int]] = []
        self._sent: list[list[str]] = []
        super().__init__()

    def _shared(self, toks: list[str]) -> int:
        """The longest prefix ``toks`` shares with a request sent before (whatever the
        cache's rules): what any prefix cache could read at best."""
        best = 0
        for before in self._sent:
            n = 0
            for a, b in zip(before, toks, strict=False):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        self._sent.append(toks)
        return best

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body})
                    status, reply = fake._respond(body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


class CachingOpenAI(_Caching):
    path = "/v1"
    minimum, step = 1024, 128

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prefix = _Prefixes()
        cached = 0
        marks = []
        sent: list[str] = []
        for message in body.get("messages") or ():
            text = "".join(_text(message.get("content")))
            toks = [f"<{message.get('role')}>", *tokens(text)]
            sent += toks
            for t in toks:
                prefix.add([t])
                if prefix.length % self.step == 0 and prefix.length >= self.minimum:
                    marks.append(prefix.digest())
                    if marks[-1] in self.cache:
                        cached = prefix.length
        total = prefix.length
        self.cache.update(marks)
        text = self.answer(body)
        out = len(tokens(text))
        usage = {"prompt_tokens": total, "completion_tokens": out,
                 "total_tokens": total + out,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        self.usage.append({"input": total, "cached": cached, "written": 0,
                           "shared": self._shared(sent)})
        return 200, {"id": "c1", "object": "chat.completion", "created": 0,
                     "model": body.get("model"),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                     "usage": usage}


class CachingAnthropic(_Caching):
    path = ""

    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None,
                 minimum: int = 1024):
        self.minimum = minimum
        super().__init__(answer)

    def _blocks(self, body: dict[str, Any]) -> list[tuple[list[str], bool]]:
        """The request's blocks in order, as (tokens, marked); a message's role token
        goes with its first block."""
        out: list[tuple[list[str], bool]] = []
        system = body.get("system")
        for block in ([{"text": system}] if isinstance(system, str) else system or ()):
            out.append((tokens(block.get("text", "")), "cache_control" in block))
        for message in body.get("messages") or ():
            content = message.get("content")
            blocks = [{"text": content}] if isinstance(content, str) else content or []
            for i, block in enumerate(blocks):
                role = [f"<{message.get('role')}>"] if i == 0 else []
                out.append((role + tokens(block.get("text", "")), "cache_control" in block))
        if "cache_control" in body and out:  # automatic caching: the last block
            out[-1] = (out[-1][0], True)
        return out

    def _respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        blocks = self._blocks(body)
        if sum(marked for _, marked in blocks) > MAX_BREAKPOINTS:
            return 400, {"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "A maximum of 4 blocks with cache_control may be provided."}}
        prefix = _Prefixes()
        ends: list[tuple[int, str]] = []  # (tokens, hash) at each block's end
        for toks, _ in blocks:
            prefix.add(toks)
            ends.append((prefix.length, prefix.digest()))
        total = prefix.length
        read = written_to = 0
        writes = []
        for i, (_, marked) in enumerate(blocks):
            if not marked:
                continue
            for j in range(i, max(-1, i - LOOKBACK - 1), -1):
                if ends[j][1] in self.cache:
                    read = max(read, ends[j][0])
                    break
            if ends[i][0] >= self.minimum:
                writes.append(ends[i][1])
                written_to = max(written_to, ends[i][0])
        written = max(0, written_to - read)
        self.cache.update(writes)
        text = self.answer(body)
        self.usage.append({"input": total, "cached": read, "written": written,
                           "shared": self._shared([t for toks, _ in blocks for t in toks])})
        return 200, {
            "id": "msg_1", "type": "message", "role": "assistant",
            "model": body.get("model"), "stop_reason": "end_turn", "stop_sequence": None,
            "content": [{"type": "text", "text": text}],
            "usage": {"input_tokens": total - read - written,
                      "cache_read_input_tokens": read,
                      "cache_creation_input_tokens": written,
                      "output_tokens": len(tokens(text))}}
