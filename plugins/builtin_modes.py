"""Registers the modes shipped in ``dlg.modes`` (one YAML file each)."""

from __future__ import annotations

from dlg.plugin import hookimpl


@hookimpl
def register_modes(register):
    from importlib.resources import files  # when modes are looked up, not at start-up

    for entry in sorted(files("dlg.modes").iterdir(), key=lambda e: e.name.rsplit(".", 1)[0]):
        if entry.name.endswith((".yaml", ".yml", ".json")):
            register(entry.name.rsplit(".", 1)[0], entry)
