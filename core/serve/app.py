"""The viewer's Starlette application: its routes, each reading the store in a thread.

``/``: the saved dialogues, filtered (``?status=&mode=&model=&batch=&from=&to=&q=``),
kept up to date through ``/events``; ``/d/{id}``: a dialogue, kept up to date through
``/d/{id}/events``; ``POST /d/{id}/rate``: a turn's rating (with the form's CSRF token),
where ``dlg rate`` puts it; ``POST /d/{id}/resume``: its unfinished turns run in this
process, in the background; ``/d/{id}/delete``: asks, then (``POST``) deletes it as
``dlg rm`` does; ``/d/{id}/export/{format}``: the dialogue through dlg's exporters.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dlg.serve import batches, live, routing_page, views
from dlg.serve.security import COOKIE, HEADERS, Csrf, cross_site, same

if TYPE_CHECKING:
    import jinja2
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = {"serve.js": "text/javascript; charset=utf-8", "serve.css": "text/css; charset=utf-8"}
MAX_FORM = 4096  # bytes of a posted form
LOCAL_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
READ_ONLY = ("this viewer was started with --read-only: it changes nothing in the store "
             "(no rating, resume or delete). Use the dlg command instead")
log = logging.getLogger("dlg.serve")


@functools.cache
def _templates() -> jinja2.Environment:
    import jinja2

    from dlg.records.markdown import markdown_html

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dlg.templates", "serve"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        auto_reload=False)
    env.filters["markdown"] = markdown_html
    return env


def render(name: str, **context: Any) -> str:
    return _templates().get_template(name).render(**context)


class Viewer:
    """The routes, over one opened store and its name (the rating opens it as ``dlg
    rate`` does)."""

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

    # the list ------------------------------------------------------------------
    def _list_snapshot(self, filters: views.Filters) -> live.Snapshot:
        listing = views.listing(self.store, filters, self.old_models)
        html = render("rows.html.j2", listing=listing)
        return live.Snapshot(fingerprint=html, html=html, done=False)

    async def index(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        filters = views.Filters.from_query(request.query_params)  # a bad date: 400
        listing = await self._run(views.listing, self.store, filters, self.old_models)
        query = filters.query()
        deleted = self._deleted(str(request.query_params.get("deleted") or ""))
        return HTMLResponse(render("list.html.j2", listing=listing, filters=filters,
                                   deleted=deleted,
                                   events="/events" + (f"?{query}" if query else "")))

    def _deleted(self, dialogue_id: str) -> str:
        """What ``?deleted=`` names, if this viewer deleted it; "" for any other text (a
        link of another site could otherwise make the list say anything)."""
        more = self.deleted.get(dialogue_id)
        if more is None:
            return ""
        return dialogue_id + (f" and {more} sub-dialogue{'s' if more > 1 else ''}"
                              if more else "")

    async def list_events(self, request: Request) -> Response:
        filters = views.Filters.from_query(request.query_params)
        return self._stream(functools.partial(self._list_snapshot, filters), None)

    # a dialogue ------------------------------------------------------------------
    def _view(self, dialogue_id: str) -> dict[str, Any]:
        """The dialogue's view; one this viewer is resuming counts as running (it may
        not have saved so yet), and why its resumption stopped, if it failed."""
        view = views.dialogue_view(self.store, dialogue_id)
        stopped = self.resuming.get(view["id"])
        if stopped == "":
            view["running"], view["status"] = True, "running"
        elif stopped and not view["running"]:
            view["error"] = stopped
        return view

    def _dialogue_context(self, view: dict[str, Any]) -> dict[str, Any]:
        return {"d": view, "csrf": self.csrf.token(f"rate:{view['id']}"),
                "resume_csrf": self.csrf.token(f"resume:{view['id']}"),
                "read_only": self.read_only}

    def _dialogue_snapshot(self, dialogue_id: str) -> live.Snapshot:
        view = self._view(dialogue_id)
        html = render("dialogue_body.html.j2", **self._dialogue_context(view))
        return live.Snapshot(view["fingerprint"] + str(view["running"]), html,
                             done=not view["running"])

    async def dialogue(self, request: Request) -> Response:
        from starlette.responses import HTMLResponse

        view = await self._run(self._view, request.path_params["dialogue_id"])
        rated = str(request.query_params.get("rated") or "")  # a turn of it, or nothing
        rated = rated if any(t["id"] == rated for t in view["turns"]) else ""
        return HTMLResponse(render("dialogue.html.j2", rated=rated,
                                   notice=NOTICES.get(request.query_params.get("did", "")),
                                   **self._dialogue_context(view)))

    async def dialogue_events(self, request: Request) -> Response:
        dialogue_id = request.path_params["dialogue_id"]
        await self._run(self._view, dialogue_id)  # none: 404 now
        since = request.query_params.get("since")
        return self._stream(functools.partial(self._dialogue_snapshot, dialogue_id), since)

    def _stream(self, read: Any, since: str | None) -> Response:
        """A page's events: ``read`` its snapshot (a ``live.Shared`` one takes no slot of
        ``MAX_STREAMS``, its own bound is ``MAX_SHARED``)."""
        from starlette.responses import PlainTextResponse, StreamingResponse

        shared = read if isinstance(read, live.Shared) else None
        if (shared.following >= live.MAX_SHARED if shared is not None
                else self.streams >= live.MAX_STREAMS):
            return PlainTextResponse("too many live pages open at once", 503)
        if shared is not None:
            shared.following += 1
        else:
            self.streams += 1

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

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def rate(self, request: Request) -> Response:
        from starlette.responses import RedirectResponse

        dialogue_id = request.path_params["dialogue_id"]
        form = await _form(request)
        if (refused := self._refuse(request, form, "rate")) is not None:
            return refused
        turn = _field(form, "turn")
        try:
            score = float(_field(form, "score"))
        except ValueError:
            score = math.nan
        if not turn or not math.isfinite(score):
            return error_page(400, f"a rating is a score from 0 to 10, not "
                                   f"{_field(form, 'score')!r}")
        # as `dlg rate` does: a score out of range or a turn without an answer is refused
        from dlg.running.api import Orchestrator

        # into this viewer's store: the one given (an object), else the one it names
        await self._run(Orchestrator(store=self.store_name or self.store).rate, dialogue_id,
                        turn, score)
        return RedirectResponse(f"/d/{_quote(dialogue_id)}?rated={_quote(turn)}"
                                f"#turn-{_quote(turn)}", 303)

    def _refuse(self, request: Request, form: dict[str, str], doing: str) -> Response | None:
        """The error page when this viewer is read-only, the form came from a page of
        another site, or its CSRF token is not the one of ``doing`` to this dialogue;
        None when the form may go on."""
        action = f"{doing}:{request.path_params['dialogue_id']}"
        if self.read_only:
            return error_page(403, READ_ONLY)
        if cross_site(request.headers):
            return error_page(403, "this form was sent by a page of another site: "
                                   f"open the dialogue's page here and {doing} from there")
        if not self.csrf.check(action, _field(form, "csrf")):
            return error_page(403, "this form is out of date or was not sent by this "
                                   "viewer (its CSRF token does not match): open the "
                                   f"dialogue's page again and {doing} from there")
        return None

    async def resume(self, request: Request) -> Response:
        """Continue the dialogue here, in the background, as ``dlg resume`` does: refused
        while a process runs it (this one too); its page follows it live."""
        from starlette.responses import RedirectResponse

        from dlg.errors import DlgError
        from dlg.records.store import DialogueBusyError
        from dlg.running.api import Orchestrator

        dialogue_id = request.path_params["dialogue_id"]
        form = await _form(request)
        if (refused := self._refuse(request, form, "resume")) is not None:
            return refused
        if self.tasks is None:
            return error_page(503, "this viewer is not running its background tasks (an "
                                   "ASGI server without lifespan?): resume with `dlg "
                                   f"resume {dialogue_id}`")
        if self.resuming.get(dialogue_id) == "":
            return error_page(409, f"dialogue {dialogue_id} is being resumed by this "
                                   "viewer already")
        orchestrator = Orchestrator(store=self.store_name or self.store, watchdog=True)
        self.resuming[dialogue_id] = ""  # a second press meanwhile is refused above
        try:
            mode, dialogue = await self._run(orchestrator.prepare_resume, dialogue_id)
        except DialogueBusyError as exc:
            del self.resuming[dialogue_id]
            return error_page(409, str(exc))
        except DlgError as exc:  # its mode changed or is gone, a model cannot run...
            del self.resuming[dialogue_id]
            return error_page(400, f"dialogue {dialogue_id} cannot be resumed here: {exc}")
        except BaseException:
            del self.resuming[dialogue_id]
            raise
        target = f"/d/{_quote(dialogue_id)}"
        if dialogue.id != dialogue_id or all(t.status in ("completed", "skipped")
                                             for t in dialogue.turns):
            del self.resuming[dialogue_id]
            if dialogue.id != dialogue_id:  # a prefix: resume it by its whole id
                return error_page(404, f"no saved dialogue '{dialogue_id}' (give its "
                                       "whole id)")
            return RedirectResponse(f"{target}?did=complete", 303)
        self.tasks.start_soon(self._resume, orchestrator, mode, dialogue)
        return RedirectResponse(f"{target}?did=resumed", 303)

    async def _resume(self, orchestrator: Any, mode: Any, dialogue: Any) -> None:
        """Run a resumed dialogue; what stopped it (another process took it meanwhile,
        a store that failed) is kept for its page, and logged."""
        import anyio

        stopped = ""
        try:
            await orchestrator.execute(mode, dialogue)
        except anyio.get_cancelled_exc_class():
            stopped = "the viewer stopped while it ran: resume it again"
            raise
        except Exception as exc:
            from dlg.observability.redact import redact

            stopped = redact(f"resuming it failed: {exc}")
            log.warning("dialogue %s: %s", dialogue.id, stopped)
        finally:
            self.resuming[dialogue.id] = stopped
            if not stopped:
                del self.resuming[dialogue.id]

    async def ask_delete(self, request: Request) -> Response:
        """The confirmation: what deleting the dialogue would delete, and the button."""
        from starlette.responses import HTMLResponse

        if self.read_only:
            return error_page(403, READ_ONLY)
        view = await self._run(self._view, request.path_params["dialogue_id"])
        children = sum(len(t["subdialogues"]) for t in view["turns"])
        return HTMLResponse(render("dialogue_delete.html.j2", d=view, children=children,
                                   csrf=self.csrf.token(f"delete:{view['id']}")))

    async def delete(self, request: Request) -> Response:
        """Delete the dialogue and its sub-dialogues as ``dlg rm`` does: refused, and
        nothing deleted, while a process runs one of them (this one too)."""
        from starlette.responses import RedirectResponse

        from dlg.records.store import DialogueBusyError, delete_dialogue

        dialogue_id = request.path_params["dialogue_id"]
        form = await _form(request)
        if (refused := self._refuse(request, form, "delete")) is not None:
            return refused
        if self.resuming.get(dialogue_id) == "":  # before its run holds it (or while)
            return error_page(409, f"dialogue {dialogue_id} is being resumed by this viewer; "
                                   "nothing of it was deleted")
        try:
            deleted = await self._run(delete_dialogue, dialogue_id, self.store)
        except DialogueBusyError as exc:
            return error_page(409, f"{exc}; nothing of it was deleted")
        self.resuming.pop(dialogue_id, None)
        self.deleted[dialogue_id] = len(deleted) - 1
        while len(self.deleted) > 100:
            del self.deleted[next(iter(self.deleted))]
        return RedirectResponse(f"/?deleted={_quote(dialogue_id)}", 303)

    async def export(self, request: Request) -> Response:
        from starlette.responses import Response

        from dlg.records.export import get_exporter, render_export
        from dlg.records.store import as_dialogue, find_dialogue

        fmt = request.path_params["format"]
        exporter = get_exporter(fmt)  # not one: 404
        dialogue = as_dialogue(await self._run(find_dialogue, self.store,
                                               request.path_params["dialogue_id"]))
        data = await self._run(render_export, dialogue, fmt)
        extension = getattr(exporter, "extension", fmt) or fmt
        return Response(data, media_type=_media_type(extension), headers={
            "content-disposition": f'attachment; filename="{dialogue.id}.{extension}"'})

    async def static(self, request: Request) -> Response:
        from importlib.resources import files

        from starlette.responses import PlainTextResponse, Response

        name = request.path_params["name"]
        if name not in STATIC:
            return PlainTextResponse("not found", 404)
        body = files("dlg.templates").joinpath("serve", name).read_bytes()
        return Response(body, media_type=STATIC[name])


async def _form(request: Request) -> dict[str, str]:
    """A small url-encoded form's fields (the first of each name); a bigger body or
    another encoding is read as none, which no check passes."""
    from urllib.parse import parse_qsl

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    fields: dict[str, str] = {}
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), max_num_fields=20)
    except ValueError:  # more fields than a form of the viewer has
        return {}
    for key, value in pairs:
        fields.setdefault(key, value)
    return fields


def _field(form: dict[str, str], name: str) -> str:
    return form.get(name, "")


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


NOTICES = {"resumed": "Resumed here: its unfinished turns run in the viewer, and this page "
                      "follows them.",
           "complete": "Nothing to resume: every turn of it has completed."}


def _media_type(extension: str) -> str:
    import mimetypes

    guessed = mimetypes.guess_type(f"x.{extension}")[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def error_page(status: int, message: str) -> Response:
    """A page saying what went wrong, with any secret the message holds redacted (a
    store's error may name its URL with the password, a provider's the key it got)."""
    from starlette.responses import HTMLResponse

    from dlg.observability.redact import redact

    return HTMLResponse(render("error.html.j2", status=status, message=redact(message)),
                        status)


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
    routes = [Route("/", viewer.index), Route("/events", viewer.list_events),
              Route("/static/{name}", viewer.static),
              Route("/d/{dialogue_id}", viewer.dialogue),
              Route("/d/{dialogue_id}/events", viewer.dialogue_events),
              Route("/d/{dialogue_id}/rate", viewer.rate, methods=["POST"]),
              Route("/d/{dialogue_id}/resume", viewer.resume, methods=["POST"]),
              Route("/d/{dialogue_id}/delete", viewer.ask_delete),
              Route("/d/{dialogue_id}/delete", viewer.delete, methods=["POST"]),
              Route("/d/{dialogue_id}/export/{format}", viewer.export)]
    routes += [*batches.routes(viewer, render), *routing_page.routes(viewer, render)]
    return Starlette(routes=routes, middleware=middleware, lifespan=viewer.lifespan,
                     exception_handlers={
                         DialogueNotFoundError: not_found, UnknownExporterError: not_found,
                         InputError: bad, DlgError: failed})


class Headers:
    """Every response with ``security.HEADERS`` (no script but the viewer's own)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.encode(), v.encode()) for k, v in HEADERS.items())]
            await send(message)

        await self.app(scope, receive, with_headers)


class TokenGate:
    """Every request needs the token: as the cookie, which a page opened with
    ``?token=TOKEN`` sets (and is sent on to itself without it, so the token leaves the
    address bar and the history)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, RedirectResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and same(given, self.token):
            url = request.url.remove_query_params("token")
            to = url.path + (f"?{url.query}" if url.query else "")
            response: Response = RedirectResponse(to, 303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
        elif same(request.cookies.get(COOKIE), self.token):
            await self.app(scope, receive, send)
            return
        else:
            response = PlainTextResponse(
                "this viewer needs its token: open it as http://HOST:PORT/?token=TOKEN, "
                "with the token `dlg serve --token` was given", 403)
        await response(scope, receive, send)
