"""Dialogue stores: opening one (a ``register_stores`` plugin; ``sqlite`` by default),
its failures as clear errors, the lease that keeps a dialogue to one runner, and finding,
listing and loading saved dialogues. Saving as a dialogue runs is ``dlg.records.saver``.
Resuming re-runs only the turns that did not complete (those in flight at a crash,
failed or cancelled ones, and those not reached), never a completed one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio

from dlg import process
from dlg.errors import DlgError, InputError, StoreError
from dlg.language.limits import is_text

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Store
    from dlg.records.record import Dialogue

__all__ = [
    "DialogueBusyError",
    "DialogueNotFoundError",
    "Lease",
    "RowWrites",
    "as_dialogue",
    "delete_dialogue",
    "find_dialogue",
    "interrupted",
    "list_dialogues",
    "load_dialogue",
    "mark_interrupted",
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
            return not _zombie(lease["pid"])
        return float(lease.get("expires") or 0) > time.time()

    def acquire(self, store: Store, dialogue_id: str) -> None:
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

    def check(self, store: Store, dialogue_id: str) -> None:
        """Raise ``DialogueBusyError`` if another process holds the dialogue; hold nothing."""
        self.acquire(store, dialogue_id)
        self.release(store, dialogue_id)

    def release(self, store: Store, dialogue_id: str) -> None:
        release = getattr(store, "release", None)
        if release is not None:
            release(dialogue_id, self.token)


INTERRUPTED = "interrupted"  # its runner died while it ran (no live process holds it): resumable


def interrupted(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (``list()``'s summaries) with each one saved ``running`` that no live
    process holds (no lease, or its process is gone: a SIGKILL, a crash, a reboot) listed
    as ``interrupted``; ``dlg resume ID`` continues it. A store without leases to read
    (``leases(ids)``) leaves them as saved, since it cannot tell."""
    from dlg.records.record import RUNNING

    read = getattr(store, "leases", None)
    running = [r["id"] for r in rows if r.get("status") == RUNNING]
    if read is None or not running:
        return rows
    held = read(running)
    dead = {i for i in running if i not in held or not Lease.is_live(held[i])}
    if dead and hasattr(store, "headers"):  # one that ended (and let go) since: as it is
        now = store.headers(sorted(dead))
        dead = {i for i in dead if (now.get(i) or {}).get("status", RUNNING) == RUNNING}
    return [{**r, "status": INTERRUPTED} if r["id"] in dead else r for r in rows]


def mark_interrupted(store: Store, dialogue_id: str, why: str) -> dict[str, Any] | None:
    """The saved record of a dialogue whose runner is known to have died (an executor
    says so: a Ray worker killed, its node lost), after marking a dialogue saved as
    ``running`` (or ``pending``) ``interrupted``, ``why`` its error: it reads as what it
    is, not as running, and ``dlg resume`` or ``dlg batch --resume`` continues it (its
    turns in flight run again, its completed ones are kept). Written under a lease, so a
    dialogue another live process holds (or a lease taken on another host that has not
    expired) is left as it is. None if nothing was saved."""
    from dlg.records.record import PENDING, RUNNING

    record = store.load(dialogue_id)
    if record is None or record.get("status") not in (RUNNING, PENDING):
        return record
    lease = Lease()
    try:
        lease.acquire(store, dialogue_id)
    except DialogueBusyError:
        return record
    try:
        record = store.load(dialogue_id)  # as it is, now that it is held here
        if record is None or record.get("status") not in (RUNNING, PENDING):
            return record
        dialogue = as_dialogue(record)
        dialogue.status, dialogue.error = INTERRUPTED, why
        marked = dialogue.to_dict()
        if "mode_document" in record:
            marked["mode_document"] = record["mode_document"]
        store.save(marked)
        return marked
    finally:
        lease.release(store, dialogue_id)


def _zombie(pid: int) -> bool:
    """Whether the process has ended but its parent has not reaped it yet (Linux: its
    state in ``/proc``): a worker killed with SIGKILL is one until its parent (Ray's
    raylet, a shell) collects it, and holds nothing."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] == b"Z"


def open_store(store: Store | str | None = None, *, pm: pluggy.PluginManager | None = None,
               **options: Any) -> Store:
    """A store object: one given, or one registered by name (``DLG_STORE``, default
    ``sqlite``) by the plugins of ``pm``."""
    if store is not None and not isinstance(store, str):
        if not callable(getattr(store, "save", None)):  # found out after the first turn
            raise StoreError(f"store={store!r:.60} is not a store: give a store's name "
                             "('sqlite', 'postgres', ...), an object with save(record) and "
                             "the rest of register_stores' methods (docs/plugins.md), or "
                             "None not to save")
        return store
    from dlg import registrations

    name = store or os.environ.get("DLG_STORE") or "sqlite"
    stores = registrations.stores(pm)
    if name not in stores:
        import difflib

        close = difflib.get_close_matches(name, list(stores), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise InputError(f"'{name}' is not a known store{hint} (installed: "
                         f"{', '.join(stores)})")
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
    header["summary"] = summary(header, [t.get("status") for t in turns],
                                [t.get("model") for t in turns])
    return header, turns


def with_summary(header: dict[str, Any]) -> dict[str, Any]:
    """A ``Dialogue.header_dict()`` with its ``summary``, for ``save_turn``."""
    return {**header, "summary": summary(header, header["turn_statuses"],
                                         header.get("turn_models") or [])}


def summary(header: dict[str, Any], turn_statuses: list[str],
            turn_models: list[Any] | None = None) -> dict[str, Any]:
    """What ``dlg ls`` shows of a dialogue, from its header (``Dialogue.header_dict()``,
    or a record without its turns), its turns' statuses and models: for stores to keep.
    ``models``: the models its turns ran on, each named without the options after ``?``
    (where a base URL or a secret's reference may be)."""
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
        "models": sorted({m.partition("?")[0] for m in turn_models or ()
                          if isinstance(m, str) and m.partition("?")[0]}),
    }


