"""The viewer's Starlette application: its routes, each reading the store in a thread.

``listing``: ``/``, the saved dialogues, filtered, kept up to date through ``/events``;
``dialogue_page``: ``/d/{id}``, a dialogue, kept up to date through ``/d/{id}/events``,
and its exports; ``actions``: its forms (rate, resume, delete); ``batches`` and
``routing_page``: ``/b`` and ``/routing``. ``Viewer`` holds what they share: the store,
the CSRF tokens, the live streams open, the dialogues resumed here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dlg.serve import actions, batches, dialogue_page, listing, live, routing_page, views
from dlg.serve.pages import error_page, render
from dlg.serve.security import Csrf, Headers, TokenGate

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["Viewer", "create_app", "error_page", "render"]

STATIC = {"serve.js": "text/javascript; charset=utf-8", "serve.css": "text/css; charset=utf-8"}
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Viewer:
    """What the routes share: one opened store and its name (the rating opens it as
    ``dlg rate`` does), the CSRF tokens, the live streams open, the dialogues resumed
    and deleted here."""

    def __init__(self, store: Any, store_name: str | None, csrf: Csrf,
                 read_only: bool = False):
        self.store, self.store_name, self.csrf = store, store_name, csrf
        self.read_only = read_only
        self.streams = 0
        self.tasks: Any = None  # the task group resumed dialogues run in (``lifespan``)
        self.resuming: dict[str, str] = {}  # id -> "" while it runs, else why it stopped
        self.old_models = views.OldModels()  # for the list's model filter on old records
        self.deleted: dict[str, int] = {}  # the last ids deleted here -> sub-dialogues gone

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """While the server runs: a task group for the dialogues resumed from a page;
        when it stops, they are cancelled (and saved so, to be resumed again)."""
        import anyio

        async with anyio.create_task_group() as tasks:
            self.tasks = tasks
            try:
                yield
            finally:
                self.tasks = None
                tasks.cancel_scope.cancel()

    async def _run(self, fn: Any, *args: Any) -> Any:
        import anyio

        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    def _stream(self, read: Any, since: str | None) -> Response:
        """A page's events: ``read`` its snapshot (a ``live.Shared`` one, or a
        ``live.View`` of one, takes no slot of ``MAX_STREAMS``: its reader's own bound is
        ``MAX_SHARED``)."""
        from starlette.responses import PlainTextResponse, StreamingResponse

        shared = live.shared_of(read)
        if (shared.following >= live.MAX_SHARED if shared is not None
                else self.streams >= live.MAX_STREAMS):
            return PlainTextResponse("too many live pages open at once", 503)
        if shared is not None:
            shared.following += 1
        else:
            self.streams += 1
        if isinstance(read, live.View):
            read.following += 1

        async def events() -> Any:
            from dlg.errors import DlgError

            try:
                async for chunk in live.follow(read, since=since):
                    yield chunk
            except DlgError as exc:  # deleted meanwhile, or the store failed
                yield live.event("end", str(exc))
            finally:
                if shared is not None:
                    shared.following -= 1
                else:
                    self.streams -= 1
                if isinstance(read, live.View):
                    read.following -= 1

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def static(self, request: Request) -> Response:
        from importlib.resources import files

        from starlette.responses import PlainTextResponse, Response

        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        body = files("dlg.templates").joinpath("serve", name).read_bytes()
        return Response(body, media_type=STATIC[name])


def create_app(store: Any = None, *, token: str | None = None, local: bool = True,
               host: str = "127.0.0.1", csrf: Csrf | None = None,
               read_only: bool = False) -> Starlette:
    """The viewer over ``store`` (a store's name, None for the default, or an opened
    store). With ``token``, every request needs it; ``local`` (served on the loopback
    address ``host``) also refuses requests naming another host (DNS rebinding);
    ``read_only`` refuses rating, resuming and deleting."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.routing import Route

    from dlg.errors import DlgError, InputError, UnknownExporterError
    from dlg.records.store import DialogueNotFoundError, open_store

    name = store if isinstance(store, str) or store is None else None
    viewer = Viewer(open_store(store), name, csrf or Csrf(), read_only=read_only)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_page(404, str(exc))

    async def bad(request: Request, exc: Exception) -> Response:
        return error_page(400, str(exc))

    async def failed(request: Request, exc: Exception) -> Response:
        return error_page(500, str(exc))

    middleware = [Middleware(Headers)]
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    if local:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=[*LOCAL_HOSTS, host]))
    page, dialogue_routes = dialogue_page.routes(viewer)
    routes = [*listing.routes(viewer), Route("/static/{name}", viewer.static),
              *dialogue_routes, *actions.routes(viewer, page),
              *batches.routes(viewer, render), *routing_page.routes(viewer, render)]
    return Starlette(routes=routes, middleware=middleware, lifespan=viewer.lifespan,
                     exception_handlers={
                         DialogueNotFoundError: not_found, UnknownExporterError: not_found,
                         InputError: bad, DlgError: failed})
