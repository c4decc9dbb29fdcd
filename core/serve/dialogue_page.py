"""A dialogue's page, ``/d/{id}``: its view (``views.dialogue_view``), kept up to date
through ``/d/{id}/events``, and its exports, ``/d/{id}/export/{format}``, through dlg's
exporters. Its forms are ``actions``'."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from dlg.serve import live, views
from dlg.serve.pages import media_type, render

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

NOTICES = {"resumed": "Resumed here: its unfinished turns run in the viewer, and this page "
                      "follows them.",
           "complete": "Nothing to resume: every turn of it has completed."}


class DialoguePage:
    """A dialogue's routes over the viewer's store (``viewer``: ``dlg.serve.app.Viewer``)."""

    def __init__(self, viewer: Any):
        self.viewer = viewer

    def view(self, dialogue_id: str) -> dict[str, Any]:
        """The dialogue's view; one this viewer is resuming counts as running (it may
        not have saved so yet), and why its resumption stopped, if it failed."""
        view = views.dialogue_view(self.viewer.store, dialogue_id)
        stopped = self.viewer.resuming.get(view["id"])
        if stopped == "":
            view["running"], view["status"] = True, "running"
        elif stopped and not view["running"]:
            view["error"] = stopped
        return view

    def _context(self, view: dict[str, Any]) -> dict[str, Any]:
        csrf = self.viewer.csrf
        return {"d": view, "csrf": csrf.token(f"rate:{view['id']}"),
                "resume_csrf": csrf.token(f"resume:{view['id']}"),
                "read_only": self.viewer.read_only}

    def _snapshot(self, dialogue_id: str) -> live.Snapshot:
        view = self.view(dialogue_id)
        html = render("dialogue_body.html.j2", **self._context(view))
        return live.Snapshot(view["fingerprint"] + str(view["running"]), html,
                             done=not view["running"])

    async def page(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        view = await self.viewer._run(self.view, request.path_params["dialogue_id"])
        rated = str(request.query_params.get("rated") or "")  # a turn of it, or nothing
        rated = rated if any(t["id"] == rated for t in view["turns"]) else ""
        return HTMLResponse(render("dialogue.html.j2", rated=rated,
                                   notice=NOTICES.get(request.query_params.get("did", "")),
                                   **self._context(view)))

    async def events(self, request: Request) -> Response:
        dialogue_id = request.path_params["dialogue_id"]
        await self.viewer._run(self.view, dialogue_id)  # none: 404 now
        since = request.query_params.get("since")
        return self.viewer._stream(functools.partial(self._snapshot, dialogue_id), since)

    async def export(self, request: Request) -> Response:
        from starlette.responses import Response

        from dlg.records.export import get_exporter, render_export
        from dlg.records.store import as_dialogue, find_dialogue

        fmt = request.path_params["format"]
        exporter = get_exporter(fmt)  # not one: 404
        dialogue = as_dialogue(await self.viewer._run(find_dialogue, self.viewer.store,
                                                      request.path_params["dialogue_id"]))
        data = await self.viewer._run(render_export, dialogue, fmt)
        extension = getattr(exporter, "extension", fmt) or fmt
        return Response(data, media_type=media_type(extension), headers={
            "content-disposition": f'attachment; filename="{dialogue.id}.{extension}"'})


def routes(viewer: Any) -> tuple[DialoguePage, list[Route]]:
    """The page, and ``/d/{id}``, its events and exports."""
    from starlette.routing import Route

    page = DialoguePage(viewer)
    return page, [Route("/d/{dialogue_id}", page.page),
                  Route("/d/{dialogue_id}/events", page.events),
                  Route("/d/{dialogue_id}/export/{format}", page.export)]
