"""The built-in routers: ``participants`` and ``capabilities``.

``participants``: each turn runs on its participant's model (a turn with no participant
on the one it ``prefer``s, else the default model).

``capabilities``: a turn whose participant's model the user or the mode named runs on
that model. Any other turn is routed over the **pool**: the models that can run here and
have every capability the turn ``requires``, within its constraints (``max_price``,
``max_latency``, ``min_context`` and a context window that holds the prompt); those the
turn ``prefer``s (by name: ``prefer: claude``) come first, then by the ``quality``
preference: ``maximum`` (best first), ``minimum_cost`` (cheapest first) or ``balanced``
(the default: quality, less a penalty for price). The rest of the ranking is the turn's
fallback chain, ending with the cheapest models, so a budget can step down to them.
With no pool, it behaves as ``participants``.
"""

from __future__ import annotations

import math
from typing import Any

from dlg.plugin import Route, hookimpl


class ParticipantRouter:
    name = "participants"

    def select(self, request: Any) -> Any:
        alias = request.participant
        if alias is not None and alias in request.bindings:
            return request.bindings[alias]
        return request.default


def _info(request: Any, name: str, model: Any) -> Any:
    registry = request.registry
    if registry is None:
        return None
    for key in (model if isinstance(model, str) else None, name):
        if key:
            info = registry.get(key)
            if info is not None:
                return info
    return None


def eligible(request: Any) -> list[tuple[str, Any, Any]]:
    """(name, model, registry entry) of the pool models that may run this turn."""
    c = request.constraints
    out = []
    for name, model in request.pool.items():
        if not request.available(model):
            continue
        info = _info(request, name, model)
        caps = set(info.capabilities) if info is not None else set()
        if not set(request.turn.requires) <= caps:
            continue
        if info is not None:
            price = info.cost_per_million
            if c.get("max_price") is not None and (price is None or price > c["max_price"]):
                continue
            if c.get("max_latency") is not None and info.latency is not None and (
                    info.latency > c["max_latency"]):
                continue
            window = info.context_window
            if window and (request.prompt_tokens > window or (
                    c.get("min_context") and window < c["min_context"])):
                continue
        elif c.get("max_price") is not None or c.get("max_latency") is not None:
            continue  # unknown price or latency cannot be shown to fit a limit
        out.append((name, model, info))
    return out


def _preferred(request: Any, name: str, model: Any) -> bool:
    prefer = (request.turn.prefer or "").strip().lower()
    if not prefer or prefer in request.mode.participants:
        return False
    label = model if isinstance(model, str) else ""
    return prefer in name.lower() or prefer in label.lower()


def rank(request: Any, found: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """``found`` best first for the turn's preference and quality/cost setting."""
    quality_pref = request.constraints.get("quality", "balanced")
    prices = [i.cost_per_million for _, _, i in found if i is not None and i.cost_per_million]
    top_price = max(prices, default=1.0) or 1.0

    def key(entry: tuple[str, Any, Any]) -> tuple[Any, ...]:
        name, model, info = entry
        quality = (info.quality or 0.0) if info is not None else 0.0
        price = (info.cost_per_million or 0.0) if info is not None else math.inf
        if quality_pref == "maximum":
            score = (quality, -price)
        elif quality_pref == "minimum_cost":
            score = (-price, quality)
        else:  # balanced: quality points, less up to 15 for being the priciest
            penalty = 15.0 * math.log1p(price) / math.log1p(top_price) if math.isfinite(
                price) else 100.0
            score = (quality - penalty, -price)
        return (not _preferred(request, name, model), *(-s for s in score), name)

    return sorted(found, key=key)


def fallback_chain(ranked: list[tuple[str, Any, Any]]) -> tuple[Any, ...]:
    """The ranking after the first, then the cheapest models not in it yet."""
    rest = [m for _, m, _ in ranked[1:4]]
    cheapest = sorted((e for e in ranked[1:] if e[2] is not None and e[2].cost_per_million
                       is not None), key=lambda e: e[2].cost_per_million)
    for _, model, _ in cheapest[:2]:
        if model not in rest:
            rest.append(model)
    return tuple(rest)


class CapabilityRouter:
    name = "capabilities"

    def select(self, request: Any) -> Any:
        return self.choose(request).model

    async def route(self, request: Any) -> Route:
        return self.choose(request)

    def choose(self, request: Any) -> Route:
        if request.is_pinned or not request.pool:
            alias = request.participant
            model = ParticipantRouter().select(request)
            return Route(model, reason=f"participant '{alias}' is bound to it"
                         if request.is_pinned else "no pool to choose from")
        found = eligible(request)
        if not found:
            needs = ", ".join(request.turn.requires) or "no capability"
            return Route(request.default, reason=f"no pool model can run here with {needs} "
                         "within the constraints: the default model")
        ranked = rank(request, found)
        name, model, info = ranked[0]
        quality = request.constraints.get("quality", "balanced")
        why: list[str] = [f"needs {', '.join(request.turn.requires)}" if request.turn.requires else
               "needs nothing special", f"quality preference {quality}"]
        if _preferred(request, name, model):
            why.append(f"preferred '{request.turn.prefer}'")
        if info is not None:
            why.append(f"quality {info.quality:g}" if info.quality is not None else
                       "quality unknown")
            if info.cost_per_million is not None:
                why.append(f"${info.cost_per_million:g}/Mtok")
        why.append(f"{len(found)} of {len(request.pool)} pool models eligible")
        return Route(model, fallback_chain(ranked), "; ".join(why), name)


@hookimpl
def register_routers(register):
    register("participants", ParticipantRouter())
    register("capabilities", CapabilityRouter())
