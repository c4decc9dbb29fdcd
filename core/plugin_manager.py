"""The one place that builds dlg's plugin manager.

Built-in plugins (``dlg.plugins.*``) are registered as ordinary plugin modules, exactly as
a third-party plugin would be; third-party plugins come from the ``dlg`` entry-point group.

Environment variables:

- ``DLG_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry-point plugins (built-ins still load).
- ``DLG_PLUGINS=name1,name2``: load only these entry-point plugins.

The list of installed entry points is cached (next to the mode cache) and rescanned when
a ``sys.path`` directory that holds distribution metadata changes, as installing or
removing a package does (or when a directory gains its first).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from typing import Any

import pluggy  # imported with dlg already (dlg.hookspecs)

from dlg.errors import PluginError

__all__ = [
    "BUILTIN_PLUGINS",
    "build_plugin_manager",
    "current_plugin_manager",
    "get_plugin_manager",
    "plugin_distribution",
    "reset_plugin_manager",
]

BUILTIN_PLUGINS: tuple[str, ...] = (
    "dlg.plugins.catalog",
    "dlg.plugins.profiles",
    "dlg.plugins.prices",
    "dlg.plugins.local",
    "dlg.plugins.openai",
    "dlg.plugins.anthropic",
    "dlg.plugins.google",
    "dlg.plugins.xai",
    "dlg.plugins.ollama",
    "dlg.plugins.community",
    "dlg.plugins.echo",
    "dlg.plugins.builtin_modes",
    "dlg.plugins.exporters",
    "dlg.plugins.report",
    "dlg.plugins.pdf",
    "dlg.plugins.router",
    "dlg.plugins.learned_router",
    "dlg.plugins.hashing_embeddings",
    "dlg.plugins.sqlite_store",
    "dlg.plugins.diskcache_store",
    "dlg.plugins.postgres_store",
    "dlg.plugins.ray_executor",
    "dlg.plugins.telemetry",
)

ENTRY_POINT_GROUP = "dlg"

_pm: pluggy.PluginManager | None = None
_DISTRIBUTIONS: dict[str, str] = {}
_lock = threading.Lock()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class _PluginManager(pluggy.PluginManager):
    """pluggy's, reading a module plugin's names from its namespace. pluggy looks up every
    name a plugin has with ``inspect.getattr_static`` (so that no property runs), which
    for the built-in modules' 450 names was most of building the manager; a module's
    namespace is a plain dict, so reading it runs nothing either. Anything else is looked
    up as pluggy does."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        if isinstance(plugin, types.ModuleType):
            value = vars(plugin).get(name)
            if isinstance(value, types.FunctionType):
                opts = getattr(value, f"{self.project_name}_impl", None)  # pluggy's marker
                return opts if isinstance(opts, dict) else None
            if not isinstance(value, staticmethod | classmethod | types.MethodType):
                return None  # nothing pluggy would call
        return super().parse_hookimpl_opts(plugin, name)


def build_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager with the built-ins and (optionally) entry points."""
    from dlg import hookspecs

    pm = _PluginManager("dlg")
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


_METADATA_SUFFIXES = (".dist-info", ".egg-info")


def _holds_metadata(path: str) -> bool:
    """Whether a directory holds any installed distribution's metadata."""
    with os.scandir(path) as entries:
        return any(e.name.endswith(_METADATA_SUFFIXES) for e in entries)


def _path_fingerprint() -> list[list[Any]]:
    """What decides the installed entry points: each ``sys.path`` entry with the mtime of
    a directory that holds distribution metadata (installing or removing a package
    changes it) or of a zip file. A directory without any, such as the working directory
    ``python -m dlg`` puts first, counts only as having none: files written there (a
    ``--out`` file, say) do not make the next start-up scan every package again."""
    out: list[list[Any]] = []
    for entry in sys.path:
        path = entry or "."
        try:
            if os.path.isdir(path):
                out.append([entry, os.stat(path).st_mtime_ns if _holds_metadata(path)
                            else None])
            else:
                out.append([entry, os.stat(path).st_mtime_ns])
        except OSError:
            out.append([entry, None])
    return out


def _discover() -> list[dict[str, Any]]:
    """The ``dlg`` entry points installed, from a cache while sys.path is unchanged.

    Scanning every installed distribution's metadata is the slowest part of start-up, and
    its answer only changes when packages are installed or removed.
    """
    from dlg.paths import cached

    def scan() -> list[dict[str, Any]]:
        from importlib.metadata import entry_points

        return [
            {"name": ep.name, "value": ep.value,
             "dist": f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else None}
            for ep in entry_points(group=ENTRY_POINT_GROUP)
        ]

    return cached("entry-points.json", _path_fingerprint(), scan)


def _load(value: str) -> Any:
    module_name, _, attr = value.partition(":")
    obj = importlib.import_module(module_name.strip())
    for part in filter(None, attr.strip().split(".")):
        obj = getattr(obj, part)
    return obj


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    wanted_raw = os.environ.get("DLG_PLUGINS")
    wanted = {w.strip() for w in wanted_raw.split(",") if w.strip()} if wanted_raw else None
    found = _discover()
    if wanted:
        _warn_unknown(wanted, {ep["name"] for ep in found})
    for ep in found:
        name = ep["name"]
        if wanted is not None and name not in wanted:
            continue
        if pm.get_plugin(name) is not None or pm.is_blocked(name):
            continue
        dist = f" (from {ep['dist']})" if ep["dist"] else ""
        try:
            plugin = _load(ep["value"])
        except Exception as exc:
            raise PluginError(
                f"plugin '{name}'{dist} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        pm.register(plugin, name=name)
        if ep["dist"]:
            _DISTRIBUTIONS[name] = ep["dist"]


def _warn_unknown(wanted: set[str], installed: set[str]) -> None:
    """A name in ``DLG_PLUGINS`` that no installed plugin has (a typo loads nothing, and
    would otherwise look like the plugin doing nothing)."""
    unknown = sorted(wanted - installed)
    if unknown:
        import logging

        logging.getLogger("dlg.plugins").warning(
            "DLG_PLUGINS names %s, which no installed plugin has (installed: %s)",
            ", ".join(repr(n) for n in unknown), ", ".join(sorted(installed)) or "none",
            extra={"event": "plugins.unknown", "names": unknown})


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


def current_plugin_manager() -> pluggy.PluginManager | None:
    """The process-wide plugin manager if it was built, without building it."""
    return _pm


def reset_plugin_manager(pm: pluggy.PluginManager | None = None) -> None:
    """Drop (or replace) the process-wide plugin manager; used by tests and embedders."""
    global _pm
    with _lock:
        _pm = pm
