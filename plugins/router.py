"""The ``participants`` router: each turn runs on its participant's model.

A turn with no participant uses the participant it ``prefer``s, if that names one, and
otherwise the default model. Routers that choose by capability and cost plug in the same
way (``register_routers``).
"""

from __future__ import annotations

from typing import Any

from dlg.hookspecs import hookimpl


class ParticipantRouter:
    name = "participants"

    def select(self, request: Any) -> Any:
        alias = request.participant
        if alias is not None and alias in request.bindings:
            return request.bindings[alias]
        return request.default


@hookimpl
def register_routers(register):
    register("participants", ParticipantRouter())
