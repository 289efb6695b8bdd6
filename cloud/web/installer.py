"""The installer's pages: claim a gateway by its code, set up the site for an
owner, register chargers and meters, read the commissioning report and the
edge's config bundle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloud.web.client import api_call, api_path, site_for
from cloud.web.formatting import DEFAULT_ZONE, float_or_none, kw, local, num, zone
from cloud.web.layout import csrf_field, page
from cloud.web.markup import error_page, h, options
from cloud.web.session import flash_redirect, require_installer, require_post

router = APIRouter(include_in_schema=False)

_CHECK_NAMES = {
    "fuse_limit_set": "Fuse limit set",
    "chargers_registered": "Chargers registered",
    "charger_connected": "Charger connected",
    "charger_accepted_profile": "Charger accepted a charging profile",
    "meters_registered": "Meters registered",
    "meter_data_fresh": "Meter data fresh",
    "meter_sign_sane": "Meter sign sane (import rises while charging)",
}


def _install_base(gw: str) -> str:
    return f"/app/install/{quote(gw, safe='')}"


@router.get("/app/install")
async def installations(request: Request) -> Response:
    """The installer's gateways, and the form to claim another."""
    session = await require_installer(request)
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
        f"{csrf_field(session)}"
        '<label>Claim code (shown on the gateway) <input name="claim_code" '
        'required minlength="4" maxlength="64" autocomplete="off" '
        'autocapitalize="characters"></label>'
        '<button type="submit">Claim</button></form></section>'
        "<section><h2>Your gateways</h2>"
        + (f'<ul class="cards">{rows}</ul>' if rows else '<p class="muted">None yet.')
        + "</section>"
    )
    return page(request, "Installations", body, session=session)


@router.post("/app/install/claim")
async def claim(request: Request) -> Response:
    """Claim a gateway by the code its local page shows."""
    session, form = await require_post(request)
    answer = await api_call(
        request,
        "POST",
        "/v1/claims",
        token=session.token,
        json_body={"claim_code": form.get("claim_code", "")},
    )
    if answer.ok:
        gw = answer.body["gateway_id"]
        return flash_redirect(
            _install_base(gw), "ok", f"Claimed {gw}. Now set up its site."
        )
    return flash_redirect("/app/install", "error", f"Not claimed: {answer.error()}")


def _site_form(s: Mapping[str, Any], base: str, csrf: str) -> str:
    st = s.get("site") or {}
    return (
        f'<form method="post" action="{h(base)}/site" class="card grid">{csrf}'
        '<label>Owner e-mail <input type="email" name="owner_email" required '
        f'value="{h(s.get("owner_email") or "")}"></label>'
        '<label>Main fuse (A) <input type="number" name="main_fuse_a" min="1" '
        f'max="2000" step="1" required value="{h(num(st.get("main_fuse_a")))}">'
        "</label>"
        '<label>Phases <select name="phases">'
        + options([("1", "1"), ("3", "3")], str(st.get("phases", 1)))
        + "</select></label>"
        '<label>Tariff <input name="tariff_id" placeholder="e.g. agile-east" '
        f'value="{h(st.get("tariff_id") or "")}"></label>'
        '<label>Time zone <input name="timezone" '
        f'value="{h(st.get("timezone") or DEFAULT_ZONE)}"></label>'
        '<button type="submit">Save site</button></form>'
    )


def _devices(s: Mapping[str, Any], last_at: Mapping[str, Any], tz: ZoneInfo) -> str:
    device_rows = "".join(
        f'<tr data-device="{h(c["charger_id"])}"><td>{h(c["charger_id"])}</td>'
        f"<td>charger</td><td>{kw(c['max_power_w'])}, {h(c['phases'])} phase(s)"
        "</td><td>—</td></tr>"
        for c in s["chargers"]
    ) + "".join(
        f'<tr data-device="{h(m["meter_id"])}"><td>{h(m["meter_id"])}</td>'
        f"<td>meter ({h(m['type'])}, {h(m['role'])})</td>"
        f"<td>{h(m.get('topic') or '—')}</td>"
        f"<td>{local(last_at.get(m['meter_id']), tz)}</td></tr>"
        for m in s["meters"]
    )
    return (
        '<div class="scroll"><table class="devices"><thead><tr><th>Id</th>'
        "<th>Kind</th><th>Details</th><th>Last data</th></tr></thead>"
        f"<tbody>{device_rows}</tbody></table></div>"
        if device_rows
        else '<p class="muted">No devices registered yet.</p>'
    )


def _charger_form(base: str, csrf: str) -> str:
    return (
        f'<form method="post" action="{h(base)}/chargers" class="card grid">{csrf}'
        '<label>Charger id (OCPP identity) <input name="charger_id" required '
        'maxlength="48"></label>'
        '<label>Max power (W) <input type="number" name="max_power_w" min="1" '
        'step="1" value="7400" required></label>'
        '<label>Phases <select name="phases">'
        + options([("1", "1"), ("3", "3")], "1")
        + '</select></label><label>On phase <select name="phase">'
        + options([("1", "L1"), ("2", "L2"), ("3", "L3")], "1")
        + '</select></label><label>Connector <input type="number" '
        'name="connector_id" min="1" max="64" value="1"></label>'
        '<button type="submit">Register charger</button></form>'
    )


