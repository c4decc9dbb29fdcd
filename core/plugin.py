"""Everything a dlg plugin may import: ``from dlg.plugin import hookimpl, ...``.

The built-in plugins import nothing else of dlg (a test holds them to it), so a third-
party plugin that does the same keeps working as dlg's modules move. Names are loaded
when first used, so importing this module costs nothing at start-up.

- writing a plugin: ``hookimpl``; ``Decision`` (what ``before_turn`` answers); the
  errors a plugin raises (``DlgError``, ``ModelError``, ``StoreError``, ``ExportError``,
  ``PluginError``); ``version`` (dlg's);
- the contracts (``typing.Protocol``): ``Store``, ``LeaseStore``, ``BatchStore``,
  ``QualityStore``, ``Executor``, ``Embeddings``, ``Exporter``, ``Router``;
- model providers: ``missing_env``, ``missing_key``, ``missing_package``, ``no_retries``,
  ``env_secret``, the rate-limit headers a provider sends: ``RateHeaders``, and a
  provider's prompt cache: ``CacheHint``, ``hint_of``,
  ``split_stable``;
  ``ModelRegistry``;
- routers: ``Route``, ``RouteRequest``, ``QualityStat``, ``quality_key``, ``budget_note``;
- stores: ``TableStore``, ``SCHEMA``, ``Execute``, ``RowWrites`` (a store on SQL tables),
  ``batch_header``, ``count_dialogues`` (a store's ``batch_headers()``),
  ``process`` (this process's id and host, for leases), ``data_dir``, ``user_dir``,
  ``cached``;
- executors: ``pacer``, ``Schedule`` (rate limits a batch's workers share),
  ``Orchestrator``, ``load_mode``, ``BatchItem``, ``run_item``,
  ``not_started``, ``SPENT``, ``Budget``, ``spawned_files``, ``own_templates``,
  ``confined``, ``as_dialogue``, ``mark_interrupted``, ``ENDED``;
- anything shown to people: ``redact``; ``cache_note``, ``saved_usd``,
  ``dialogue_saved_usd`` (what a prompt cache saved).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlg import process
    from dlg._version import __version__ as version
    from dlg.contracts import (
        BatchStore,
        Embeddings,
        Executor,
        Exporter,
        LeaseStore,
        QualityStore,
        RateHeaders,
        Router,
        Store,
    )
    from dlg.errors import DlgError, ExportError, ModelError, PluginError, StoreError
    from dlg.hookspecs import hookimpl
    from dlg.language.limits import confined
    from dlg.language.loader import load_mode
    from dlg.language.templates import own_templates
    from dlg.models.caching import (
        CacheHint,
        cache_note,
        dialogue_saved_usd,
        hint_of,
        saved_usd,
        split_stable,
    )
    from dlg.models.catalog import ModelRegistry
    from dlg.models.pacing import Schedule, pacer
    from dlg.models.providers import (
        env_secret,
        missing_env,
        missing_key,
        missing_package,
        no_retries,
    )
    from dlg.observability.redact import redact
    from dlg.paths import cached, data_dir, user_dir
    from dlg.records.batch_headers import batch_header, count_dialogues
    from dlg.records.markdown import markdown_html
    from dlg.records.record import ENDED
    from dlg.records.store import RowWrites, as_dialogue, mark_interrupted
    from dlg.records.tables import SCHEMA, Execute, TableStore
    from dlg.running.api import Orchestrator
    from dlg.running.batches.cost import SPENT, not_started
    from dlg.running.batches.items import BatchItem
    from dlg.running.batches.run import run_item
    from dlg.running.budget import Budget
    from dlg.running.events import Decision
    from dlg.running.routing.learning import QualityStat, quality_key
    from dlg.running.routing.request import Route, RouteRequest, budget_note
    from dlg.running.subdialogues import spawned_files

__all__ = [
    "ENDED",
    "SCHEMA",
    "SPENT",
    "BatchItem",
    "BatchStore",
    "Budget",
    "CacheHint",
    "Decision",
    "DlgError",
    "Embeddings",
    "Execute",
    "Executor",
    "ExportError",
    "Exporter",
    "LeaseStore",
    "ModelError",
    "ModelRegistry",
    "Orchestrator",
    "PluginError",
    "QualityStat",
    "QualityStore",
    "RateHeaders",
    "Route",
    "RouteRequest",
    "Router",
    "RowWrites",
    "Schedule",
    "Store",
    "StoreError",
    "TableStore",
    "as_dialogue",
    "batch_header",
    "budget_note",
    "cache_note",
    "cached",
    "confined",
    "count_dialogues",
    "data_dir",
    "dialogue_saved_usd",
    "env_secret",
    "hint_of",
    "hookimpl",
    "load_mode",
    "mark_interrupted",
    "markdown_html",
    "missing_env",
    "missing_key",
    "missing_package",
    "no_retries",
    "not_started",
    "own_templates",
    "pacer",
    "process",
    "quality_key",
    "redact",
    "run_item",
    "saved_usd",
    "spawned_files",
    "split_stable",
    "user_dir",
    "version",
]

# where each name lives (module, attribute); a module itself when the attribute is None
_WHERE: dict[str, tuple[str, str | None]] = {
    "process": ("dlg.process", None),
    "version": ("dlg._version", "__version__"),
    **{n: ("dlg.contracts", n) for n in ("BatchStore", "Embeddings", "Executor", "Exporter",
                                          "LeaseStore", "QualityStore", "RateHeaders", "Router",
                                          "Store")},
    **{n: ("dlg.errors", n) for n in ("DlgError", "ExportError", "ModelError", "PluginError",
                                       "StoreError")},
    "hookimpl": ("dlg.hookspecs", "hookimpl"),
    "confined": ("dlg.language.limits", "confined"),
    "load_mode": ("dlg.language.loader", "load_mode"),
    "own_templates": ("dlg.language.templates", "own_templates"),
    "ModelRegistry": ("dlg.models.catalog", "ModelRegistry"),
    **{n: ("dlg.models.pacing", n) for n in ("Schedule", "pacer")},
    **{n: ("dlg.models.caching", n) for n in ("CacheHint", "cache_note", "dialogue_saved_usd",
                                               "hint_of", "saved_usd", "split_stable")},
    **{n: ("dlg.models.providers", n) for n in ("env_secret", "missing_env", "missing_key",
                                                 "missing_package", "no_retries")},
    "redact": ("dlg.observability.redact", "redact"),
    **{n: ("dlg.paths", n) for n in ("cached", "data_dir", "user_dir")},
    "markdown_html": ("dlg.records.markdown", "markdown_html"),
    **{n: ("dlg.records.batch_headers", n) for n in ("batch_header", "count_dialogues")},
    "ENDED": ("dlg.records.record", "ENDED"),
    **{n: ("dlg.records.store", n) for n in ("RowWrites", "as_dialogue", "mark_interrupted")},
    **{n: ("dlg.records.tables", n) for n in ("SCHEMA", "Execute", "TableStore")},
    "Orchestrator": ("dlg.running.api", "Orchestrator"),
    **{n: ("dlg.running.batches.cost", n) for n in ("SPENT", "not_started")},
    "BatchItem": ("dlg.running.batches.items", "BatchItem"),
    "run_item": ("dlg.running.batches.run", "run_item"),
    "Budget": ("dlg.running.budget", "Budget"),
    "Decision": ("dlg.running.events", "Decision"),
    **{n: ("dlg.running.routing.learning", n) for n in ("QualityStat", "quality_key")},
    **{n: ("dlg.running.routing.request", n) for n in ("Route", "RouteRequest",
                                                     "budget_note")},
    "spawned_files": ("dlg.running.subdialogues", "spawned_files"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'dlg.plugin' has no attribute '{name}'") from None
    found = importlib.import_module(module)
    value = found if attribute is None else getattr(found, attribute)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
