"""A model's answer as HTML, for the HTML report and ``dlg serve``: its Markdown rendered
with markdown-it (CommonMark and tables), its own HTML shown as text and its
``javascript:`` links refused. An answer is hostile input: escaped, never run."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markupsafe import Markup

__all__ = ["markdown_html"]


@functools.cache
def _markdown_it() -> Any:
    from markdown_it import MarkdownIt  # imported when an answer is rendered

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown_html(text: str) -> Markup:
    """``text`` (Markdown) as HTML safe to put in a page, raw HTML off."""
    from markupsafe import Markup

    # safe: markdown-it escaped the answer's own HTML and refused its javascript: links
    return Markup(_markdown_it().render(text))
