"""The owner's pages: the dashboard of one home (each charger live, the next
24 h plan as a chart over prices, ready-by/target/boost controls, session
history, a manual meter reading) and the forms it posts.

The live and plan panels are also served alone (``/part/live``,
``/part/plan``) for the refresh script in ``static/app.js``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from cloud.web.chart import plan_chart
from cloud.web.client import api_call, api_path, site_for
from cloud.web.formatting import carbon, float_or_none, kw, kwh, local, money, num
from cloud.web.layout import csrf_field, page
from cloud.web.markup import SECURITY_HEADERS, error_page, h, options
from cloud.web.owner_access import installers_section
from cloud.web.session import (
    Redirect,
    Session,
    flash_redirect,
    require_post,
    require_session,
)

router = APIRouter(include_in_schema=False)


def _site_base(gw: str) -> str:
    return f"/app/site/{quote(gw, safe='')}"


def _charger_card(c: Mapping[str, Any], tz: ZoneInfo) -> str:
    session_info = c.get("session") or {}
    status = c.get("status") or "unknown"
    charging = status == "Charging" or (
        isinstance(c.get("power_w"), int | float) and c["power_w"] > 100
    )
    soc = c.get("soc_pct")
    soc_text = f"{soc:.0f} %" if isinstance(soc, int | float) else "—"
    since = (
        f"since {local(session_info.get('started_at'), tz, '%H:%M')}"
        if session_info
        else "no session"
    )
    return (
        f'<article class="card charger{" charging" if charging else ""}" '
        f'data-charger="{h(c["charger_id"])}">'
        f"<h3>{h(c['charger_id'])} "
        f'<span class="badge state">{h(status)}</span></h3>'
        '<dl class="stats">'
        f'<div><dt>Power</dt><dd class="power">{kw(c.get("power_w"))}</dd></div>'
        f"<div><dt>This session</dt>"
        f'<dd class="energy">{kwh(session_info.get("energy_wh"))}</dd></div>'
        f'<div><dt>Battery</dt><dd class="soc">{h(soc_text)}</dd></div>'
        f'<div><dt>Mode</dt><dd class="mode">{h(c.get("mode"))}</dd></div>'
        "</dl>"
        f'<p class="muted">{h(since)}'
        + (
            f" · plan limit {kw(c['limit_w'])} ({h(c['schedule_state'])})"
            if c.get("limit_w") is not None and c.get("schedule_state")
            else ""
        )
        + "</p></article>"
    )


async def _live_panel(request: Request, session: Session, gw: str, tz: ZoneInfo) -> str:
    live = await api_call(
        request, "GET", api_path("v1", "gateways", gw, "live"), token=session.token
    )
    if not live.ok:
        return f'<p class="flash error">{h(live.error())}</p>'
    cards = [_charger_card(c, tz) for c in live.body["chargers"]]
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
            f"{b.astimezone(tz):%H:%M} up to {kw(w)}</li>"
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
        f"({h(reason)}), made {local(p.get('issued_at'), tz, '%H:%M')}; "
        f"estimated {money(p.get('cost_p'))}, {carbon(p.get('carbon_g'))}</p>"
        f"{feasible}{chart}"
        '<p class="legend"><span class="key bar"></span> planned charging '
        '<span class="key price"></span> price</p>'
        f"{summary}</div>"
    )


def _preferences_card(cid: str, pr: Mapping[str, Any], action: str, csrf: str) -> str:
    return (
        f'<article class="card" data-prefs="{h(cid)}"><h3>{h(cid)}</h3>'
        f'<form method="post" action="{h(action)}/preferences" class="grid">'
        f"{csrf}"
        '<label>Ready by <input type="time" name="ready_by" required '
        f'value="{h(pr.get("ready_by", "07:30"))}"></label>'
        '<label>Add energy (kWh) <input type="number" name="target_energy_kwh" '
        'min="0.1" max="1000" step="0.1" '
        f'value="{h(num(pr.get("target_energy_kwh")))}"></label>'
        '<label>or charge to (%) <input type="number" name="target_soc_pct" '
        f'min="1" max="100" step="1" value="{h(num(pr.get("target_soc_pct")))}">'
        "</label>"
        '<label>battery (kWh) <input type="number" name="battery_kwh" min="1" '
        f'max="1000" step="0.1" value="{h(num(pr.get("battery_kwh")))}"></label>'
        '<label>Mode <select name="mode">'
        + options(
            [("smart", "Smart (cheapest)"), ("boost", "Boost now"), ("off", "Off")],
            pr.get("mode", "smart"),
        )
        + "</select></label>"
        '<label>Price cap (p/kWh) <input type="number" name="max_price_p_per_kwh"'
        f' step="0.1" value="{h(num(pr.get("max_price_p_per_kwh")))}"></label>'
        '<button type="submit">Save</button></form>'
        f'<form method="post" action="{h(action)}/boost" class="inline">{csrf}'
        '<button type="submit" class="boost">⚡ Boost 1 h</button></form>'
        "</article>"
    )


async def _controls(
    request: Request, session: Session, gw: str, chargers: Sequence[Mapping[str, Any]]
) -> str:
    """One preferences card per charger, each filled from the API."""
    base, csrf = _site_base(gw), csrf_field(session)
    cards = []
    for c in chargers:
        cid = c["charger_id"]
        prefs = await api_call(
            request,
            "GET",
            api_path("v1", "gateways", gw, "chargers", cid, "preferences"),
            token=session.token,
        )
        pr = prefs.body if prefs.ok else {}
        action = f"{base}/chargers/{quote(cid, safe='')}"
        cards.append(_preferences_card(cid, pr, action, csrf))
    return "".join(cards)


async def _history(request: Request, session: Session, gw: str, tz: ZoneInfo) -> str:
    sessions = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "sessions"),
        token=session.token,
        query={"limit": 20},
    )
    history_rows = "".join(
        f"<tr><td>{h(x['charger_id'])}</td>"
        f"<td>{local(x.get('started_at'), tz, '%d %b %H:%M')}</td>"
        f"<td>{local(x.get('stopped_at'), tz, '%H:%M') if x.get('stopped_at') else 'charging'}</td>"  # noqa: E501
        f'<td class="num">{kwh(x.get("energy_wh"))}</td>'
        f'<td class="num">{money(x.get("cost_p"))}</td>'
        f'<td class="num">{carbon(x.get("carbon_g"))}</td></tr>'
        for x in (sessions.body.get("sessions", []) if sessions.ok else [])
    )
    return (
        '<div class="scroll"><table class="sessions"><thead><tr><th>Charger</th>'
        "<th>Start</th><th>End</th><th>Energy</th><th>Cost</th><th>Carbon</th></tr>"
        f"</thead><tbody>{history_rows}</tbody></table></div>"
        if history_rows
        else '<p class="muted">No sessions yet.</p>'
    )


def _reading_form(meters: Sequence[Mapping[str, Any]], base: str, csrf: str) -> str:
    if not meters:
        return '<p class="muted">No meters registered.</p>'
    return (
        f'<form method="post" action="{h(base)}/readings" class="card grid">{csrf}'
        '<input type="hidden" name="idempotency_key" '
        f'value="{h(secrets.token_hex(12))}">'
        '<label>Meter <select name="meter_id">'
        + options(
            [(m["meter_id"], f"{m['meter_id']} ({m['type']})") for m in meters],
            next((m["meter_id"] for m in meters if m["type"] == "manual"), None),
        )
        + "</select></label>"
        '<label>Register (kWh) <input type="number" name="register_kwh" min="0" '
        'step="0.001" required inputmode="decimal"></label>'
        '<label>Read at (blank: now) <input type="datetime-local" name="read_at">'
        "</label>"
        '<button type="submit">Submit reading</button></form>'
    )


@router.get("/app/site/{gw}")
async def dashboard(request: Request, gw: str) -> Response:
    """The dashboard of the home behind gateway ``gw``."""
    session = await require_session(request)
    site, tz = await site_for(request, session.token, gw)
    if not site.ok:
        return error_page(site.status, site.error())
    s = site.body
    base = _site_base(gw)
    live = await _live_panel(request, session, gw, tz)
    plan = await _plan_panel(request, session, gw, tz)
    controls = await _controls(request, session, gw, s["chargers"])
    history = await _history(request, session, gw, tz)
    meter_form = _reading_form(s.get("meters") or [], base, csrf_field(session))
    access = await installers_section(request, session, gw, tz)
    gw_state = s.get("gateway") or {}
    online = bool(gw_state.get("online"))
    body = (
        f'<p class="muted">Gateway {h(gw)}: <span class="badge '
        f'{"pass" if online else "fail"}">{"online" if online else "offline"}</span>'
        + (f" · fuse {num(s['site']['main_fuse_a'])} A" if s.get("site") else "")
        + "</p>"
        f'<section><h2>Now</h2><div id="live" data-refresh="{h(base)}/part/live">'
        f"{live}</div></section>"
        f'<section><h2>Next 24 hours</h2><div id="plan" '
        f'data-refresh="{h(base)}/part/plan">{plan}</div></section>'
        f"<section><h2>When must it be ready?</h2>{controls}</section>"
        f"<section><h2>Sessions</h2>{history}</section>"
        f"<section><h2>Meter reading</h2>{meter_form}</section>"
        f'<section id="access"><h2>Who else has access</h2>{access}</section>'
    )
    return page(request, "Your charging", body, session=session)


@router.get("/app/site/{gw}/part/{name}")
async def dashboard_part(request: Request, gw: str, name: str) -> Response:
    """One panel of the dashboard (the refresh script fetches it)."""
    try:
        session = await require_session(request)
    except Redirect:
        return Response(status_code=401)
    site, tz = await site_for(request, session.token, gw)
    if not site.ok:
        return Response(status_code=site.status)
    if name == "live":
        text = await _live_panel(request, session, gw, tz)
    elif name == "plan":
        text = await _plan_panel(request, session, gw, tz)
    else:
        return Response(status_code=404)
    return HTMLResponse(text, headers=SECURITY_HEADERS)


@router.post("/app/site/{gw}/chargers/{cid}/preferences")
async def save_preferences(request: Request, gw: str, cid: str) -> Response:
    """Save a charger's charging wishes (ready-by, target, mode, price cap)."""
    session, form = await require_post(request)
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
        value = float_or_none(form.get(key))
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
        return flash_redirect(
            target,
            "ok",
            f"Saved: ready by {answer.body['ready_by']}. The plan is being updated.",
        )
    return flash_redirect(target, "error", f"Not saved: {answer.error()}")


