"""Google Gemini through langchain-google-genai: ``google:gemini-2.5-flash``.

Key: ``GOOGLE_API_KEY`` (or ``GEMINI_API_KEY``).
"""

from __future__ import annotations

import os

from dlg.plugin import hookimpl, missing_key, missing_package


def _check(model, options):
    return missing_package("langchain_google_genai", "google") or missing_key(
        options, "GOOGLE_API_KEY", "GEMINI_API_KEY",
        options_named=("api_key", "google_api_key"))


def _make(model, options):
    from langchain_google_genai import ChatGoogleGenerativeAI

    options = {"max_retries": 0, **options}
    if not os.environ.get("GOOGLE_API_KEY") and "google_api_key" not in options:
        options["google_api_key"] = os.environ.get("GEMINI_API_KEY")
    return ChatGoogleGenerativeAI(model=model or "gemini-2.5-flash", **options)


@hookimpl
def register_models(register):
    register("google", _make, check=_check, description="Google Gemini (GOOGLE_API_KEY)")
