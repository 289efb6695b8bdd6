"""The web app (issue 5): server-rendered pages for owners and installers, served
by the cloud API process under ``/app`` (and ``/login``).

The pages are a client of the API, in the same process: every page calls the
JSON endpoints through :func:`api_call`, a direct ASGI call carrying the
session's bearer token. So tenancy, validation and rate limits are exactly the
API's (a page can show nothing the token could not read), and no SQL lives
here.

Session: ``POST /login`` calls ``POST /v1/auth/login`` and keeps the bearer token
in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over https); logging
out revokes the token. CSRF: every form carries a per-session token (a hash of
the session token, so no server state) checked on every POST, and a POST whose
``Origin`` names another host is refused; ``SameSite=Strict`` already keeps the
cookie off cross-site requests, so this is defence in depth.

Markup is built with f-strings; every value from the API or the user passes
through :func:`h` (``html.escape``). The chart of the next 24 h is inline SVG
drawn here, and the only script (``/app/static/app.js``) refreshes the live and
plan panels while the page is visible. Headers forbid inline scripts (CSP) and
framing.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

log = logging.getLogger("fusebox.cloud.web")

router = APIRouter(include_in_schema=False)

SESSION_COOKIE = "fusebox_session"
FLASH_COOKIE = "fusebox_flash"
MAX_FORM_BYTES = 16 * 1024
DEFAULT_ZONE = "Europe/London"
SLOT = timedelta(minutes=30)
CHART_SLOTS = 48  # the next 24 h
REFRESH_S = 15

_SECURITY_HEADERS = {
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


# ------------------------------------------------------------ the API, in-process


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> str:
        """The API's ``detail`` as one line (fields named)."""
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            parts = []
            for d in detail:
                if not isinstance(d, dict):
                    parts.append(str(d))
                    continue
                loc = [str(x) for x in d.get("loc", []) if x not in ("body", "query")]
                msg = str(d.get("msg", "invalid"))
                parts.append(f"{loc[-1]}: {msg}" if loc else msg)
            return "; ".join(parts)
        return f"the API answered {self.status}"


def _segment(value: str) -> str:
    # ids never contain "/" (the API's patterns); refuse rather than re-route
    if "/" in value or not value:
        raise ValueError(f"bad path segment {value!r}")
    return value


def api_path(*segments: str) -> str:
    return "/" + "/".join(_segment(s) for s in segments)


async def api_call(
    request: Request,
    method: str,
    path: str,
    *,
    token: str | None,
    json_body: Any = None,
    query: Mapping[str, Any] | None = None,
) -> ApiAnswer:
    """Call the API app serving ``request`` in-process, as the browser's client
    address, with ``token``; returns status and decoded JSON (or text)."""
    body = b"" if json_body is None else json.dumps(json_body).encode()
    headers = [
        (b"host", (request.headers.get("host") or "localhost").encode("latin-1")),
        (b"accept", b"application/json"),
    ]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode("latin-1")))
    if json_body is not None:
        headers.append((b"content-type", b"application/json"))
        headers.append((b"content-length", str(len(body)).encode()))
    qs = urlencode({k: v for k, v in (query or {}).items() if v is not None})
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": quote(path).encode(),
        "root_path": "",
        "query_string": qs.encode(),
        "headers": headers,
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 500
    content_type = ""
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, content_type
        if message["type"] == "http.response.start":
            status = message["status"]
            for k, v in message.get("headers", []):
                if k.lower() == b"content-type":
                    content_type = v.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await request.app(scope, receive, send)
    except Exception:  # the 500 was already sent by the app's error middleware
        log.exception("web: %s %s failed", method, path)
        if not chunks:
            return ApiAnswer(500, {"detail": "internal error"})
    raw = b"".join(chunks)
    if content_type.startswith("application/json"):
        try:
            return ApiAnswer(status, json.loads(raw or b"null"))
        except ValueError:
            pass
    return ApiAnswer(status, raw.decode("utf-8", "replace"))


# --------------------------------------------------------------- session, CSRF


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    user_id: int
    email: str
    role: str
    gateway_ids: list[str] | None

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)


def csrf_token(session_token: str) -> str:
    return hashlib.sha256(f"fusebox-web-csrf:{session_token}".encode()).hexdigest()[:32]


class _Redirect(Exception):
    """Raised by the session and form checks: answer with ``response`` instead
    (the login page, or a 403 page). The app turns it into that response (see
    ``mount``), so a page handler just awaits ``_session``/``_installer``/``_post``."""

    def __init__(self, response: Response) -> None:
        self.response = response


async def _answer_redirect(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Redirect)
    return exc.response


def mount(app: FastAPI) -> None:
    """Serve the web app's pages on ``app``."""
    app.include_router(router)
    app.add_exception_handler(_Redirect, _answer_redirect)


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    r = RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
    r.delete_cookie(SESSION_COOKIE, path="/")
    return r


