"""The model registry: what each model can do, what it costs, how fast and how big it is.

Entries come from plugins (``register_models(register)`` with ``catalog=``; the built-in
catalog is ``dlg/plugins/catalog.yaml``) and from the user's registry file, which adds or
overrides entries: ``--registry FILE``, ``DLG_REGISTRY``, or ``models.yaml`` in the user's
dlg config directory. Entries are keyed by model spec (``provider:model``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlg.errors import ModelError

if TYPE_CHECKING:
    import pluggy

__all__ = ["ModelInfo", "ModelRegistry", "blended_price", "spec_key"]


def spec_key(spec: str) -> str:
    """The registry key of a spec: the spec without its ``?options``."""
    return spec.partition("?")[0]


def blended_price(price_in: float, price_out: float) -> float:
    """Dollars per million tokens at a 3:1 input-to-output mix (a typical dialogue turn)."""
    return (3 * price_in + price_out) / 4


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the spec: provider:model
    capabilities: tuple[str, ...] = ()
    quality: float | None = None
    price_in: float | None = None  # $ per million input tokens
    price_out: float | None = None
    price_cached_in: float | None = None  # input tokens read from the provider's cache
    price_cache_write: float | None = None  # input tokens written to it
    latency: float | None = None
    context_window: int | None = None
    max_output: int | None = None
    fallbacks: tuple[str, ...] = ()
    local: bool = False
    description: str = ""
    source: str = ""
    path: str | None = None  # local models: the GGUF file
    rpm: int | None = None  # the provider's limits for a key: requests per minute
    tpm: int | None = None  # and tokens per minute (dlg.models.pacing keeps to them)

    @property
    def provider(self) -> str:
        return self.name.partition(":")[0]

    @property
    def cost_per_million(self) -> float | None:
        """Blended price (3:1 input:output), for comparing and budgeting."""
        if self.price_in is None or self.price_out is None:
            return None
        return blended_price(self.price_in, self.price_out)

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             written_tokens: int = 0) -> float | None:
        """Dollars for a call; prompt tokens read from the provider's cache (part of
        ``prompt_tokens``) at the cached price, and those written to it at the cache-write
        price, when they are known."""
        if self.price_in is None or self.price_out is None:
            return None
        cached = min(max(cached_tokens, 0), prompt_tokens)
        written = min(max(written_tokens, 0), prompt_tokens - cached)
        cached_price = self.price_in if self.price_cached_in is None else self.price_cached_in
        write_price = self.price_in if self.price_cache_write is None else self.price_cache_write
        return ((prompt_tokens - cached - written) * self.price_in + cached * cached_price
                + written * write_price + completion_tokens * self.price_out) / 1e6

    def has(self, capabilities: Iterable[str]) -> bool:
        return set(capabilities) <= set(self.capabilities)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "provider": self.provider,
                               "capabilities": list(self.capabilities)}
        for key in ("quality", "latency", "context_window", "max_output", "rpm", "tpm",
                    "description", "path"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.price_in is not None:
            out["price"] = {"input": self.price_in, "output": self.price_out}
            if self.price_cached_in is not None:
                out["price"]["cached_input"] = self.price_cached_in
            if self.price_cache_write is not None:
                out["price"]["cache_write"] = self.price_cache_write
        if self.fallbacks:
            out["fallbacks"] = list(self.fallbacks)
        if self.local:
            out["local"] = True
        out["source"] = self.source
        return out


def _info(name: str, data: Mapping[str, Any], source: str) -> ModelInfo:
    price = data.get("price") or {}
    return ModelInfo(
        name=name, capabilities=tuple(data.get("capabilities", ())),
        quality=data.get("quality"), price_in=price.get("input"),
        price_out=price.get("output"), price_cached_in=price.get("cached_input"),
        price_cache_write=price.get("cache_write"),
        latency=data.get("latency"),
        context_window=data.get("context_window"), max_output=data.get("max_output"),
        fallbacks=tuple(data.get("fallbacks", ())), local=bool(data.get("local", False)),
        description=data.get("description", ""), source=source, path=data.get("path"),
        rpm=data.get("rpm"), tpm=data.get("tpm"),
    )


@dataclass
class ModelRegistry:
    """Query models by capability, price, context and quality (the seed's SC1.2)."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    capability_fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # -- building ---------------------------------------------------------------------

    def add(self, data: Mapping[str, Any], source: str) -> None:
        """Merge a catalog document ({models: {...}, fallbacks: {...}}) over the entries."""
        for name, entry in (data.get("models") or {}).items():
            current = self.models.get(name)
            merged = {**_as_data(current), **entry} if current else entry
            if current and "price" in entry:
                merged["price"] = {**_as_data(current).get("price", {}), **entry["price"]}
            self.models[name] = _info(name, merged, source)
        for capability, chain in (data.get("fallbacks") or {}).items():
            self.capability_fallbacks[capability] = tuple(chain)

    @classmethod
    def load(cls, *, pm: pluggy.PluginManager | None = None,
             user_file: str | Path | None = None) -> ModelRegistry:
        """Plugin catalogs, then the user's registry file (if any)."""
        from dlg import registrations

        reg = cls()
        for source, data in registrations.catalogs(pm):
            reg.add(data, source)
        path = user_file or os.environ.get("DLG_REGISTRY") or _default_user_file()
        if path is not None and (user_file or Path(path).is_file()):
            reg.add(load_registry_file(Path(path)), str(path))
        return reg

    # -- queries ----------------------------------------------------------------------

    def get(self, spec: str) -> ModelInfo | None:
        return self.models.get(spec_key(spec))

    def __contains__(self, spec: str) -> bool:
        return spec_key(spec) in self.models

    def find(
        self,
        capabilities: Iterable[str] = (),
        *,
        max_price: float | None = None,
        min_context: int | None = None,
        available: Any = None,
    ) -> list[ModelInfo]:
        """Models with every capability, within a blended price and a minimum context.

        ``available`` is an optional predicate on a spec (e.g. "its key is set").
        """
        wanted = tuple(capabilities)
        out = []
        for info in self.models.values():
            if not info.has(wanted):
                continue
            if max_price is not None and (info.cost_per_million is None
                                          or info.cost_per_million > max_price):
                continue
            if min_context is not None and (info.context_window or 0) < min_context:
                continue
            if available is not None and not available(info.name):
                continue
            out.append(info)
        return out

    def get_best_model(self, capability: str | None = None, *,
                       capabilities: Iterable[str] = (), **constraints: Any) -> ModelInfo:
        """The highest-quality model with the capabilities (cheaper wins a tie)."""
        wanted = ((capability,) if capability else ()) + tuple(capabilities)
        found = self.find(wanted, **constraints)
        if not found:
            raise ModelError(_none_found(wanted, constraints))
        return max(found, key=lambda m: (m.quality or 0, -(m.cost_per_million or 0)))

    def get_cheapest_model(self, capability: str | None = None, *,
                           capabilities: Iterable[str] = (), **constraints: Any) -> ModelInfo:
        """The cheapest model with the capabilities (better quality wins a tie)."""
        wanted = ((capability,) if capability else ()) + tuple(capabilities)
        found = [m for m in self.find(wanted, **constraints) if m.cost_per_million is not None]
        if not found:
            raise ModelError(_none_found(wanted, constraints))
        return min(found, key=lambda m: (m.cost_per_million, -(m.quality or 0)))

    def fallbacks_for(self, spec: str, capabilities: Iterable[str] = ()) -> list[str]:
        """The model's own fallback chain, then the chains of the capabilities needed.

        A local model's capability chains keep only local models: a dialogue the user
        runs offline and free must not move to a paid cloud model it never named."""
        out: list[str] = []
        info = self.get(spec)
        if info is not None:
            out.extend(info.fallbacks)
        for capability in capabilities:
            chain = self.capability_fallbacks.get(capability, ())
            if info is not None and info.local:
                chain = tuple(s for s in chain if (other := self.get(s)) and other.local)
            out.extend(chain)
        key = spec_key(spec)
        return [s for i, s in enumerate(out) if s != key and s not in out[:i]]

    def cost(self, spec: str, prompt_tokens: int, completion_tokens: int,
             cached_tokens: int = 0, written_tokens: int = 0) -> float | None:
        info = self.get(spec)
        return info.cost(prompt_tokens, completion_tokens, cached_tokens,
                         written_tokens) if info else None


def _as_data(info: ModelInfo | None) -> dict[str, Any]:
    if info is None:
        return {}
    data = info.to_dict()
    data.pop("name", None)
    data.pop("provider", None)
    data.pop("source", None)
    return data


def _none_found(wanted: tuple[str, ...], constraints: Mapping[str, Any]) -> str:
    parts = [f"capabilities {', '.join(wanted)}" if wanted else "any capability"]
    if constraints.get("max_price") is not None:
        parts.append(f"at most ${constraints['max_price']:g} per million tokens")
    if constraints.get("min_context") is not None:
        parts.append(f"a context of at least {constraints['min_context']} tokens")
    return "no model in the registry has " + " and ".join(parts)


def _default_user_file() -> Path:
    from dlg.paths import user_dir

    return user_dir("config") / "models.yaml"


def load_registry_file(path: Path) -> dict[str, Any]:
    """Read and validate a registry file; errors are located like mode errors."""
    from dlg.errors import ModeError
    from dlg.language.schema import check_against
    from dlg.language.source import SourceDoc

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"cannot read the model registry '{path}': {exc.strerror}") from None
    doc = SourceDoc(text=text, file=str(path), identity=str(path),
                    is_json=path.suffix.lower() == ".json")
    try:
        data = doc.parse()
        check_against(doc, "registry.schema.json")
    except ModeError as exc:
        raise ModelError("invalid model registry:\n" + exc.format(all_problems=True)) from None
    return data
