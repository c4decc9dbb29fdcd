"""The viewer's forms (rate, resume, delete): reading a posted form, small and
url-encoded only, and refusing one this viewer must not act on (read-only, posted by a
page of another site, or without the CSRF token of its action, ``security.Csrf``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlg.serve.pages import error_page
from dlg.serve.security import Csrf, cross_site

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

MAX_FORM = 4096  # bytes of a posted form
READ_ONLY = ("this viewer was started with --read-only: it changes nothing in the store "
             "(no rating, resume or delete). Use the dlg command instead")


async def read_form(request: Request) -> dict[str, str]:
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


def field(form: dict[str, str], name: str) -> str:
    return form.get(name, "")


def quote(text: str) -> str:
    """``text`` as one segment of an address."""
    from urllib.parse import quote as quoted

    return quoted(text, safe="")


def refuse(request: Request, form: dict[str, str], doing: str, csrf: Csrf,
           read_only: bool) -> Response | None:
    """The error page when this viewer is read-only, the form came from a page of
    another site, or its CSRF token is not the one of ``doing`` to this dialogue;
    None when the form may go on."""
    action = f"{doing}:{request.path_params['dialogue_id']}"
    if read_only:
        return error_page(403, READ_ONLY)
    if cross_site(request.headers):
        return error_page(403, "this form was sent by a page of another site: "
                               f"open the dialogue's page here and {doing} from there")
    if not csrf.check(action, field(form, "csrf")):
        return error_page(403, "this form is out of date or was not sent by this "
                               "viewer (its CSRF token does not match): open the "
                               f"dialogue's page again and {doing} from there")
    return None
