"""Server-sent events: a page kept up to date by polling the store for changes.

The store is the one truth (a dialogue may run in another process, or on another
machine sharing a PostgreSQL store), so the viewer reads it again every ``EVERY``
seconds and sends the page's part again when what it shows changed. A stream is bounded
(``LASTING`` seconds, after which the browser's ``EventSource`` connects again) and so is
the number open at once (``MAX_STREAMS``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

EVERY = 0.5  # seconds between two reads of the store
LASTING = 600.0  # seconds a stream lasts before the browser opens another
MAX_STREAMS = 64


@dataclass(frozen=True)
class Snapshot:
    """What a page's live part shows now: a fingerprint of it, its HTML, whether it can
    change again."""

    fingerprint: str
    html: str
    done: bool


def event(name: str, data: str) -> str:
    """One server-sent event (each line of ``data`` its own ``data:`` field)."""
    lines = "".join(f"data: {line}\n" for line in data.replace("\r", "").split("\n"))
    return f"event: {name}\n{lines}\n"


async def follow(read: Callable[[], Snapshot], *, every: float = EVERY,
                 lasting: float = LASTING, since: str | None = None) -> AsyncIterator[str]:
    """The events of one stream: ``update`` with the live part's HTML each time its
    fingerprint changes (``since``: the one the page was rendered with), ``end`` once it
    can change no more. ``read`` is synchronous (a store's read); it runs in a thread."""
    import anyio

    last = since
    deadline = anyio.current_time() + lasting
    while True:
        snapshot = await anyio.to_thread.run_sync(read)
        if snapshot.fingerprint != last:
            last = snapshot.fingerprint
            yield event("update", snapshot.html)
        if snapshot.done:
            yield event("end", "")
            return
        if anyio.current_time() >= deadline:
            return
        await anyio.sleep(every)
