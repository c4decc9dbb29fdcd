"""xAI Grok through langchain-xai: ``xai:grok-4``. Key: ``XAI_API_KEY``."""

from __future__ import annotations

from dlg.plugin import hookimpl, missing_key, missing_package, no_retries


def _check(model, options):
    return missing_package("langchain_xai", "xai") or missing_key(
        options, "XAI_API_KEY", options_named=("api_key", "xai_api_key"))


def _make(model, options):
    from langchain_xai import ChatXAI

    return ChatXAI(model=model or "grok-3-mini", **{"stream_usage": True,
                                                     **no_retries(options)})


@hookimpl
def register_models(register):
    register("xai", _make, check=_check, description="xAI Grok (XAI_API_KEY)")