@router.post("/app/site/{gw}/chargers/{cid}/boost")
async def boost(request: Request, gw: str, cid: str) -> Response:
    """Charge ``cid`` at full power for the next hour."""
    session, _ = await require_post(request)
    answer = await api_call(
        request,
        "POST",
        api_path("v1", "gateways", gw, "chargers", cid, "boost"),
        token=session.token,
        json_body={"duration_min": 60},
    )
    if answer.ok:
        return flash_redirect(
            _site_base(gw), "ok", f"Boost requested: {cid} charges at full power."
        )
    return flash_redirect(_site_base(gw), "error", f"No boost: {answer.error()}")


@router.post("/app/site/{gw}/readings")
async def submit_reading(request: Request, gw: str) -> Response:
    """Submit a manual meter reading (accepted into the intake, stored once
    checked); ``read_at`` is the site's local time."""
    session, form = await require_post(request)
    _, tz = await site_for(request, session.token, gw)
    target = _site_base(gw)
    read_at = form.get("read_at", "")
    ts = datetime.now(UTC)
    if read_at:
        try:
            ts = datetime.fromisoformat(read_at).replace(tzinfo=tz).astimezone(UTC)
        except ValueError:
            return flash_redirect(target, "error", "Read at: not a date and time.")
    meter = form.get("meter_id", "")
    if not meter or "/" in meter:
        return flash_redirect(target, "error", "Choose a meter.")
    body: dict[str, Any] = {
        "ts": ts.isoformat(),
        "register_kwh": float_or_none(form.get("register_kwh")),
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
        # 202: in the durable intake, checked and stored moments later
        state = answer.body.get("state")
        what = "Reading refused" if state == "refused" else "Reading accepted"
        return flash_redirect(
            target,
            "error" if state == "refused" else "ok",
            f"{what}: {meter} {answer.body['register_kwh']:g} kWh "
            f"at {local(answer.body['ts'], tz)}"
            + (f" ({answer.body.get('reason')})." if state == "refused" else "."),
        )
    return flash_redirect(target, "error", f"Reading not taken: {answer.error()}")
