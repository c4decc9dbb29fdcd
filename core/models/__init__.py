"""Models: specs, the pool that makes them, calling them, the catalog of what each costs
and can do, retries and fallbacks, and helpers for provider plugins.

``spec`` parses ``provider[:model][?options]``; ``pool`` makes chat models from the
providers plugins register; ``calls`` is the one path a call takes; ``catalog`` is the
model registry (capabilities, prices, limits, fallbacks); ``resilience`` retries and
falls back; ``providers`` has what a provider plugin needs to report a missing package.
"""

from dlg.models.calls import ChatResult, build_messages, call_model, chat, estimate_tokens
from dlg.models.pool import ModelPool
from dlg.models.spec import (
    ModelSpec,
    default_model_spec,
    model_label,
    resolve_secrets,
    without_redacted,
)

__all__ = [
    "ChatResult",
    "ModelPool",
    "ModelSpec",
    "build_messages",
    "call_model",
    "chat",
    "default_model_spec",
    "estimate_tokens",
    "model_label",
    "resolve_secrets",
    "without_redacted",
]
