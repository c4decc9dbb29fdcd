"""Opening a live (SSE) page of ``dlg serve``'s app in-process, without a server: the
request is delivered once, then the client stays connected until its task is cancelled,
as a browser's EventSource does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio


async def follow(app: Any, path: str, send: Callable[[dict[str, Any]], Awaitable[None]],
                 query: bytes = b"") -> None:
    """GET ``path?query`` from ``app``, handing each ASGI message to ``send``."""
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    await app({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
               "query_string": query, "root_path": "", "scheme": "http",
               "http_version": "1.1", "headers": [(b"host", b"127.0.0.1")],
               "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}, receive, send)
