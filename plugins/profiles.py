"""Context windows and capabilities from LangChain's model profiles.

Each installed provider package (langchain-openai, langchain-anthropic,
langchain-google-genai, langchain-xai) ships profiles of its models (from models.dev):
input and output limits, and whether a model reasons, sees images, calls tools and gives
structured output. This plugin lays them over the built-in catalog's entries:
``context_window`` and ``max_output`` from the limits, and the capabilities
``reasoning``, ``vision``, ``tools``, ``json`` and ``long_context`` (200,000 tokens or
more) from the flags; ``analysis`` and ``code`` stay the catalog's. A user's registry
file still overrides. The profile files are read without importing the provider packages
(that would cost seconds), once per package version, and kept in the cache directory.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from dlg.plugin import cached, hookimpl

PACKAGES = {"openai": ("langchain_openai", "langchain-openai"),
            "anthropic": ("langchain_anthropic", "langchain-anthropic"),
            "google": ("langchain_google_genai", "langchain-google-genai"),
            "xai": ("langchain_xai", "langchain-xai")}
FLAGS = {"reasoning_output": "reasoning", "image_inputs": "vision", "tool_calling": "tools",
         "structured_output": "json"}
LONG_CONTEXT = 200_000


def _profiles(module: str, dist: str) -> dict[str, Any]:
    """The package's profiles by model id, from a cache while its version is unchanged."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found_version = version(dist)
        spec = importlib.util.find_spec(module)
    except (PackageNotFoundError, ValueError, ImportError):
        return {}
    if spec is None or spec.origin is None:
        return {}
    source = Path(spec.origin).parent / "data" / "_profiles.py"

    def load() -> dict[str, Any]:
        if not source.is_file():
            return {}
        loader_spec = importlib.util.spec_from_file_location(f"_dlg_profiles_{module}", source)
        if loader_spec is None or loader_spec.loader is None:
            return {}
        loaded = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(loaded)
        except Exception:  # a package whose profile file changed shape: no profiles
            return {}
        return json.loads(json.dumps(dict(getattr(loaded, "_PROFILES", {})), default=str))

    return cached(f"profiles-{dist}-{found_version}.json", str(source), load)


def overlay(catalog: dict[str, Any]) -> dict[str, Any]:
    """Registry entries (limits, capabilities) for the catalog's models with a profile."""
    out: dict[str, Any] = {}
    by_provider: dict[str, dict[str, Any]] = {}
    for spec, entry in catalog.items():
        provider, _, model = spec.partition(":")
        if provider not in PACKAGES or not model:
            continue
        if provider not in by_provider:
            by_provider[provider] = _profiles(*PACKAGES[provider])
        profile = by_provider[provider].get(model)
        if not profile:
            continue
        update: dict[str, Any] = {}
        if profile.get("max_input_tokens"):
            update["context_window"] = int(profile["max_input_tokens"])
        if profile.get("max_output_tokens"):
            update["max_output"] = int(profile["max_output_tokens"])
        caps = [c for c in entry.get("capabilities", ())
                if c not in FLAGS.values() and c != "long_context"]
        caps += [cap for flag, cap in FLAGS.items() if profile.get(flag)]
        if update.get("context_window", 0) >= LONG_CONTEXT:
            caps.append("long_context")
        update["capabilities"] = list(dict.fromkeys(caps))
        out[spec] = update
    return out


def _fingerprint(catalog_text: str) -> list[Any]:
    """What the overlay depends on: the catalog, and each provider's profile file (path and
    modification time; installing another version changes them)."""
    import hashlib

    out: list[Any] = [hashlib.sha256(catalog_text.encode("utf-8")).hexdigest()]
    for module, _ in PACKAGES.values():
        try:
            spec = importlib.util.find_spec(module)
        except (ValueError, ImportError):
            spec = None
        path = Path(spec.origin).parent / "data" / "_profiles.py" if spec and spec.origin \
            else None
        try:
            out.append([str(path), path.stat().st_mtime_ns] if path else None)
        except OSError:
            out.append(None)
    return out


@hookimpl
def register_models(register):
    from importlib.resources import files

    text = files("dlg.plugins").joinpath("catalog.json").read_text("utf-8")
    # the overlay itself is cached: a run reads one small file, not every profile
    found = cached("profiles-overlay.json", _fingerprint(text),
                   lambda: overlay(json.loads(text)["models"]))
    if found:
        register(catalog={"models": found})
