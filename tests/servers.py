"""Real HTTP servers on 127.0.0.1 for adapter tests: OpenAI-compatible, with faults, and
Anthropic's Messages API.

``FakeOpenAI(script)`` answers POST /v1/chat/completions; each request takes the next
behaviour from ``script`` (the last one repeats): "ok", "429:SECONDS" (with Retry-After),
"500", "401", "400", "hang:SECONDS", "401echo" (a 401 that repeats the key it was sent, as
OpenAI's "Incorrect API key provided" does). Streaming requests get server-sent events.
``keep_alive=True`` speaks HTTP/1.1 and keeps each connection open for the next request,
as real servers (vLLM, llama.cpp's, OpenAI's) do: a client's pooled connections are then
reused across requests. ``choose(body)``, if given, picks a request's behaviour from
what it asks (None: the script's next).
"429:VALUE" sends VALUE as Retry-After as it is (a hostile one too).

``LimitedOpenAI(requests=N, window=SECONDS)`` is the same API enforcing a provider's rate
limit the way OpenAI does: at most N requests (and ``tokens``) per window, a 429 with
``retry-after``, ``retry-after-ms`` and ``x-ratelimit-*`` headers past it (the limits
in them per minute, as OpenAI's are, whatever the window).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 128  # a batch opens many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out hang up mid-answer: that is the point of the test


class _Loopback:
    """A threaded HTTP server on 127.0.0.1 (a context manager); subclasses give
    ``_handler()`` and the path ``base_url`` ends with."""

    path = ""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


class FakeOpenAI(_Loopback):
    path = "/v1"

    def __init__(self, script: list[str] | None = None, reply: str = "Hello from the server",
                 cached: int = 0, keep_alive: bool = False,
                 choose: Callable[[dict[str, Any]], str | None] | None = None,
                 pieces: int | None = None):
        self.script = list(script or ["ok"])
        self.pieces = pieces  # stream the reply in pieces of this many characters
        self.keep_alive = keep_alive
        self.choose = choose
        self.reply = reply
        self.cached = cached  # prompt tokens it says it read from its prompt cache
        super().__init__()

    def _next(self) -> str:
        with self._lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _refuse(self, body: dict[str, Any]) -> dict[str, str] | None:
        """The headers of a 429 for this request, or None to answer it."""
        return None

    def _answered_headers(self) -> dict[str, str]:
        """The headers an answer carries besides its content's."""
        return {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if fake.keep_alive else "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body,
                                          "auth": self.headers.get("Authorization"),
                                          "peer": self.client_address})
                action = (fake.choose and fake.choose(body)) or fake._next()
                refused = fake._refuse(body)
                if refused is not None:
                    self._json(429, {"error": {"message": "Rate limit reached for requests",
                                               "type": "requests",
                                               "code": "rate_limit_exceeded"}}, refused)
                    return
                kind, _, arg = action.partition(":")
                if kind == "429":
                    self._json(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                               {"Retry-After": arg or "1"})
                    return
                if kind == "401echo":
                    key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    self._json(401, {"error": {
                        "message": f"Incorrect API key provided: {key}. You can find your "
                                   "API key at https://platform.example/account/api-keys.",
                        "type": "invalid_request_error", "code": "invalid_api_key"}})
                    return
                if kind in ("500", "401", "400"):
                    self._json(int(kind), {"error": {"message": f"fault {kind}",
                                                     "type": "test"}})
                    return
                if kind == "hang":
                    time.sleep(float(arg or 5))
                words = fake.reply.split()
                prompt_tokens = sum(len(str(m.get("content", "")).split())
                                    for m in body.get("messages", []))
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                         "total_tokens": prompt_tokens + len(words),
                         "prompt_tokens_details": {
                             "cached_tokens": min(fake.cached, prompt_tokens)}}
                extra = fake._answered_headers()
                if body.get("stream"):
                    self.send_response(200)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")  # the end of the stream
                    self.close_connection = True
                    self.end_headers()
                    n = fake.pieces
                    parts = ([fake.reply[i:i + n] for i in range(0, len(fake.reply), n)] if n
                             else [(" " if i else "") + word for i, word in enumerate(words)])
                    for i, part in enumerate(parts):
                        # the first piece names the role, as OpenAI's do
                        delta = {"content": part} if i else {"role": "assistant",
                                                             "content": part}
                        chunk = {"id": "c1", "object": "chat.completion.chunk",
                                 "created": 0, "model": body.get("model"),
                                 "choices": [{"index": 0, "finish_reason": None,
                                              "delta": delta}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    final = {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                             "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}]}
                    # like OpenAI's API: usage in a stream only when the client asks
                    if (body.get("stream_options") or {}).get("include_usage"):
                        final["usage"] = usage
                    self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
                    return
                self._json(200, {
                    "id": "c1", "object": "chat.completion", "created": 0,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": fake.reply}}],
                    "usage": usage,
                }, extra)

        return Handler


def _duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: "250ms", "1.5s", "1m0s"."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


class LimitedOpenAI(FakeOpenAI):
    """An OpenAI-compatible server with a rate limit: ``requests`` (and ``tokens``, a
    word a token, prompt and answer) per fixed ``window`` of seconds; past it, a 429 with
    the headers OpenAI sends. Counts what it answered and refused. As OpenAI does, an
    answer states the limits too (``x-ratelimit-*``); ``answered_headers=False``: only
    a 429 does."""

    def __init__(self, requests: int, window: float, tokens: int | None = None,
                 reply: str = "Hello from the server", answered_headers: bool = True):
        self.limit, self.window, self.token_limit = requests, window, tokens
        self.answered_headers = answered_headers
        self.started = time.monotonic()
        self.used: dict[int, list[int]] = {}  # window number -> [requests, tokens]
        self.answered = self.refused = 0
        super().__init__(reply=reply)

    def _refuse(self, body: dict[str, Any]) -> dict[str, str] | None:
        cost = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        cost += len(self.reply.split())
        with self._lock:
            elapsed = time.monotonic() - self.started
            number = int(elapsed // self.window)
            used = self.used.setdefault(number, [0, 0])
            reset = (number + 1) * self.window - elapsed
            over_tokens = self.token_limit is not None and used[1] + cost > self.token_limit
            if used[0] < self.limit and not over_tokens:
                used[0] += 1
                used[1] += cost
                self.answered += 1
                return None
            self.refused += 1
        return {"retry-after": str(max(1, math.ceil(reset))),
                "retry-after-ms": str(max(1, round(reset * 1000))), **self._limits()}

    def _limits(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers now: the limits per minute, as OpenAI states
        them whatever the window, what is left of this window and when it resets."""
        with self._lock:
            elapsed = time.monotonic() - self.started
            number = int(elapsed // self.window)
            used = self.used.get(number, [0, 0])
            reset = (number + 1) * self.window - elapsed
        per_minute = 60 / self.window
        headers = {"x-ratelimit-limit-requests": str(round(self.limit * per_minute)),
                   "x-ratelimit-remaining-requests": str(max(0, self.limit - used[0])),
                   "x-ratelimit-reset-requests": _duration(reset)}
        if self.token_limit is not None:
            headers.update({"x-ratelimit-limit-tokens": str(round(self.token_limit
                                                                   * per_minute)),
                            "x-ratelimit-remaining-tokens": str(max(0, self.token_limit
                                                                     - used[1])),
                            "x-ratelimit-reset-tokens": _duration(reset)})
        return headers

    def _answered_headers(self) -> dict[str, str]:
        return self._limits() if self.answered_headers else {}


class FakeAnthropic(_Loopback):
    """Anthropic's Messages API on 127.0.0.1: answers ``reply`` and reports
    ``cache_read`` of the input tokens as read from its prompt cache."""

    def __init__(self, reply: str = "Hello from Claude", input_tokens: int = 2000,
                 cache_read: int = 0, keep_alive: bool = False):
        self.reply, self.input_tokens, self.cache_read = reply, input_tokens, cache_read
        self.keep_alive = keep_alive  # as FakeOpenAI's
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if fake.keep_alive else "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append({"path": self.path, "body": body,
                                      "key": self.headers.get("x-api-key")})
                data = json.dumps({
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "model": body.get("model"), "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "content": [{"type": "text", "text": fake.reply}],
                    "usage": {"input_tokens": fake.input_tokens - fake.cache_read,
                              "cache_read_input_tokens": fake.cache_read,
                              "cache_creation_input_tokens": 0,
                              "output_tokens": len(fake.reply.split())},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
