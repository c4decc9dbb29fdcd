"""What a dialogue's page can do to it, each a form with its CSRF token (``forms``):
``POST /d/{id}/rate``, a turn's rating, where ``dlg rate`` puts it; ``POST
/d/{id}/resume``, its unfinished turns run in this process, in the background;
``/d/{id}/delete``, asks, then (``POST``) deletes it as ``dlg rm`` does."""

from __future__ import annotations

import functools
import logging
import math
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from dlg.serve.forms import READ_ONLY, field, quote, read_form, refuse
from dlg.serve.pages import error_page, render

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

log = logging.getLogger("dlg.serve")
MODEL_SPEC_MAX = 200  # characters of a model spec given on the page
NAME_MAX = 100  # characters of a router's or a mode's name given on the page
MAX_PARTICIPANTS = 20  # ALIAS=SPEC pairs given on the page
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a participant's alias (mode schema)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a mode's name (mode schema)
_FILES = (".yaml", ".yml", ".json")  # a name ending so is read as a file's path


class ResumeOptions(NamedTuple):
    """What the resume form asks of ``dlg resume`` (see ``resume_options``)."""

    model: str | None
    max_cost: float | None
    force: bool
    participants: dict[str, str]
    router: str | None
    mode: str | None


def _spec(value: str, what: str, option: str) -> str:
    """A model spec given on the page: printable, no spaces, no options."""
    from dlg.errors import InputError

    if (len(value) > MODEL_SPEC_MAX or not value.isprintable()
            or any(c.isspace() for c in value)):
        raise InputError(f"{what} must be a model spec such as openai:gpt-4o-mini (no "
                         f"spaces, at most {MODEL_SPEC_MAX} characters), not {value[:80]!r}")
    if "?" in value:
        raise InputError(f"{what} is named here without options (the part after '?', "
                         f"not {value.partition('?')[0]!r}?...): give options with `dlg "
                         f"resume {option}` on the command line")
    return value


def _participants(text: str) -> dict[str, str]:
    """``ALIAS=SPEC`` pairs, separated by spaces or commas (``--participant``)."""
    from dlg.errors import InputError

    pairs: dict[str, str] = {}
    items = text.replace(",", " ").split()
    if len(items) > MAX_PARTICIPANTS:
        raise InputError(f"the participants are at most {MAX_PARTICIPANTS} ALIAS=SPEC pairs, "
                         f"not {len(items)}")
    for item in items:
        alias, sep, spec = item.partition("=")
        if not sep or not spec or not _IDENTIFIER.fullmatch(alias):
            raise InputError(f"a participant is given as ALIAS=SPEC (an alias of the mode's "
                             f"participants, such as writer=openai:gpt-4o-mini), not "
                             f"{item[:80]!r}")
        if alias in pairs:
            raise InputError(f"participant '{alias}' is given twice")
        pairs[alias] = _spec(spec, f"the model of participant '{alias}'", "--participant")
    return pairs


def _name(value: str, what: str, option: str, listed: str) -> str:
    """A router's or a mode's name (as ``listed`` shows them): never a file's path, never
    options."""
    from dlg.errors import InputError

    base = value.partition("?")[0]
    if "?" in value and _NAME.fullmatch(base) and len(base) <= NAME_MAX:
        raise InputError(f"the {what} is named here without options (not {base!r}?...): "
                         f"give options with `dlg resume {option}` on the command line")
    if len(value) > NAME_MAX or not _NAME.fullmatch(value) or value.endswith(_FILES):
        raise InputError(f"the {what} is a name as {listed} (letters, digits, '_', '.' and "
                         f"'-', at most {NAME_MAX} characters; not a file, which `dlg resume "
                         f"{option}` takes), not {value[:80]!r}")
    return value


