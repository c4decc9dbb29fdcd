"""``dlg rate`` and ``dlg routing``: what learning routers learn from, and what they know."""

from __future__ import annotations

import json

import click

from dlg.cli.base import cli, store_option
from dlg.cli.terminal import echo


@cli.command("rate")
@click.argument("dialogue_id")
@click.argument("turn")
@click.argument("score", type=float)
@store_option
def rate_command(dialogue_id: str, turn: str, score: float, store: str | None) -> None:
    """Rate one turn of a saved dialogue, SCORE from 0 to 10 (or 0 to 1): the learned
    router prefers the models that score well on each task."""
    from dlg.running.api import Orchestrator

    task, model, stat = Orchestrator(store=store or "default").rate(dialogue_id, turn, score)
    echo(f"{model} on '{task}': {stat.n} score{'s' if stat.n != 1 else ''}, "
         f"mean {stat.mean:.2f}")


@cli.group("routing")
def routing_group() -> None:
    """What the learned router knows."""


@routing_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def routing_stats(as_json: bool, store: str | None) -> None:
    """Quality scores per task and model: count, mean and spread."""
    from dlg.running.api import Orchestrator

    stats = Orchestrator(store=store or "default").routing_stats()
    if as_json:
        echo(json.dumps({t: {m: {"n": s.n, "mean": s.mean, "sd": s.sd}
                                   for m, s in ms.items()} for t, ms in stats.items()},
                              indent=2))
        return
    if not stats:
        echo("no quality scores yet: `dlg rate DIALOGUE TURN SCORE` adds one", err=True)
        return
    width = max(len(m) for ms in stats.values() for m in ms)
    for task, models in stats.items():
        echo(task)
        for model, s in sorted(models.items(), key=lambda kv: -kv[1].mean):
            echo(f"  {model:<{width}}  n={s.n:<4}  mean {s.mean:.3f}  sd {s.sd:.3f}")
