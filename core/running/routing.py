"""What a router is asked, and how a turn's model is chosen.

The kernel asks the selected router (``register_routers``) for each turn's model with a
``RouteRequest``; the router answers with a model spec string or a chat-model instance.
The built-in ``participants`` router binds turns to their participant's model; routers
that choose by capability, cost and learned quality plug in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlg.errors import ModelError

__all__ = ["RouteRequest", "select_model"]


@dataclass(frozen=True)
class RouteRequest:
    """Everything a router may use to choose a model for one turn."""

    turn: Any  # dlg.mode.Turn
    mode: Any  # dlg.mode.Mode
    bindings: Mapping[str, Any]  # participant alias -> spec or chat model (user's choices)
    default: Any  # the model used when nothing else applies (spec, instance or None)
    constraints: Mapping[str, Any] = field(default_factory=dict)

    @property
    def participant(self) -> str | None:
        return self.turn.participant or (
            self.turn.prefer if self.turn.prefer in self.mode.participants else None
        )


def select_model(router: Any, request: RouteRequest) -> Any:
    choice = router.select(request)
    if choice is None:
        who = request.participant or request.turn.id
        raise ModelError(
            f"no model for '{who}': pass --model SPEC (for example --model echo), "
            f"--participant {who}=SPEC, or set DLG_MODEL"
        )
    return choice
