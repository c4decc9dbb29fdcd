"""Rendering the viewer's pages: its Jinja templates (``templates/serve/``, autoescaped:
every text a record holds is hostile input) and the page saying what went wrong."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2
    from starlette.responses import Response


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


def error_page(status: int, message: str) -> Response:
    """A page saying what went wrong, with any secret the message holds redacted (a
    store's error may name its URL with the password, a provider's the key it got)."""
    from starlette.responses import HTMLResponse

    from dlg.observability.redact import redact

    return HTMLResponse(render("error.html.j2", status=status, message=redact(message)),
                        status)


def media_type(extension: str) -> str:
    """The content type of a download named ``x.EXTENSION``."""
    import mimetypes

    guessed = mimetypes.guess_type(f"x.{extension}")[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed
