"""The Python API: the same engine the CLI uses.

```python
import dlg

dialogue = await dlg.run("debate", topic="Should cities ban cars?", model="echo")
dialogue = dlg.run_sync("debate", topic="...", participants={"proponent": my_chat_model})
```
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dlg.language.limits import positive
from dlg.language.loader import load_mode
from dlg.language.mode import Mode
from dlg.models import ModelPool, model_label
from dlg.records.record import Dialogue
from dlg.running.bindings import Binder
from dlg.running.execution import run_claimed, run_dialogue
from dlg.running.inputs import new_dialogue, prepare_inputs, read_rows
from dlg.running.resume import Resumer
from dlg.running.routing.routers import Routers
from dlg.running.subdialogues import Children

if TYPE_CHECKING:
    import pluggy

    from dlg.running.routing.request import Routing

__all__ = ["Orchestrator", "batch", "batch_sync", "resume", "run", "run_sync"]


class Orchestrator:
    """Holds what a dialogue runs on: models, router, observers, plugin manager.

    ``models`` maps participant aliases to model specs or LangChain chat models (the
    spec's ``Dialogue(models={...})``); a key that is no participant's alias names a model
    for the **pool** instead. ``pool`` (names to specs or chat models, or a list of specs)
    is what routers choose from for turns no participant pins. ``model`` sends every
    participant to one model. ``router`` is a router name or object; by default the mode's,
    else ``capabilities`` when there is a pool, else ``participants``. ``constraints``
    (``{"quality": "maximum"}``, ``{"max_cost": 0.5}``, ...) and ``max_cost`` (dollars,
    a hard limit per dialogue) add to the mode's ``constraints``.

    It owns its collaborators: ``routers`` (the routers and routings of its modes, the
    quality store), ``resumer`` (continuing saved dialogues), ``children`` (the
    sub-dialogues of spawning turns) and ``binder`` (the models its modes' participants
    are bound to, checked), each made with what it needs. How it runs a dialogue (claimed,
    saved, within a budget) is ``dlg.running.execution``.
    """

    def __init__(
        self,
        *,
        models: Mapping[str, Any] | None = None,
        model: Any = None,
        router: str | Any | None = None,
        pool: Mapping[str, Any] | Sequence[Any] | None = None,
        constraints: Mapping[str, Any] | None = None,
        max_cost: float | None = None,
        observers: Sequence[Any] = (),
        timeout: float | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        registry: Any = None,
        retry: Any = None,
        store: Any = "default",
        watchdog: bool = False,
    ):
        self.models = dict(models or {})
        self.model = model
        self.router = router
        ModelPool.check_given(model, self.models, pool)
        self.pool_models: dict[str, Any] = (
            dict(pool) if isinstance(pool, Mapping) else
            {ModelPool.label(m): m for m in (pool or ())})
        self.constraints = dict(constraints or {})
        if max_cost is not None:
            self.constraints["max_cost"] = positive(max_cost, "max_cost", "dollars")
        self.observers = tuple(observers)
        self.timeout = positive(timeout, "timeout", "seconds")
        self._pm = plugin_manager
        self._pool: ModelPool | None = None
        self._registry = registry  # a ModelRegistry, a registry file path, or None
        # the file, kept with a batch and sent to its workers (``options()``)
        self.registry_file = (os.path.abspath(registry)
                              if isinstance(registry, str | os.PathLike) else None)
        self.retry = retry  # a dlg.RetryPolicy, or None for the default
        # where dialogues are saved after every turn: "default" (DLG_STORE, else
        # sqlite), a store name, a store object, or None not to save
        self.store = store
        self._store_obj: Any = None
        self.watchdog = watchdog  # measure event-loop blocking (dialogue.metadata)
        # a dlg.running.interrupt.Interrupt that stops its dialogues (Ctrl-C), or None
        self.interrupt: Any = None
        self.routers = Routers(self, lambda: self.plugin_manager, self.open_store)
        self.resumer = Resumer(self)
        self.children = Children(self)
        self.binder = Binder(self)

    @property
    def plugin_manager(self) -> Any:
        if self._pm is None:
            from dlg.plugin_manager import get_plugin_manager

            self._pm = get_plugin_manager()
        return self._pm

    @property
    def registry(self) -> Any:
        """The model registry: plugin catalogs plus the user's registry file."""
        from dlg.models.catalog import ModelRegistry

        if not isinstance(self._registry, ModelRegistry):
            self._registry = ModelRegistry.load(pm=self.plugin_manager,
                                                user_file=self._registry)
        return self._registry

    @property
    def pool(self) -> ModelPool:
        if self._pool is None:
            self._pool = ModelPool(self.plugin_manager, registry=lambda: self.registry)
        return self._pool

    def routing(self, mode: Mode) -> Routing:
        """How this orchestrator routes ``mode``'s turns (made once per mode)."""
        return self.routers.routing(mode)

    def routing_stats(self) -> dict[str, dict[str, Any]]:
        """What learning routers know: task -> model -> ``QualityStat`` (n, mean, sd)."""
        return self.routers.routing_stats()

    def rate(self, dialogue_id: str, turn: str | int, score: float) -> Any:
        """Record a quality score (0-10, or 0-1) for one turn of a saved dialogue; what the
        learned router learns from. Returns (task, model, new statistics)."""
        return self.routers.rate(dialogue_id, turn, score)

    def chose_again(self) -> None:
        """What the user chose (models, router, pool, constraints) changed: a resume
        filled it in from the saved dialogue. Bindings and routings are worked out anew."""
        self.binder.forget()
        self.routers.forget()

    def prepare_resume(self, dialogue_id: str, *, force: bool = False, mode: Any = None
                       ) -> tuple[Mode, Dialogue]:
        """A saved dialogue made ready to continue; see ``Resumer.prepare_resume``."""
        return self.resumer.prepare_resume(dialogue_id, force=force, mode=mode)

    def reopen(self, record: dict[str, Any], saved: Dialogue, force: bool = False,
               mode: Mode | None = None, chosen: bool = False) -> tuple[Mode, Dialogue]:
        """A saved dialogue's mode and the dialogue ready to continue; see ``Resumer``."""
        return self.resumer.reopen(record, saved, force, mode=mode, chosen=chosen)

    async def resume(self, dialogue_id: str, *, force: bool = False, mode: Any = None
                     ) -> Dialogue:
        """Continue a saved dialogue: completed turns are kept, the rest run. Refuses if
        its mode changed since, unless ``force``."""
        return await self.resumer.resume(dialogue_id, force=force, mode=mode)

    async def batch(self, mode: Any, rows: Any, *, batch_id: str | None = None,
                    concurrency: int = 4, executor: str | Any = "local",
                    on_item: Any = None, max_total_cost: float | None = None) -> Any:
        """Run ``mode`` once per row of inputs (a list of mappings, or a ``.jsonl`` or
        ``.csv`` file); see ``dlg.running.batches``. Returns a ``BatchResult``; running it
        again with the same ``batch_id`` continues it. ``max_total_cost`` (dollars)
        limits what the whole batch spends; ``max_cost`` still limits each dialogue."""
        from dlg.running.batches.run import run_batch

        if isinstance(rows, str | os.PathLike):
            rows = read_rows(rows)
        return await run_batch(self, mode, rows, batch_id=batch_id, concurrency=concurrency,
                               executor=executor, on_item=on_item, options=self.options(),
                               max_total_cost=max_total_cost)

    def options(self) -> dict[str, Any]:
        """How this orchestrator was made, as far as it can be written down (model specs,
        not model objects, the registry file by its path): what a batch keeps, and what
        remote workers rebuild it from."""
        from dlg.observability.redact import redact

        def spec(value: Any) -> Any:
            return redact(value) if isinstance(value, str) else None

        return {k: v for k, v in {
            "model": spec(self.model),
            "models": {a: spec(m) for a, m in self.models.items()} or None,
            "pool": {n: spec(m) for n, m in self.pool_models.items()} or None,
            "router": self.router if isinstance(self.router, str) else None,
            "constraints": self.constraints or None,
            "timeout": self.timeout,
            "registry": self.registry_file,
        }.items() if v is not None}

    def bindings(self, mode: Mode) -> tuple[dict[str, Any], Any]:
        """Participant alias -> the model it uses, and the default for unbound turns;
        checked with the router before any turn runs (``dlg.running.bindings``)."""
        return self.binder.bindings(mode)

    def start(self, mode: Any, /, inputs: Mapping[str, Any] | None = None,
              *, dialogue_id: str | None = None, **more_inputs: Any) -> tuple[Mode, Dialogue]:
        """Load the mode, check inputs and models, and create the (pending) dialogue."""
        if dialogue_id is not None:
            from dlg.records.stamps import check_id

            check_id(dialogue_id)
        mode = load_mode(mode, pm=self._pm)
        values = prepare_inputs(mode, {**(inputs or {}), **more_inputs})
        bound, _ = self.binder.bindings(mode)
        # specs with secrets redacted, as the pool keeps them (redacting is not free)
        safe = self.pool.safe_label
        labels = {a: (safe(b) if isinstance(b, str) else None if b is None else model_label(b))
                  for a, b in bound.items()}
        dialogue = new_dialogue(mode, values, dialogue_id, labels)
        if isinstance(self.model, str) and safe(self.model) == self.model:
            dialogue.metadata["model"] = self.model  # so a resume runs on the same model
        routing = self.routing(mode)
        if routing.name != "participants" or routing.pool or routing.constraints:
            # saved with the dialogue, so a resume routes the same way
            dialogue.metadata["routing"] = {
                "router": routing.name,
                "pool": {n: self.pool.safe_label(m) for n, m in routing.pool.items()},
                "pinned": sorted(routing.pinned),
                "constraints": dict(routing.constraints)}
        return mode, dialogue

    async def run(self, mode: Any, /, inputs: Mapping[str, Any] | None = None,
                  *, dialogue_id: str | None = None, **more_inputs: Any) -> Dialogue:
        mode, dialogue = self.start(mode, inputs, dialogue_id=dialogue_id, **more_inputs)
        return await self.execute(mode, dialogue)

    def open_store(self) -> Any:
        """The store dialogues are saved to, or None when saving is off."""
        if self.store is None:
            return None
        if self._store_obj is None:
            from dlg.records.store import open_store

            self._store_obj = open_store(None if self.store == "default" else self.store,
                                         pm=self.plugin_manager)
        return self._store_obj

    def execute(self, mode: Mode, dialogue: Dialogue, *, budget: Any = None,
                within: Any = None) -> Awaitable[Dialogue]:
        """Run (or continue) an existing dialogue: completed turns are not run again.
        ``budget`` (a ``dlg.running.budget.Budget``) is shared with a parent dialogue;
        by default the dialogue's own ``max_cost`` makes one. ``within`` (a ``Budget``
        many dialogues share, a batch's) limits it further; a dialogue of a batch with a
        ``max_total_cost`` that continues without one (``dlg resume ID``) is held to
        what the batch has left. Returns the run to await (a new dialogue's run is the
        kernel's own: no coroutine frame of its own here)."""
        if self.store is not None and dialogue.started_at is not None:
            return run_claimed(self, mode, dialogue, budget, within)
        return run_dialogue(self, mode, dialogue, budget, within)

    def run_sync(self, mode: Any, /, inputs: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> Dialogue:
        import anyio

        async def main() -> Dialogue:
            return await self.run(mode, inputs, **kwargs)

        return anyio.run(main)


async def run(
    mode: Any,
    /,
    inputs: Mapping[str, Any] | None = None,
    *,
    model: Any = None,
    participants: Mapping[str, Any] | None = None,
    router: str | Any | None = None,
    observers: Sequence[Any] = (),
    timeout: float | None = None,
    dialogue_id: str | None = None,
    store: Any = "default",
    pool: Mapping[str, Any] | Sequence[Any] | None = None,
    max_cost: float | None = None,
    constraints: Mapping[str, Any] | None = None,
    **more_inputs: Any,
) -> Dialogue:
    """Run a mode (a name, a path, a dict or a ``Mode``) and return its ``Dialogue``.

    Inputs are keyword arguments (``topic="..."``) or an ``inputs`` mapping. ``model`` sends
    every participant to one model; ``participants`` binds aliases one by one. Each is a
    model spec (``"openai:gpt-4o"``) or a LangChain chat model. ``pool``, ``max_cost`` and
    ``constraints`` are ``dlg run``'s ``--pool``, ``--max-cost`` and ``--quality``
    (``constraints={"quality": ...}``). ``router`` is chosen as ``dlg run --router`` is:
    by default the mode's ``router:``, else ``capabilities`` when there is a pool, else
    ``participants``; see ``Orchestrator``.
    """
    orchestrator = Orchestrator(models=participants, model=model, router=router,
                                observers=observers, timeout=timeout, store=store,
                                pool=pool, max_cost=max_cost, constraints=constraints)
    return await orchestrator.run(mode, inputs, dialogue_id=dialogue_id, **more_inputs)


async def resume(dialogue_id: str, *, force: bool = False, mode: Any = None,
                 **options: Any) -> Dialogue:
    """Continue a saved dialogue (by id or unique id prefix); see ``Orchestrator.resume``."""
    return await Orchestrator(**options).resume(dialogue_id, force=force, mode=mode)


async def batch(mode: Any, rows: Any, *, concurrency: int = 4, batch_id: str | None = None,
                executor: str = "local", max_total_cost: float | None = None,
                **options: Any) -> Any:
    """Run ``mode`` once per row of inputs (mappings, or a ``.jsonl``/``.csv`` file);
    ``options`` make the ``Orchestrator`` (``model=``, ``models=``, ``max_cost=`` for each
    dialogue, ...); ``max_total_cost`` limits what the batch spends in all. Returns a
    ``dlg.running.batches.items.BatchResult``."""
    return await Orchestrator(**options).batch(mode, rows, batch_id=batch_id,
                                               concurrency=concurrency, executor=executor,
                                               max_total_cost=max_total_cost)


def batch_sync(mode: Any, rows: Any, **kwargs: Any) -> Any:
    """``batch`` for code that is not async."""
    import anyio

    async def main() -> Any:
        return await batch(mode, rows, **kwargs)

    return anyio.run(main)


def run_sync(mode: Any, /, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> Dialogue:
    """``run`` for code that is not async: starts an event loop for the dialogue."""
    import anyio

    async def main() -> Dialogue:
        return await run(mode, inputs, **kwargs)

    return anyio.run(main)
