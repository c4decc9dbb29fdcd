"""Saving a dialogue as it runs: the ``Saver`` observer writes it to a store when each
turn finishes and when the dialogue ends, one save at a time per dialogue, always with
the newest state (see ``Saver``). Stores themselves are ``dlg.records.store``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import anyio

from dlg.records.store import Lease

__all__ = ["Saver"]

_dumps: Callable[..., bytes] | None
try:  # installed with langsmith (langchain-core's dependency) wherever it has wheels
    from orjson import OPT_NON_STR_KEYS
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover - a platform without orjson
    _dumps = None


class Saver:
    """Saves a dialogue after each turn and when it ends (an observer).

    The store is opened when the dialogue starts, in a worker thread (unless it is open
    already): a store that cannot be opened (a folder that cannot be written, a bad
    setting) is reported before any model is paid for. The first save happens then too,
    before any turn runs, with the whole record (running, its turns pending) and the
    resolved mode (``mode_document``): a process killed during the first turn leaves a
    dialogue that ``dlg ls`` lists as interrupted and ``dlg resume`` runs from the start.
    After that, a store with ``save_turn(header, turn)`` writes just the
    finished turn and the dialogue's header; other stores get the whole record through
    ``save(record)``; a store with ``save_rows(dialogue_id, turns)`` (one that counts
    ``dlg ls``'s figures from its turn rows) gets just the turn while the dialogue's own
    fields are unchanged. When the dialogue ends, the header is written with every turn that
    changed since it was last written (through ``save_turns(header, turns)``, one
    transaction, when the store has it), so an interruption cannot lose a turn.

    Small writes happen on the event loop, at once and without an await: a SQLite
    transaction is a few tens of microseconds, less than a hop to a worker thread. A
    whole record of more than ``inline_turns`` turns is written in a worker thread;
    while it is, the dialogue's other saves wait for it. So saves of one dialogue
    happen one at a time, in order, each with the newest state.
    """

    inline_turns = 16  # whole records with more turns than this are written off the loop

    def __init__(self, open_store: Any, mode_document: dict[str, Any] | None = None,
                 lease: Lease | None = None, store: Any = None):
        # opens the store; called once, in a worker thread, when the dialogue starts
        # (unless the store is given open: a hop to a thread costs more than a save)
        self._open = open_store
        self._store: Any = store
        self.mode_document = mode_document
        self.lease = lease or Lease()  # taken with the first save, renewed with each
        self._locks: dict[str, anyio.Lock] = {}  # held while a worker thread writes
        # per dialogue saved so far: each turn's ``_state`` when it was last written
        self._written: dict[str, dict[str, Any]] = {}
        # per dialogue: its own fields (``_header_key``) when its header was last written
        self._headers: dict[str, Any] = {}

    async def store(self) -> Any:
        if self._store is None:
            self._store = await anyio.to_thread.run_sync(self._open)
        return self._store

    def dialogue_started(self, dialogue: Any) -> Any:
        # saved (and claimed) before the first turn runs, the store opened first: one that
        # cannot be opened or written fails the run before a model is paid for a turn
        if (self._ready(dialogue) and dialogue.id not in self._written
                and len(dialogue.turns) <= self.inline_turns):
            self._save_small(self._store, dialogue)  # at once, no await
            return None
        return self._save_all(dialogue)

    def _ready(self, dialogue: Any) -> bool:
        """Whether a save can be written now, on the loop: the store is open and no
        worker thread is writing this dialogue."""
        lock = self._locks.get(dialogue.id)
        return self._store is not None and (lock is None or not lock.locked())

    async def _wait(self, dialogue: Any) -> Any:
        store = await self.store()
        while not self._ready(dialogue):
            async with self._locks[dialogue.id]:
                pass
        return store

    def _claim(self, store: Any, dialogue: Any) -> None:
        if dialogue.id not in self._written:
            self.lease.acquire(store, dialogue.id)

    def _whole(self, dialogue: Any) -> dict[str, Any]:
        record: dict[str, Any] = dialogue.to_dict()  # the newest state, on the event loop
        if self.mode_document is not None:
            record["mode_document"] = self.mode_document
        return record

    async def _save_all(self, dialogue: Any) -> None:
        store = await self._wait(dialogue)
        if len(dialogue.turns) <= self.inline_turns:
            self._save_small(store, dialogue)
            return
        record = self._whole(dialogue)
        prints = _prints(dialogue)  # as they are now, not after the thread wrote
        self._claim(store, dialogue)
        async with self._locks.setdefault(dialogue.id, anyio.Lock()):
            await anyio.to_thread.run_sync(store.save, record)
        self._saved(dialogue, prints)

    def _save_small(self, store: Any, dialogue: Any) -> None:
        """The whole record of a dialogue of few turns, written on the loop."""
        record = self._whole(dialogue)
        with _grouped(store):  # the claim and the record: one transaction
            self._claim(store, dialogue)
            store.save(record)
        self._saved(dialogue, _prints(dialogue))

    def _saved(self, dialogue: Any, prints: tuple[dict[str, Any], Any]) -> None:
        self._written[dialogue.id], self._headers[dialogue.id] = prints

    def _save_turn(self, store: Any, dialogue: Any, turn: Any) -> None:
        written = self._written[dialogue.id]
        others = [turn, *_unwritten(dialogue, written, turn)]
        rows = [t.to_dict() for t in others]
        key = _header_key(dialogue)
        if key == self._headers.get(dialogue.id) and hasattr(store, "save_rows"):
            store.save_rows(dialogue.id, rows)  # the turn's row; its header is as it was
        elif len(rows) > 1 and hasattr(store, "save_turns"):
            store.save_turns(dialogue.header_dict(), rows)
            self._headers[dialogue.id] = key
        else:
            for one in rows:
                store.save_turn(dialogue.header_dict(), one)
            self._headers[dialogue.id] = key
        for one in others:
            written[one.id] = _state(one)
        if self.lease.due():  # keep a lease taken for another host from expiring
            self.lease.acquire(store, dialogue.id)

    def turn_finished(self, dialogue: Any, turn: Any) -> Any:
        # written at once when it can be (no coroutine, no await); otherwise returns the
        # save to await
        if (self._ready(dialogue) and dialogue.id in self._written
                and hasattr(self._store, "save_turn")):
            self._save_turn(self._store, dialogue, turn)
            return None
        return self._turn_finished(dialogue, turn)

    async def _turn_finished(self, dialogue: Any, turn: Any) -> None:
        store = await self._wait(dialogue)
        if dialogue.id not in self._written or not hasattr(store, "save_turn"):
            await self._save_all(dialogue)
        else:
            self._save_turn(store, dialogue, turn)

    turn_progress = turn_finished  # a spawning turn's answer and plan: saved the same way

    def _save_changes(self, store: Any, dialogue: Any) -> None:
        written = self._written[dialogue.id]
        changed = [t.to_dict() for t in dialogue.turns if _state(t) != written.get(t.id)]
        header = dialogue.header_dict()
        if hasattr(store, "save_turns"):
            store.save_turns(header, changed)
        else:
            for row in changed or [None]:
                store.save_turn(header, row)

    def dialogue_finished(self, dialogue: Any) -> Any:
        if (self._ready(dialogue) and dialogue.id in self._written
                and hasattr(self._store, "save_turn")):
            self._finish(self._store, dialogue)
            return None
        return self._dialogue_finished(dialogue)

    def _finish(self, store: Any, dialogue: Any) -> None:
        try:
            with _grouped(store):  # the last changes and letting go: one transaction
                self._save_changes(store, dialogue)
                self._done(dialogue)
        except BaseException:
            self._done(dialogue, quiet=True)
            raise

    async def _dialogue_finished(self, dialogue: Any) -> None:
        try:
            store = await self._wait(dialogue)
            if dialogue.id in self._written and hasattr(store, "save_turn"):
                self._finish(store, dialogue)
                return
            await self._save_all(dialogue)
        except BaseException:
            self._done(dialogue, quiet=True)
            raise
        self._done(dialogue)

    def _done(self, dialogue: Any, quiet: bool = False) -> None:
        """Let go of the dialogue's lease and forget it (``quiet``: a failure to let go
        must not hide the failure being raised)."""
        if dialogue.id in self._written and self._store is not None:
            try:
                self.lease.release(self._store, dialogue.id)
            except Exception:
                if not quiet:
                    raise
        self._locks.pop(dialogue.id, None)
        self._written.pop(dialogue.id, None)
        self._headers.pop(dialogue.id, None)


def _unwritten(dialogue: Any, written: dict[str, Any], turn: Any) -> list[Any]:
    """The dialogue's turns besides ``turn`` never written (a loop's next
    round, added when the round before ended): written with the turn, so that the saved
    header never lists a turn the store has no row of. A store that loads a dialogue
    from its rows drops such a turn, and a process killed then lost it for good."""
    if len(dialogue.turns) - len(written) - (turn.id not in written) <= 0:
        return []  # the usual case, counted without a pass over the turns
    return [t for t in dialogue.turns if t.id not in written and t is not turn]


def _header_key(dialogue: Any) -> Any:
    """What a dialogue's saved header holds besides what its turns' rows say (their
    statuses, tokens and cost), nested values included: when this is unchanged, saving
    a turn needs its row only."""
    own = (dialogue.status, dialogue.error, dialogue.started_at, dialogue.ended_at,
           len(dialogue.turns), dialogue.metadata, dialogue.participants)
    return _fingerprint(own, repr)


_NESTED = ("metadata", "data", "attempts")  # a turn's fields that hold dicts and lists
# per record class: the getters of its other fields and of those
_FIELDS: dict[type, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {}


def _state(turn: Any) -> Any:
    """A turn record as one value to compare, equal while nothing its row (``to_dict()``)
    is made from changed: its fields, those holding dicts and lists (metadata,
    structured answer, failed attempts) printed whole, since a dict inside its metadata
    (a spawning turn's sub-dialogue entries) may change in place. Cheaper than the row:
    no times formatted, no dicts made."""
    getters = _FIELDS.get(type(turn))
    if getters is None:
        getters = _FIELDS[type(turn)] = _getters(turn)
    others, nested = getters
    return others(turn), _fingerprint(nested(turn), repr)


def _getters(turn: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    try:
        names = {f.name for f in dataclasses.fields(turn)}
    except TypeError:  # not a dataclass: its row
        return (operator.methodcaller("to_dict"),
                lambda t: tuple(getattr(t, name, None) for name in _NESTED))
    nested = [name for name in _NESTED if name in names]
    return (operator.attrgetter(*sorted(names - set(_NESTED))),
            operator.attrgetter(*nested) if nested else lambda t: None)


def _prints(dialogue: Any) -> tuple[dict[str, Any], Any]:
    """What ``_saved`` keeps of a dialogue written whole: each turn's ``_state`` and its
    header's ``_header_key``."""
    return {t.id: _state(t) for t in dialogue.turns}, _header_key(dialogue)


def _fingerprint(value: Any, otherwise: Callable[[Any], str]) -> Any:
    """``value`` as JSON bytes (orjson: one C call, a half to a fifth of ``repr``'s time
    on a dialogue's metadata), or ``otherwise(value)`` when orjson is missing or refuses
    it (an object JSON cannot hold, an integer past 64 bits)."""
    if _dumps is not None:
        try:
            printed = _dumps(value, option=OPT_NON_STR_KEYS)
        except TypeError:
            pass
        else:
            # orjson prints a NaN or an infinity as null, as it prints None: a change
            # between them was missed (the diskcache store writes NaN). The nulls of the
            # top level's Nones (a turn with no structured answer) need no second look
            nulls = printed.count(b"null")
            if not nulls or nulls == _nones(value):
                return printed
    return otherwise(value)


def _nones(value: Any) -> int:
    """The Nones at the top of ``value`` (a tuple of fields, or one)."""
    return value.count(None) if type(value) is tuple else int(value is None)


def _grouped(store: Any) -> contextlib.AbstractContextManager[Any]:
    """The store's ``transaction()`` (one commit for several writes), if it has one."""
    group = getattr(store, "transaction", None)
    return group() if group is not None else contextlib.nullcontext()
