"""Model specs: ``provider[:model][?option=value&...]``, and the secrets in them.

``echo``, ``openai:gpt-4o``, ``ollama:llama3:8b`` (the model name may contain ':'),
``echo?latency=0.2``. Option values are read as booleans and numbers where they look like
them. A secret may be given as a reference (``api_key=env:NAME``, ``${NAME}`` inside a
value) that is saved as written and resolved from the environment when the model is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from dlg.errors import ModelError

if TYPE_CHECKING:
    import pluggy

__all__ = ["ModelSpec", "default_model_spec", "endpoint", "model_label", "resolve_secrets",
           "without_redacted"]


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    model: str = ""
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        text = text.strip()
        if not text:
            raise ModelError("an empty model spec: expected provider[:model], e.g. 'echo'")
        base, _, query = text.partition("?")
        provider, _, model = base.partition(":")
        if not provider:
            raise ModelError(f"'{text}' has no provider: expected provider[:model]")
        options = tuple((k, _coerce(v)) for k, v in parse_qsl(query, keep_blank_values=True))
        if query:
            from dlg.observability.redact import remember, secrets_in_spec

            remember(*secrets_in_spec(text))  # kept out of every record from now on
        return cls(provider, model, options)

    def __str__(self) -> str:
        out = self.provider + (f":{self.model}" if self.model else "")
        if self.options:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.options)
        return out


def default_model_spec(pm: pluggy.PluginManager | None = None) -> str | None:
    """``DLG_MODEL`` if set, else the registered provider with the highest default priority."""
    env = os.environ.get("DLG_MODEL", "").strip()
    if env:
        return env
    from dlg import registrations

    candidates = [p for p in registrations.model_providers(pm).values()
                  if p.default_priority is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.default_priority or 0).name


_LABEL_ATTRIBUTES = ("dlg_label", "model_name", "model", "model_id")
# per chat-model class: the attributes of ``_LABEL_ATTRIBUTES`` its instances can have
_LABELLED_BY: dict[type, tuple[str, ...]] = {}


def model_label(model: Any) -> str:
    """A short name for a chat-model instance, for records and the CLI."""
    cls = type(model)
    attributes = _LABELLED_BY.get(cls)
    if attributes is None:
        attributes = _LABELLED_BY[cls] = _label_attributes(cls)
    for attr in attributes:
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return cls.__name__


def _label_attributes(cls: type) -> tuple[str, ...]:
    """The label attributes a class's instances can have. A pydantic model (every
    LangChain chat model) that allows no extra fields has only its fields and its class's
    attributes: asking it for another raises inside pydantic's ``__getattr__``, which cost
    7 to 15 us a label, three labels a turn. Any other class: all of them."""
    fields = getattr(cls, "__pydantic_fields__", None)
    config = getattr(cls, "model_config", None)
    if not isinstance(fields, dict) or not isinstance(config, dict) or (
            config.get("extra") == "allow"):
        return _LABEL_ATTRIBUTES
    return tuple(a for a in _LABEL_ATTRIBUTES if a in fields or hasattr(cls, a))


# options that say where a model's calls go; so does any option ending so or given a URL
_ENDPOINT_OPTIONS = frozenset({"base_url", "api_base", "openai_api_base", "azure_endpoint",
                               "endpoint", "host", "url", "api_url", "server_url"})
_ENDPOINT_SUFFIXES = ("_url", "_base", "_endpoint", "_host")
# a chat model given as it is: the attributes LangChain's clients keep an endpoint in
_ENDPOINT_ATTRIBUTES = ("openai_api_base", "base_url", "azure_endpoint")


def endpoint(spec_or_model: Any) -> tuple[tuple[str, str], ...]:
    """Where a model's calls go when the user chose it: a spec's endpoint options
    (``base_url=...``, ``api_base``, ``azure_endpoint``, ..., any option whose value is a
    URL) as written, sorted; a chat model's ``base_url`` (``openai_api_base``,
    ``azure_endpoint``) if set. ``()``: the provider's own endpoint."""
    if not isinstance(spec_or_model, str):
        return tuple((a, v) for a in _ENDPOINT_ATTRIBUTES
                     if isinstance(v := getattr(spec_or_model, a, None), str) and v)
    _, _, query = spec_or_model.partition("?")
    if not query:
        return ()
    return tuple(sorted(
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True)
        if k.lower() in _ENDPOINT_OPTIONS or k.lower().endswith(_ENDPOINT_SUFFIXES)
        or "://" in v))


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_secrets(options: dict[str, Any]) -> dict[str, Any]:
    """Options with secret references filled in from the environment: a value
    ``env:NAME`` is the variable NAME, and ``${NAME}`` inside a value is replaced by it
    (``base_url=https://me:${PROXY_PASSWORD}@proxy/v1``). The spec keeps the reference,
    so records and a later resume hold no secret. Raises ``ModelError`` for a variable
    that is not set. The variable a secret option's ``_env`` form names
    (``api_key_env=NAME``, which the provider reads) holds a secret too: its value is
    redacted from now on."""
    from dlg.observability.redact import is_secret_option, remember

    out = dict(options)
    for key, value in options.items():
        if not isinstance(value, str):
            continue
        if key.lower().endswith("_env") and is_secret_option(key[:-4]):
            remember(os.environ.get(value))
            continue
        if "env:" not in value and "${" not in value:
            continue

        def lookup(name: str, key: str = key) -> str:
            found = os.environ.get(name)
            if not found:
                raise ModelError(f"the model option '{key}' names the environment variable "
                                 f"{name}, which is not set")
            remember(found)
            return found

        if value.startswith("env:") and _ENV_REF.fullmatch("${" + value[4:] + "}"):
            out[key] = lookup(value[4:])
        else:
            out[key] = _ENV_REF.sub(lambda m: lookup(m.group(1)), value)
    return out


def without_redacted(spec: str) -> str | None:
    """A saved spec with its redacted secret options dropped (so the provider falls back
    to its key from the environment); None if a secret cannot be dropped (a password in a
    URL)."""
    from dlg.observability.redact import REDACTED

    if REDACTED not in spec:
        return spec
    base, _, query = spec.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if v != REDACTED]
    if any(REDACTED in v for _, v in kept):
        return None
    return base + ("?" + "&".join(f"{k}={v}" for k, v in kept) if kept else "")
