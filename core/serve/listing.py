"""The viewer's list of dialogues, ``/``: the saved dialogues as ``dlg ls`` lists them,
filtered (``?status=&mode=&model=&batch=&from=&to=&q=``), kept up to date through
``/events``; and the notice of a dialogue this viewer deleted (``?deleted=ID``).

Every open list shares one reader of the store (``live.Shared``: the summaries, read at
most every half second whatever the number of pages), each page's rows made from its
read under its filters (a ``live.View`` per filter, shared by the pages that have the
same): the list's streams take none of the ``live.MAX_STREAMS`` slots."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from dlg.serve import live, views
from dlg.serve.pages import render

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

# the filters whose rows are kept made (the latest used; every one followed live is kept):
# each followed filter's rows are made again from every read (about 90 ms for 10k
# dialogues), so a live list under yet another filter is refused while all are followed
VIEWS_KEPT = 64


class ListPage:
    """The list's routes over the viewer's store (``viewer``: ``dlg.serve.app.Viewer``)."""

    def __init__(self, viewer: Any):
        self.viewer = viewer
        self.shared = live.Shared(self._summaries)  # one reader for every open list
        self._views: OrderedDict[str, live.View] = OrderedDict()

    def _summaries(self) -> list[dict[str, Any]]:
        return views.summaries(self.viewer.store)

    def _snapshot(self, filters: views.Filters, every: list[dict[str, Any]]) -> live.Snapshot:
        listing = views.listing(self.viewer.store, filters, self.viewer.old_models, every)
        html = render("rows.html.j2", listing=listing)
        return live.Snapshot(fingerprint=html, html=html, done=False)

    def _view(self, filters: views.Filters) -> live.View | None:
        """The rows under ``filters``, made from the shared read (once per read for all
        the pages with these filters); None when ``VIEWS_KEPT`` other filters are all
        followed live now."""
        key = filters.query()
        view = self._views.pop(key, None)
        if view is None:
            idle = [k for k, v in self._views.items() if v.following == 0]
            if len(self._views) >= VIEWS_KEPT and not idle:
                return None
            view = live.View(self.shared, lambda every: self._snapshot(filters, every))
        self._views[key] = view
        for gone in [k for k, v in self._views.items() if v.following == 0
                     ][:max(0, len(self._views) - VIEWS_KEPT)]:
            del self._views[gone]  # the least recently used of those not followed
        return view

    async def index(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        filters = views.Filters.from_query(request.query_params)  # a bad date: 400
        listing = await self.viewer._run(views.listing, self.viewer.store, filters,
                                         self.viewer.old_models)
        query = filters.query()
        deleted = self._deleted(str(request.query_params.get("deleted") or ""))
        return HTMLResponse(render("list.html.j2", listing=listing, filters=filters,
                                   deleted=deleted,
                                   events="/events" + (f"?{query}" if query else "")))

    def _deleted(self, dialogue_id: str) -> str:
        """What ``?deleted=`` names, if this viewer deleted it; "" for any other text (a
        link of another site could otherwise make the list say anything)."""
        more = self.viewer.deleted.get(dialogue_id)
        if more is None:
            return ""
        return dialogue_id + (f" and {more} sub-dialogue{'s' if more > 1 else ''}"
                              if more else "")

    async def events(self, request: Request) -> Response:
        from starlette.responses import PlainTextResponse

        filters = views.Filters.from_query(request.query_params)
        view = self._view(filters)
        if view is None:
            return PlainTextResponse(f"too many differently filtered live lists open at "
                                     f"once (at most {VIEWS_KEPT})", 503)
        return self.viewer._stream(view, None)


def routes(viewer: Any) -> list[Route]:
    """``/`` and its events."""
    from starlette.routing import Route

    page = ListPage(viewer)
    return [Route("/", page.index), Route("/events", page.events)]
