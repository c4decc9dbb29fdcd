"""What plugins register: model providers, routers, exporters, stores and modes.

Each ``register_*`` hook is called once per plugin manager and the results cached. Plugins
are called in registration order (built-ins first), so a later plugin that registers an
existing name replaces the earlier entry; ``dlg plugins`` shows who registered what.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

from dlg.contracts import Exporter, RateHeaders, Router
from dlg.errors import PluginError

if TYPE_CHECKING:
    import pluggy


__all__ = [
    "Exporter",
    "ModeSource",
    "ModelProvider",
    "Registration",
    "Router",
    "StoreFactory",
    "catalogs",
    "clear_caches",
    "embeddings",
    "executors",
    "exporters",
    "model_providers",
    "modes",
    "registrations",
    "routers",
    "stores",
]


@dataclass(frozen=True)
class ModelProvider:
    """Turns a model name and options into a LangChain ``BaseChatModel``.

    ``factory(model_name, options)`` is called lazily, the first time a dialogue needs the
    model; it should import its provider SDK inside. ``default_priority`` makes a provider
    a candidate for the default model when the user configured none (highest wins).
    """

    name: str
    factory: Callable[[str, dict[str, Any]], Any]
    description: str = ""
    default_priority: int | None = None
    plugin: str = ""
    check: Callable[[str, dict[str, Any]], str | None] | None = None
    pull: Callable[..., Any] | None = None  # fetches the provider's model files, if any
    # the models worth pulling (``dlg models list --local``): a list of rows, each a dict
    # with name, source, size_gb, licence, ram_gb, default, pulled and spec
    recommended: Callable[[], list[dict[str, Any]]] | None = None
    # the model's own tokenizer, for budgets: ``tokenizer(model_name, options)`` gives a
    # text's token count (``count(text)``), or None where it has none (dlg.models.tokens)
    tokenizer: Callable[[str, dict[str, Any]], Callable[[str], int] | None] | None = None

    def problem(self, model_name: str, options: dict[str, Any], registry: Any = None
                ) -> str | None:
        """What stops this provider making the model (a missing key or package), if any."""
        if self.check is None:
            return None
        return _call_with_registry(self.check, model_name, options, registry)

    def make(self, model_name: str, options: dict[str, Any], registry: Any = None) -> Any:
        """The chat model. ``factory`` and ``check`` that take a ``registry`` keyword get
        the model registry of the dialogue (for example to find a model's file)."""
        return _call_with_registry(self.factory, model_name, options, registry)


_R = TypeVar("_R")


@functools.cache
def _takes_registry(fn: Any) -> bool:
    try:
        return "registry" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _call_with_registry(fn: Callable[..., _R], model_name: str, options: dict[str, Any],
                        registry: Any) -> _R:
    if _takes_registry(fn):
        if callable(registry):
            registry = registry()
        return fn(model_name, options, registry=registry)
    return fn(model_name, options)


@dataclass(frozen=True)
class ModeSource:
    """A mode a plugin ships: ``source`` is a path, an importlib Traversable, or a dict."""

    name: str
    source: Any
    plugin: str = ""


StoreFactory = Callable[..., Any]


@dataclass
class Registration:
    """Everything one plugin registered, by kind; shown by ``dlg plugins``."""

    plugin: str
    models: list[str] = field(default_factory=list)
    routers: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)
    executors: list[str] = field(default_factory=list)


class _Registered(TypedDict):
    """What the plugins of one plugin manager registered (``_collect``), by kind."""

    plugins: frozenset[int]  # the ids of the plugins it was collected from
    by_plugin: dict[str, Registration]
    catalogs: list[tuple[str, dict[str, Any]]]
    models: dict[str, ModelProvider]
    routers: dict[str, Router]
    exporters: dict[str, Exporter]
    stores: dict[str, StoreFactory]
    modes: dict[str, ModeSource]
    embeddings: dict[str, Callable[..., Any]]
    executors: dict[str, Callable[..., Any]]
    rate_headers: dict[str, RateHeaders]  # by provider ("": headers any provider sends)
    # where a chat model given as an object sends its calls when it states no endpoint
    endpoints: list[Callable[[Any], str | None]]


