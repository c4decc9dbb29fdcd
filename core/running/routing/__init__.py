"""Routing: which model each turn runs on.

``request`` (what a router is asked and answers: ``RouteRequest``, ``Route``, the
dialogue's ``Routing``, asking a router), ``routers`` (the routers an orchestrator uses
for a mode: ``Routers``) and ``learning`` (the quality scores learning routers learn
from: ``dlg rate``, judge turns). The routers themselves are plugins
(``dlg.plugins.router``, ``dlg.plugins.learned_router``).
"""

from __future__ import annotations

from dlg.running.routing.request import (
    Route,
    RouteRequest,
    Routing,
    budget_note,
    budgeted_route,
    cheapest,
    describe_route,
    route_turn,
    select_model,
)

__all__ = ["Route", "RouteRequest", "Routing", "budget_note", "budgeted_route", "cheapest",
           "describe_route", "route_turn", "select_model"]
