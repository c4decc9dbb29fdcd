"""Who may ask and what a page may do.

- The access token (``dlg serve --token``): every request carries it, as the cookie set
  when a page is opened with ``?token=``; a host other than this machine's needs one.
- The CSRF token of a form: an HMAC of what the form does with a secret of this process,
  so a page of another site cannot post a rating in the user's name; a post the browser
  says came from another site is refused too.
- The headers of every page: no script but dlg's own (a model's answer is hostile input),
  no framing, no sniffing.

``Headers`` and ``TokenGate`` are the ASGI middleware putting the headers on every
response and asking every request for the access token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "dlg_token"
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

HEADERS = {
    "content-security-policy": ("default-src 'self'; script-src 'self'; "
                                "style-src 'self'; img-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                                "form-action 'self'"),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def is_local(host: str) -> bool:
    """Whether ``host`` only listens on this machine (a loopback address or name)."""
    name = host.strip().strip("[]").lower()
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cross_site(headers: Mapping[str, str]) -> bool:
    """Whether a request was sent by a page of another site, as the browser says: its
    ``Sec-Fetch-Site``, or (a browser without it) an ``Origin`` naming another host than
    the request's (or the proxy's ``X-Forwarded-Host``). A form's CSRF token already
    stops such a post; this stops one whose token leaked too."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() in ("cross-site", "same-site")
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser's cross-origin post (they all send Origin)
    host = urlsplit(origin.strip()).netloc.lower()
    return not host or host not in {headers.get("host", "").lower(),
                                     headers.get("x-forwarded-host", "").lower()}


def same(given: str | None, expected: str) -> bool:
    """``given`` is ``expected``, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class Csrf:
    """The CSRF tokens of this process: one per action, from a secret made at start."""

    def __init__(self, secret: bytes | None = None):
        self._secret = secret or secrets.token_bytes(32)

    def token(self, action: str) -> str:
        return hmac.new(self._secret, action.encode(), hashlib.sha256).hexdigest()

    def check(self, action: str, given: str | None) -> bool:
        return same(given, self.token(action))


class Headers:
    """Every response with ``HEADERS`` (no script but the viewer's own)."""

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
