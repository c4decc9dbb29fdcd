"""Server-sent events: a page kept up to date by polling the store for changes.

The store is the one truth (a dialogue may run in another process, or on another
machine sharing a PostgreSQL store), so the viewer reads it again every ``EVERY``
seconds and sends the page's part again when what it shows changed. A stream is bounded
(``LASTING`` seconds, after which the browser's ``EventSource`` connects again) and so is
the number open at once (``MAX_STREAMS``).

A page that looks the same to everyone (the routing page) shares one reader (``Shared``):
its streams wait for the snapshot that one of them read at most every ``EVERY`` seconds,
so a hundred open pages cost one read of the store per ``EVERY``, not a hundred, and take
none of the ``MAX_STREAMS`` slots (they have their own, larger bound: ``MAX_SHARED``).
Pages made from one read but shown differently (the list, under each page's filters)
share its reader too, each through a ``View`` of it: made again from each new read, once
for all the pages showing it alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

EVERY = 0.5  # seconds between two reads of the store
LASTING = 600.0  # seconds a stream lasts before the browser opens another
MAX_STREAMS = 64
MAX_SHARED = 1024  # streams of one shared page open at once


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


class Shared:
    """One page's snapshot (or what its ``View``s are made from), read for all its
    streams: whichever stream wants it after it is ``every`` seconds old reads it again
    (in a thread, one read at a time); the others take that one. ``reads`` counts the
    reads of the store, ``following`` the streams."""

    def __init__(self, read: Callable[[], Any], every: float = EVERY):
        self.read, self.every = read, every
        self.reads = 0
        self.following = 0
        self._latest: Any = None
        self._at = 0.0
        self._lock: Any = None

    async def __call__(self, since: float = 0.0) -> Any:
        """The latest snapshot, read again if it is ``every`` seconds old or was read
        before ``since`` (a stream's start: its page was rendered from the store after
        that read, and an older snapshot would take the page back in time)."""
        import anyio

        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            now = anyio.current_time()
            if self._latest is None or now - self._at >= self.every or self._at < since:
                self._latest = await anyio.to_thread.run_sync(self.read)
                self._at = anyio.current_time()
                self.reads += 1
            return self._latest


class View:
    """A page's snapshot made (``make``, in a thread) from what ``source`` read: made again
    only from a new read, so the streams of pages that show it alike (the list under the
    same filters) make it once per read. Its streams count as ``source``'s."""

    def __init__(self, source: Shared, make: Callable[[Any], Snapshot]):
        self.source, self.make = source, make
        self.following = 0  # its streams open now (they count as ``source``'s too)
        self._made: tuple[Any, Snapshot] | None = None  # (the read it was made from, it)
        self._lock: Any = None

    async def __call__(self, since: float = 0.0) -> Snapshot:
        import anyio

        if self._lock is None:
            self._lock = anyio.Lock()
        read = await self.source(since)
        async with self._lock:
            if self._made is None or self._made[0] is not read:
                self._made = (read, await anyio.to_thread.run_sync(self.make, read))
            return self._made[1]


def shared_of(read: Any) -> Shared | None:
    """The shared reader a page's ``read`` follows (a ``Shared`` or a ``View`` of one), or
    None for a read of its own."""
    return read.source if isinstance(read, View) else read if isinstance(read, Shared) else None


async def follow(read: Callable[[], Snapshot] | Shared | View, *, every: float = EVERY,
                 lasting: float = LASTING, since: str | None = None) -> AsyncIterator[str]:
    """The events of one stream: ``update`` with the live part's HTML each time its
    fingerprint changes (``since``: the one the page was rendered with), ``end`` once it
    can change no more. ``read`` is synchronous (a store's read; it runs in a thread) or
    a ``Shared`` page's (or a ``View`` of one)."""
    import anyio

    last = since
    started = anyio.current_time()
    deadline = started + lasting
    while True:
        snapshot = await (read(started) if isinstance(read, Shared | View)
                          else anyio.to_thread.run_sync(read))
        if snapshot.fingerprint != last:
            last = snapshot.fingerprint
            yield event("update", snapshot.html)
        if snapshot.done:
            yield event("end", "")
            return
        if anyio.current_time() >= deadline:
            return
        await anyio.sleep(every)
