"""HTML building blocks that need no session: escaping, the security headers every
page carries, the bare error page and ``<option>`` lists.

Markup is built with f-strings; every value from the API or the user passes
through :func:`h` (``html.escape``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from fastapi.responses import HTMLResponse

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' "
        "data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def h(value: object) -> str:
    """``value`` as HTML text or attribute content."""
    return html.escape("" if value is None else str(value), quote=True)


def error_page(status: int, text: str) -> HTMLResponse:
    """A page that only says ``text`` (escaped), with a link home; no session
    needed, so the session and form checks can answer with it."""
    body = f'<p class="flash error">{h(text)}</p><p><a href="/app">Back</a></p>'
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/app/static/app.css"><link rel="icon" '
        'href="data:,"><title>Fusebox</title>'
        f"</head><body><main><h1>Sorry</h1>{body}</main></body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=SECURITY_HEADERS)


def options(choices: Iterable[tuple[str, str]], selected: str | None) -> str:
    """``<option>`` elements for ``(value, label)`` pairs, ``selected`` marked."""
    return "".join(
        f'<option value="{h(v)}"{" selected" if v == selected else ""}>{h(label)}'
        "</option>"
        for v, label in choices
    )
