"""Prices from a maintained source: genai-prices (pydantic's price data for LLM APIs).

The built-in catalog's prices were typed in by hand when it was written; when the
``genai-prices`` package is installed (it is a dependency of dlg), this plugin lays its
prices over the catalog's for every model it knows, so ``dlg models show`` (``from:
dlg.plugins.prices``), cost accounting, routing and budgets use them. A user's registry
file still overrides both. Prices are read once per genai-prices version and kept in the
cache directory (loading the package's data costs about 0.2 s; a run should not).

Prices are per million tokens at the base tier (a prompt of a thousand tokens): a
provider's long-context tier is not what a dialogue's turns usually pay.
"""

from __future__ import annotations

import json
from typing import Any

from dlg.plugin import cached, hookimpl

# dlg provider -> genai-prices provider id
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "google": "google", "xai": "x-ai"}


def maintained_prices(specs: list[str]) -> dict[str, dict[str, float]]:
    """``spec -> {"input": $/Mtok, "output": $/Mtok, "cached_input": $/Mtok,
    "cache_write": $/Mtok}`` for the specs genai-prices knows."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found_version = version("genai-prices")
    except PackageNotFoundError:
        return {}
    # "-2": the cache-write price was added; a file of the first form lacks it
    return cached(f"genai-prices-{found_version}-2.json", sorted(specs),
                  lambda: _look_up(specs))


def _look_up(specs: list[str]) -> dict[str, dict[str, float]]:
    from genai_prices import Usage, calc_price

    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        provider, _, model = spec.partition(":")
        if provider not in PROVIDERS or not model:
            continue
        try:
            per_k_in = calc_price(Usage(input_tokens=1000), model,
                                  provider_id=PROVIDERS[provider]).total_price
            per_k_out = calc_price(Usage(output_tokens=1000), model,
                                   provider_id=PROVIDERS[provider]).total_price
            per_k_cached = calc_price(Usage(input_tokens=1000, cache_read_tokens=1000), model,
                                      provider_id=PROVIDERS[provider]).total_price
            per_k_written = calc_price(Usage(input_tokens=1000, cache_write_tokens=1000),
                                       model, provider_id=PROVIDERS[provider]).total_price
        except Exception:  # a model it does not know keeps the catalog's price
            continue
        out[spec] = {"input": round(float(per_k_in) * 1000, 6),
                     "output": round(float(per_k_out) * 1000, 6),
                     "cached_input": round(float(per_k_cached) * 1000, 6),
                     "cache_write": round(float(per_k_written) * 1000, 6)}
    return out


def _catalog_specs() -> list[str]:
    from importlib.resources import files

    data: dict[str, Any] = json.loads(
        files("dlg.plugins").joinpath("catalog.json").read_text("utf-8"))
    return list(data["models"])


@hookimpl
def register_models(register):
    prices = maintained_prices(_catalog_specs())
    if prices:
        register(catalog={"models": {spec: {"price": p} for spec, p in prices.items()}})
