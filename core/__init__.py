"""dlg: model-agnostic, asynchronous, multi-agent dialogue orchestration.

```python
import dlg

dialogue = await dlg.run("debate", topic="Should cities ban cars?", model="echo")
print(dialogue.status, dialogue.turns[-1].response)
```

``import dlg`` stays light: the kernel, the loader and LangChain load on first use.
"""

import typing as _typing

from dlg._version import __version__
from dlg.errors import (
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
from dlg.hookspecs import hookimpl
from dlg.language.mode import Input, Mode, Participant, Phase, Turn
from dlg.records.record import Dialogue, DialogueMetrics, TokenUsage, TurnRecord

if _typing.TYPE_CHECKING:
    from dlg.language.loader import ModeLoader, load_mode
    from dlg.models.calls import ChatResult
    from dlg.models.catalog import ModelInfo, ModelRegistry
    from dlg.models.resilience import RetryPolicy
    from dlg.plugin_manager import get_plugin_manager
    from dlg.records.export import export
    from dlg.records.store import (
        DialogueNotFoundError,
        delete_dialogue,
        list_dialogues,
        load_dialogue,
    )
    from dlg.running.api import Orchestrator, resume, run, run_sync
    from dlg.running.batches.export import batch_status, delete_batch, export_batch
    from dlg.running.chat import ChatModel, chat_model
    from dlg.running.events import Decision
    from dlg.running.routing import RouteRequest

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
    "batch",
    "batch_status",
    "batch_sync",
    "chat_model",
    "delete_batch",
    "delete_dialogue",
    "export",
    "export_batch",
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
    "Orchestrator": "running.api",
    "run": "running.api",
    "run_sync": "running.api",
    "resume": "running.api",
    "batch": "running.api",
    "batch_sync": "running.api",
    "Decision": "running.events",
    "ChatModel": "running.chat",
    "chat_model": "running.chat",
    "RouteRequest": "running.routing",
    "DialogueNotFoundError": "records.store",
    "list_dialogues": "records.store",
    "load_dialogue": "records.store",
    "export": "records.export",
    "export_batch": "running.batches.export",
    "batch_status": "running.batches.export",
    "delete_batch": "running.batches.export",
    "delete_dialogue": "records.store",
    "ModeLoader": "language.loader",
    "load_mode": "language.loader",
    "get_plugin_manager": "plugin_manager",
    "ModelInfo": "models.catalog",
    "ModelRegistry": "models.catalog",
    "ChatResult": "models.calls",
    "RetryPolicy": "models.resilience",
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
