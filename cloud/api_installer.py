"""The installer's side of the API (issue 5): claim a gateway, create its site for
an owner, register chargers and meters, issue the gateway's broker credentials,
produce its edge config bundle, and check the installation (commissioning).

Flow: the gateway shows a claim code at first start and reports sha256(code) in its
status; ``POST /v1/claims`` with the code makes the installer the gateway's
installer; ``POST /v1/sites`` creates the site for an owner's account;
``PUT /v1/gateways/{gw}/chargers/{id}`` (``cloud.api_scheduling``) and
``PUT /v1/gateways/{gw}/meters/{id}`` register devices; ``POST
.../broker_credentials`` gives the gateway its own broker account (via
``cloud.broker_auth``), and the config bundle is the edge TOML to install;
``GET .../commissioning`` says what works and what does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import logging
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import Field, field_validator, model_validator

from cloud.api_errors import field_error
from cloud.api_people import site_view
from cloud.api_scheduling import _GATEWAY, ChargerPath, Db, GatewayPath, SiteSettings
from cloud.auth import (
    Access,
    ApiSettings,
    FailureLimiter,
    User,
    client_ip,
    gateway_access,
    normalise_email,
    require_role,
    too_many,
)
from protocols.bodies import RequestBody

log = logging.getLogger("fusebox.cloud.api")

_METER = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
MeterPath = Annotated[str, Path(pattern=_METER)]
_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,189}$"

# an EV is charging when its charger draws at least this; idle below the other
_EV_CHARGING_W = 1000.0
_EV_IDLE_W = 200.0


class ClaimBody(RequestBody):
    claim_code: Annotated[
        str, Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9 \-]+$")
    ]


class SiteCreate(SiteSettings):
    gateway_id: Annotated[str, Field(pattern=_GATEWAY)]
    owner_email: Annotated[str, Field(pattern=_EMAIL, max_length=254)]


class MeterSettings(RequestBody):
    type: Literal["glow", "tasmota", "shelly", "manual"]
    topic: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="glow: glow/<MAC>; tasmota: tele/<topic>; shelly: the MQTT "
        "prefix; manual (read by eye): none",
    )
    timezone: str | None = Field(default=None, description="tasmota only")
    role: Literal["site", "other"] | None = Field(
        default=None,
        description="site: measures the whole site's import (the fuse guard's "
        "input); default: site, or other for a manual meter",
    )

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str | None) -> str | None:
        if v is not None and (set(v) & {"#", "+", "\x00"} or v.startswith("$")):
            raise ValueError("a topic without wildcards (#, +) and not $SYS")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _topic_iff_mqtt(self) -> MeterSettings:
        if self.type == "manual" and self.topic is not None:
            raise ValueError("topic: a manual meter has no topic")
        if self.type != "manual" and self.topic is None:
            raise ValueError(f"topic: a {self.type} meter needs its MQTT topic")
        if self.timezone is not None and self.type != "tasmota":
            raise ValueError("timezone: only tasmota meters have one")
        if self.role is None:
            self.role = "other" if self.type == "manual" else "site"
        return self


def claim_hashes(code: str) -> list[str]:
    """sha256 hex of the code as typed and of its usual normalisations (case,
    spaces and dashes), so a code read off a screen matches however it is typed."""
    base = code.strip()
    forms = {
        base,
        base.upper(),
        base.replace("-", "").replace(" ", ""),
        base.upper().replace("-", "").replace(" ", ""),
    }
    return sorted(hashlib.sha256(f.encode()).hexdigest() for f in forms)


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


# ------------------------------------------------------------- commissioning


def _check(name: str, ok: bool, detail: str, **facts: Any) -> dict[str, Any]:
    return {
        "check": name,
        "status": "pass" if ok else "fail",
        "detail": detail,
        **facts,
    }


_SIGN_MINUTES = """
WITH b AS (
    SELECT date_trunc('minute', r.ts) AS m, s.device_id, avg(r.value) AS w
    FROM readings r JOIN streams s ON s.id = r.stream_id
    WHERE s.gateway_id = $1 AND s.name = 'power_w' AND r.ts >= $2
      AND (s.device_id = $3 OR s.device_id = ANY($4::text[]))
    GROUP BY 1, 2)
SELECT m, sum(w) FILTER (WHERE device_id = $3) AS site_w,
       coalesce(sum(w) FILTER (WHERE device_id <> $3), 0) AS ev_w