# per plugin manager, dropped with it; rebuilt when plugins are added or removed
_cache: weakref.WeakKeyDictionary[pluggy.PluginManager, _Registered] = (
    weakref.WeakKeyDictionary())


def clear_caches() -> None:
    _cache.clear()


def _pm(pm: pluggy.PluginManager | None) -> pluggy.PluginManager:
    if pm is None:
        from dlg.plugin_manager import get_plugin_manager

        pm = get_plugin_manager()
    return pm


def _collect(pm: pluggy.PluginManager) -> _Registered:
    plugins = frozenset(map(id, pm.get_plugins()))
    cached = _cache.get(pm)
    if cached is not None and cached["plugins"] == plugins:
        return cached

    out = _Registered(plugins=plugins, by_plugin={}, catalogs=[], models={}, routers={},
                      exporters={}, stores={}, modes={}, embeddings={}, executors={},
                      rate_headers={}, endpoints=[])

    def plugin_entry(name: str) -> Registration:
        return out["by_plugin"].setdefault(name, Registration(plugin=name))

    def models_register(plugin: str) -> Callable[..., None]:
        def register(
            name: str | None = None,
            factory: Callable[[str, dict[str, Any]], Any] | None = None,
            *,
            description: str = "",
            default_priority: int | None = None,
            check: Callable[[str, dict[str, Any]], str | None] | None = None,
            catalog: dict[str, Any] | None = None,
            pull: Callable[..., Any] | None = None,
            recommended: Callable[[], list[dict[str, Any]]] | None = None,
            rate_headers: RateHeaders | None = None,
            endpoint_of: Callable[[Any], str | None] | None = None,
            tokenizer: Callable[[str, dict[str, Any]], Callable[[str], int] | None] | None
            = None,
        ) -> None:
            if catalog is not None:
                out["catalogs"].append((plugin, catalog))
            if endpoint_of is not None:
                if not callable(endpoint_of):
                    raise PluginError(f"plugin '{plugin}' registered endpoint_of="
                                      f"{endpoint_of!r:.40}: expected a function of a chat "
                                      "model")
                out["endpoints"].append(endpoint_of)
            if rate_headers is not None:
                problem = (rate_headers.problem() if isinstance(rate_headers, RateHeaders)
                           else "expected a dlg.plugin.RateHeaders")
                if problem is not None:
                    raise PluginError(f"plugin '{plugin}' registered rate_headers for "
                                      f"{name or 'any provider'!r} that dlg cannot read: "
                                      f"{problem}")
                out["rate_headers"][name or ""] = rate_headers
            if name is None and factory is None:
                if catalog is None and rate_headers is None and endpoint_of is None:
                    raise PluginError(f"plugin '{plugin}' called register() with nothing")
                return
            if tokenizer is not None and not callable(tokenizer):
                raise PluginError(f"plugin '{plugin}' registered tokenizer={tokenizer!r:.40} "
                                  f"for {name!r}: expected a function of a model name and "
                                  "options")
            if not isinstance(name, str) or not name or ":" in name or not callable(factory):
                raise PluginError(
                    f"plugin '{plugin}' registered an invalid model provider {name!r}: "
                    "expected register(name, factory) with a name without ':'"
                )
            out["models"][name] = ModelProvider(
                name, factory, description, default_priority, plugin, check, pull,
                recommended, tokenizer
            )
            plugin_entry(plugin).models.append(name)

        return register

    def routers_register(plugin: str) -> Callable[..., None]:
        def register(name: str, router: Any) -> None:
            if not hasattr(router, "select"):
                raise PluginError(
                    f"plugin '{plugin}' registered router {name!r} without a select() method"
                )
            out["routers"][name] = router
            plugin_entry(plugin).routers.append(name)

        return register

    def exporters_register(plugin: str) -> Callable[..., None]:
        def register(exporter: Any) -> None:
            if not isinstance(exporter, Exporter):
                raise PluginError(
                    f"plugin '{plugin}' registered {exporter!r} as an exporter, but it lacks "
                    "name, extension, description or export()"
                )
            out["exporters"][exporter.name] = exporter
            plugin_entry(plugin).exporters.append(exporter.name)

        return register

    def factories_register(kind: Literal["stores", "embeddings", "executors"], what: str
                           ) -> Callable[[str], Callable[..., None]]:
        """``register(name, factory)`` for a kind that is a name and a factory."""
        def for_plugin(plugin: str) -> Callable[..., None]:
            def register(name: str, factory: Callable[..., Any]) -> None:
                if not callable(factory):
                    raise PluginError(
                        f"plugin '{plugin}' registered {what} {name!r} without a factory")
                out[kind][name] = factory
                getattr(plugin_entry(plugin), kind).append(name)

            return register

        return for_plugin

    def modes_register(plugin: str) -> Callable[..., None]:
        def register(name: str, source: Any) -> None:
            out["modes"][name] = ModeSource(name, source, plugin)
            plugin_entry(plugin).modes.append(name)

        return register

    hooks = {
        "register_models": models_register,
        "register_routers": routers_register,
        "register_exporters": exporters_register,
        "register_stores": factories_register("stores", "store"),
        "register_modes": modes_register,
        "register_embeddings": factories_register("embeddings", "embeddings"),
        "register_executors": factories_register("executors", "executor"),
    }
    for hook_name, make_register in hooks.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
            try:
                impl.function(register=make_register(plugin_name))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin '{plugin_name}' failed in {hook_name}: {type(exc).__name__}: {exc}"
                ) from exc
    _cache[pm] = out
    return out