def _meter_form(base: str, csrf: str) -> str:
    return (
        f'<form method="post" action="{h(base)}/meters" class="card grid">{csrf}'
        '<label>Meter id <input name="meter_id" required maxlength="64"></label>'
        '<label>Type <select name="type">'
        + options(
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
        + options(
            [("", "default"), ("site", "site (whole house)"), ("other", "other")], ""
        )
        + "</select></label>"
        '<button type="submit">Register meter</button></form>'
    )


@router.get("/app/install/{gw}")
async def installation(request: Request, gw: str) -> Response:
    """One installation: its site settings, its devices, and the forms to
    register more."""
    session = await require_installer(request)
    site, _ = await site_for(request, session.token, gw)
    if not site.ok:
        return error_page(site.status, site.error())
    s = site.body
    base = _install_base(gw)
    csrf = csrf_field(session)
    meters = await api_call(
        request, "GET", api_path("v1", "gateways", gw, "meters"), token=session.token
    )
    last_at = {
        m["meter_id"]: m.get("last_reading_at")
        for m in (meters.body if meters.ok else [])
    }
    tz = zone((s.get("site") or {}).get("timezone"))
    body = (
        f'<p><a class="button" href="{h(base)}/commissioning">'
        "Commissioning report →</a> "
        f'<a href="{h(base)}/config.toml">Config bundle</a></p>'
        f"<section><h2>Site</h2>{_site_form(s, base, csrf)}</section>"
        f"<section><h2>Devices</h2>{_devices(s, last_at, tz)}"
        "<details open><summary>Register a charger</summary>"
        f"{_charger_form(base, csrf)}</details>"
        "<details open><summary>Register a meter</summary>"
        f"{_meter_form(base, csrf)}</details>"
        "</section>"
    )
    return page(request, f"Gateway {gw}", body, session=session)


@router.post("/app/install/{gw}/site")
async def save_site(request: Request, gw: str) -> Response:
    """Create or update the site of ``gw`` for its owner."""
    session, form = await require_post(request)
    body: dict[str, Any] = {
        "gateway_id": gw,
        "owner_email": form.get("owner_email", ""),
        "main_fuse_a": float_or_none(form.get("main_fuse_a")),
        "phases": int(form["phases"]) if form.get("phases") in ("1", "3") else 0,
        "timezone": form.get("timezone") or DEFAULT_ZONE,
    }
    if form.get("tariff_id"):
        body["tariff_id"] = form["tariff_id"]
    answer = await api_call(
        request, "POST", "/v1/sites", token=session.token, json_body=body
    )
    if answer.ok:
        return flash_redirect(
            _install_base(gw), "ok", f"Site saved for {answer.body['owner_email']}."
        )
    return flash_redirect(
        _install_base(gw), "error", f"Site not saved: {answer.error()}"
    )


@router.post("/app/install/{gw}/chargers")
async def register_charger(request: Request, gw: str) -> Response:
    """Register (or update) a charger of ``gw``."""
    session, form = await require_post(request)
    cid = form.get("charger_id", "")
    target = _install_base(gw)
    if not cid or "/" in cid:
        return flash_redirect(target, "error", "charger_id: letters, digits, -_.:")
    body = {
        "max_power_w": float_or_none(form.get("max_power_w")),
        "phases": int(form["phases"]) if form.get("phases") in ("1", "3") else 0,
        "phase": int(form["phase"]) if form.get("phase") in ("1", "2", "3") else 0,
        "connector_id": float_or_none(form.get("connector_id") or "1"),
    }
    answer = await api_call(
        request,
        "PUT",
        api_path("v1", "gateways", gw, "chargers", cid),
        token=session.token,
        json_body=body,
    )
    if answer.ok:
        return flash_redirect(target, "ok", f"Charger {cid} registered.")
    return flash_redirect(target, "error", f"Charger not registered: {answer.error()}")


@router.post("/app/install/{gw}/meters")
async def register_meter(request: Request, gw: str) -> Response:
    """Register (or update) a meter of ``gw``."""
    session, form = await require_post(request)
    mid = form.get("meter_id", "")
    target = _install_base(gw)
    if not mid or "/" in mid:
        return flash_redirect(target, "error", "meter_id: letters, digits, -_.")
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
        return flash_redirect(target, "ok", f"Meter {mid} registered.")
    return flash_redirect(target, "error", f"Meter not registered: {answer.error()}")


@router.get("/app/install/{gw}/commissioning")
async def commissioning(request: Request, gw: str) -> Response:
    """The commissioning report of ``gw``: each check, pass or fail, and the
    verdict."""
    session = await require_installer(request)
    report = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "commissioning"),
        token=session.token,
    )
    if not report.ok:
        return error_page(report.status, report.error())
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
    return page(request, f"Commissioning {gw}", body, session=session)


@router.get("/app/install/{gw}/config.toml")
async def config_toml(request: Request, gw: str) -> Response:
    """The edge's config bundle for ``gw``, as plain text."""
    session = await require_installer(request)
    answer = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "config_bundle"),
        token=session.token,
    )
    if not answer.ok:
        return error_page(answer.status, answer.error())
    return Response(
        str(answer.body),
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
