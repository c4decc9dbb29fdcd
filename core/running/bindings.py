"""Which model each participant of a mode runs on, checked before any turn runs.

``Binder`` does it for a ``dlg.Orchestrator`` (which owns one): a participant bound by
name (``models=``), else every participant to one model (``model=``), else the mode's
own model for it, else the default; a key of ``models`` that is no participant's alias
names a pool model, unless it looks like a misspelt alias. Then the router is asked about
every turn, so a missing model fails before the dialogue starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from dlg.errors import DlgError, InputError
from dlg.language.mode import Mode
from dlg.models import default_model_spec

if TYPE_CHECKING:
    import pluggy

    from dlg.models.pool import ModelPool
    from dlg.running.routing.request import Routing

__all__ = ["Bindable", "Binder"]


class Bindable(Protocol):
    """What a ``Binder`` needs of its orchestrator: the models the user gave, and its
    plugins, model registry, pool and routings to check them with."""

    models: dict[str, Any]
    model: Any

    @property
    def plugin_manager(self) -> pluggy.PluginManager: ...
    @property
    def registry(self) -> Any: ...
    @property
    def pool(self) -> ModelPool: ...
    def routing(self, mode: Mode) -> Routing: ...


class Binder:
    """``bindings`` for one orchestrator, worked out once per mode."""

    def __init__(self, orchestrator: Bindable) -> None:
        self._of = orchestrator
        # per mode: (the mode, its bindings and default), so repeated runs skip the work
        self._bound: dict[int, tuple[Mode, dict[str, Any], Any]] = {}

    def forget(self) -> None:
        """What the user chose changed (a resume filled it in): bind every mode anew."""
        self._bound.clear()

    def bindings(self, mode: Mode) -> tuple[dict[str, Any], Any]:
        """Participant alias -> the model it uses, and the default for unbound turns."""
        cached = self._bound.get(id(mode))
        if cached is not None and cached[0] is mode:
            return cached[1], cached[2]
        of = self._of
        default = of.model if of.model is not None else default_model_spec(
            of.plugin_manager)
        import difflib

        # a key that is no alias is a pool model, unless it looks like a misspelt alias
        for key in of.models:
            close = difflib.get_close_matches(key, list(mode.participants), n=1, cutoff=0.75)
            if key not in mode.participants and (close or not mode.participants):
                raise InputError(
                    f"mode '{mode.name}' has no participant '{key}'"
                    + (f"; did you mean '{close[0]}'?" if close else "")
                    + f" (its participants: {', '.join(mode.participants) or 'none'}; to "
                    "offer a model to the router, use pool=)")
        bound: dict[str, Any] = {}
        for alias, participant in mode.participants.items():
            if alias in of.models:
                bound[alias] = of.models[alias]
            elif of.model is not None:
                bound[alias] = of.model
            elif participant.model is not None:
                bound[alias] = participant.model
            else:
                bound[alias] = default
        self._check(mode, bound, default)
        if len(self._bound) >= 64:  # an embedder may run many one-off modes: keep recent ones
            del self._bound[next(iter(self._bound))]
        self._bound[id(mode)] = (mode, bound, default)
        return bound, default

    def _check(self, mode: Mode, bound: dict[str, Any], default: Any) -> None:
        """Ask the router about every turn now, so a missing model fails before any turn
        (routers that only choose at run time are asked then); make ready the pool's
        models that can run here."""
        from dlg.running.routing import RouteRequest, select_model

        of = self._of
        routing = of.routing(mode)
        needed = set()
        for turn in mode.turns:
            choice = select_model(routing.router, RouteRequest(
                turn=turn, mode=mode, bindings=bound, default=default, pool=routing.pool,
                pinned=routing.pinned, registry=of.registry))
            if isinstance(choice, str):
                needed.add(choice)
        pool = of.pool
        for spec in sorted(needed):
            pool.check(spec)
        if routing.pool and not any(not isinstance(m, str) or pool.problem(m) is None
                                    for m in routing.pool.values()):
            problems = "; ".join(f"{n}: {pool.problem(m)}" for n, m in routing.pool.items())
            raise DlgError(f"no model of the pool can run here ({problems})")
        needed |= {m for m in routing.pool.values()
                   if isinstance(m, str) and pool.problem(m) is None}
        # make the models and the template environment now, before any event loop runs
        # (in the CLI): both import packages, which would block a running loop
        for spec in sorted(needed):
            pool.get(spec)
        from dlg.language.templates import environment

        environment(mode.template_dirs, of.plugin_manager)
