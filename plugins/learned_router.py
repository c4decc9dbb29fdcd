"""The ``learned`` router: a bandit over the pool, fed by quality scores.

Among the pool models the ``capabilities`` router would accept for a turn, it draws one
value for each from what it believes of that model's quality on this task (the turn's
role), less a stated price term, and picks the highest (Thompson sampling). The belief
is normal:

- its **prior** is the registry's quality for the model, moved by what other tasks taught
  (how much better or worse than its catalog quality the model scored on other tasks, and
  how this task's models scored against theirs): the mean over the other tasks of each
  task's mean residual, shrunk towards nothing while it rests on few scores (by
  ``noise / TASK_SD**2`` scores' worth), so a task counts once however often the model
  was scored on it (a model is scored most where it was picked, where it does well, and
  would otherwise seem better everywhere);
  the prior is worth ``noise / PRIOR_SD**2`` scores, where ``noise`` is the scores'
  spread pooled over every task and model (a noisier judge: the prior and the shrinkage
  count for more);
- it moves with every score for (task, model) in the store (``dlg rate``, a judge, a
  plugin; see ``dlg.running.routing.learning``), which forgets: when a model's recent scores
  stray from its mean, the statistics restart from the recent ones; a model that restarted
  may change again (a random walk at the rate it has changed), so its spread widens with
  the scores on the task since it was last scored, and a model written off is tried again;
- its spread shrinks as scores come in, so it explores models it knows little about (a
  new one too) and then settles on the best; on a task with few scores yet (on any
  model) it explores little (``n / (n + RAMP)`` of the spread): a task seen rarely
  repays exploring it rarely, so it takes what the prior says.

Options (``--router "learned?cost_weight=0.5&exploration=0.3"``): ``cost_weight`` is the
quality (0-1) a model's price costs it, on a log scale where the pool's priciest eligible
model pays all of it (default: 0 with the ``maximum`` quality preference, 0.08 with
``balanced``, 0.5 with ``minimum_cost``); ``exploration`` (default 0.5) scales the
spread; ``seed`` makes the draws repeatable. Each Route's reason names the pick's
estimate, spread, prior and cost term, and the runner-up's. The defaults were tuned on
bench/bench_routing.py's seeds 1000-1009, not on the seeds it reports.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dlg.plugin import Route, hookimpl

from .router import CapabilityRouter, eligible, fallback_chain, rank

if TYPE_CHECKING:  # imported when a route is chosen: every plugin module loads at start-up
    from dlg.plugin import QualityStat

PRIOR_SD = 0.2  # how far a model's quality on a task may be from its prior (the catalog's
# qualities of today's models span about 0.3; tuned on bench_routing.py's seeds 1000-1009)
NOISE_WEIGHT = 10.0  # the default noise (PRIOR_SD**2) counts as this many scores' spread
TASK_SD = 0.05  # how far a model's quality on one task may stray from what the other tasks
# say of it: each other task's mean residual is shrunk by noise / TASK_SD**2 scores, then the
# tasks are averaged, each once (0.05 and 0.1 tried on bench_routing.py's seeds 1000-1009)
RAMP = 30.0  # a task's exploration grows as n / (n + RAMP) with its scores on every model
CHANGE_SD = 0.15  # how far a change moves a model's quality on a task: a pair that restarted
# c times in n scores drifts by CHANGE_SD**2 * c / n in variance per newer score on its task
# (0.05-0.35 tried on the tuning seeds; 0.15 bought the most recovery for the least loss)
COST_WEIGHTS = {"maximum": 0.0, "balanced": 0.08, "minimum_cost": 0.5}


def _shifts(table: Mapping[tuple[str, str], QualityStat], priors: Mapping[str, float],
            task: str, noise: float) -> tuple[dict[str, tuple[float, int]], tuple[float, int]]:
    """What other tasks say of each model (its shift from its prior, and how many scores
    say so), and what this task's models say of the task (its shift).

    A model's shift is the mean over every other task in the store of what that task says
    of it: its mean residual (score less prior), shrunk towards nothing by its own ``n``
    (``n / (n + noise / TASK_SD**2)``; a task it was never scored on says nothing). So a
    task scored often counts as one task: a model is scored most where it was picked, that
    is where it does well, and pooling its scores would make it seem better everywhere.
    The task's shift is the mean of the same over the eligible models."""
    others = {t for (t, _) in table if t != task}
    shrink = noise / TASK_SD ** 2
    model_sum: dict[str, float] = {}
    model_n: dict[str, int] = {}
    for (t, model), stat in table.items():
        n = stat.since_n
        if t != task and model in priors and n:
            residual = float(stat.since_mean or 0.0) - priors[model]
            model_sum[model] = model_sum.get(model, 0.0) + n / (n + shrink) * residual
            model_n[model] = model_n.get(model, 0) + n
    models = {m: (model_sum[m] / len(others), model_n[m]) for m in model_sum}
    task_sum, task_n = 0.0, 0
    for (t, model), stat in table.items():
        n = stat.since_n
        if t == task and model in priors and n:
            expected = priors[model] + models.get(model, (0.0, 0))[0]
            task_sum += n / (n + shrink) * (float(stat.since_mean or 0.0) - expected)
            task_n += n
    return models, (task_sum / max(len(priors), 1), task_n)


