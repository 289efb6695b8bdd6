"""Sessions, CSRF and the flash message.

Session: ``POST /login`` calls ``POST /v1/auth/login`` and keeps the bearer token
in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over https); logging
out revokes the token. CSRF: every form carries a per-session token (a hash of
the session token, so no server state) checked on every POST, and a POST whose
``Origin`` names another host is refused; ``SameSite=Strict`` already keeps the
cookie off cross-site requests, so this is defence in depth.

A page handler awaits :func:`require_session`, :func:`require_installer` or
:func:`require_post`; when they refuse they raise :class:`Redirect`, which the
app turns into its response (see ``cloud.web.mount``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from cloud.web.client import api_call
from cloud.web.markup import error_page

SESSION_COOKIE = "fusebox_session"
FLASH_COOKIE = "fusebox_flash"
MAX_FORM_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Session:
    """The logged-in user of a request, as ``GET /v1/me`` describes them, with
    the bearer token that every API call of the page carries."""

    token: str
    user_id: int
    email: str
    role: str
    gateway_ids: list[str] | None

    @property
    def csrf(self) -> str:
        """The form token of this session (see :func:`csrf_token`)."""
        return csrf_token(self.token)


def csrf_token(session_token: str) -> str:
    """The CSRF token for forms of the session ``session_token``: a hash of it,
    so it needs no server state and dies with the session."""
    return hashlib.sha256(f"fusebox-web-csrf:{session_token}".encode()).hexdigest()[:32]


class Redirect(Exception):
    """Raised by the session and form checks: answer with ``response`` instead
    (the login page, or a 403 page). The app turns it into that response (see
    ``mount``), so a page handler just awaits ``require_session``/
    ``require_installer``/``require_post``."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def answer_redirect(request: Request, exc: Exception) -> Response:
    """The exception handler for :class:`Redirect`: its response."""
    assert isinstance(exc, Redirect)
    return exc.response


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    r = RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
    r.delete_cookie(SESSION_COOKIE, path="/")
    return r


async def require_session(request: Request) -> Session:
    """The logged-in session of ``request``; raises ``Redirect`` to the login
    page when there is none or the token expired or was revoked."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 256:
        raise Redirect(_login_redirect(request))
    me = await api_call(request, "GET", "/v1/me", token=token)
    if me.status == 401 or not isinstance(me.body, dict):
        raise Redirect(_login_redirect(request))
    return Session(
        token,
        me.body["id"],
        me.body["email"],
        me.body["role"],
        me.body.get("gateway_ids"),
    )


async def require_installer(request: Request) -> Session:
    """The session of ``request`` if it is an installer's; raises ``Redirect``
    to the login page or to a 403 page otherwise."""
    session = await require_session(request)
    if session.role != "installer":
        raise Redirect(error_page(403, "These pages are for installers."))
    return session


def same_origin(request: Request) -> bool:
    """False when the request's ``Origin`` names another host (or is ``null``)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # no Origin (old browsers): SameSite=Strict and the form token still hold
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form of ``request``, last value of each field, stripped;
    empty when the body exceeds ``MAX_FORM_BYTES``."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return {}
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1].strip() for k, v in parsed.items()}


async def require_post(request: Request) -> tuple[Session, dict[str, str]]:
    """The session and form of a POST, with its CSRF token and Origin checked."""
    if not same_origin(request):
        raise Redirect(error_page(403, "Refused: this form came from another site."))
    session = await require_session(request)
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise Redirect(
            error_page(403, "This form has expired; go back, reload and try again.")
        )
    return session, form


def flash_redirect(target: str, kind: str, text: str) -> RedirectResponse:
    """A 303 to ``target`` that shows ``text`` there once (``kind`` is ``ok``
    or ``error``), carried in a short-lived cookie."""
    r = RedirectResponse(target, status_code=303)
    r.set_cookie(
        FLASH_COOKIE,
        quote(f"{kind}|{text[:600]}"),
        max_age=60,
        path="/",
        httponly=True,
        samesite="strict",
    )
    return r


def take_flash(request: Request) -> tuple[str, str] | None:
    """The flash message of ``request`` as ``(kind, text)``, if any; the page
    that shows it deletes the cookie."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, text = unquote(raw).partition("|")
    return ("error" if kind == "error" else "ok"), text
