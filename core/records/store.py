"""Saving dialogues as they run, finding them again, and resuming them.

A ``Saver`` is an observer: it writes the dialogue to a store (a ``register_stores``
plugin; ``sqlite`` by default) when each turn finishes and when the dialogue ends, one
save at a time per dialogue, always with the newest state. Resuming re-runs only the
turns that did not complete (those in flight at a crash, failed or cancelled ones, and
those not reached), never a completed one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import anyio

from dlg import process
from dlg.errors import DlgError, StoreError

__all__ = [
    "DialogueBusyError",
    "DialogueNotFoundError",
    "Lease",
    "RowWrites",
    "Saver",
    "as_dialogue",
    "find_dialogue",
    "list_dialogues",
    "load_dialogue",
    "open_store",
    "split_record",
    "summary",
    "with_summary",
]


class DialogueNotFoundError(DlgError):
    """No saved dialogue has that id (or the prefix matches none, or several)."""


class DialogueBusyError(DlgError):
    """The dialogue is running in another process: running it here would pay twice."""


class Lease:
    """This process's claim to run one dialogue, kept in the store beside it.

    A store that can hold leases has ``acquire(dialogue_id, lease, is_live)`` (atomically:
    write ``lease`` unless a live lease with another token is there, which it returns)
    and ``release(dialogue_id, token)``. A lease is live while its process runs, when it
    was taken on this host (so a process killed with SIGKILL frees it at once), and
    until it expires otherwise; each save renews it.
    """

    ttl = 15 * 60.0  # seconds a lease taken on another host lasts without a save

    def __init__(self) -> None:
        self.token = f"{process.random_bits(128):032x}"  # unique: a dialogue per lease
        self.host = process.host()
        self.pid = process.pid()
        self._renewed = 0.0

    def document(self) -> dict[str, Any]:
        self._renewed = time.monotonic()
        return {"token": self.token, "host": self.host, "pid": self.pid,
                "expires": time.time() + self.ttl}

    def due(self) -> bool:
        """Whether a third of the lease's life has passed since it was last written."""
        return time.monotonic() - self._renewed > self.ttl / 3

    @staticmethod
    def is_live(lease: dict[str, Any]) -> bool:
        if lease.get("host") == process.host() and isinstance(lease.get("pid"), int):
            try:
                os.kill(lease["pid"], 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return float(lease.get("expires") or 0) > time.time()

    def acquire(self, store: Any, dialogue_id: str) -> None:
        """Claim the dialogue, or raise ``DialogueBusyError`` naming who runs it."""
        acquire = getattr(store, "acquire", None)
        if acquire is None:
            return
        holder = acquire(dialogue_id, self.document(), self.is_live)
        if holder is not None:
            raise DialogueBusyError(
                f"dialogue {dialogue_id} is running in another process (pid "
                f"{holder.get('pid')} on {holder.get('host')}): resuming it now would run "
                "and pay for its turns twice. Wait for it to end, or stop it; a process "
                "that died frees it at once on this host, and on another host 15 minutes "
                "after its last save")

    def check(self, store: Any, dialogue_id: str) -> None:
        """Raise ``DialogueBusyError`` if another process holds the dialogue; hold nothing."""
        self.acquire(store, dialogue_id)
        self.release(store, dialogue_id)

    def release(self, store: Any, dialogue_id: str) -> None:
        release = getattr(store, "release", None)
        if release is not None:
            release(dialogue_id, self.token)


def open_store(store: Any = None, *, pm: Any = None, **options: Any) -> Any:
    """A store object: one given, or one registered by name (``DLG_STORE``, default
    ``sqlite``) by the plugins of ``pm``."""
    if store is not None and not isinstance(store, str):
        return store
    from dlg import registrations

    name = store or os.environ.get("DLG_STORE") or "sqlite"
    stores = registrations.stores(pm)
    if name not in stores:
        raise DlgError(f"'{name}' is not a known store (installed: {', '.join(stores)})")
    try:
        opened = stores[name](**options)
    except DlgError:
        raise
    except Exception as exc:
        where = f" at {options['path']}" if options.get("path") else ""
        raise StoreError(f"cannot open the dialogue store '{name}'{where}: "
                         f"{_reason(exc)} (DLG_DATA_DIR or --store choose another)") from exc
    return GuardedStore(opened, name)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_VERBS = {"save": "save", "save_turn": "save a turn of", "save_turns": "save the turns of",
          "save_rows": "save a turn of",
          "load": "read", "list": "list",
          "delete": "delete", "acquire": "claim", "release": "release"}
_SAVE_HINT = (". The turns saved before are kept: free the space (or fix the store) and "
              "`dlg resume` the dialogue")
_HINTS = {"save": _SAVE_HINT, "save_turn": _SAVE_HINT, "save_turns": _SAVE_HINT,
          "save_rows": _SAVE_HINT, "acquire": _SAVE_HINT}


class GuardedStore:
    """A store whose failures are ``StoreError``s that say what failed and where.

    A store plugin may raise anything (sqlite3's "database disk image is malformed",
    ENOSPC, a dropped connection); dlg's callers see one kind of error, with the
    operation and the dialogue, and the CLI prints it without a traceback.
    """

    def __init__(self, store: Any, name: str):
        self._store = store
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._store, attr)
        if not callable(value) or attr.startswith("_"):
            return value

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except DlgError:
                raise
            except Exception as exc:
                subject = args[0] if args and isinstance(args[0], str) else (
                    args[0].get("id") if args and isinstance(args[0], dict) else None)
                about = f" dialogue {subject}" if subject else ""
                verb = _VERBS.get(attr, attr)
                hint = _HINTS.get(attr, "")
                raise StoreError(f"the '{self.name}' store could not {verb}{about}: "
                                 f"{_reason(exc)}{hint}") from exc

        guarded.__name__ = attr
        setattr(self, attr, guarded)  # found directly next time
        return guarded

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """The store's ``transaction()``, if it has one (else nothing is grouped), with its
        failures (a commit that cannot be written) as ``StoreError``s."""
        group = getattr(self._store, "transaction", None)
        if group is None:
            yield
            return
        try:
            with group():
                yield
        except (DlgError, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:
            raise StoreError(f"the '{self.name}' store could not write: {_reason(exc)}"
                             f"{_SAVE_HINT}") from exc


class Saver:
    """Saves a dialogue after each turn and when it ends (an observer).

    The store is opened when the dialogue starts, in a worker thread (unless it is open
    already): a store that cannot be opened (a folder that cannot be written, a bad
    setting) is reported before any model is paid for. The first save happens when the
    first turn finishes, with the whole record and the resolved mode
    (``mode_document``). After that, a store with ``save_turn(header, turn)`` writes just the
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
        # per dialogue saved so far: each turn as it was last written
        self._written: dict[str, dict[str, dict[str, Any]]] = {}
        # per dialogue: its own fields (``_header_key``) when its header was last written
        self._headers: dict[str, tuple[Any, ...]] = {}

    async def store(self) -> Any:
        if self._store is None:
            self._store = await anyio.to_thread.run_sync(self._open)
        return self._store

    def dialogue_started(self, dialogue: Any) -> Any:
        # the store opened before the first turn runs, so that one that cannot be opened
        # fails the run before a model is paid for a turn that could not be saved
        return None if self._store is not None else self.store()

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

    async def _save_all(self, dialogue: Any) -> None:
        store = await self._wait(dialogue)
        record = dialogue.to_dict()  # the newest state, taken on the event loop
        if self.mode_document is not None:
            record["mode_document"] = self.mode_document
        if len(record["turns"]) > self.inline_turns:
            self._claim(store, dialogue)
            async with self._locks.setdefault(dialogue.id, anyio.Lock()):
                await anyio.to_thread.run_sync(store.save, record)
        else:
            with _grouped(store):  # the claim and the record: one transaction
                self._claim(store, dialogue)
                store.save(record)
        self._written[dialogue.id] = {t["id"]: t for t in record["turns"]}
        self._headers[dialogue.id] = _header_key(dialogue)

    def _save_turn(self, store: Any, dialogue: Any, turn: Any) -> None:
        row = turn.to_dict()
        key = _header_key(dialogue)
        if key == self._headers.get(dialogue.id) and hasattr(store, "save_rows"):
            store.save_rows(dialogue.id, [row])  # the turn's row; its header is as it was
        else:
            store.save_turn(dialogue.header_dict(), row)
            self._headers[dialogue.id] = key
        self._written[dialogue.id][turn.id] = row
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
        changed = [row for t in dialogue.turns if (row := t.to_dict()) != written.get(t.id)]
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


def _header_key(dialogue: Any) -> tuple[Any, ...]:
    """What a dialogue's saved header holds besides what its turns' rows say (their
    statuses, tokens and cost): when this is unchanged, saving a turn needs its row only."""
    return (dialogue.status, dialogue.error, dialogue.started_at, dialogue.ended_at,
            len(dialogue.turns), repr(dialogue.metadata), repr(dialogue.participants))


def _grouped(store: Any) -> contextlib.AbstractContextManager[Any]:
    """The store's ``transaction()`` (one commit for several writes), if it has one."""
    group = getattr(store, "transaction", None)
    return group() if group is not None else contextlib.nullcontext()


class RowWrites:
    """``save``, ``save_turn`` and ``save_turns`` for a store that keeps a header row and
    a row per turn: the store gives ``_write(header, turns)``, one transaction that
    writes the header (with its ``summary``) and those turns."""

    def _write(self, header: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def save(self, record: dict[str, Any]) -> None:
        """Save a whole dialogue record."""
        self._write(*split_record(record))

    def save_turn(self, header: dict[str, Any], turn: dict[str, Any] | None) -> None:
        """Save one turn (if given) and the dialogue's header (``Dialogue.header_dict()``)."""
        self._write(with_summary(header), [turn] if turn is not None else [])

    def save_turns(self, header: dict[str, Any], turns: list[dict[str, Any]]) -> None:
        """Save some turns and the dialogue's header, in one transaction."""
        self._write(with_summary(header), turns)


def split_record(record: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A whole record as a store that keeps a row per turn writes it: the header (the
    record without its turns, with ``turn_ids`` and its ``summary``) and the turns."""
    turns = record.get("turns", [])
    header = {k: v for k, v in record.items() if k != "turns"}
    header["turn_ids"] = [t["id"] for t in turns]
    header["summary"] = summary(header, [t.get("status") for t in turns])
    return header, turns


def with_summary(header: dict[str, Any]) -> dict[str, Any]:
    """A ``Dialogue.header_dict()`` with its ``summary``, for ``save_turn``."""
    return {**header, "summary": summary(header, header["turn_statuses"])}


def summary(header: dict[str, Any], turn_statuses: list[str]) -> dict[str, Any]:
    """What ``dlg ls`` shows of a dialogue, from its header (``Dialogue.header_dict()``,
    or a record without its turns) and its turns' statuses: for stores to keep."""
    metrics = header.get("metrics") or {}
    parent = (header.get("metadata") or {}).get("parent") or {}
    return {
        "id": header["id"], "mode": header.get("mode"), "status": header.get("status"),
        **({"parent": parent.get("id"), "depth": parent.get("depth")} if parent else {}),
        "created_at": header.get("created_at"), "started_at": header.get("started_at"),
        "ended_at": header.get("ended_at"), "inputs": header.get("inputs"),
        "turns": len(turn_statuses),
        "turns_completed": sum(1 for s in turn_statuses if s == "completed"),
        "total_tokens": metrics.get("total_tokens"),
        "total_cost_usd": metrics.get("total_cost_usd"),
    }


def find_dialogue(store: Any, ref: str) -> dict[str, Any]:
    """The saved record with id ``ref``, or the one whose id starts with ``ref``."""
    record = store.load(ref)
    if record is not None:
        return record
    matches = [s["id"] for s in store.list() if str(s.get("id", "")).startswith(ref)]
    if len(matches) == 1:
        return store.load(matches[0])
    if not matches:
        raise DialogueNotFoundError(
            f"no saved dialogue '{ref}' (`dlg ls` lists them)")
    raise DialogueNotFoundError(
        f"'{ref}' matches {len(matches)} dialogues ({', '.join(matches[:3])}, ...): "
        "give more of the id")


def as_dialogue(record: dict[str, Any]) -> Any:
    """A saved record as a ``dlg.Dialogue``; a record that is not one is a ``StoreError``."""
    from dlg.records.record import Dialogue

    try:
        return Dialogue.from_dict(record)
    except Exception as exc:
        who = record.get("id") if isinstance(record, dict) else None
        raise StoreError(f"saved dialogue {who or '?'} is damaged and cannot be read: "
                         f"{_reason(exc)}") from exc


def list_dialogues(store: Any = None, *, pm: Any = None) -> list[dict[str, Any]]:
    """Summaries of the saved dialogues, newest first."""
    return open_store(store, pm=pm).list()


def load_dialogue(dialogue_id: str, store: Any = None, *, pm: Any = None) -> Any:
    """A saved dialogue (by id or unique id prefix) as a ``dlg.Dialogue``, with its
    sub-dialogues (``dialogue.subdialogues``, each with theirs) as far as they were saved."""
    opened = open_store(store, pm=pm)
    dialogue = as_dialogue(find_dialogue(opened, dialogue_id))
    _attach_children(opened, dialogue, 0)
    return dialogue


def _attach_children(store: Any, dialogue: Any, depth: int) -> None:
    if depth > 8:  # deeper than any mode may nest: a damaged record, not a tree
        return
    for turn in dialogue.turns:
        for entry in (turn.metadata or {}).get("subdialogues") or ():
            record = store.load(entry.get("id")) if isinstance(entry, dict) else None
            if record is not None:
                child = as_dialogue(record)
                _attach_children(store, child, depth + 1)
                dialogue.subdialogues.append(child)
