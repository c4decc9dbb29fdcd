"""The ``learned`` router: a bandit over the pool, fed by quality scores.

Among the pool models the ``capabilities`` router would accept for a turn, it draws one
score for each from what it believes of that model's quality on this task (the turn's
role) and picks the highest: Thompson sampling over a normal belief whose mean starts at
the registry's quality prior (worth two scores) and moves with every score recorded for
(task, model) in the store (``dlg rate``, a judge, a plugin; see
``dlg.running.learning``), and whose spread shrinks as scores come in, so it explores
models it knows little about and then settles on the best. ``exploration`` (default 1)
scales the spread: ``--router "learned?exploration=0.3"`` explores less. A price
penalty follows the ``quality`` preference, as in ``capabilities``.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from dlg.plugin import Route, hookimpl

from .router import CapabilityRouter, eligible, fallback_chain, rank

if TYPE_CHECKING:  # imported when a route is chosen: every plugin module loads at start-up
    from dlg.plugin import QualityStat

PRIOR_WEIGHT = 2.0  # the registry's quality prior counts as this many scores
PRIOR_SD = 0.25  # how far a model's quality on a task may be from its prior


class LearnedRouter:
    name = "learned"

    def __init__(self, exploration: float = 1.0, seed: int | None = None):
        self.exploration = float(exploration)
        self._rng = random.Random(seed)

    def with_options(self, **options: Any) -> LearnedRouter:
        unknown = set(options) - {"exploration", "seed"}
        if unknown:
            raise ValueError(f"unknown learned-router option(s) {sorted(unknown)}: "
                             "exploration, seed")
        return LearnedRouter(**options)

    def select(self, request: Any) -> Any:  # checked before the run: the capabilities pick
        return CapabilityRouter().select(request)

    def belief(self, stat: QualityStat | None, prior: float) -> tuple[float, float]:
        """Mean and spread of what is believed of a model's quality on a task."""
        n = stat.n if stat is not None else 0
        mean = ((PRIOR_WEIGHT * prior + n * stat.mean) / (PRIOR_WEIGHT + n)
                if stat is not None and n else prior)
        # the scores' spread, shrunk towards a wide prior while there are few of them
        m2 = stat.m2 if stat is not None else 0.0
        spread = math.sqrt((PRIOR_WEIGHT * PRIOR_SD ** 2 + m2) / (PRIOR_WEIGHT + n))
        return mean, self.exploration * spread / math.sqrt(PRIOR_WEIGHT + n)

    async def route(self, request: Any) -> Route:
        if request.is_pinned or not request.pool:
            return CapabilityRouter().choose(request)
        found = eligible(request)
        if not found:
            return CapabilityRouter().choose(request)
        from dlg.plugin import QualityStat, quality_key

        task = quality_key(request.turn.role)
        known: dict[str, Any] = {}
        if request.quality is not None:
            import anyio

            store = request.quality()
            if hasattr(store, "quality"):
                known = await anyio.to_thread.run_sync(store.quality, task)
        preference = request.constraints.get("quality", "balanced")
        prices = [i.cost_per_million for _, _, i in found if i is not None and
                  i.cost_per_million]
        top = max(prices, default=1.0) or 1.0
        best, best_value, notes = None, -math.inf, []
        for name, model, info in found:
            prior = (info.quality / 100) if info is not None and info.quality is not None \
                else 0.5
            stat = QualityStat.from_dict(known[name]) if name in known else None
            mean, spread = self.belief(stat, prior)
            value = self._rng.gauss(mean, spread)
            price = info.cost_per_million if info is not None else None
            if preference == "balanced" and price:
                value -= 0.15 * math.log1p(price) / math.log1p(top)
            elif preference == "minimum_cost" and price:
                value -= 0.5 * price / top
            notes.append(f"{name} {mean:.2f}±{spread:.2f} (n={stat.n if stat else 0})")
            if value > best_value:
                best, best_value = (name, model), value
        assert best is not None
        name, model = best
        others = [e for e in rank(request, found) if e[0] != name]
        chain = fallback_chain([(name, model, None), *others])
        return Route(model, chain, f"task '{task}': drew the best of " + "; ".join(notes),
                     name)


@hookimpl
def register_routers(register):
    register("learned", LearnedRouter())
