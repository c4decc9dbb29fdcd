"""What a router is asked, what it answers, and how a turn's model is chosen.

The kernel asks the dialogue's router (``register_routers``; ``--router NAME``) for each
turn's model with a ``RouteRequest``: the turn, the user's bindings, the model **pool**
(the candidates the user offered: ``Orchestrator(pool=...)``, a mode's ``models:``,
``--pool``), the model registry, what can run here, the dialogue so far, the turn's
constraints and what is left of the budget. A router answers with a ``Route`` (a model,
its fallback chain and why), or with a bare model spec or chat model.

A router is an object with ``async def route(request)`` (or a plain ``select(request)``
for the simplest ones). Built-ins: ``participants`` (each turn on its participant's
model), ``capabilities`` (requires, prefer, price, latency, context and a quality/cost
preference) and ``learned`` (a bandit over quality signals); see docs/routing.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dlg.errors import ModelError, PluginError

__all__ = ["Route", "RouteRequest", "Routing", "budget_note", "budgeted_route", "cheapest",
           "describe_route", "route_turn", "select_model"]


@dataclass(frozen=True)
class RouteRequest:
    """Everything a router may use to choose a model for one turn."""

    turn: Any  # dlg.language.mode.Turn
    mode: Any  # dlg.language.mode.Mode
    bindings: Mapping[str, Any]  # participant alias -> spec or chat model
    default: Any  # the model used when nothing else applies (spec, instance or None)
    constraints: Mapping[str, Any] = field(default_factory=dict)
    pool: Mapping[str, Any] = field(default_factory=dict)  # name -> spec or chat model
    pinned: frozenset[str] = frozenset()  # aliases whose model the user or mode named
    registry: Any = None  # dlg.ModelRegistry
    available: Callable[[Any], bool] = field(default=lambda model: True)
    dialogue: Any = None  # the dialogue so far (None when checking before a run)
    budget_left: float | None = None  # dollars left under max_cost, if any
    prompt_tokens: int = 0  # an upper bound on the turn's prompt, in tokens
    quality: Callable[[], Any] | None = None  # the store's quality statistics, if any

    @classmethod
    def of(cls, **fields: Any) -> RouteRequest:
        """The same as ``RouteRequest(**fields)`` with every field given, made in a third
        of the time: the kernel makes one for every turn, and a frozen dataclass sets
        each field through ``object.__setattr__``."""
        if fields.keys() != _REQUEST_FIELDS:
            raise TypeError(f"RouteRequest.of takes every field: {sorted(_REQUEST_FIELDS)}")
        request = object.__new__(cls)
        request.__dict__.update(fields)
        return request

    @property
    def participant(self) -> str | None:
        return self.turn.participant or (
            self.turn.prefer if self.turn.prefer in self.mode.participants else None
        )

    @property
    def is_pinned(self) -> bool:
        """The turn speaks as a participant whose model the user or the mode chose."""
        alias = self.participant
        return alias is not None and alias in self.pinned

    @property
    def task(self) -> str:
        """What learning routers learn per: the turn's role, lower case."""
        return str(self.turn.role).strip().lower()


_REQUEST_FIELDS = frozenset(RouteRequest.__dataclass_fields__)


@dataclass(frozen=True)
class Routing:
    """How a dialogue's turns get their models: the router and what it chooses from."""

    router: Any
    name: str = "participants"
    pool: Mapping[str, Any] = field(default_factory=dict)  # name -> spec or chat model
    pinned: frozenset[str] = frozenset()  # participants whose model was named
    constraints: Mapping[str, Any] = field(default_factory=dict)  # the dialogue's
    quality: Callable[[], Any] | None = None  # opens the store learned quality is kept in


@dataclass(frozen=True)
class Route:
    """A router's answer: the model, the models to fall back on, and why."""

    model: Any
    fallbacks: tuple[Any, ...] = ()
    reason: str = ""
    name: str | None = None  # the pool name chosen, if the model came from the pool

    @classmethod
    def to(cls, model: Any) -> Route:
        """``Route(model)``, made as ``RouteRequest.of`` makes a request (the kernel makes
        one for every turn whose router answers with a bare model)."""
        route = object.__new__(cls)
        route.__dict__.update(model=model, fallbacks=(), reason="", name=None)
        return route


def cheapest(pool: Mapping[str, Any], registry: Any, available: Callable[[Any], bool]
             ) -> Any:
    """The pool's cheapest model that can run now and has a known price, or None."""
    if not pool or registry is None:
        return None
    priced = []
    for name, model in pool.items():
        info = registry.get(model if isinstance(model, str) else name)
        if info is not None and info.cost_per_million is not None and available(model):
            priced.append((info.cost_per_million, name))
    return pool[min(priced)[1]] if priced else None


def select_model(router: Any, request: RouteRequest) -> Any:
    """The model a synchronous router chooses (``select``); used to check models before
    a run. A router with only ``route`` is asked at run time."""
    if not hasattr(router, "select"):
        return None
    choice = router.select(request)
    if isinstance(choice, Route):
        choice = choice.model
    if choice is None:
        _no_model(request)
    return choice


def _no_model(request: RouteRequest) -> None:
    who = request.participant or request.turn.id
    raise ModelError(
        f"no model for '{who}': pass --model SPEC (for example --model echo), "
        f"--participant {who}=SPEC, or set DLG_MODEL"
    )


async def route_turn(router: Any, request: RouteRequest, name: str = "router") -> Route:
    """Ask ``router`` for the turn's model; a ``Route`` whatever the router answered."""
    try:
        if hasattr(router, "route"):
            answer = router.route(request)
            if inspect.isawaitable(answer):
                answer = await answer
        else:
            answer = router.select(request)
    except (ModelError, PluginError):
        raise
    except Exception as exc:
        raise PluginError(f"router '{name}' failed: {type(exc).__name__}: {exc}") from exc
    if answer is None:
        _no_model(request)
    if isinstance(answer, Route):
        if answer.model is None:
            _no_model(request)
        return answer
    return Route.to(answer)


def describe_route(router: str, route: Route, pool: Any) -> dict[str, Any]:
    """How the turn's model was chosen, for the record, `dlg show` and the exports."""
    out: dict[str, Any] = {"router": router, "model": pool.safe_label(route.model)}
    if route.reason:
        out["reason"] = route.reason
    if route.name:
        out["pool_name"] = route.name
    if route.fallbacks:
        out["fallbacks"] = [pool.safe_label(f) for f in route.fallbacks]
    return out


def budgeted_route(described: dict[str, Any], label: str, left: float,
                   pool: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """``described`` (``describe_route``'s) when the budget could not pay for the
    router's pick and planned the turn on ``model`` (``label``), one of its fallbacks,
    with ``left`` dollars: ``model`` names what runs, ``budget_moved_from`` the router's
    pick, and ``pool_name`` the pool's name for what runs (what learning routers rate)."""
    out = {**described, "model": label, "budget_moved_from": described["model"],
           "budget_left": round(left, 10)}
    name = next((n for n, m in pool.items()
                 if m is model or (isinstance(model, str) and m == model)), None)
    if name is None:
        out.pop("pool_name", None)
    else:
        out["pool_name"] = name
    return out


def budget_note(routing: Mapping[str, Any]) -> str:
    """What a turn's routing record says of a budget that changed the router's pick
    (``budgeted_route``), for ``dlg show`` and the exports; empty if it did not."""
    moved = routing.get("budget_moved_from")
    if not moved:
        return ""
    left = routing.get("budget_left")
    having = f" (${left:.5f} left)" if isinstance(left, int | float) else ""
    return f"the budget{having} could not pay for the router's pick {moved}"
