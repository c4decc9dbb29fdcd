"""Who may ask and what a page may do.

- The access token (``dlg serve --token``): every request carries it, as the cookie set
  when a page is opened with ``?token=``; a host other than this machine's needs one.
- The CSRF token of a form: an HMAC of what the form does with a secret of this process,
  so a page of another site cannot post a rating in the user's name; a post the browser
  says came from another site is refused too.
- The headers of every page: no script but dlg's own (a model's answer is hostile input),
  no framing, no sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

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
