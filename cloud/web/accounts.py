"""Logging in and out, and the home page each role lands on (an owner's home,
an installer's installations, an operator's fleet)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud.web.client import api_call
from cloud.web.formatting import parse_dt
from cloud.web.layout import page
from cloud.web.markup import error_page, h
from cloud.web.session import (
    SESSION_COOKIE,
    Session,
    read_form,
    require_post,
    require_session,
    same_origin,
)

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=RedirectResponse)
async def root() -> RedirectResponse:
    """The site root: to the app."""
    return RedirectResponse("/app", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str = "/app") -> HTMLResponse:
    """The login form; ``next`` is where to go after (our own pages only)."""
    return _login_form(request, next, None, None)


def _login_form(
    request: Request, next_path: str, email: str | None, error: str | None
) -> HTMLResponse:
    err = f'<p class="flash error" role="alert">{h(error)}</p>' if error else ""
    body = f"""{err}
<form method="post" action="/login" class="card narrow">
<input type="hidden" name="next" value="{h(_safe_next(next_path))}">
<label>E-mail <input type="email" name="email" autocomplete="username" required
 value="{h(email or "")}"></label>
<label>Password <input type="password" name="password"
 autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>"""
    return page(request, "Log in", body, status=401 if error else 200)


def _safe_next(target: str) -> str:
    # only our own pages: never an absolute or protocol-relative URL
    if target.startswith("/app") and not target.startswith("//"):
        return target
    return "/app"


@router.post("/login")
async def login(request: Request) -> Response:
    """Log in through the API and keep its token in the session cookie, which
    lives as long as the token."""
    if not same_origin(request):
        return error_page(403, "Refused: this form came from another site.")
    form = await read_form(request)
    email, password = form.get("email", ""), form.get("password", "")
    next_path = _safe_next(form.get("next", "/app"))
    answer = await api_call(
        request,
        "POST",
        "/v1/auth/login",
        token=None,
        json_body={"email": email, "password": password},
    )
    if not answer.ok:
        text = (
            "Wrong e-mail or password."
            if answer.status in (401, 422)
            else answer.error()
        )
        return _login_form(request, next_path, email, text)
    token = answer.body["access_token"]
    expires = parse_dt(answer.body.get("expires_at"))
    max_age = (
        int((expires - datetime.now(UTC)).total_seconds()) if expires else 12 * 3600
    )
    r = RedirectResponse(next_path, status_code=303)
    r.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(60, max_age),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return r


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Revoke the session's token and drop the cookie."""
    session, _ = await require_post(request)
    await api_call(request, "POST", "/v1/auth/logout", token=session.token)
    out = RedirectResponse("/login", status_code=303)
    out.delete_cookie(SESSION_COOKIE, path="/")
    return out


@router.get("/app")
async def home(request: Request) -> Response:
    """Where each role starts: installers their installations, operators the
    fleet, owners their one home (or the list when they have several)."""
    session = await require_session(request)
    if session.role == "installer":
        return RedirectResponse("/app/install", status_code=303)
    if session.role == "operator":
        return await _fleet_page(request, session)
    sites = await api_call(request, "GET", "/v1/sites", token=session.token)
    items = sites.body if sites.ok and isinstance(sites.body, list) else []
    if len(items) == 1:
        return RedirectResponse(
            f"/app/site/{quote(items[0]['gateway_id'], safe='')}", status_code=303
        )
    if not items:
        body = '<p class="muted">No home is linked to your account yet.</p>'
    else:
        body = "<ul class='cards'>" + "".join(
            f'<li class="card"><a href="/app/site/{quote(s["gateway_id"], safe="")}">'
            f"{h(s['gateway_id'])}</a> · {len(s['chargers'])} charger(s)</li>"
            for s in items
        )
        body += "</ul>"
    return page(request, "Your homes", body, session=session)


async def _fleet_page(request: Request, session: Session) -> HTMLResponse:
    fleet = await api_call(request, "GET", "/v1/fleet", token=session.token)
    if not fleet.ok:
        return page(request, "Fleet", f"<p>{h(fleet.error())}</p>", session=session)
    f = fleet.body
    rows = "".join(
        f"<tr><td>{h(g['gateway_id'])}</td><td>"
        f'<span class="badge {"pass" if g["online"] else "fail"}">'
        f"{'online' if g['online'] else 'offline'}</span></td>"
        f"<td>{h(g['software'] or '—')}</td><td>{h(g['backlog_records'] or 0)}</td>"
        f"<td>{h(g['thinned_total'])}</td></tr>"
        for g in f["gateways"]
    )
    body = (
        f"<p>{h(f['gateways_total'])} gateways: {h(f['online'])} online, "
        f"{h(f['offline'])} offline; backlog {h(f['backlog_records_total'])} "
        "records.</p>"
        '<div class="scroll"><table><thead><tr><th>Gateway</th><th>State</th>'
        "<th>Software</th><th>Backlog</th><th>Thinned</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )
    return page(request, "Fleet", body, session=session)
