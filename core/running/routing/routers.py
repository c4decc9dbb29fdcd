"""The routers an orchestrator uses: for each mode, the router (as given, else the mode's,
else ``capabilities`` when there is a pool to choose from, else ``participants``), made
once per name; the model pool; the mode's ``Routing``, shared by its dialogues; and the
store the learned router's quality scores are kept in. ``dlg.Orchestrator`` owns one
``Routers``, made with what it was told (``Choices``: its router, models, pool and
constraints), its plugin manager and its store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from dlg.errors import InputError
from dlg.language.mode import Mode

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Store
    from dlg.running.routing.request import Routing

__all__ = ["Choices", "Routers"]


class Choices(Protocol):
    """What the user chose that routing follows (``dlg.Orchestrator`` has them): a router,
    models per participant or one for all, a pool and constraints. A resume may change
    them (to route as the dialogue did), then tells ``Routers.forget``."""

    router: Any
    model: Any
    models: dict[str, Any]
    pool_models: dict[str, Any]
    constraints: dict[str, Any]


class Routers:
    """The routers, routings and quality store of one orchestrator."""

    def __init__(self, choices: Choices, plugin_manager: Callable[[], pluggy.PluginManager],
                 open_store: Callable[[], Store | None]) -> None:
        self._choices = choices
        self._plugin_manager = plugin_manager
        self._open_store = open_store
        self._routers: dict[str, Any] = {}
        # per mode: (the mode, its routing), shared by its dialogues (thousands may run)
        self._routings: dict[int, tuple[Mode, Routing]] = {}
        self._learning_store: Any = None

    def forget(self) -> None:
        """Work the routings out again: what the user chose has changed."""
        self._routings.clear()

    def router(self, mode: Mode | None = None) -> tuple[Any, str]:
        """The router object and its name: as given, else the mode's, else
        ``capabilities`` when there is a pool to choose from, else ``participants``.
        One object per name for this orchestrator (a learning router keeps its state)."""
        chosen = self._choices.router
        if chosen is None and mode is not None:
            chosen = mode.router or ("capabilities" if self._pool_of(mode) else None)
        chosen = chosen or "participants"
        if not isinstance(chosen, str):
            return chosen, getattr(chosen, "name", type(chosen).__name__)
        made = self._routers.get(chosen)
        if made is None:
            made = self._routers[chosen] = self._make_router(chosen)
        return made, chosen

    def _make_router(self, chosen: str) -> Any:
        from dlg import registrations

        routers = registrations.routers(self._plugin_manager())
        base, _, query = chosen.partition("?")  # learned?exploration=0.3
        if base not in routers:
            import difflib

            close = difflib.get_close_matches(base, list(routers), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(f"'{base}' is not a known router{hint} (installed: "
                           f"{', '.join(routers)})")
        router = routers[base]
        if query:
            from dlg.models.spec import ModelSpec

            options = dict(ModelSpec.parse(f"router?{query}").options)
            if not hasattr(router, "with_options"):
                raise InputError(f"router '{base}' takes no options (got '{query}')")
            try:
                router = router.with_options(**options)
            except (TypeError, ValueError) as exc:
                raise InputError(f"router '{chosen}': {exc}") from None
        return router

    def _pool_of(self, mode: Mode) -> dict[str, Any]:
        """The model pool: the mode's ``models``, then the caller's (same names win)."""
        choices = self._choices
        extra = {k: v for k, v in choices.models.items() if k not in mode.participants}
        return {**mode.models, **choices.pool_models, **extra}

    def routing(self, mode: Mode) -> Routing:
        """How this orchestrator routes ``mode``'s turns (``dlg.running.routing.Routing``):
        made once per mode, like its bindings, and shared by the dialogues that run it."""
        cached = self._routings.get(id(mode))
        if cached is not None and cached[0] is mode:
            return cached[1]
        from dlg.running.routing import Routing

        router, name = self.router(mode)
        choices = self._choices
        pinned = frozenset(
            alias for alias, p in mode.participants.items()
            if alias in choices.models or choices.model is not None or p.model is not None)
        routing = Routing(router=router, name=name, pool=self._pool_of(mode), pinned=pinned,
                          constraints={**mode.constraints, **choices.constraints},
                          quality=self.quality_store)
        if len(self._routings) >= 64:  # keep recent modes (as ``bindings`` does)
            del self._routings[next(iter(self._routings))]
        self._routings[id(mode)] = (mode, routing)
        return routing

    def quality_store(self) -> Any:
        """The store learned routing statistics are kept in: this orchestrator's, else
        the default one (statistics are shared even by dialogues that are not saved)."""
        if self._learning_store is None:
            from dlg.records.store import open_store

            self._learning_store = self._open_store() or open_store(
                pm=self._plugin_manager())
        return self._learning_store

    def routing_stats(self) -> dict[str, dict[str, Any]]:
        """What learning routers know: task -> model -> ``QualityStat`` (n, mean, sd)."""
        from dlg.running.routing.learning import routing_stats

        return routing_stats(self.quality_store())

    def rate(self, dialogue_id: str, turn: str | int, score: float) -> Any:
        """Record a quality score (0-10, or 0-1) for one turn of a saved dialogue; what the
        learned router learns from. Returns (task, model, new statistics)."""
        from dlg.running.routing.learning import rate

        return rate(self.quality_store(), dialogue_id, str(turn), score)