def find_dialogue(store: Store, ref: str) -> dict[str, Any]:
    """The saved record with id ``ref``, or the one whose id starts with ``ref``."""
    # an empty prefix would match any dialogue; text that is not valid Unicode (a byte
    # that is not UTF-8 in the argument) is no id, and no store could look it up
    if not isinstance(ref, str) or not ref or not is_text(ref):
        raise DialogueNotFoundError(f"{ref!r} is not a dialogue id (`dlg ls` lists them)")
    record = store.load(ref)
    if record is not None:
        return record
    matches = [s["id"] for s in store.list() if str(s.get("id", "")).startswith(ref)]
    found = store.load(matches[0]) if len(matches) == 1 else None
    if found is not None:
        return found
    if len(matches) < 2:  # none, or the one deleted since it was listed
        raise DialogueNotFoundError(
            f"no saved dialogue '{ref}' (`dlg ls` lists them)")
    raise DialogueNotFoundError(
        f"'{ref}' matches {len(matches)} dialogues ({', '.join(matches[:3])}, ...): "
        "give more of the id")


def as_dialogue(record: dict[str, Any]) -> Dialogue:
    """A saved record as a ``dlg.Dialogue``; a record that is not one is a ``StoreError``."""
    from dlg.records.record import Dialogue

    try:
        return Dialogue.from_dict(record)
    except Exception as exc:
        who = record.get("id") if isinstance(record, dict) else None
        raise StoreError(f"saved dialogue {who or '?'} is damaged and cannot be read: "
                         f"{_reason(exc)}") from exc


def list_dialogues(store: Store | str | None = None, *,
                   pm: pluggy.PluginManager | None = None) -> list[dict[str, Any]]:
    """Summaries of the saved dialogues, newest first."""
    return open_store(store, pm=pm).list()


def load_dialogue(dialogue_id: str, store: Store | str | None = None, *,
                  pm: pluggy.PluginManager | None = None) -> Dialogue:
    """A saved dialogue (by id or unique id prefix) as a ``dlg.Dialogue``, with its
    sub-dialogues (``dialogue.subdialogues``, each with theirs) as far as they were saved."""
    opened = open_store(store, pm=pm)
    dialogue = as_dialogue(find_dialogue(opened, dialogue_id))
    _attach_children(opened, dialogue, 0)
    return dialogue


def delete_dialogue(dialogue_id: str, store: Store | str | None = None, *,
                    pm: pluggy.PluginManager | None = None) -> list[str]:
    """Delete a saved dialogue, named by its whole id (a prefix could name the wrong one),
    and the sub-dialogues it saved; returns the ids deleted, its own first. Raises
    ``DialogueNotFoundError`` if none has that id, and ``DialogueBusyError`` if a live
    process runs it or one of its sub-dialogues: then nothing is deleted."""
    opened = open_store(store, pm=pm)
    record = (opened.load(dialogue_id) if isinstance(dialogue_id, str) and dialogue_id
              and is_text(dialogue_id) else None)
    if record is None:
        raise DialogueNotFoundError(f"no saved dialogue '{dialogue_id}' (give its whole id: "
                                    "`dlg ls` lists them)")
    ids = [dialogue_id, *_child_ids(opened, as_dialogue(record), 0)]
    held: list[tuple[Lease, str]] = []
    try:  # hold them all first: one running elsewhere stops the whole deletion
        for one in ids:
            lease = Lease()
            lease.acquire(opened, one)
            held.append((lease, one))
        for one in ids:  # a store's delete drops the dialogue's lease with it
            opened.delete(one)
    except BaseException:
        for lease, one in held:
            with contextlib.suppress(Exception):
                lease.release(opened, one)
        raise
    return ids


def _child_ids(store: Store, dialogue: Dialogue, depth: int) -> list[str]:
    """The ids of the sub-dialogues ``dialogue`` saved, and theirs, as far as saved."""
    if depth > 8:  # deeper than any mode may nest: a damaged record, not a tree
        return []
    out: list[str] = []
    for turn in dialogue.turns:
        for entry in (turn.metadata or {}).get("subdialogues") or ():
            child_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(child_id, str) or child_id in out:
                continue
            record = store.load(child_id)
            if record is not None:
                out.append(child_id)
                out += _child_ids(store, as_dialogue(record), depth + 1)
    return out


def _attach_children(store: Store, dialogue: Dialogue, depth: int) -> None:
    if depth > 8:  # deeper than any mode may nest: a damaged record, not a tree
        return
    for turn in dialogue.turns:
        for entry in (turn.metadata or {}).get("subdialogues") or ():
            child_id = entry.get("id") if isinstance(entry, dict) else None
            record = store.load(child_id) if isinstance(child_id, str) else None
            if record is not None:
                child = as_dialogue(record)
                _attach_children(store, child, depth + 1)
                dialogue.subdialogues.append(child)