def resume_options(form: dict[str, str]) -> ResumeOptions:
    """The resume form's options, as ``dlg resume`` takes them: ``model`` (run the
    remaining turns on this model; a spec without options, which may name an endpoint),
    ``participants`` (``--participant``: ``ALIAS=SPEC`` pairs, specs without options),
    ``router`` (``--router``: a router's name), ``mode`` (``--mode``: a mode's name, never
    a file of the server's), ``max_cost`` (a new limit on what the whole dialogue spends,
    in dollars) and ``force`` (resume with the mode as it is now, though it changed).
    Empty: not given. An ``InputError`` saying what is wrong with one."""
    from dlg.errors import InputError
    from dlg.language.limits import positive

    model = field(form, "model").strip()
    if model:
        _spec(model, "the model", "--model")
    cost = field(form, "max_cost").strip()
    if len(cost) > 40:  # cut, it would be another number than the one typed
        raise InputError(f"the max cost is a number of dollars of at most 40 characters, "
                         f"not {cost[:40]!r}...")
    max_cost = positive(cost, "the max cost", "dollars") if cost else None
    force = field(form, "force")
    if force not in ("", "1"):
        raise InputError(f"force is a checkbox (1 or nothing), not {force[:40]!r}")
    router = field(form, "router").strip()
    mode = field(form, "mode").strip()
    return ResumeOptions(model or None, max_cost, force == "1",
                         _participants(field(form, "participants")),
                         _name(router, "router", "--router",
                               "`dlg plugins` lists them") if router else None,
                         _name(mode, "mode", "--mode",
                               "`dlg modes list` shows them") if mode else None)