async def _session(request: Request) -> Session:
    """The logged-in session of ``request``; raises ``_Redirect`` to the login
    page when there is none or the token expired or was revoked."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 256:
        raise _Redirect(_login_redirect(request))
    me = await api_call(request, "GET", "/v1/me", token=token)
    if me.status == 401 or not isinstance(me.body, dict):
        raise _Redirect(_login_redirect(request))
    return Session(
        token,
        me.body["id"],
        me.body["email"],
        me.body["role"],
        me.body.get("gateway_ids"),
    )


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # no Origin (old browsers): SameSite=Strict and the form token still hold
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


async def _form(request: Request) -> dict[str, str]:
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return {}
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1].strip() for k, v in parsed.items()}


async def _post(request: Request) -> tuple[Session, dict[str, str]]:
    """The session and form of a POST, with its CSRF token and Origin checked."""
    if not _same_origin(request):
        raise _Redirect(_error_page(403, "Refused: this form came from another site."))
    session = await _session(request)
    form = await _form(request)
    if not hmac.compare_digest(form.get("csrf", ""), session.csrf):
        raise _Redirect(
            _error_page(403, "This form has expired; go back, reload and try again.")
        )
    return session, form


def _flash_redirect(target: str, kind: str, text: str) -> RedirectResponse:
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


def _take_flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, text = unquote(raw).partition("|")
    return ("error" if kind == "error" else "ok"), text


# --------------------------------------------------------------------- layout


def _page(
    request: Request,
    title: str,
    body: str,
    *,
    session: Session | None = None,
    status: int = 200,
) -> HTMLResponse:
    flash = _take_flash(request)
    notice = ""
    if flash is not None:
        kind, text = flash
        notice = f'<p class="flash {kind}" role="status">{h(text)}</p>'
    nav = ""
    if session is not None:
        links = ['<a href="/app">Home</a>']
        if session.role == "installer":
            links.append('<a href="/app/install">Installations</a>')
        nav = (
            '<nav><span class="who">'
            f"{h(session.email)} <small>({h(session.role)})</small></span>"
            + " ".join(links)
            + '<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{h(session.csrf)}">'
            '<button class="link" type="submit">Log out</button></form></nav>'
        )
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
    r = HTMLResponse(doc, status_code=status, headers=_SECURITY_HEADERS)
    if flash is not None:
        r.delete_cookie(FLASH_COOKIE, path="/")
    return r


def _error_page(status: int, text: str) -> HTMLResponse:
    body = f'<p class="flash error">{h(text)}</p><p><a href="/app">Back</a></p>'
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/app/static/app.css"><link rel="icon" '
        'href="data:,"><title>Fusebox</title>'
        f"</head><body><main><h1>Sorry</h1>{body}</main></body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=_SECURITY_HEADERS)


def _csrf_field(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{h(session.csrf)}">'


def _options(choices: Iterable[tuple[str, str]], selected: str | None) -> str:
    return "".join(
        f'<option value="{h(v)}"{" selected" if v == selected else ""}>{h(label)}'
        "</option>"
        for v, label in choices
    )


# ---------------------------------------------------------------- formatting


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def _dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def _local(value: Any, tz: ZoneInfo, fmt: str = "%a %d %b %H:%M") -> str:
    t = _dt(value)
    return t.astimezone(tz).strftime(fmt) if t else "—"


def _kw(w: Any) -> str:
    return f"{w / 1000:.1f} kW" if isinstance(w, int | float) else "—"


def _kwh(wh: Any) -> str:
    return f"{wh / 1000:.2f} kWh" if isinstance(wh, int | float) else "—"


def _money(p: Any) -> str:
    return f"£{p / 100:.2f}" if isinstance(p, int | float) else "—"


def _carbon(g: Any) -> str:
    if not isinstance(g, int | float):
        return "—"
    return f"{g / 1000:.2f} kg CO₂" if g >= 1000 else f"{g:.0f} g CO₂"


def _num(v: Any, default: str = "") -> str:
    if isinstance(v, int | float):
        return f"{v:g}"
    return default


# ------------------------------------------------------------------ the chart


def _floor_slot(t: datetime) -> datetime:
    return t.replace(minute=t.minute - t.minute % 30, second=0, microsecond=0)


def plan_chart(
    slots: Sequence[Mapping[str, Any]], now: datetime, tz: ZoneInfo
) -> tuple[str, list[tuple[datetime, datetime, float]]]:
    """SVG of the next 24 h: planned charging power as bars over the price line;
    and the charging windows (start, end, peak W)."""
    start = _floor_slot(now.astimezone(UTC))
    end = start + SLOT * CHART_SLOTS
    rows: list[tuple[datetime, float | None, float]] = []
    for s in slots:
        t = _dt(s.get("slot_start"))
        if t is None or not start <= t < end:
            continue
        price = s.get("price_p_per_kwh")
        planned = s.get("planned_w") or {}
        total_w = sum(v for v in planned.values() if isinstance(v, int | float))
        rows.append((t, price if isinstance(price, int | float) else None, total_w))
    windows: list[tuple[datetime, datetime, float]] = []
    for t, _, w in rows:
        if w <= 0:
            continue
        if windows and windows[-1][1] == t:
            a, _, peak = windows[-1]
            windows[-1] = (a, t + SLOT, max(peak, w))
        else:
            windows.append((t, t + SLOT, w))
    if not rows:
        return '<p class="muted">No plan slots in the next 24 h.</p>', windows
    bar_w, left, top, height, bottom = 12, 40, 14, 170, 34
    width = left + bar_w * CHART_SLOTS + 44
    max_w = max([w for *_, w in rows] + [1000.0])
    prices = [p for _, p, _ in rows if p is not None]
    p_lo, p_hi = (min(prices), max(prices)) if prices else (0.0, 1.0)
    if p_hi - p_lo < 1e-9:
        p_lo, p_hi = p_lo - 1, p_hi + 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {top + height + bottom}" '
        'role="img" aria-label="Planned charging power and price, next 24 hours">',
        f'<line x1="{left}" y1="{top + height}" x2="{left + bar_w * CHART_SLOTS}" '
        f'y2="{top + height}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 8}" class="lbl" text-anchor="end">'
        f"{max_w / 1000:.1f}</text>",
        f'<text x="{left - 4}" y="{top + height}" class="lbl" text-anchor="end">0'
        "</text>",
        f'<text x="{left - 4}" y="{top + height + 30}" class="lbl" '
        'text-anchor="end">kW</text>',
        f'<text x="{width - 2}" y="{top + 8}" class="lbl price" text-anchor="end">'
        f"{p_hi:.0f}p</text>",
        f'<text x="{width - 2}" y="{top + height}" class="lbl price" '
        f'text-anchor="end">{p_lo:.0f}p</text>',
    ]
    points = []
    for t, price, w in rows:
        i = int((t - start) / SLOT)
        x = left + i * bar_w
        when = t.astimezone(tz).strftime("%H:%M")
        if w > 0:
            bh = max(1.0, height * w / max_w)
            parts.append(
                f'<rect class="bar" x="{x + 1}" y="{top + height - bh:.1f}" '
                f'width="{bar_w - 2}" height="{bh:.1f}" data-slot="{h(when)}" '
                f'data-w="{w:.0f}"><title>{h(when)}: {_kw(w)}'
                f"{f', {price:.1f} p/kWh' if price is not None else ''}</title></rect>"
            )
        if price is not None:
            y = top + height - height * (price - p_lo) / (p_hi - p_lo)
            points.append(f"{x + bar_w / 2:.1f},{y:.1f}")
        local = t.astimezone(tz)
        if local.minute == 0 and local.hour % 3 == 0:
            parts.append(
                f'<text x="{x}" y="{top + height + 18}" class="lbl" '
                f'text-anchor="middle">{local:%H}</text>'
            )
    if points:
        parts.append(f'<polyline class="price" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return "".join(parts), windows


# ------------------------------------------------------------------ routes


@router.get("/", response_class=RedirectResponse)
async def root() -> RedirectResponse:
    return RedirectResponse("/app", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str = "/app") -> HTMLResponse:
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
    return _page(request, "Log in", body, status=401 if error else 200)


def _safe_next(target: str) -> str:
    # only our own pages: never an absolute or protocol-relative URL
    if target.startswith("/app") and not target.startswith("//"):
        return target
    return "/app"


@router.post("/login")
async def login(request: Request) -> Response:
    if not _same_origin(request):
        return _error_page(403, "Refused: this form came from another site.")
    form = await _form(request)
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
    expires = _dt(answer.body.get("expires_at"))
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
    session, _ = await _post(request)
    await api_call(request, "POST", "/v1/auth/logout", token=session.token)
    out = RedirectResponse("/login", status_code=303)
    out.delete_cookie(SESSION_COOKIE, path="/")
    return out


@router.get("/app")
async def home(request: Request) -> Response:
    session = await _session(request)
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
    return _page(request, "Your homes", body, session=session)


async def _fleet_page(request: Request, session: Session) -> HTMLResponse:
    fleet = await api_call(request, "GET", "/v1/fleet", token=session.token)
    if not fleet.ok:
        return _page(request, "Fleet", f"<p>{h(fleet.error())}</p>", session=session)
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
    return _page(request, "Fleet", body, session=session)


# -------------------------------------------------------------------- owner


def _site_base(gw: str) -> str:
    return f"/app/site/{quote(gw, safe='')}"


async def _live_panel(request: Request, session: Session, gw: str, tz: ZoneInfo) -> str:
    live = await api_call(
        request, "GET", api_path("v1", "gateways", gw, "live"), token=session.token
    )
    if not live.ok:
        return f'<p class="flash error">{h(live.error())}</p>'
    cards = []
    for c in live.body["chargers"]:
        session_info = c.get("session") or {}
        status = c.get("status") or "unknown"
        charging = status == "Charging" or (
            isinstance(c.get("power_w"), int | float) and c["power_w"] > 100
        )
        soc = c.get("soc_pct")
        soc_text = f"{soc:.0f} %" if isinstance(soc, int | float) else "—"
        since = (
            f"since {_local(session_info.get('started_at'), tz, '%H:%M')}"
            if session_info
            else "no session"
        )
        cards.append(
            f'<article class="card charger{" charging" if charging else ""}" '
            f'data-charger="{h(c["charger_id"])}">'
            f"<h3>{h(c['charger_id'])} "
            f'<span class="badge state">{h(status)}</span></h3>'
            '<dl class="stats">'
            f'<div><dt>Power</dt><dd class="power">{_kw(c.get("power_w"))}</dd></div>'
            f"<div><dt>This session</dt>"
            f'<dd class="energy">{_kwh(session_info.get("energy_wh"))}</dd></div>'
            f'<div><dt>Battery</dt><dd class="soc">{h(soc_text)}</dd></div>'
            f'<div><dt>Mode</dt><dd class="mode">{h(c.get("mode"))}</dd></div>'
            "</dl>"
            f'<p class="muted">{h(since)}'
            + (
                f" · plan limit {_kw(c['limit_w'])} ({h(c['schedule_state'])})"
                if c.get("limit_w") is not None and c.get("schedule_state")
                else ""
            )
            + "</p></article>"
        )
    if not cards:
        return '<p class="muted">No chargers registered yet.</p>'
    return '<div class="cards">' + "".join(cards) + "</div>"


async def _plan_panel(request: Request, session: Session, gw: str, tz: ZoneInfo) -> str:
    plan = await api_call(
        request, "GET", api_path("v1", "gateways", gw, "plan"), token=session.token
    )
    if plan.status == 404:
        return (
            '<p class="muted" data-plan-version="0">No plan yet: it is made when '
            "an EV is plugged in.</p>"
        )
    if not plan.ok:
        return f'<p class="flash error">{h(plan.error())}</p>'
    p = plan.body
    chart, windows = plan_chart(p.get("slots") or [], datetime.now(UTC), tz)
    if windows:
        items = "".join(
            f'<li class="window">{a.astimezone(tz):%H:%M}&ndash;'
            f"{b.astimezone(tz):%H:%M} up to {_kw(w)}</li>"
            for a, b, w in windows
        )
        summary = f'<ul class="windows">{items}</ul>'
    else:
        summary = '<p class="muted">No charging planned in the next 24 h.</p>'
    reason = str(p.get("reason") or "").replace("_", " ")
    feasible = (
        ""
        if p.get("feasible", True)
        else '<p class="flash error">The target cannot be met by the ready-by time;'
        " charging as much as possible.</p>"
    )
    return (
        f'<div class="plan" data-plan-version="{h(p["version"])}">'
        f'<p class="muted">Plan <span class="version">v{h(p["version"])}</span> '
        f"({h(reason)}), made {_local(p.get('issued_at'), tz, '%H:%M')}; "
        f"estimated {_money(p.get('cost_p'))}, {_carbon(p.get('carbon_g'))}</p>"
        f"{feasible}{chart}"
        '<p class="legend"><span class="key bar"></span> planned charging '
        '<span class="key price"></span> price</p>'
        f"{summary}</div>"
    )


async def _site_for(
    request: Request, session: Session, gw: str
) -> tuple[ApiAnswer, ZoneInfo]:
    site = await api_call(
        request, "GET", api_path("v1", "sites", gw), token=session.token
    )
    tz = _zone(
        (site.body.get("site") or {}).get("timezone")
        if site.ok and isinstance(site.body, dict)
        else None
    )
    return site, tz


@router.get("/app/site/{gw}")
async def dashboard(request: Request, gw: str) -> Response:
    session = await _session(request)
    site, tz = await _site_for(request, session, gw)
    if not site.ok:
        return _error_page(site.status, site.error())
    s = site.body
    base = _site_base(gw)
    live = await _live_panel(request, session, gw, tz)
    plan = await _plan_panel(request, session, gw, tz)
    csrf = _csrf_field(session)
    controls = []
    for c in s["chargers"]:
        cid = c["charger_id"]
        prefs = await api_call(
            request,
            "GET",
            api_path("v1", "gateways", gw, "chargers", cid, "preferences"),
            token=session.token,
        )
        pr = prefs.body if prefs.ok else {}
        action = f"{base}/chargers/{quote(cid, safe='')}"
        controls.append(
            f'<article class="card" data-prefs="{h(cid)}"><h3>{h(cid)}</h3>'
            f'<form method="post" action="{h(action)}/preferences" class="grid">'
            f"{csrf}"
            '<label>Ready by <input type="time" name="ready_by" required '
            f'value="{h(pr.get("ready_by", "07:30"))}"></label>'
            '<label>Add energy (kWh) <input type="number" name="target_energy_kwh" '
            'min="0.1" max="1000" step="0.1" '
            f'value="{h(_num(pr.get("target_energy_kwh")))}"></label>'
            '<label>or charge to (%) <input type="number" name="target_soc_pct" '
            f'min="1" max="100" step="1" value="{h(_num(pr.get("target_soc_pct")))}">'
            "</label>"
            '<label>battery (kWh) <input type="number" name="battery_kwh" min="1" '
            f'max="1000" step="0.1" value="{h(_num(pr.get("battery_kwh")))}"></label>'
            '<label>Mode <select name="mode">'
            + _options(
                [("smart", "Smart (cheapest)"), ("boost", "Boost now"), ("off", "Off")],
                pr.get("mode", "smart"),
            )
            + "</select></label>"
            '<label>Price cap (p/kWh) <input type="number" name="max_price_p_per_kwh"'
            f' step="0.1" value="{h(_num(pr.get("max_price_p_per_kwh")))}"></label>'
            '<button type="submit">Save</button></form>'
            f'<form method="post" action="{h(action)}/boost" class="inline">{csrf}'
            '<button type="submit" class="boost">⚡ Boost 1 h</button></form>'
            "</article>"
        )
    sessions = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "sessions"),
        token=session.token,
        query={"limit": 20},
    )
    history_rows = "".join(
        f"<tr><td>{h(x['charger_id'])}</td>"
        f"<td>{_local(x.get('started_at'), tz, '%d %b %H:%M')}</td>"
        f"<td>{_local(x.get('stopped_at'), tz, '%H:%M') if x.get('stopped_at') else 'charging'}</td>"  # noqa: E501
        f'<td class="num">{_kwh(x.get("energy_wh"))}</td>'
        f'<td class="num">{_money(x.get("cost_p"))}</td>'
        f'<td class="num">{_carbon(x.get("carbon_g"))}</td></tr>'
        for x in (sessions.body.get("sessions", []) if sessions.ok else [])
    )
    history = (
        '<div class="scroll"><table class="sessions"><thead><tr><th>Charger</th>'
        "<th>Start</th><th>End</th><th>Energy</th><th>Cost</th><th>Carbon</th></tr>"
        f"</thead><tbody>{history_rows}</tbody></table></div>"
        if history_rows
        else '<p class="muted">No sessions yet.</p>'
    )
    meters = s.get("meters") or []
    meter_form = (
        f'<form method="post" action="{h(base)}/readings" class="card grid">{csrf}'
        '<input type="hidden" name="idempotency_key" '
        f'value="{h(secrets.token_hex(12))}">'
        '<label>Meter <select name="meter_id">'
        + _options(
            [(m["meter_id"], f"{m['meter_id']} ({m['type']})") for m in meters],
            next((m["meter_id"] for m in meters if m["type"] == "manual"), None),
        )
        + "</select></label>"
        '<label>Register (kWh) <input type="number" name="register_kwh" min="0" '
        'step="0.001" required inputmode="decimal"></label>'
        '<label>Read at (blank: now) <input type="datetime-local" name="read_at">'
        "</label>"
        '<button type="submit">Submit reading</button></form>'
        if meters
        else '<p class="muted">No meters registered.</p>'
    )
    gw_state = s.get("gateway") or {}
    online = bool(gw_state.get("online"))
    body = (
        f'<p class="muted">Gateway {h(gw)}: <span class="badge '
        f'{"pass" if online else "fail"}">{"online" if online else "offline"}</span>'
        + (f" · fuse {_num(s['site']['main_fuse_a'])} A" if s.get("site") else "")
        + "</p>"
        f'<section><h2>Now</h2><div id="live" data-refresh="{h(base)}/part/live">'
        f"{live}</div></section>"
        f'<section><h2>Next 24 hours</h2><div id="plan" '
        f'data-refresh="{h(base)}/part/plan">{plan}</div></section>'
        f"<section><h2>When must it be ready?</h2>{''.join(controls)}</section>"
        f"<section><h2>Sessions</h2>{history}</section>"
        f"<section><h2>Meter reading</h2>{meter_form}</section>"
    )
    return _page(request, "Your charging", body, session=session)


@router.get("/app/site/{gw}/part/{name}")
async def dashboard_part(request: Request, gw: str, name: str) -> Response:
    """One panel of the dashboard (the refresh script fetches it)."""
    try:
        session = await _session(request)
    except _Redirect:
        return Response(status_code=401)
    site, tz = await _site_for(request, session, gw)
    if not site.ok:
        return Response(status_code=site.status)
    if name == "live":
        text = await _live_panel(request, session, gw, tz)
    elif name == "plan":
        text = await _plan_panel(request, session, gw, tz)
    else:
        return Response(status_code=404)
    return HTMLResponse(text, headers=_SECURITY_HEADERS)


def _float_or_none(text: str | None) -> float | str | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text  # the API names the field in its 422


@router.post("/app/site/{gw}/chargers/{cid}/preferences")
async def save_preferences(request: Request, gw: str, cid: str) -> Response:
    session, form = await _post(request)
    body: dict[str, Any] = {
        "mode": form.get("mode", "smart"),
        "ready_by": form.get("ready_by", ""),
    }
    for key in (
        "target_energy_kwh",
        "target_soc_pct",
        "battery_kwh",
        "max_price_p_per_kwh",
    ):
        value = _float_or_none(form.get(key))
        if value is not None:
            body[key] = value
    if "target_soc_pct" in body and "battery_kwh" in body:
        body.pop("target_energy_kwh", None)  # the SoC target wins when both given
    answer = await api_call(
        request,
        "PUT",
        api_path("v1", "gateways", gw, "chargers", cid, "preferences"),
        token=session.token,
        json_body=body,
    )
    target = _site_base(gw)
    if answer.ok:
        return _flash_redirect(
            target,
            "ok",
            f"Saved: ready by {answer.body['ready_by']}. The plan is being updated.",
        )
    return _flash_redirect(target, "error", f"Not saved: {answer.error()}")


@router.post("/app/site/{gw}/chargers/{cid}/boost")
async def boost(request: Request, gw: str, cid: str) -> Response:
    session, _ = await _post(request)
    answer = await api_call(
        request,
        "POST",
        api_path("v1", "gateways", gw, "chargers", cid, "boost"),
        token=session.token,
        json_body={"duration_min": 60},
    )
    if answer.ok:
        return _flash_redirect(
            _site_base(gw), "ok", f"Boost requested: {cid} charges at full power."
        )
    return _flash_redirect(_site_base(gw), "error", f"No boost: {answer.error()}")


@router.post("/app/site/{gw}/readings")
async def submit_reading(request: Request, gw: str) -> Response:
    session, form = await _post(request)
    _, tz = await _site_for(request, session, gw)
    target = _site_base(gw)
    read_at = form.get("read_at", "")
    ts = datetime.now(UTC)
    if read_at:
        try:
            ts = datetime.fromisoformat(read_at).replace(tzinfo=tz).astimezone(UTC)
        except ValueError:
            return _flash_redirect(target, "error", "Read at: not a date and time.")
    meter = form.get("meter_id", "")
    if not meter or "/" in meter:
        return _flash_redirect(target, "error", "Choose a meter.")
    body: dict[str, Any] = {
        "ts": ts.isoformat(),
        "register_kwh": _float_or_none(form.get("register_kwh")),
    }
    if form.get("idempotency_key"):
        body["idempotency_key"] = form["idempotency_key"]
    answer = await api_call(
        request,
        "POST",
        api_path("v1", "gateways", gw, "meters", meter, "readings"),
        token=session.token,
        json_body=body,
    )
    if answer.ok:
        return _flash_redirect(
            target,
            "ok",
            f"Reading stored: {meter} {answer.body['register_kwh']:g} kWh "
            f"at {_local(answer.body['ts'], tz)}.",
        )
    return _flash_redirect(target, "error", f"Reading not stored: {answer.error()}")


# ---------------------------------------------------------------- installer


def _install_base(gw: str) -> str:
    return f"/app/install/{quote(gw, safe='')}"


async def _installer(request: Request) -> Session:
    session = await _session(request)
    if session.role != "installer":
        raise _Redirect(_error_page(403, "These pages are for installers."))
    return session


@router.get("/app/install")
async def installations(request: Request) -> Response:
    session = await _installer(request)
    sites = await api_call(request, "GET", "/v1/sites", token=session.token)
    items = sites.body if sites.ok and isinstance(sites.body, list) else []
    rows = "".join(
        f'<li class="card"><a href="{h(_install_base(s["gateway_id"]))}">'
        f"{h(s['gateway_id'])}</a> · "
        + (
            f"{h(s['owner_email'])}, {len(s['chargers'])} charger(s), "
            f"{len(s['meters'])} meter(s)"
            if s.get("site")
            else "site not set up yet"
        )
        + "</li>"
        for s in items
    )
    body = (
        '<section><h2>Claim a gateway</h2><form method="post" '
        'action="/app/install/claim" class="card grid">'
        f"{_csrf_field(session)}"
        '<label>Claim code (shown on the gateway) <input name="claim_code" '
        'required minlength="4" maxlength="64" autocomplete="off" '
        'autocapitalize="characters"></label>'
        '<button type="submit">Claim</button></form></section>'
        "<section><h2>Your gateways</h2>"
        + (f'<ul class="cards">{rows}</ul>' if rows else '<p class="muted">None yet.')
        + "</section>"
    )
    return _page(request, "Installations", body, session=session)


@router.post("/app/install/claim")
async def claim(request: Request) -> Response:
    session, form = await _post(request)
    answer = await api_call(
        request,
        "POST",
        "/v1/claims",
        token=session.token,
        json_body={"claim_code": form.get("claim_code", "")},
    )
    if answer.ok:
        gw = answer.body["gateway_id"]
        return _flash_redirect(
            _install_base(gw), "ok", f"Claimed {gw}. Now set up its site."
        )
    return _flash_redirect("/app/install", "error", f"Not claimed: {answer.error()}")


@router.get("/app/install/{gw}")
async def installation(request: Request, gw: str) -> Response:
    session = await _installer(request)
    site, _ = await _site_for(request, session, gw)
    if not site.ok:
        return _error_page(site.status, site.error())
    s = site.body
    st = s.get("site") or {}
    base = _install_base(gw)
    csrf = _csrf_field(session)
    meters = await api_call(
        request, "GET", api_path("v1", "gateways", gw, "meters"), token=session.token
    )
    last_at = {
        m["meter_id"]: m.get("last_reading_at")
        for m in (meters.body if meters.ok else [])
    }
    tz = _zone(st.get("timezone"))
    site_form = (
        f'<form method="post" action="{h(base)}/site" class="card grid">{csrf}'
        '<label>Owner e-mail <input type="email" name="owner_email" required '
        f'value="{h(s.get("owner_email") or "")}"></label>'
        '<label>Main fuse (A) <input type="number" name="main_fuse_a" min="1" '
        f'max="2000" step="1" required value="{h(_num(st.get("main_fuse_a")))}">'
        "</label>"
        '<label>Phases <select name="phases">'
        + _options([("1", "1"), ("3", "3")], str(st.get("phases", 1)))
        + "</select></label>"
        '<label>Tariff <input name="tariff_id" placeholder="e.g. agile-east" '
        f'value="{h(st.get("tariff_id") or "")}"></label>'
        '<label>Time zone <input name="timezone" '
        f'value="{h(st.get("timezone") or DEFAULT_ZONE)}"></label>'
        '<button type="submit">Save site</button></form>'
    )
    device_rows = "".join(
        f'<tr data-device="{h(c["charger_id"])}"><td>{h(c["charger_id"])}</td>'
        f"<td>charger</td><td>{_kw(c['max_power_w'])}, {h(c['phases'])} phase(s)"
        "</td><td>—</td></tr>"
        for c in s["chargers"]
    ) + "".join(
        f'<tr data-device="{h(m["meter_id"])}"><td>{h(m["meter_id"])}</td>'
        f"<td>meter ({h(m['type'])}, {h(m['role'])})</td>"
        f"<td>{h(m.get('topic') or '—')}</td>"
        f"<td>{_local(last_at.get(m['meter_id']), tz)}</td></tr>"
        for m in s["meters"]
    )
    devices = (
        '<div class="scroll"><table class="devices"><thead><tr><th>Id</th>'
        "<th>Kind</th><th>Details</th><th>Last data</th></tr></thead>"
        f"<tbody>{device_rows}</tbody></table></div>"
        if device_rows
        else '<p class="muted">No devices registered yet.</p>'
    )
    charger_form = (
        f'<form method="post" action="{h(base)}/chargers" class="card grid">{csrf}'
        '<label>Charger id (OCPP identity) <input name="charger_id" required '
        'maxlength="48"></label>'
        '<label>Max power (W) <input type="number" name="max_power_w" min="1" '
        'step="1" value="7400" required></label>'
        '<label>Phases <select name="phases">'
        + _options([("1", "1"), ("3", "3")], "1")
        + '</select></label><label>On phase <select name="phase">'
        + _options([("1", "L1"), ("2", "L2"), ("3", "L3")], "1")
        + '</select></label><label>Connector <input type="number" '
        'name="connector_id" min="1" max="64" value="1"></label>'
        '<button type="submit">Register charger</button></form>'
    )
    meter_form = (
        f'<form method="post" action="{h(base)}/meters" class="card grid">{csrf}'
        '<label>Meter id <input name="meter_id" required maxlength="64"></label>'
        '<label>Type <select name="type">'
        + _options(
            [
                ("glow", "Glow (smart meter)"),
                ("tasmota", "Tasmota"),
                ("shelly", "Shelly"),
                ("manual", "Manual (read by eye)"),
            ],
            "glow",
        )
        + '</select></label><label>MQTT topic <input name="topic" '
        'placeholder="glow/AABBCC"></label>'
        '<label>Role <select name="role">'
        + _options(
            [("", "default"), ("site", "site (whole house)"), ("other", "other")], ""
        )
        + "</select></label>"
        '<button type="submit">Register meter</button></form>'
    )
    body = (
        f'<p><a class="button" href="{h(base)}/commissioning">'
        "Commissioning report →</a> "
        f'<a href="{h(base)}/config.toml">Config bundle</a></p>'
        f"<section><h2>Site</h2>{site_form}</section>"
        f"<section><h2>Devices</h2>{devices}"
        f"<details open><summary>Register a charger</summary>{charger_form}</details>"
        f"<details open><summary>Register a meter</summary>{meter_form}</details>"
        "</section>"
    )
    return _page(request, f"Gateway {gw}", body, session=session)


@router.post("/app/install/{gw}/site")
async def save_site(request: Request, gw: str) -> Response:
    session, form = await _post(request)
    body: dict[str, Any] = {
        "gateway_id": gw,
        "owner_email": form.get("owner_email", ""),
        "main_fuse_a": _float_or_none(form.get("main_fuse_a")),
        "phases": int(form["phases"]) if form.get("phases") in ("1", "3") else 0,
        "timezone": form.get("timezone") or DEFAULT_ZONE,
    }
    if form.get("tariff_id"):
        body["tariff_id"] = form["tariff_id"]
    answer = await api_call(
        request, "POST", "/v1/sites", token=session.token, json_body=body
    )
    if answer.ok:
        return _flash_redirect(
            _install_base(gw), "ok", f"Site saved for {answer.body['owner_email']}."
        )
    return _flash_redirect(
        _install_base(gw), "error", f"Site not saved: {answer.error()}"
    )


@router.post("/app/install/{gw}/chargers")
async def register_charger(request: Request, gw: str) -> Response:
    session, form = await _post(request)
    cid = form.get("charger_id", "")
    target = _install_base(gw)
    if not cid or "/" in cid:
        return _flash_redirect(target, "error", "charger_id: letters, digits, -_.:")
    body = {
        "max_power_w": _float_or_none(form.get("max_power_w")),
        "phases": int(form["phases"]) if form.get("phases") in ("1", "3") else 0,
        "phase": int(form["phase"]) if form.get("phase") in ("1", "2", "3") else 0,
        "connector_id": _float_or_none(form.get("connector_id") or "1"),
    }
    answer = await api_call(
        request,
        "PUT",
        api_path("v1", "gateways", gw, "chargers", cid),
        token=session.token,
        json_body=body,
    )
    if answer.ok:
        return _flash_redirect(target, "ok", f"Charger {cid} registered.")
    return _flash_redirect(target, "error", f"Charger not registered: {answer.error()}")


@router.post("/app/install/{gw}/meters")
async def register_meter(request: Request, gw: str) -> Response:
    session, form = await _post(request)
    mid = form.get("meter_id", "")
    target = _install_base(gw)
    if not mid or "/" in mid:
        return _flash_redirect(target, "error", "meter_id: letters, digits, -_.")
    body: dict[str, Any] = {"type": form.get("type", "")}
    for key in ("topic", "role"):
        if form.get(key):
            body[key] = form[key]
    answer = await api_call(
        request,
        "PUT",
        api_path("v1", "gateways", gw, "meters", mid),
        token=session.token,
        json_body=body,
    )
    if answer.ok:
        return _flash_redirect(target, "ok", f"Meter {mid} registered.")
    return _flash_redirect(target, "error", f"Meter not registered: {answer.error()}")


_CHECK_NAMES = {
    "fuse_limit_set": "Fuse limit set",
    "chargers_registered": "Chargers registered",
    "charger_connected": "Charger connected",
    "charger_accepted_profile": "Charger accepted a charging profile",
    "meters_registered": "Meters registered",
    "meter_data_fresh": "Meter data fresh",
    "meter_sign_sane": "Meter sign sane (import rises while charging)",
}


@router.get("/app/install/{gw}/commissioning")
async def commissioning(request: Request, gw: str) -> Response:
    session = await _installer(request)
    report = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "commissioning"),
        token=session.token,
    )
    if not report.ok:
        return _error_page(report.status, report.error())
    rep = report.body
    rows = "".join(
        f'<tr class="{h(c["status"])}" data-check="{h(c["check"])}">'
        f"<td>{h(_CHECK_NAMES.get(c['check'], c['check']))}</td>"
        f"<td>{h(c.get('charger_id') or c.get('meter_id') or '')}</td>"
        f'<td><span class="badge {h(c["status"])}">{h(c["status"].upper())}</span>'
        f"</td><td>{h(c['detail'])}</td></tr>"
        for c in rep["checks"]
    )
    passed = bool(rep["passed"])
    verdict = (
        '<p class="verdict pass" data-passed="true">✔ All checks passed: the '
        "installation is ready.</p>"
        if passed
        else '<p class="verdict fail" data-passed="false">✘ Not yet: fix the failed '
        "checks below and check again.</p>"
    )
    base = _install_base(gw)
    body = (
        f"{verdict}"
        '<div class="scroll"><table class="checks"><thead><tr><th>Check</th>'
        "<th>Device</th><th>Result</th><th>Detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
        f'<p><a class="button" href="{h(base)}/commissioning">Check again</a> '
        f'<a href="{h(base)}">Back to {h(gw)}</a></p>'
    )
    return _page(request, f"Commissioning {gw}", body, session=session)


@router.get("/app/install/{gw}/config.toml")
async def config_toml(request: Request, gw: str) -> Response:
    session = await _installer(request)
    answer = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "config_bundle"),
        token=session.token,
    )
    if not answer.ok:
        return _error_page(answer.status, answer.error())
    return Response(
        str(answer.body),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


# ------------------------------------------------------------------- static

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6570;--bg:#f4f6f8;--card:#fff;--line:#d7dde3;
--accent:#0a7d5a;--warn:#b42318;--bar:#2f80ed;--price:#e07b00}
*{box-sizing:border-box}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;align-items:center;justify-content:space-between;
gap:.5rem;padding:.6rem 1rem;background:#10302a;color:#fff}
header a{color:#fff}
.brand{font-weight:700;text-decoration:none;font-size:1.1rem}
nav{display:flex;flex-wrap:wrap;gap:.8rem;align-items:center;font-size:.9rem}
.who small{opacity:.8}
main{max-width:960px;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .6rem}
h3{font-size:1rem;margin:0 0 .5rem;display:flex;gap:.5rem;align-items:center}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:.9rem;margin:0 0 .8rem}
.cards{display:grid;gap:.8rem;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));
list-style:none;padding:0;margin:0}
.narrow{max-width:380px}
.charging{border-color:var(--accent);box-shadow:0 0 0 2px #0a7d5a33}
.stats{display:grid;grid-template-columns:1fr 1fr;gap:.4rem .8rem;margin:0}
.stats dt{font-size:.8rem;color:var(--muted)}
.stats dd{margin:0;font-size:1.25rem;font-weight:600}
.muted{color:var(--muted);font-size:.9rem}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:99px;font-size:.78rem;
font-weight:600;background:#e8edf2;color:var(--fg)}
.badge.pass{background:#d8f3e6;color:#05603a}
.badge.fail{background:#fde3e1;color:var(--warn)}
.charging .badge.state{background:#d8f3e6;color:#05603a}
.flash{padding:.6rem .8rem;border-radius:8px;background:#d8f3e6;color:#05603a}
.flash.error{background:#fde3e1;color:var(--warn)}
.verdict{font-size:1.15rem;font-weight:700;padding:.7rem;border-radius:8px}
.verdict.pass{background:#d8f3e6;color:#05603a}
.verdict.fail{background:#fde3e1;color:var(--warn)}
form.grid{display:grid;gap:.6rem;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));
align-items:end}
form.inline{display:inline}
label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted);gap:.2rem}
input,select{font:inherit;padding:.5rem;border:1px solid var(--line);border-radius:8px;
background:#fff;color:var(--fg);min-height:2.6rem;width:100%}
button,.button{font:inherit;font-weight:600;padding:.55rem 1rem;border:0;
border-radius:8px;background:var(--accent);color:#fff;min-height:2.6rem;cursor:pointer;
text-decoration:none;display:inline-block;margin-right:.6rem}
button.boost{background:var(--price);margin-top:.6rem}
button.link{background:none;color:#fff;text-decoration:underline;padding:0;
min-height:0;font-weight:400}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:var(--card);font-size:.9rem}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid var(--line)}
td.num{text-align:right;white-space:nowrap}
.sessions td{white-space:nowrap}
tr.fail td:first-child{color:var(--warn)}
.chart{width:100%;height:auto;background:var(--card);border:1px solid var(--line);
border-radius:10px}
.chart .bar{fill:var(--bar)}
.chart polyline.price{fill:none;stroke:var(--price);stroke-width:2}
.chart .axis{stroke:var(--line)}
.chart .lbl{font-size:14px;fill:var(--muted)}
.chart .lbl.price{fill:var(--price)}
.legend{font-size:.8rem;color:var(--muted)}
.key{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;
vertical-align:middle;margin:0 .2rem 0 .6rem}
.key.bar{background:var(--bar)}.key.price{background:var(--price)}
.windows{padding-left:1.2rem;margin:.4rem 0}
details{margin:.6rem 0}summary{cursor:pointer;font-weight:600;margin-bottom:.5rem}
@media (max-width:480px){main{padding:.7rem}.stats dd{font-size:1.1rem}
header{padding:.5rem .7rem}}
"""

_JS = """
// Refresh the panels marked data-refresh while the page is visible.
(function () {
  var every = REFRESH_MS;
  function refresh() {
    if (document.visibilityState !== "visible") return;
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      fetch(el.getAttribute("data-refresh"), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) el.innerHTML = html; })
        .catch(function () {});
    });
  }
  setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
""".replace("REFRESH_MS", str(REFRESH_S * 1000))


@router.get("/app/static/app.css")
async def app_css() -> Response:
    return Response(
        _CSS,
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@router.get("/app/static/app.js")
async def app_js() -> Response:
    return Response(
        _JS,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )
