"""``dlg plugins``: what each installed plugin registers."""

from __future__ import annotations

import json

import click

from dlg.cli.base import cli
from dlg.cli.terminal import echo

# -- dlg plugins --------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json: bool) -> None:
    """List installed plugins and what each registers."""
    from dlg import registrations
    from dlg.plugin_manager import BUILTIN_PLUGINS, plugin_distribution

    rows = []
    for reg in registrations.registrations():
        dist = "built-in" if reg.plugin in BUILTIN_PLUGINS else (
            plugin_distribution(reg.plugin) or "")
        rows.append({"plugin": reg.plugin, "distribution": dist, "models": reg.models,
                     "routers": reg.routers, "exporters": reg.exporters,
                     "stores": reg.stores, "modes": reg.modes,
                     "embeddings": reg.embeddings, "executors": reg.executors})
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        echo(f"{r['plugin']} ({r['distribution']})")
        for kind in ("models", "routers", "exporters", "stores", "modes", "embeddings",
                     "executors"):
            if r[kind]:
                echo(f"  {kind}: {', '.join(r[kind])}")