class Actions:
    """The forms' routes over the viewer's store (``viewer``: ``dlg.serve.app.Viewer``;
    ``page``: its ``dialogue_page.DialoguePage``)."""

    def __init__(self, viewer: Any, page: Any):
        self.viewer, self.page = viewer, page

    def _refuse(self, request: Request, form: dict[str, str], doing: str) -> Response | None:
        return refuse(request, form, doing, self.viewer.csrf, self.viewer.read_only)

    async def rate(self, request: Request) -> Response:
        from starlette.responses import RedirectResponse

        dialogue_id = request.path_params["dialogue_id"]
        form = await read_form(request)
        if (refused := self._refuse(request, form, "rate")) is not None:
            return refused
        turn = field(form, "turn")
        try:
            score = float(field(form, "score"))
        except ValueError:
            score = math.nan
        if not turn or not math.isfinite(score):
            return error_page(400, f"a rating is a score from 0 to 10, not "
                                   f"{field(form, 'score')!r}")
        # as `dlg rate` does: a score out of range or a turn without an answer is refused
        from dlg.running.api import Orchestrator

        # into this viewer's store: the one given (an object), else the one it names
        viewer = self.viewer
        await viewer._run(Orchestrator(store=viewer.store_name or viewer.store).rate,
                          dialogue_id, turn, score)
        return RedirectResponse(f"/d/{quote(dialogue_id)}?rated={quote(turn)}"
                                f"#turn-{quote(turn)}", 303)

    async def resume(self, request: Request) -> Response:
        """Continue the dialogue here, in the background, as ``dlg resume`` does: refused
        while a process runs it (this one too); its page follows it live."""
        from starlette.responses import RedirectResponse

        from dlg.errors import DlgError, InputError
        from dlg.records.store import DialogueBusyError
        from dlg.running.api import Orchestrator

        viewer = self.viewer
        dialogue_id = request.path_params["dialogue_id"]
        form = await read_form(request)
        if (refused := self._refuse(request, form, "resume")) is not None:
            return refused
        if viewer.tasks is None:
            return error_page(503, "this viewer is not running its background tasks (an "
                                   "ASGI server without lifespan?): resume with `dlg "
                                   f"resume {dialogue_id}`")
        if viewer.resuming.get(dialogue_id) == "":
            return error_page(409, f"dialogue {dialogue_id} is being resumed by this "
                                   "viewer already")
        try:  # the options of `dlg resume` a page offers: checked before anything runs
            given = resume_options(form)
            orchestrator = Orchestrator(store=viewer.store_name or viewer.store,
                                        watchdog=True, model=given.model,
                                        models=given.participants, router=given.router,
                                        max_cost=given.max_cost)
            for spec in [given.model, *given.participants.values()]:
                if spec is not None:
                    await viewer._run(orchestrator.pool.check, spec)
            if given.router is not None:
                await viewer._run(orchestrator.routers.router)
        except DlgError as exc:
            return error_page(400, f"dialogue {dialogue_id} was not resumed: {exc}")
        viewer.resuming[dialogue_id] = ""  # a second press meanwhile is refused above
        try:
            # a live lease refuses it first, forced or not (``force``: a changed mode only)
            mode, dialogue = await viewer._run(functools.partial(
                orchestrator.prepare_resume, dialogue_id, force=given.force, mode=given.mode))
            strangers = [a for a in given.participants if a not in mode.participants]
            if strangers:  # `dlg resume` would take it as a pool model: a typo, here
                raise InputError(
                    f"'{strangers[0]}' is not a participant of mode '{mode.name}' (its "
                    f"participants: {', '.join(mode.participants) or 'none'})")
        except DialogueBusyError as exc:
            del viewer.resuming[dialogue_id]
            return error_page(409, str(exc))
        except DlgError as exc:  # its mode changed or is gone, a model cannot run...
            del viewer.resuming[dialogue_id]
            return error_page(400, f"dialogue {dialogue_id} cannot be resumed here: {exc}")
        except BaseException:
            del viewer.resuming[dialogue_id]
            raise
        target = f"/d/{quote(dialogue_id)}"
        if dialogue.id != dialogue_id or all(t.status in ("completed", "skipped")
                                             for t in dialogue.turns):
            del viewer.resuming[dialogue_id]
            if dialogue.id != dialogue_id:  # a prefix: resume it by its whole id
                return error_page(404, f"no saved dialogue '{dialogue_id}' (give its "
                                       "whole id)")
            return RedirectResponse(f"{target}?did=complete", 303)
        viewer.tasks.start_soon(self._resume, orchestrator, mode, dialogue)
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
            self.viewer.resuming[dialogue.id] = stopped
            if not stopped:
                del self.viewer.resuming[dialogue.id]

    async def ask_delete(self, request: Request) -> Response:
        """The confirmation: what deleting the dialogue would delete, and the button."""
        from starlette.responses import HTMLResponse

        if self.viewer.read_only:
            return error_page(403, READ_ONLY)
        view = await self.viewer._run(self.page.view, request.path_params["dialogue_id"])
        children = sum(len(t["subdialogues"]) for t in view["turns"])
        return HTMLResponse(render("dialogue_delete.html.j2", d=view, children=children,
                                   csrf=self.viewer.csrf.token(f"delete:{view['id']}")))

    async def delete(self, request: Request) -> Response:
        """Delete the dialogue and its sub-dialogues as ``dlg rm`` does: refused, and
        nothing deleted, while a process runs one of them (this one too)."""
        from starlette.responses import RedirectResponse

        from dlg.records.store import DialogueBusyError, delete_dialogue

        viewer = self.viewer
        dialogue_id = request.path_params["dialogue_id"]
        form = await read_form(request)
        if (refused := self._refuse(request, form, "delete")) is not None:
            return refused
        if viewer.resuming.get(dialogue_id) == "":  # before its run holds it (or while)
            return error_page(409, f"dialogue {dialogue_id} is being resumed by this viewer; "
                                   "nothing of it was deleted")
        try:
            deleted = await viewer._run(delete_dialogue, dialogue_id, viewer.store)
        except DialogueBusyError as exc:
            return error_page(409, f"{exc}; nothing of it was deleted")
        viewer.resuming.pop(dialogue_id, None)
        viewer.deleted[dialogue_id] = len(deleted) - 1
        while len(viewer.deleted) > 100:
            del viewer.deleted[next(iter(viewer.deleted))]
        return RedirectResponse(f"/?deleted={quote(dialogue_id)}", 303)


def routes(viewer: Any, page: Any) -> list[Route]:
    """The forms' routes: rate, resume, delete."""
    from starlette.routing import Route

    actions = Actions(viewer, page)
    return [Route("/d/{dialogue_id}/rate", actions.rate, methods=["POST"]),
            Route("/d/{dialogue_id}/resume", actions.resume, methods=["POST"]),
            Route("/d/{dialogue_id}/delete", actions.ask_delete),
            Route("/d/{dialogue_id}/delete", actions.delete, methods=["POST"])]
