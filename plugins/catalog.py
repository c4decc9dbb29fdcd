"""Registers the built-in model registry data (``catalog.json``)."""

from __future__ import annotations

from dlg.plugin import hookimpl


@hookimpl
def register_models(register):
    import json
    from importlib.resources import files

    data = json.loads(files("dlg.plugins").joinpath("catalog.json").read_text("utf-8"))
    register(catalog=data)
