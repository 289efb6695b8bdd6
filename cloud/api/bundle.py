"""A gateway's edge config bundle (the TOML ``fusebox edge check`` accepts, from
what is registered) and its own broker account (``POST
.../broker_credentials``, via ``cloud.broker_auth``), which fills the bundle's
password in."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import PlainTextResponse

from cloud.api.deps import Access, Db, GatewayPath, Settings, User, gateway_access
from cloud.auth import ApiSettings

log = logging.getLogger("fusebox.cloud.api")

router = APIRouter()


def public_mqtt_url(settings: ApiSettings) -> str:
    """The broker URL gateways use: the configured public one, else the cloud's
    own without its credentials."""
    if settings.public_mqtt_url:
        return settings.public_mqtt_url
    if settings.cloud_mqtt_url:
        parts = urlsplit(settings.cloud_mqtt_url)
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return "mqtt://127.0.0.1:18830"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0.0"
    return json.dumps(str(value))  # JSON string escapes are valid TOML


def _broker_username(gateway_id: str) -> str:
    try:
        mod = importlib.import_module("cloud.broker_auth")
        name: str = mod.gateway_username(gateway_id)
    except (ImportError, AttributeError, ValueError):
        return gateway_id
    return name


async def config_bundle(
    db: asyncpg.Pool | asyncpg.Connection,
    gw: str,
    settings: ApiSettings,
    *,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """The edge TOML for ``gw`` from what is registered (``fusebox edge check``
    accepts it). Without ``password`` the password line is a comment saying where
    to get one."""
    site = await db.fetchrow("SELECT * FROM sites WHERE gateway_id = $1", gw)
    chargers = await db.fetch(
        "SELECT * FROM site_chargers WHERE gateway_id = $1 ORDER BY charger_id", gw
    )
    meters = await db.fetch(
        "SELECT * FROM site_meters WHERE gateway_id = $1 AND type <> 'manual'"
        " ORDER BY meter_id",
        gw,
    )
    user = username or _broker_username(gw)
    lines = [
        f"# Fusebox edge config for gateway {gw}, produced by the cloud from the",
        "# registered site, chargers and meters. Check it: fusebox edge check",
        f"gateway_id = {_toml(gw)}",
        "",
        "[cloud]",
        f"mqtt_url = {_toml(public_mqtt_url(settings))}",
        f"username = {_toml(user)}",
    ]
    if password is not None:
        lines.append(f"password = {_toml(password)}")
    else:
        lines += [
            f"# password: POST /v1/gateways/{gw}/broker_credentials issues it (shown",
            "# once, with this bundle filled in); each call rotates it",
        ]
    voltage = 230.0
    phases = 1
    if site is not None:
        voltage = site["voltage_v"]
        phases = site["phases"]
        site_meter = next((m["meter_id"] for m in meters if m["role"] == "site"), None)
        lines += [
            "",
            "[site]",
            f"main_fuse_a = {_toml(float(site['main_fuse_a']))}",
            f"phases = {_toml(int(site['phases']))}",
            f"voltage_v = {_toml(float(site['voltage_v']))}",
            f"timezone = {_toml(site['timezone'])}",
        ]
        if site_meter is not None:
            lines.append(f"meter = {_toml(site_meter)}")
    for m in meters:
        lines += [
            "",
            "[[meters]]",
            f"type = {_toml(m['type'])}",
            f"id = {_toml(m['meter_id'])}",
            f"topic = {_toml(m['topic'])}",
        ]
        if m["timezone"]:
            lines.append(f"timezone = {_toml(m['timezone'])}")
    for c in chargers:
        per_phase_v = voltage * (c["phases"] if c["phases"] else phases)
        current_a = min(80.0, max(6.0, round(c["max_power_w"] / per_phase_v, 1)))
        lines += [
            "",
            "[[chargers]]",
            f"id = {_toml(c['charger_id'])}",
            f"max_current_a = {_toml(float(current_a))}",
            f"phases = {_toml(int(c['phases']))}",
            f"phase = {_toml(int(c['phase']))}",
        ]
    return "\n".join(lines) + "\n"


@router.get(
    "/v1/gateways/{gateway_id}/config_bundle",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/toml": {}}}},
)
async def get_config_bundle(
    gateway_id: GatewayPath, db: Db, user: User, st: Settings
) -> PlainTextResponse:
    """The gateway's edge config (TOML) from what is registered, without the
    broker password (``POST .../broker_credentials`` issues it)."""
    await gateway_access(db, user, gateway_id, Access.INSTALL)
    text = await config_bundle(db, gateway_id, st)
    return PlainTextResponse(
        text,
        media_type="application/toml",
        headers={"Content-Disposition": f'attachment; filename="{gateway_id}.toml"'},
    )


@router.post("/v1/gateways/{gateway_id}/broker_credentials")
async def broker_credentials(
    gateway_id: GatewayPath,
    response: Response,
    db: Db,
    user: User,
    st: Settings,
) -> dict[str, Any]:
    """Create (or rotate) the gateway's own broker account, allowed only its
    own topics; the password is shown once, here, with the config bundle."""
    await gateway_access(db, user, gateway_id, Access.INSTALL)
    try:
        mod = importlib.import_module("cloud.broker_auth")
        issue = mod.issue_gateway_credentials
    except (ImportError, AttributeError) as exc:
        raise HTTPException(
            501,
            "issuing broker credentials is not available in this installation "
            f"(cloud.broker_auth.issue_gateway_credentials: {exc})",
        ) from None
    try:
        if inspect.iscoroutinefunction(issue):
            username, password = await issue(gateway_id)
        else:
            username, password = await asyncio.to_thread(issue, gateway_id)
    except Exception as exc:  # the broker module's errors carry what to do
        log.warning("broker credentials for %s failed: %s", gateway_id, exc)
        raise HTTPException(
            503, f"the broker did not issue credentials: {exc}"
        ) from None
    response.headers["Cache-Control"] = "no-store"
    bundle = await config_bundle(
        db, gateway_id, st, username=username, password=password
    )
    return {
        "gateway_id": gateway_id,
        "username": username,
        "password": password,
        "config_bundle": bundle,
    }
