"""Helpers for model-provider plugins (built-in or third-party).

A provider's ``check(model_name, options)`` returns ``None`` when the model can be made,
or a message saying what is missing: dlg calls it before the first turn runs, so a
missing package or API key is reported up front, naming the exact fix.

A secret read here (``missing_env``, ``env_secret``) is remembered, so it is redacted from
every record, log and export even when a provider's error repeats it.
"""

from __future__ import annotations

import importlib.util
import os

__all__ = ["env_secret", "missing_env", "missing_key", "missing_package", "no_retries"]

DIST = "dlg-orchestrator"


def missing_package(module: str, extra: str) -> str | None:
    """A message naming the pip command, if ``module`` is not installed."""
    if importlib.util.find_spec(module) is not None:
        return None
    return f"needs the {module} package: pip install '{DIST}[{extra}]'"


def missing_key(options: dict[str, object], *names: str,
                options_named: tuple[str, ...] = ("api_key",)) -> str | None:
    """``missing_env(*names)``, unless the spec gives a key itself: ``api_key=...``, or a
    reference ``api_key=env:NAME`` (already read from the environment here), or the
    provider's own name for it (``options_named``)."""
    if any(options.get(name) for name in options_named):
        return None
    return missing_env(*names)


def missing_env(*names: str) -> str | None:
    """A message naming the variable, if none of ``names`` is set in the environment. The
    values of those that are set are secrets from now on (redacted wherever they appear)."""
    found = [name for name in names if env_secret(name)]
    if found:
        return None
    return f"needs an API key: set {' or '.join(names)}"


def env_secret(name: str) -> str | None:
    """The environment variable ``name`` (None if unset or empty), which is a secret from
    now on: a provider that reads its key itself reads it with this, so a key its server
    repeats in an error ("Incorrect API key provided: ...") is redacted."""
    value = os.environ.get(name) or None
    if value is not None:
        from dlg.observability.redact import remember

        remember(value)
    return value


def no_retries(options: dict[str, object]) -> dict[str, object]:
    """Options with the client's own retries off: dlg retries (and falls back) itself."""
    return {"max_retries": 0, **options}