def _ages(rows: Mapping[Any, Any], task: str) -> dict[str, int]:
    """For each model scored on ``task``: how many scores on the task (on any model) the
    store kept after its last one (from the scores' times in each pair's history)."""
    times: list[float] = []
    last: dict[str, float] = {}
    for key, data in rows.items():
        kept = data.get("history") if isinstance(data, Mapping) else None
        if not (isinstance(key, tuple) and key[0] == task and isinstance(kept, list)):
            continue
        stamps = [e["at"] for e in kept if isinstance(e, Mapping)
                  and isinstance(e.get("at"), int | float)]
        if stamps:
            last[key[1]] = max(stamps)
            times.extend(stamps)
    times.sort()
    return {model: len(times) - bisect_right(times, at) for model, at in last.items()}


def _number(option: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{option} is a number, not '{value}'") from None


class LearnedRouter:
    name = "learned"

    def __init__(self, exploration: float = 0.5, seed: int | None = None,
                 cost_weight: float | None = None):
        self.exploration = _number("exploration", exploration)
        self.cost_weight = None if cost_weight is None else _number("cost_weight", cost_weight)
        if self.cost_weight is not None and not 0 <= self.cost_weight <= 10:
            raise ValueError(f"cost_weight is a number from 0 to 10, not '{cost_weight}'")
        self._rng = random.Random(seed)

    def with_options(self, **options: Any) -> LearnedRouter:
        unknown = set(options) - {"exploration", "seed", "cost_weight"}
        if unknown:
            raise ValueError(f"unknown learned-router option(s) {sorted(unknown)}: "
                             "cost_weight, exploration, seed")
        return LearnedRouter(**options)

    def select(self, request: Any) -> Any:  # checked before the run: the capabilities pick
        return CapabilityRouter().select(request)

    def belief(self, stat: QualityStat | None, prior: float, noise: float = PRIOR_SD ** 2,
               age: int = 0) -> tuple[float, float]:
        """Mean and spread of what is believed of a model's quality on a task: a normal
        prior (``prior``, spread ``PRIOR_SD``) updated by the scores since the model last
        changed, each with variance ``noise`` (the scores' spread, pooled over every
        task and model), so the prior is worth ``noise / PRIOR_SD**2`` scores. A model
        that changed (``stat.changes`` restarts in ``stat.n`` scores) may have changed
        again since: its variance grows by ``CHANGE_SD**2 * changes / n`` per newer score
        on the task (``age`` of them), up to the prior's."""
        n = max(stat.since_n, 0) if stat is not None else 0
        weight = noise / PRIOR_SD ** 2
        mean = ((weight * prior + n * float(stat.since_mean or 0.0)) / (weight + n)
                if stat is not None and n else prior)
        variance = noise / (weight + n)
        if stat is not None and n and stat.changes:  # it may have changed again since
            drift = CHANGE_SD ** 2 * stat.changes / max(stat.n, 1)
            variance = min(variance + drift * age, max(variance, PRIOR_SD ** 2))
        return mean, self.exploration * math.sqrt(variance)

    async def route(self, request: Any) -> Route:
        if request.is_pinned or not request.pool:
            return CapabilityRouter().choose(request)
        found = eligible(request)
        if not found:
            return CapabilityRouter().choose(request)
        from dlg.plugin import QualityStat, quality_key

        task = quality_key(request.turn.role)
        table: dict[tuple[str, str], QualityStat] = {}
        every: Mapping[Any, Any] = {}
        if request.quality is not None:
            import anyio

            store = request.quality()
            if hasattr(store, "quality"):
                every = await anyio.to_thread.run_sync(store.quality)
                table = {key: QualityStat.from_dict(data) for key, data in every.items()
                         if isinstance(key, tuple) and isinstance(data, Mapping)}
        preference = request.constraints.get("quality", "balanced")
        weight = self.cost_weight if self.cost_weight is not None else COST_WEIGHTS.get(
            preference, COST_WEIGHTS["balanced"])
        prices = [i.cost_per_million for _, _, i in found if i is not None and
                  i.cost_per_million]
        scale = math.log1p(max(prices, default=1.0) or 1.0)
        catalog = {name: (info.quality / 100) if info is not None and info.quality is not None
                   else 0.5 for name, _, info in found}
        seen = sum(max(s.since_n, 0) for (t, _), s in table.items() if t == task)
        ramp = seen / (seen + RAMP)
        m2 = sum(float(s.since_m2 or 0.0) for s in table.values() if s.since_n > 1)
        dof = sum(s.since_n - 1 for s in table.values() if s.since_n > 1)
        noise = (m2 + NOISE_WEIGHT * PRIOR_SD ** 2) / (dof + NOISE_WEIGHT)
        changed = any(s.changes for (t, _), s in table.items() if t == task)
        ages = _ages(every, task) if changed else {}
        shifts, (task_shift, task_n) = _shifts(table, catalog, task, noise)
        drawn = []
        for name, model, info in found:
            shift, elsewhere = shifts.get(name, (0.0, 0))
            prior = min(1.0, max(0.0, catalog[name] + shift + task_shift))
            stat = table.get((task, name))
            age = ages.get(name, 0)
            mean, spread = self.belief(stat, prior, noise, age)
            spread *= ramp
            restarts = ""
            if stat is not None and stat.changes:
                still = self.belief(stat, prior, noise)[1] * ramp
                restarts = (f"; restarted {stat.changes}x on a change, last scored {age} "
                            f"scores on the task ago" + (
                                f", which widen its spread from ±{still:.2f}" if age else ""))
            price = info.cost_per_million if info is not None else None
            cost = weight * math.log1p(price) / scale if price and scale else 0.0
            value = self._rng.gauss(mean, spread) - cost
            why = (f"{name}: estimate {mean:.2f}±{spread:.2f} (n={stat.since_n if stat else 0}; "
                   f"prior {prior:.2f} = catalog {catalog[name]:.2f}"
                   f"{f' {shift:+.2f} from {elsewhere} scores on other tasks' if elsewhere else ''}"
                   f"{f' {task_shift:+.2f} for the task' if task_n else ''}"
                   f"{restarts}"
                   f"), cost term -{cost:.3f} (${price or 0:g}/Mtok), drew {value:.2f}")
            drawn.append((value, self._rng.random(), name, model, why))  # ties: at random
        drawn.sort(key=lambda d: (-d[0], d[1]))
        _, _, name, model, why = drawn[0]
        runner_up = f"; next best {drawn[1][4]}" if len(drawn) > 1 else ""
        others = [e for e in rank(request, found) if e[0] != name]
        chain = fallback_chain([(name, model, None), *others])
        reason = (f"task '{task}' ({seen} scores, exploring {ramp:.0%} of the spread), "
                  f"score noise ±{math.sqrt(noise):.2f} (a prior is worth "
                  f"{noise / PRIOR_SD ** 2:.1f} scores), cost_weight {weight:g}: picked "
                  f"{why}{runner_up}; {len(found)} of {len(request.pool)} pool models eligible")
        return Route(model, chain, reason, name)


@hookimpl
def register_routers(register):
    register("learned", LearnedRouter())
