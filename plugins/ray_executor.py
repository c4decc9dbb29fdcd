"""Batches on a Ray cluster: ``dlg batch MODE --inputs FILE --executor ray``.

Each dialogue of the batch is a Ray task, ``concurrency`` in flight at a time; its worker
builds a ``dlg.Orchestrator`` from the batch's options (model specs, router,
constraints), once for the rows it runs (``_Worker``: Ray reuses its worker processes),
and runs, resumes or reports the dialogue exactly as the local executor does
(``dlg.running.batches.run.run_item``). The mode goes as a document with the files it
needs from its folder (the templates it includes, ``own_templates``, and the modes its
turns spawn by path with theirs, ``spawned_files``), written to a private temporary
folder on the worker. Workers save to the batch's store, so for workers
on several machines use a server-backed one (``DLG_STORE=postgres`` with
``DLG_POSTGRES_URL``); each dialogue's budget is kept by the worker running it, counting
what the dialogue spent before, and learned-routing statistics are updated atomically in
the shared store. A batch's ``max_total_cost`` is kept here, in the driver: each task
is sent with a share of what is left (divided among the tasks that can start now), its
dialogue runs within that share, and what it did not spend comes back when it ends.

``DLG_RAY_ADDRESS`` (or ``RAY_ADDRESS``) names the cluster; without one, a local Ray
starts in this process for the batch. The ``DLG_`` environment variables (store, data
directory, plugins, keys given as ``env:`` references...) go to the workers. Needs
``ray`` (``pip install 'dlg-orchestrator[ray]'``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from dlg.plugin import hookimpl

# passed to the workers: where to save, which plugins, and the providers' keys
_FORWARDED = ("DLG_", "OPENAI_", "ANTHROPIC_", "GOOGLE_", "GEMINI_", "XAI_", "OLLAMA_")
# the limits actor of the Ray this process is connected to, by cluster and job
_KEPT: dict[tuple[str, str], Any] = {}


def _run_one(mode_document: dict[str, Any], files: dict[str, str],
             item: dict[str, Any], options: dict[str, Any], store: Any,
             source: str | None = None, share: tuple[float, str] | None = None,
             limits: Any = None) -> dict[str, Any]:
    """A Ray task: one dialogue of a batch, in a worker process. ``files`` are what the
    mode needs from its folder (templates, spawned modes), by path: the worker may be on
    a machine without that folder. ``source`` is where the batch's mode came from, saved
    with the dialogue (so ``dlg resume`` where the batch started finds the mode's file).
    ``share``: the dialogue's share of the batch's total (dollars, and whose it is).
    ``limits``: the batch's ``_Limits`` actor, which paces every worker's calls to a
    rate-limited model as one (``dlg.models.pacing``). The worker process keeps what it
    set up for the batch's first row for the next (``_Worker``)."""
    from dlg.plugin import BatchItem, Budget, pacer, run_item

    worker = _Worker.here()
    orchestrator = worker.orchestrator(options, store)
    mode = worker.mode(mode_document, files, source, orchestrator)
    fields = {k: item[k] for k in ("index", "inputs", "dialogue_id")}
    batch_item = BatchItem(**fields)
    within = None if share is None else Budget(share[0], orchestrator.registry, name=share[1])
    pacer.share(None if limits is None else _SharedLimits(limits))
    try:
        worker.call(run_item, orchestrator, mode, batch_item, within)
    finally:
        pacer.share(None)  # the next task may be another batch's, with its own
    import socket

    batch_item.worker = f"{socket.gethostname()}:{os.getpid()}"
    return batch_item.to_dict()


class _Worker:
    """What a Ray worker process keeps from one task to the next, as Ray reuses the
    process for a batch's later rows (and later batches): one event loop, running in a
    thread for the process's life (so models, made per event loop, are made once, and
    their HTTP connections stay open), the orchestrators (plugins found, registry read,
    store opened, models bound) by the options and environment that made them, and the
    modes by their document and files (written once to a private folder). Making a
    row's model alone took 80 to 160 ms on 2 busy cores."""

    _here: _Worker | None = None
    KEEP = 4  # orchestrators and modes kept, the most recent

    def __init__(self) -> None:
        from collections import OrderedDict

        self._portal: Any = None
        self._orchestrators: OrderedDict[str, Any] = OrderedDict()
        self._modes: OrderedDict[str, tuple[Any, Any]] = OrderedDict()

    @classmethod
    def here(cls) -> _Worker:
        if cls._here is None:
            import atexit

            cls._here = cls()
            atexit.register(cls._here.close)
        return cls._here

    def call(self, function: Any, *args: Any) -> Any:
        """Run ``function(*args)`` in the process's event loop, and wait for it."""
        if self._portal is None:
            import atexit

            from anyio.from_thread import start_blocking_portal

            manager = start_blocking_portal()
            self._portal = manager.__enter__()
            atexit.register(manager.__exit__, None, None, None)
        return self._portal.call(function, *args)

    def orchestrator(self, options: dict[str, Any], store: Any) -> Any:
        import json

        from dlg.plugin import Orchestrator

        env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED)}
        key = json.dumps([options, repr(store), env], sort_keys=True, default=repr)
        found = self._orchestrators.get(key)
        if found is None:
            found = Orchestrator(store=store, **options)
            found.open_store()  # once, not per row
            self._keep(self._orchestrators, key, found)
        self._orchestrators.move_to_end(key)
        return found

    def mode(self, document: dict[str, Any], files: dict[str, str], source: str | None,
             orchestrator: Any) -> Any:
        import dataclasses
        import json
        import tempfile

        from dlg.plugin import load_mode

        key = json.dumps([document, files, source], sort_keys=True, default=repr)
        found = self._modes.get(key)
        if found is None:
            folder = tempfile.TemporaryDirectory(prefix="dlg-mode-") if files else None
            try:
                if folder is not None:
                    _write_files(files, folder.name)
                mode = load_mode(document, base_dir=folder.name if folder else None,
                                 pm=orchestrator.plugin_manager)
                if source is not None:
                    mode = dataclasses.replace(mode, source=source)
            except BaseException:
                if folder is not None:
                    folder.cleanup()
                raise
            found = (folder, mode)
            self._keep(self._modes, key, found)
        self._modes.move_to_end(key)
        return found[1]

    def _keep(self, kept: Any, key: str, value: Any) -> None:
        kept[key] = value
        while len(kept) > self.KEEP:
            _, old = kept.popitem(last=False)
            self._drop(old)

    @staticmethod
    def _drop(old: Any) -> None:
        """Let go of a kept orchestrator (its store closed: its connection or file would
        stay open for the process's life) or mode (its folder removed)."""
        if isinstance(old, tuple):
            if old[0] is not None:
                old[0].cleanup()
            return
        close = getattr(old.open_store(), "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # a store that cannot close cleanly is gone all the same
                import logging

                logging.getLogger("dlg.ray").warning("a kept store did not close",
                                                     exc_info=True)

    def close(self) -> None:
        """At the worker process's exit: every kept store closed, every folder removed."""
        for kept in (self._orchestrators, self._modes):
            while kept:
                self._drop(kept.popitem(last=False)[1])


class _Limits:
    """A Ray actor: the schedules of a batch's rate limits (``dlg.models.pacing``), one
    for all its workers, so that they keep to a provider's limit together rather than
    each to all of it."""

    def __init__(self) -> None:
        from dlg.plugin import Schedule

        self._new = Schedule
        self.schedules: dict[str, Any] = {}

    def reserve(self, key: str, rpm: float | None, tpm: float | None, tokens: int) -> float:
        import time

        schedule = self.schedules.get(key) or self.schedules.setdefault(key, self._new())
        return float(schedule.reserve(time.monotonic(), rpm, tpm, tokens))

    def settle(self, key: str, refund: int, future: float) -> None:
        import time

        if key in self.schedules:
            self.schedules[key].settle(time.monotonic(), refund, future)


class _SharedLimits:
    """``dlg.models.pacing.SharedLimits`` in a worker: the batch's ``_Limits`` actor."""

    def __init__(self, actor: Any):
        self.actor = actor

    async def reserve(self, key: str, rpm: float | None, tpm: float | None,
                      tokens: int) -> float:
        return float(await self.actor.reserve.remote(key, rpm, tpm, tokens))

    async def settle(self, key: str, refund: int, future: float) -> None:
        # not waited for: the actor runs this worker's calls in the order they were
        # sent, so the settlement comes before this worker's next reservation, and the
        # call's dialogue goes on without a round trip
        self.actor.settle.remote(key, refund, future)


def _write_files(files: dict[str, str], folder: str) -> None:
    """Write each file to its path under ``folder``; a path that would lead out of it is
    refused (the paths come from another process): ``confined``, as for a mode's own
    files, and no backslash (a Windows separator on the machine that sent it)."""
    from pathlib import Path

    from dlg.plugin import DlgError, confined

    root = Path(folder)
    for name, text in files.items():
        target = None if "\\" in name else confined(root, name, [root])
        if target is None or target == root.resolve():
            raise DlgError(f"the batch sent a file named {name!r}, which is not a plain "
                           "relative path: refused")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


class RayExecutor:
    """Runs a batch's dialogues as Ray tasks; see the module docstring."""

    task = staticmethod(_run_one)  # what runs a row on a worker

    def __init__(self, orchestrator: Any):
        self.orchestrator = orchestrator

    @staticmethod
    def limits(ray: Any, batch_id: str) -> Any:
        """The actor holding the schedule of each rate limit, for every worker: one for
        this process's batches while its Ray runs (a named actor, found by name), as the
        limits of a process's batches run locally are one (``dlg.models.pacing``). An
        actor is a process of its own, which took about a second to start on 2 busy
        cores: one per batch held up each batch's first call by as much."""
        context = ray.get_runtime_context()
        where = (str(getattr(context, "gcs_address", "")), str(context.get_job_id()))
        actor = _KEPT.get(where)
        if actor is None:  # an actor lives while a handle to it does: this one's is kept
            _KEPT.clear()  # another Ray's, gone with it
            actor = _KEPT[where] = ray.remote(_Limits).options(
                name=f"dlg-limits-{os.getpid()}", num_cpus=0, get_if_exists=True).remote()
        return actor

    def _check(self) -> None:
        from dlg.plugin import DlgError

        o = self.orchestrator
        given = [o.model, *o.models.values(), *o.pool_models.values()]
        if any(m is not None and not isinstance(m, str) for m in given) or not (
                o.router is None or isinstance(o.router, str)):
            raise DlgError("the ray executor rebuilds the orchestrator on each worker from "
                           "model specs and router names: give models as specs "
                           "('openai:gpt-4o'), not as objects")
        from dlg.plugin import redact

        secret = next((m for m in given if isinstance(m, str) and redact(m) != m), None)
        if secret is not None:
            raise DlgError(f"'{redact(secret)}' holds a secret, which is never sent to "
                           "workers: give it as a reference (api_key=env:NAME) and set "
                           "the variable where dlg batch runs; DLG_ and provider key "
                           "variables go to the workers")

    async def __call__(self, mode: Any, items: list[Any], *, concurrency: int,
                       on_item: Any = None, options: dict[str, Any] | None = None,
                       budget: Any = None) -> None:
        import anyio

        from dlg.plugin import SPENT, not_started, own_templates, spawned_files

        self._check()
        ray = _ray()
        started_here = False
        if not ray.is_initialized():
            address = os.environ.get("DLG_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
            if address:
                await anyio.to_thread.run_sync(_check_reachable, address)
            try:
                await anyio.to_thread.run_sync(lambda: ray.init(
                    address=address or None, include_dashboard=False, log_to_driver=False,
                    **({} if address else {"num_cpus": max(1, concurrency)})))
            except Exception as exc:  # Ray's errors: a missing extra, a refused join...
                from dlg.plugin import DlgError

                text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                where = f"join the Ray cluster at {address}" if address else "start Ray"
                raise DlgError(f"could not {where}: {type(exc).__name__}: {text}") from None
            started_here = True
        try:
            env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED)}
            task = ray.remote(self.task).options(runtime_env={"env_vars": env},
                                                max_retries=0)
            store = self.orchestrator.store
            document = mode.to_dict()
            # what the mode needs from its folder, which other machines do not have
            pm = self.orchestrator.plugin_manager
            files = {**own_templates(mode, pm), **spawned_files(mode, pm)}
            batch_id = _batch_id(items)
            limits = self.limits(ray, batch_id)
            pending = list(items)
            running: dict[Any, Any] = {}
            held: dict[Any, Any] = {}  # each running task's share of the batch's total
            while pending or running:
                while pending and len(running) < max(1, concurrency):
                    if budget is not None and budget.left <= SPENT:
                        if running:  # the running tasks may give some back: wait
                            break
                        item = pending.pop(0)  # nothing left to give, nor to come
                        not_started(item, budget)
                        if on_item is not None:
                            on_item(item)
                        continue
                    item = pending.pop(0)
                    hold = share = None
                    if budget is not None:
                        amount = budget.left / max(1, concurrency - len(running))
                        hold, share = budget.hold(amount), (amount, budget.name)
                    ref = task.remote(document, files, item.to_dict(), options or {},
                                      store, mode.source, share, limits)
                    running[ref], held[ref] = item, hold
                if not running:
                    break
                done, _ = await anyio.to_thread.run_sync(
                    lambda: ray.wait(list(running), num_returns=1, timeout=1.0))
                for ref in done:
                    item, hold = running.pop(ref), held.pop(ref)
                    try:
                        _merge(item, await anyio.to_thread.run_sync(ray.get, ref))
                    except Exception as exc:  # the task itself failed, not its dialogue
                        await anyio.to_thread.run_sync(
                            _task_failed, item, exc, self.orchestrator.open_store(),
                            batch_id)
                        if hold is not None:  # what it spent is not known: all of it
                            budget.settle(hold, hold.amount)
                    else:
                        if hold is not None:
                            budget.settle(hold, item.spent_usd)
                    if on_item is not None:
                        on_item(item)
        finally:
            if started_here:
                _KEPT.clear()
                await anyio.to_thread.run_sync(ray.shutdown)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse at once a cluster address (``HOST:PORT`` or ``ray://HOST:PORT``) nothing
    answers at: Ray itself retries for minutes, printing only its own warnings."""
    import re
    import socket

    from dlg.plugin import DlgError

    found = re.fullmatch(r"(?:ray://)?\[?([^\]/\s]+?)\]?:(\d{1,5})/?", address.strip())
    if found is None:  # "auto", "local", ...: Ray's to resolve
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DlgError(f"cannot reach the Ray cluster at {address} ({reason}): check "
                       "DLG_RAY_ADDRESS (or RAY_ADDRESS), or unset it to start a local "
                       "Ray for the batch") from None


def _task_failed(item: Any, exc: Exception, store: Any, batch_id: str) -> None:
    """A task that raised (its worker died, or setting up its dialogue there failed) is
    its item's failure, said in a line, and the batch goes on: ``--resume`` retries it.
    What its dialogue saved before is read from the store and reported as it is (its
    turns, tokens and cost); one saved as running, whose worker is gone, is marked
    ``interrupted`` there (``dlg.records.store.mark_interrupted``)."""
    from dlg.plugin import ENDED, DlgError, as_dialogue, mark_interrupted

    cause = getattr(exc, "cause", None) or exc  # a RayTaskError holds the worker's error
    text = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    reason = f"the Ray task failed: {type(cause).__name__}" + (f": {text}" if text else "")
    item.status, item.error = "failed", reason
    if store is None:
        return
    reason += f"; `dlg batch --resume {batch_id}` continues it"
    try:
        saved = mark_interrupted(store, item.dialogue_id, reason)
        # Ray may say the task failed a moment before its killed worker is gone, while its
        # lease still reads as live: ask again for a few seconds (this runs in a thread)
        for _ in range(30):
            if saved is None or saved.get("status") not in ("running", "pending"):
                break
            time.sleep(0.1)
            saved = mark_interrupted(store, item.dialogue_id, reason)
        dialogue = None if saved is None else as_dialogue(saved)
    except DlgError:  # the store cannot say: the row says what is known
        return
    if dialogue is None:
        return
    item.record(dialogue)  # its figures as saved, from its turns
    if dialogue.status not in ENDED:  # it ended before its worker died: as it ended
        item.status = dialogue.status if dialogue.status == "interrupted" else "failed"
        item.error = reason


def _batch_id(items: list[Any]) -> str:
    """The batch's id, from its dialogues' (``BATCH-NNNNN``)."""
    return items[0].dialogue_id.rsplit("-", 1)[0] if items else "BATCH"


def _merge(item: Any, result: dict[str, Any]) -> None:
    for key in ("status", "turns", "tokens", "cost_usd", "latency_seconds", "error",
                "skipped", "worker", "spent_usd"):
        setattr(item, key, result.get(key))
    item.model_seconds = result.get("model_seconds") or 0.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        from dlg.plugin import DlgError

        raise DlgError("the ray executor needs Ray: pip install "
                       "'dlg-orchestrator[ray]'") from None
    return ray


@hookimpl
def register_executors(register):
    register("ray", RayExecutor)
