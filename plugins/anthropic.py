"""Anthropic through langchain-anthropic: ``anthropic:claude-sonnet-4-5``.

Key: ``ANTHROPIC_API_KEY``.
"""

from __future__ import annotations

from dlg.hookspecs import hookimpl
from dlg.models.providers import missing_env, missing_package, no_retries


def _check(model, options):
    return missing_package("langchain_anthropic", "anthropic") or missing_env(
        "ANTHROPIC_API_KEY")


def _make(model, options):
    from langchain_anthropic import ChatAnthropic

    return ChatAnthropic(model=model or "claude-haiku-4-5", **no_retries(options))


@hookimpl
def register_models(register):
    register("anthropic", _make, check=_check, description="Anthropic (ANTHROPIC_API_KEY)")
