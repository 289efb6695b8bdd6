"""The owner's "Who else has access" section of the dashboard: the installers of
the home with their state (until when, kept, revoked), and the forms to keep an
installer's access or revoke it (``/app/site/{gw}/installers/{id}/keep|revoke``,
through ``POST /v1/gateways/{gw}/installers/{id}/keep|revoke``; the rules are in
``cloud.installer_access``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloud.web.client import api_call, api_path
from cloud.web.formatting import local
from cloud.web.layout import csrf_field
from cloud.web.markup import h
from cloud.web.session import Session, flash_redirect, require_post

router = APIRouter(include_in_schema=False)


def _state_text(i: Mapping[str, Any], tz: ZoneInfo) -> str:
    state = i.get("state")
    if state == "expires":
        return f"until {local(i.get('expires_at'), tz, '%d %b %Y %H:%M')}"
    if state == "kept":
        return "kept by you (no end)"
    if state == "active":
        return "no end date yet"
    if state == "revoked":
        return f"revoked {local(i.get('revoked_at'), tz, '%d %b %Y')}"
    return "expired"


def _row(i: Mapping[str, Any], gw: str, csrf: str, tz: ZoneInfo, owner: bool) -> str:
    action = f"/app/site/{quote(gw, safe='')}/installers/{int(i['user_id'])}"
    forms = ""
    if owner:
        if i.get("state") != "kept":
            forms += (
                f'<form method="post" action="{h(action)}/keep" class="inline">'
                f'{csrf}<button type="submit">Keep access</button></form>'
            )
        if i.get("has_access"):
            forms += (
                f'<form method="post" action="{h(action)}/revoke" class="inline">'
                f'{csrf}<button type="submit" class="danger">Revoke</button></form>'
            )
    return (
        f'<tr data-installer="{int(i["user_id"])}"><td>{h(i.get("email"))}</td>'
        f'<td class="state">{h(_state_text(i, tz))}</td><td>{forms}</td></tr>'
    )


async def installers_section(
    request: Request, session: Session, gw: str, tz: ZoneInfo
) -> str:
    """The installers of ``gw`` as a table (with keep/revoke forms for the
    owner), or a line saying why it cannot be shown."""
    answer = await api_call(
        request,
        "GET",
        api_path("v1", "gateways", gw, "installers"),
        token=session.token,
    )
    if not answer.ok:
        return f'<p class="muted">{h(answer.error())}</p>'
    people = answer.body.get("installers") or []
    if not people:
        return '<p class="muted">No installer has access to this home.</p>'
    csrf, owner = csrf_field(session), session.role == "owner"
    rows = "".join(_row(i, gw, csrf, tz, owner) for i in people)
    return (
        '<p class="muted">Installers who set up this home. Their access ends a '
        "while after you take the home over, unless you keep it.</p>"
        '<div class="scroll"><table class="installers"><thead><tr><th>Installer'
        "</th><th>Access</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


async def _act(request: Request, gw: str, uid: int, what: str) -> Response:
    session, _ = await require_post(request)
    target = f"/app/site/{quote(gw, safe='')}"
    answer = await api_call(
        request,
        "POST",
        api_path("v1", "gateways", gw, "installers", str(uid), what),
        token=session.token,
    )
    if not answer.ok:
        return flash_redirect(target, "error", f"Not changed: {answer.error()}")
    done = "keeps access" if what == "keep" else "no longer has access"
    return flash_redirect(target, "ok", f"{answer.body['email']} {done}.")


@router.post("/app/site/{gw}/installers/{uid}/keep")
async def keep_installer(request: Request, gw: str, uid: int) -> Response:
    """Keep an installer's access to the home (no end)."""
    return await _act(request, gw, uid, "keep")


@router.post("/app/site/{gw}/installers/{uid}/revoke")
async def revoke_installer(request: Request, gw: str, uid: int) -> Response:
    """End an installer's access to the home now."""
    return await _act(request, gw, uid, "revoke")