FROM b GROUP BY m
"""


async def commissioning_report(
    db: asyncpg.Pool, gw: str, *, recent: timedelta, fresh: timedelta
) -> dict[str, Any]:
    now = datetime.now(UTC)
    checks: list[dict[str, Any]] = []
    site = await db.fetchrow("SELECT * FROM sites WHERE gateway_id = $1", gw)
    checks.append(
        _check(
            "fuse_limit_set",
            site is not None and site["main_fuse_a"] > 0,
            f"main fuse {site['main_fuse_a']:g} A, {site['phases']} phase(s)"
            if site is not None
            else "no site yet: POST /v1/sites with main_fuse_a",
        )
    )
    chargers = await db.fetch(
        "SELECT * FROM site_chargers WHERE gateway_id = $1 ORDER BY charger_id", gw
    )
    if not chargers:
        checks.append(_check("chargers_registered", False, "no charger registered yet"))
    charger_devices: list[str] = []
    for c in chargers:
        cid = c["charger_id"]
        devices = [cid, f"{cid}-{c['connector_id']}"]
        charger_devices += devices
        seen = await db.fetchval(
            "SELECT max(e.ts) FROM events e JOIN streams s ON s.id = e.stream_id"
            " WHERE s.gateway_id = $1 AND s.device_id = $2"
            " AND s.name IN ('boot', 'status') AND e.ts >= $3",
            gw,
            cid,
            now - recent,
        )
        checks.append(
            _check(
                "charger_connected",
                seen is not None,
                f"last boot/status {seen.isoformat()}"
                if seen
                else f"no boot or status from {cid} in the last "
                f"{recent.total_seconds() / 60:g} min: is it pointed at the gateway?",
                charger_id=cid,
            )
        )
        applied = await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM schedule_status WHERE gateway_id = $1"
            " AND charger_id = $2 AND state = 'applied')"
            " OR EXISTS (SELECT 1 FROM schedule_status_history WHERE gateway_id = $1"
            " AND charger_id = $2 AND state = 'applied' AND received_at >= $3)",
            gw,
            cid,
            now - recent,
        )
        caps = await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM events e JOIN streams s"
            " ON s.id = e.stream_id WHERE s.gateway_id = $1 AND s.device_id = $2"
            " AND s.name = 'capabilities')",
            gw,
            cid,
        )
        checks.append(
            _check(
                "charger_accepted_profile",
                bool(applied or caps),
                "a charging profile was applied"
                if applied
                else "smart-charging capabilities read"
                if caps
                else f"{cid} has not accepted a charging profile yet",
                charger_id=cid,
            )
        )
    meters = await db.fetch(
        "SELECT * FROM site_meters WHERE gateway_id = $1 AND type <> 'manual'"
        " ORDER BY meter_id",
        gw,
    )
    if not meters:
        checks.append(_check("meters_registered", False, "no meter registered yet"))
    for m in meters:
        last = await db.fetchval(
            "SELECT max(r.ts) FROM readings r JOIN streams s ON s.id = r.stream_id"
            " WHERE s.gateway_id = $1 AND s.device_id = $2 AND r.ts >= $3",
            gw,
            m["meter_id"],
            now - fresh,
        )
        checks.append(
            _check(
                "meter_data_fresh",
                last is not None,
                f"last reading {last.isoformat()}"
                if last
                else f"no reading from {m['meter_id']} in the last "
                f"{fresh.total_seconds() / 60:g} min: check its topic "
                f"({m['topic']}) and the site broker",
                meter_id=m["meter_id"],
            )
        )
    site_meter = next((m for m in meters if m["role"] == "site"), None)
    if site_meter is None:
        checks.append(
            _check(
                "meter_sign_sane",
                False,
                "no site meter registered (a meter with role 'site')",
            )
        )
    else:
        checks.append(
            await _sign_check(
                db, gw, site_meter["meter_id"], charger_devices, now - recent
            )
        )
    passed = all(c["status"] == "pass" for c in checks)
    return {"gateway_id": gw, "at": now, "passed": passed, "checks": checks}


async def _sign_check(
    db: asyncpg.Pool, gw: str, meter: str, chargers: list[str], since: datetime
) -> dict[str, Any]:
    """The site's import must rise by about what the EV draws: compares minutes
    with an EV charging against minutes without."""
    rows = await db.fetch(_SIGN_MINUTES, gw, since, meter, chargers)
    charging = [
        r for r in rows if r["site_w"] is not None and r["ev_w"] >= _EV_CHARGING_W
    ]
    idle = [r for r in rows if r["site_w"] is not None and r["ev_w"] < _EV_IDLE_W]
    if not charging:
        return _check(
            "meter_sign_sane",
            False,
            "no minute with an EV charging and site meter data: start a charge "
            "and check again",
            meter_id=meter,
        )
    ev_w = sum(r["ev_w"] for r in charging) / len(charging)
    site_charging_w = sum(r["site_w"] for r in charging) / len(charging)
    site_idle_w = sum(r["site_w"] for r in idle) / len(idle) if idle else 0.0
    rise_w = site_charging_w - site_idle_w
    ok = rise_w >= 0.5 * ev_w
    detail = (
        f"site import {site_idle_w:.0f} W idle, {site_charging_w:.0f} W while EVs "
        f"drew {ev_w:.0f} W"
    )
    if not ok:
        detail += (
            ": the site import did not rise with the EV; the meter's sign (or its "
            "clamp's direction) may be reversed, or it is not the site meter"
        )
    return _check(
        "meter_sign_sane",
        ok,
        detail,
        meter_id=meter,
        rise_w=round(rise_w, 1),
        ev_w=round(ev_w, 1),
    )


# ------------------------------------------------------------------- routes


def _settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.api_settings
    return s


def add_installer_routes(app: FastAPI) -> None:
    """Register the installer's endpoints on ``app``."""

    @app.post("/v1/claims")
    async def claim(
        body: ClaimBody, request: Request, db: Db, user: User
    ) -> dict[str, Any]:
        """Claim an unclaimed gateway with the code it shows: the caller becomes
        its installer. A wrong code is 404; every answer takes the same time and
        repeated failures are refused with 429."""
        require_role(user, "installer")
        st = _settings(request)
        limiter: FailureLimiter = request.app.state.claims_by_user
        keys = (f"user:{user.id}", f"ip:{client_ip(request)}")
        wait = max(limiter.retry_after(k) for k in keys)
        if wait > 0:
            raise too_many(wait, "claims")
        started = time.monotonic()
        async with db.acquire() as conn, conn.transaction():
            gw = await conn.fetchval(
                "UPDATE gateways SET claimed_by = $2, claimed_at = now()"
                " WHERE id = (SELECT id FROM gateways WHERE claim_sha256 = ANY($1)"
                " AND claimed_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE)"
                " RETURNING id",
                claim_hashes(body.claim_code),
                user.id,
            )
            if gw is not None:
                await conn.execute(
                    "INSERT INTO site_installers (gateway_id, user_id)"
                    " VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    gw,
                    user.id,
                )
        # the same time for a hit and a miss, so timing says nothing
        await asyncio.sleep(max(0.0, st.claim_delay_s - (time.monotonic() - started)))
        if gw is None:
            for k in keys:
                limiter.fail(k)
            raise HTTPException(
                404, "no unclaimed gateway shows this code; check it on its screen"
            )
        log.info("gateway %s claimed by user %d", gw, user.id)
        return {"gateway_id": gw, "claimed": True}

    @app.post("/v1/sites", status_code=201)
    async def create_site(
        body: SiteCreate, request: Request, db: Db, user: User
    ) -> dict[str, Any]:
        """Create (or, for the same owner, update) the site of a gateway the
        installer claimed, for the owner with ``owner_email``."""
        await gateway_access(db, user, body.gateway_id, Access.INSTALL)
        owner = await db.fetchval(
            "SELECT id FROM users WHERE lower(email) = $1 AND role = 'owner'",
            normalise_email(body.owner_email),
        )
        if owner is None:
            raise field_error(
                "owner_email",
                "no owner account with this e-mail; the operator creates it "
                "(fusebox cloud user add --role owner)",
            )
        row = await db.fetchrow(
            "INSERT INTO sites (gateway_id, main_fuse_a, phases, voltage_v, tariff_id,"
            " timezone, objective, carbon_weight, base_load_w, owner_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (gateway_id) DO UPDATE SET"
            " main_fuse_a = excluded.main_fuse_a, phases = excluded.phases,"
            " voltage_v = excluded.voltage_v, tariff_id = excluded.tariff_id,"
            " timezone = excluded.timezone, objective = excluded.objective,"
            " carbon_weight = excluded.carbon_weight,"
            " base_load_w = excluded.base_load_w, owner_id = excluded.owner_id,"
            " updated_at = now()"
            " WHERE sites.owner_id IS NULL OR sites.owner_id = excluded.owner_id"
            " RETURNING gateway_id",
            body.gateway_id,
            body.main_fuse_a,
            body.phases,
            body.voltage_v,
            body.tariff_id,
            body.timezone,
            body.objective,
            body.carbon_weight,
            body.base_load_w,
            owner,
        )
        if row is None:
            raise HTTPException(
                409, f"gateway {body.gateway_id!r}'s site belongs to another owner"
            )
        [one] = await site_view(db, [body.gateway_id], _settings(request))
        return one

    @app.delete("/v1/gateways/{gateway_id}/chargers/{charger_id}", status_code=204)
    async def delete_charger(
        gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
    ) -> Response:
        await gateway_access(db, user, gateway_id, Access.INSTALL)
        done = await db.execute(
            "DELETE FROM site_chargers WHERE gateway_id = $1 AND charger_id = $2",
            gateway_id,
            charger_id,
        )
        if done.endswith(" 0"):
            raise HTTPException(404, f"no charger {charger_id!r} on {gateway_id!r}")
        return Response(status_code=204)

    @app.put("/v1/gateways/{gateway_id}/meters/{meter_id}")
    async def put_meter(
        gateway_id: GatewayPath,
        meter_id: MeterPath,
        body: MeterSettings,
        db: Db,
        user: User,
    ) -> dict[str, Any]:
        """Register (or change) a meter; at most one has ``role`` site."""
        await gateway_access(db, user, gateway_id, Access.INSTALL)
        try:
            row = await db.fetchrow(
                "INSERT INTO site_meters (gateway_id, meter_id, type, topic, timezone,"
                " role) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (gateway_id, meter_id) DO UPDATE SET"
                " type = excluded.type, topic = excluded.topic,"
                " timezone = excluded.timezone, role = excluded.role,"
                " updated_at = now() RETURNING *",
                gateway_id,
                meter_id,
                body.type,
                body.topic,
                body.timezone,
                body.role,
            )
        except asyncpg.UniqueViolationError:
            raise HTTPException(
                409,
                f"gateway {gateway_id!r} already has a site meter; give this one "
                "role 'other' or change that one first",
            ) from None
        assert row is not None
        return {k: row[k] for k in ("meter_id", "type", "topic", "timezone", "role")}

    @app.get("/v1/gateways/{gateway_id}/meters")
    async def list_meters(
        gateway_id: GatewayPath, db: Db, user: User
    ) -> list[dict[str, Any]]:
        await gateway_access(db, user, gateway_id, Access.READ)
        rows = await db.fetch(
            "SELECT m.*, (SELECT max(r.ts) FROM readings r JOIN streams s"
            " ON s.id = r.stream_id WHERE s.gateway_id = m.gateway_id"
            " AND s.device_id = m.meter_id) AS last_reading_at"
            " FROM site_meters m WHERE m.gateway_id = $1 ORDER BY m.meter_id",
            gateway_id,
        )
        return [
            {
                k: r[k]
                for k in (
                    "meter_id",
                    "type",
                    "topic",
                    "timezone",
                    "role",
                    "last_reading_at",
                )
            }
            for r in rows
        ]

    @app.delete("/v1/gateways/{gateway_id}/meters/{meter_id}", status_code=204)
    async def delete_meter(
        gateway_id: GatewayPath, meter_id: MeterPath, db: Db, user: User
    ) -> Response:
        await gateway_access(db, user, gateway_id, Access.INSTALL)
        done = await db.execute(
            "DELETE FROM site_meters WHERE gateway_id = $1 AND meter_id = $2",
            gateway_id,
            meter_id,
        )
        if done.endswith(" 0"):
            raise HTTPException(404, f"no meter {meter_id!r} on {gateway_id!r}")
        return Response(status_code=204)

    @app.get(
        "/v1/gateways/{gateway_id}/config_bundle",
        response_class=PlainTextResponse,
        responses={200: {"content": {"application/toml": {}}}},
    )
    async def get_config_bundle(
        gateway_id: GatewayPath, request: Request, db: Db, user: User
    ) -> PlainTextResponse:
        """The gateway's edge config (TOML) from what is registered, without the
        broker password (``POST .../broker_credentials`` issues it)."""
        await gateway_access(db, user, gateway_id, Access.INSTALL)
        text = await config_bundle(db, gateway_id, _settings(request))
        return PlainTextResponse(
            text,
            media_type="application/toml",
            headers={
                "Content-Disposition": f'attachment; filename="{gateway_id}.toml"'
            },
        )

    @app.post("/v1/gateways/{gateway_id}/broker_credentials")
    async def broker_credentials(
        gateway_id: GatewayPath,
        request: Request,
        response: Response,
        db: Db,
        user: User,
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
            db, gateway_id, _settings(request), username=username, password=password
        )
        return {
            "gateway_id": gateway_id,
            "username": username,
            "password": password,
            "config_bundle": bundle,
        }

    @app.get("/v1/gateways/{gateway_id}/commissioning")
    async def commissioning(
        gateway_id: GatewayPath,
        db: Db,
        user: User,
        recent_min: Annotated[int, Query(ge=1, le=7 * 24 * 60)] = 60,
        fresh_min: Annotated[int, Query(ge=1, le=24 * 60)] = 5,
    ) -> dict[str, Any]:
        """Pass/fail checks: fuse limit set; each registered charger connected
        (boot/status within ``recent_min``) and accepted a profile; each meter's
        data fresh (within ``fresh_min``); the site meter's sign sane (import rises
        while an EV charges). ``passed`` only if every check passes."""
        await gateway_access(db, user, gateway_id, Access.READ)
        return await commissioning_report(
            db,
            gateway_id,
            recent=timedelta(minutes=recent_min),
            fresh=timedelta(minutes=fresh_min),
        )
