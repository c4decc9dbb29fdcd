"""The one place that builds dlg's plugin manager.

Built-in plugins (``dlg.plugins.*``) are registered as ordinary plugin modules, exactly as
a third-party plugin would be; third-party plugins come from the ``dlg`` entry-point group.

Environment variables:

- ``DLG_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugins (built-ins still load).
- ``DLG_PLUGINS=name1,name2``: load only these entry-point plugins.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING

from .errors import PluginError

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "BUILTIN_PLUGINS",
    "build_plugin_manager",
    "get_plugin_manager",
    "plugin_distribution",
    "reset_plugin_manager",
]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "dlg.plugins.echo",
    "dlg.plugins.builtin_modes",
    "dlg.plugins.exporters",
    "dlg.plugins.router",
)

ENTRY_POINT_GROUP = "dlg"

_pm: pluggy.PluginManager | None = None
_DISTRIBUTIONS: dict[str, str] = {}
_lock = threading.Lock()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def build_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager with the built-ins and (optionally) entry points."""
    import pluggy

    from . import hookspecs

    pm = pluggy.PluginManager("dlg")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        module = importlib.import_module(name)
        pm.register(module, name=name)

    if autoload is None:
        autoload = not _truthy(os.environ.get("DLG_DISABLE_PLUGIN_AUTOLOAD"))
    if autoload:
        _load_entry_points(pm)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements a hook dlg does not define: {exc}") from exc
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import entry_points

    wanted_raw = os.environ.get("DLG_PLUGINS")
    wanted = {w.strip() for w in wanted_raw.split(",") if w.strip()} if wanted_raw else None
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and ep.name not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            dist = f" (from {ep.dist.name})" if ep.dist else ""
            raise PluginError(
                f"plugin '{ep.name}'{dist} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            _DISTRIBUTIONS[ep.name] = f"{ep.dist.name} {ep.dist.version}"


def plugin_distribution(name: str) -> str | None:
    """The distribution ("name version") an entry-point plugin came from, if any."""
    return _DISTRIBUTIONS.get(name)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built lazily on first use."""
    global _pm
    if _pm is None:
        with _lock:
            if _pm is None:
                _pm = build_plugin_manager()
    return _pm


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Drop (or replace) the process-wide plugin manager; used by tests and embedders."""
    global _pm
    with _lock:
        _pm = pm
    from . import registry

    registry.clear_caches()