def rate_headers(pm: pluggy.PluginManager | None = None) -> dict[str, RateHeaders]:
    """The rate-limit headers providers' plugins registered, by provider ("": any)."""
    return _collect(_pm(pm))["rate_headers"]


def endpoint_of(model: Any, pm: pluggy.PluginManager | None = None) -> str | None:
    """Where ``model`` (a chat model given as an object, stating no endpoint of its own)
    sends its calls, as its provider's plugin says (``register(endpoint_of=...)``: the
    endpoint its client takes from the environment); None if no plugin says."""
    try:
        finders = _collect(_pm(pm))["endpoints"]
    except Exception:  # a broken plugin is reported where models are made, not here
        return None
    for find in finders:
        try:
            found = find(model)
        except Exception:  # a plugin's mistake: it says nothing of this model
            continue
        if isinstance(found, str) and found:
            return found
    return None


def model_providers(pm: pluggy.PluginManager | None = None) -> dict[str, ModelProvider]:
    return _collect(_pm(pm))["models"]


def catalogs(pm: pluggy.PluginManager | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Model-registry data registered by plugins, as (plugin, document), in load order."""
    return _collect(_pm(pm))["catalogs"]


def routers(pm: pluggy.PluginManager | None = None) -> dict[str, Router]:
    return _collect(_pm(pm))["routers"]


def exporters(pm: pluggy.PluginManager | None = None) -> dict[str, Exporter]:
    return _collect(_pm(pm))["exporters"]


def stores(pm: pluggy.PluginManager | None = None) -> dict[str, StoreFactory]:
    return _collect(_pm(pm))["stores"]


def embeddings(pm: pluggy.PluginManager | None = None) -> dict[str, Callable[..., Any]]:
    """Embedding factories by name: ``factory()`` gives an object with LangChain's
    ``embed_documents(texts)`` and ``embed_query(text)``."""
    return _collect(_pm(pm))["embeddings"]


def executors(pm: pluggy.PluginManager | None = None) -> dict[str, Callable[..., Any]]:
    """Batch executors by name: ``factory(orchestrator)`` gives an awaitable callable
    ``(mode, items, *, concurrency, on_item, options)`` (``dlg.running.batches``)."""
    return _collect(_pm(pm))["executors"]


def modes(pm: pluggy.PluginManager | None = None) -> dict[str, ModeSource]:
    return _collect(_pm(pm))["modes"]


def registrations(pm: pluggy.PluginManager | None = None) -> list[Registration]:
    """One entry per plugin (including ones that registered nothing), in load order."""
    pm = _pm(pm)
    by_plugin = _collect(pm)["by_plugin"]
    names = [name for name, _ in pm.list_name_plugin()]
    return [by_plugin.get(name, Registration(plugin=name)) for name in names]
