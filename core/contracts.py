"""The contracts plugins implement, as ``typing.Protocol``s: what dlg calls on a store, an
executor, embeddings, a router and an exporter. A plugin's object need not inherit from
them; it has the methods. Optional abilities are their own protocols (a store that can
hold leases, batches, learned quality); dlg uses them where a store has them.

Plugins import these, with everything else they may use, from ``dlg.plugin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dlg.hookspecs import Dialogue

__all__ = ["BatchStore", "Embeddings", "Executor", "Exporter", "LeaseStore", "QualityStore",
           "RateHeaders", "Router", "Store"]


@runtime_checkable
class Store(Protocol):
    """Where dialogues are saved (``register_stores``): a record is a JSON-ready dict
    (``Dialogue.to_dict()``). A store may also have ``save_turn(header, turn)``,
    ``save_turns(header, turns)`` and ``save_rows(id, turns)`` to save a turn without the
    whole record, and ``headers(ids)`` to read many dialogues' headers at once."""

    def save(self, record: dict[str, Any]) -> None: ...
    def load(self, dialogue_id: str) -> dict[str, Any] | None: ...
    def list(self) -> list[dict[str, Any]]: ...
    def delete(self, dialogue_id: str) -> bool: ...


@runtime_checkable
class LeaseStore(Protocol):
    """A store that keeps a dialogue to one runner (``dlg.records.store.Lease``): atomic
    ``acquire`` (returns a live lease held by another, if any), ``release``, and
    ``leases(ids)`` to read them."""

    def acquire(self, dialogue_id: str, lease: dict[str, Any],
                is_live: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None: ...
    def release(self, dialogue_id: str, token: str) -> None: ...
    def leases(self, dialogue_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


@runtime_checkable
class BatchStore(Protocol):
    """A store that keeps batches (their mode, rows and options), so they resume whole.
    It may also have ``batch_headers()``: every batch's header (id, mode, when it was
    made, its number of rows, its dialogues counted by status, their tokens and cost;
    ``dlg.records.batch_headers``) without reading the batches' rows. Without it, dlg
    lists batches from ``list()`` and ``load_batch`` (or ``batches()``)."""

    def save_batch(self, record: dict[str, Any]) -> None: ...
    def load_batch(self, batch_id: str) -> dict[str, Any] | None: ...


@runtime_checkable
class QualityStore(Protocol):
    """A store that keeps what learning routers learn: per task and model, statistics
    updated atomically (``update(old) -> new``)."""

    def update_quality(self, task: str, model: str,
                       update: Callable[[dict[str, Any] | None], dict[str, Any]]
                       ) -> dict[str, Any]: ...
    def quality(self, task: str | None = None) -> dict[Any, Any]: ...


@runtime_checkable
class Executor(Protocol):
    """Runs a batch's dialogues (``register_executors`` registers a factory taking the
    orchestrator): each item (``dlg.plugin.BatchItem``) is run with
    ``dlg.plugin.run_item`` somewhere, its outcome filled in, and ``on_item(item)``
    called as it ends."""

    async def __call__(self, mode: Any, items: list[Any], *, concurrency: int,
                       on_item: Callable[[Any], None] | None = None,
                       options: dict[str, Any] | None = None,
                       budget: Any = None) -> None: ...


@runtime_checkable
class Embeddings(Protocol):
    """Text embeddings (``register_embeddings``), as LangChain's ``Embeddings``."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...
    def embed_query(self, text: str) -> list[float]: ...


@runtime_checkable
class Exporter(Protocol):
    """Turns a finished (or partial) dialogue into a document. ``extension`` is the one it
    writes; it may declare more it is known by (``extensions = ("md", "markdown")``),
    which ``--out FILE`` reads the format from."""

    name: str
    extension: str
    description: str

    def export(self, dialogue: Dialogue) -> str | bytes: ...


@runtime_checkable
class Router(Protocol):
    """Chooses the model a turn runs on from a ``dlg.plugin.RouteRequest``: a plain
    ``select(request)``, or ``async def route(request)`` for one that awaits; either
    answers with a ``dlg.plugin.Route`` or a bare model."""

    def select(self, request: Any) -> Any: ...


# how a header's value reads: "seconds" and "ms" numbers; "duration" Go's ("6s", "1m0s",
# "250ms", or a bare number of seconds); "http-date" a number of seconds or an HTTP date;
# "rfc3339" a time ("2026-12-07T10:00:00Z")
FORMATS = frozenset({"seconds", "ms", "duration", "http-date", "rfc3339"})
KINDS = frozenset({"rpm", "tpm"})


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isascii() and all(
        c.isalnum() or c in "-_" for c in value)


@dataclass(frozen=True)
class RateHeaders:
    """The rate-limit headers a provider sends, in the neutral form core reads.

    ``limits``: header name -> ``"rpm"`` or ``"tpm"``, a limit per rate window (a
    minute unless the spec's ``rate_window`` says otherwise); several token limits: the
    lowest binds. ``waits``: ``(header, format)`` pairs saying how long a refused call
    should wait, tried in order before ``retry-after``. ``resets``: ``(reset header,
    remaining header, format)``, when each limit's window resets and what is left of it;
    after a 429 the reset of the limit that ran out (remaining 0) is waited for, else the
    latest. Formats: ``FORMATS``. ``answered``: the provider's models put an answered
    call's headers in its ``response_metadata["headers"]``, so a model whose limits are
    not known yet starts slowly until they say them (``dlg.models.pacing``); else limits
    are learned from 429s alone. ``not_limits``: texts that, in a 429's error, say it is
    no rate limit but a bill to pay (OpenAI's ``insufficient_quota``): waiting does not
    end it, so it is neither waited for nor retried."""

    limits: Mapping[str, str] = field(default_factory=dict)
    waits: tuple[tuple[str, str], ...] = ()
    resets: tuple[tuple[str, str, str], ...] = ()
    answered: bool = False
    not_limits: tuple[str, ...] = ()

    def problem(self) -> str | None:
        """What is wrong with these names and formats, if anything (a plugin's mistake)."""
        if not isinstance(self.limits, Mapping):
            return "limits must map header names to 'rpm' or 'tpm'"
        for name, kind in self.limits.items():
            if not _name(name) or kind not in KINDS:
                return f"limits: {name!r} -> {kind!r} is not a header name -> 'rpm' or 'tpm'"
        for wait in self.waits:
            if (not isinstance(wait, tuple) or len(wait) != 2 or not _name(wait[0])
                    or wait[1] not in FORMATS):
                return f"waits: {wait!r} is not (header name, one of {sorted(FORMATS)})"
        for reset in self.resets:
            if (not isinstance(reset, tuple) or len(reset) != 3 or not _name(reset[0])
                    or not (_name(reset[1]) or reset[1] == "") or reset[2] not in FORMATS):
                return (f"resets: {reset!r} is not (reset header, remaining header or '', "
                        f"one of {sorted(FORMATS)})")
        if not isinstance(self.answered, bool):
            return f"answered must be true or false (given {self.answered!r:.40})"
        if not isinstance(self.not_limits, tuple):
            return f"not_limits must be a tuple of texts (given {self.not_limits!r:.40})"
        for text in self.not_limits:
            if not isinstance(text, str) or not 0 < len(text) <= 100:
                return f"not_limits: {text!r:.40} is not a text of 1 to 100 characters"
        return None
