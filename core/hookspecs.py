"""The hooks a dlg plugin can implement. The prose lives in docs/plugins.md.

Registration hooks take a ``register`` callback and are synchronous; the async work lives
on the objects they register. Lifecycle hooks are called by the kernel as a dialogue runs;
an implementation may be a plain function or an ``async def`` (the kernel awaits it), and
takes only the arguments it names. ``before_turn`` is the one hook whose answer steers the
dialogue (``dlg.Decision``); the other lifecycle hooks observe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import pluggy

# the records the lifecycle hooks are given: ``dlg.Dialogue`` and ``dlg.TurnRecord``.
# Named here, not imported: the records reach the plugin machinery (a dialogue exports
# itself with the exporters plugins registered), so the hooks cannot import them back
# without an import cycle.
Dialogue: TypeAlias = Any
TurnRecord: TypeAlias = Any

hookspec = pluggy.HookspecMarker("dlg")
hookimpl = pluggy.HookimplMarker("dlg")


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register model providers: ``register(name, factory, description=...)``."""


@hookspec
def register_routers(register: Callable[..., None]) -> None:
    """Register routers that pick a model for a turn: ``register(name, router)``."""


@hookspec
def register_exporters(register: Callable[..., None]) -> None:
    """Register dialogue exporters: ``register(exporter)``."""


@hookspec
def register_stores(register: Callable[..., None]) -> None:
    """Register dialogue stores (persistence backends): ``register(name, factory)``."""


@hookspec
def register_embeddings(register: Callable[..., None]) -> None:
    """Register text embeddings (for choosing relevant context): ``register(name, factory)``."""


@hookspec
def register_executors(register: Callable[..., None]) -> None:
    """Register where batches run: ``register(name, factory)``; ``factory(orchestrator)``
    gives the executor (``dlg.running.batches``); ``dlg batch --executor NAME`` uses it."""


@hookspec
def register_modes(register: Callable[..., None]) -> None:
    """Register modes a plugin ships: ``register(name, source)``."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``dlg`` command line: ``cli`` is its click group."""


@hookspec
def prepare_jinja_environment(env: Any) -> None:
    """Customise the sandboxed Jinja environment prompts render in (filters, globals)."""


@hookspec
def dialogue_started(dialogue: Dialogue) -> Any:
    """Called once when a dialogue starts, before its first turn."""


@hookspec
def before_turn(dialogue: Dialogue, turn: TurnRecord, model: Any) -> Any:
    """Decide a turn before it runs: return a ``dlg.Decision`` (run, run on another model,
    skip, stop the dialogue) or None to let it run on ``model``, the router's choice."""


@hookspec
def turn_started(dialogue: Dialogue, turn: TurnRecord) -> Any:
    """Called when a turn starts, after its prompt is rendered and its model chosen."""


@hookspec
def turn_chunk(dialogue: Dialogue, turn: TurnRecord, text: str) -> Any:
    """Called with each piece of a turn's text as it streams in (when anyone listens)."""


@hookspec
def turn_progress(dialogue: Dialogue, turn: TurnRecord) -> Any:
    """Called when a running turn reaches a point worth saving: a spawning turn has
    answered and planned its sub-dialogues, which run next."""


@hookspec
def turn_finished(dialogue: Dialogue, turn: TurnRecord) -> Any:
    """Called when a turn ends: completed, failed, skipped or cancelled."""


@hookspec
def dialogue_finished(dialogue: Dialogue) -> Any:
    """Called once when a dialogue ends, whatever its status; runs even on cancellation."""
