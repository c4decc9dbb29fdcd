"""dlg: model-agnostic, asynchronous, multi-agent dialogue orchestration.

```python
import dlg

dialogue = await dlg.run("debate", topic="Should cities ban cars?", model="echo")
print(dialogue.status, dialogue.turns[-1].response)
```

``import dlg`` stays light: the kernel, the loader and LangChain load on first use.
"""

import typing as _typing

from ._version import __version__
from .errors import (
    DlgError,
    ExportError,
    InputError,
    ModeError,
    ModelError,
    ModeNotFoundError,
    PluginError,
    Problem,
    StoreError,
    TurnError,
    TurnTimeoutError,
    UnknownExporterError,
    UnknownModelError,
)
from .hookspecs import hookimpl
from .mode import Input, Mode, Participant, Phase, Turn
from .record import Dialogue, DialogueMetrics, TokenUsage, TurnRecord

if _typing.TYPE_CHECKING:
    from .api import Orchestrator, resume, run, run_sync
    from .events import Decision
    from .export import export
    from .loader import ModeLoader, load_mode
    from .model_registry import ModelInfo, ModelRegistry
    from .models import ChatModel, ChatResult, chat_model
    from .persistence import DialogueNotFoundError, list_dialogues, load_dialogue
    from .plugin_manager import get_plugin_manager
    from .resilience import RetryPolicy
    from .routing import RouteRequest

__all__ = [
    "ChatModel",
    "ChatResult",
    "Decision",
    "Dialogue",
    "DialogueMetrics",
    "DialogueNotFoundError",
    "DlgError",
    "ExportError",
    "Input",
    "InputError",
    "Mode",
    "ModeError",
    "ModeLoader",
    "ModeNotFoundError",
    "ModelError",
    "ModelInfo",
    "ModelRegistry",
    "Orchestrator",
    "Participant",
    "Phase",
    "PluginError",
    "Problem",
    "RetryPolicy",
    "RouteRequest",
    "StoreError",
    "TokenUsage",
    "Turn",
    "TurnError",
    "TurnRecord",
    "TurnTimeoutError",
    "UnknownExporterError",
    "UnknownModelError",
    "__version__",
    "chat_model",
    "export",
    "get_plugin_manager",
    "hookimpl",
    "list_dialogues",
    "load_dialogue",
    "load_mode",
    "resume",
    "run",
    "run_sync",
]

_LAZY = {
    "Orchestrator": "api",
    "run": "api",
    "run_sync": "api",
    "resume": "api",
    "DialogueNotFoundError": "persistence",
    "list_dialogues": "persistence",
    "load_dialogue": "persistence",
    "export": "export",
    "Decision": "events",
    "ModeLoader": "loader",
    "load_mode": "loader",
    "get_plugin_manager": "plugin_manager",
    "RouteRequest": "routing",
    "ModelInfo": "model_registry",
    "ModelRegistry": "model_registry",
    "ChatModel": "models",
    "ChatResult": "models",
    "chat_model": "models",
    "RetryPolicy": "resilience",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dlg' has no attribute '{name}'")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
