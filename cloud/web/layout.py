"""The page frame every logged-in page and the login page share: head, header
with navigation and log-out form, the flash notice, and the security headers."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from cloud.web.markup import SECURITY_HEADERS, h
from cloud.web.session import FLASH_COOKIE, Session, take_flash


def _nav(session: Session | None) -> str:
    if session is None:
        return ""
    links = ['<a href="/app">Home</a>']
    if session.role == "installer":
        links.append('<a href="/app/install">Installations</a>')
    return (
        '<nav><span class="who">'
        f"{h(session.email)} <small>({h(session.role)})</small></span>"
        + " ".join(links)
        + '<form method="post" action="/logout" class="inline">'
        f'<input type="hidden" name="csrf" value="{h(session.csrf)}">'
        '<button class="link" type="submit">Log out</button></form></nav>'
    )


def page(
    request: Request,
    title: str,
    body: str,
    *,
    session: Session | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The whole page titled ``title`` around ``body`` (trusted markup), with the
    navigation of ``session`` and the pending flash message, which it clears."""
    flash = take_flash(request)
    notice = ""
    if flash is not None:
        kind, text = flash
        notice = f'<p class="flash {kind}" role="status">{h(text)}</p>'
    nav = _nav(session)
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{h(title)} · Fusebox</title>
<link rel="stylesheet" href="/app/static/app.css">
<link rel="icon" href="data:,">
<script src="/app/static/app.js" defer></script>
</head><body>
<header><a class="brand" href="/app">⚡ Fusebox</a>{nav}</header>
<main><h1>{h(title)}</h1>{notice}{body}</main>
</body></html>"""
    r = HTMLResponse(doc, status_code=status, headers=SECURITY_HEADERS)
    if flash is not None:
        r.delete_cookie(FLASH_COOKIE, path="/")
    return r


def csrf_field(session: Session) -> str:
    """The hidden input carrying ``session``'s CSRF token, for every form."""
    return f'<input type="hidden" name="csrf" value="{h(session.csrf)}">'
