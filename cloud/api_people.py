"""The people's side of the API (issue 5): login, the owner's views and the
operator's fleet overview. The installer's endpoints are in ``cloud.api_installer``.

Owners see only their own sites; a site someone may not see answers 404 (see
``cloud.auth``). Reads come straight from PostgreSQL: sites and devices from the
installer's registrations, live state from the newest readings, events and the open
session, cost and carbon from the site's tariff curve.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from pydantic import Field, field_validator

from cloud.api_errors import field_error
from cloud.api_scheduling import Db, GatewayPath, UtcDatetime
from cloud.auth import (
    VISIBLE_GATEWAYS,
    Access,
    ApiSettings,
    FailureLimiter,
    Principal,
    User,
    client_ip,
    gateway_access,
    issue_token,
    normalise_email,
    require_role,
    too_many,
    verify_password,
)
from protocols.bodies import RequestBody
from protocols.lease import SLOT_MS

_METER = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
MeterPath = Annotated[str, Path(pattern=_METER)]
_EMAIL = r"^\s*[^@\s]{1,64}@[^@\s]{1,189}\s*$"
_IDEMPOTENCY_KEY = r"^[A-Za-z0-9_.:\-]{1,128}$"

# a household supply rarely imports more than this on average (100 A at 230 V is
# 23 kW): a manual reading implying more since the last is a typo
MAX_AVERAGE_IMPORT_W = 25_000.0
# meter displays show whole kWh: allow that much on top of the average
READING_SLACK_WH = 1_000.0
EARLIEST_READING = datetime(2000, 1, 1, tzinfo=UTC)
LIVE_POWER_MAX_AGE = timedelta(minutes=5)
SLOT = timedelta(milliseconds=SLOT_MS)


class LoginBody(RequestBody):
    email: Annotated[str, Field(pattern=_EMAIL, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class ManualReading(RequestBody):
    ts: UtcDatetime = Field(description="when the register was read")
    register_kwh: Annotated[float, Field(ge=0, le=1e9)] = Field(
        description="the import register as the meter displays it, kWh"
    )
    idempotency_key: (
        Annotated[str, Field(pattern=_IDEMPOTENCY_KEY, max_length=128)] | None
    ) = Field(default=None, description="the same key again: the same reading")

    @field_validator("ts")
    @classmethod
    def _not_ancient(cls, v: datetime) -> datetime:
        if v < EARLIEST_READING:
            raise ValueError(f"before {EARLIEST_READING.date()}")
        return v


def _settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.api_settings
    return s


def gateway_status(row: asyncpg.Record | dict[str, Any], online_within_s: float) -> Any:
    at = row["status_at"]
    online = (
        row["state"] == "online"
        and at is not None
        and at > datetime.now(UTC) - timedelta(seconds=online_within_s)
    )
    return {
        "state": row["state"],
        "online": online,
        "last_seen": row["last_seen"],
        "software": row["software"],
        "backlog_records": row["backlog_records"],
        "backlog_oldest": row["backlog_oldest"],
        "thinned_total": row["thinned_total"],
        "rejected_total": row["rejected_total"],
    }


async def site_view(
    db: asyncpg.Pool, gateway_ids: list[str], settings: ApiSettings
) -> list[dict[str, Any]]:
    """Sites with their chargers, meters and gateway status, one per gateway."""
    gws = await db.fetch(
        "SELECT g.*, s.main_fuse_a, s.phases, s.voltage_v, s.tariff_id, s.timezone,"
        " s.objective, u.email AS owner_email, s.gateway_id IS NOT NULL AS has_site"
        " FROM gateways g LEFT JOIN sites s ON s.gateway_id = g.id"
        " LEFT JOIN users u ON u.id = s.owner_id WHERE g.id = ANY($1::text[])"
        " ORDER BY g.id",
        gateway_ids,
    )
    chargers = await db.fetch(
        "SELECT * FROM site_chargers WHERE gateway_id = ANY($1::text[])"
        " ORDER BY charger_id",
        gateway_ids,
    )
    meters = await db.fetch(
        "SELECT * FROM site_meters WHERE gateway_id = ANY($1::text[])"
        " ORDER BY meter_id",
        gateway_ids,
    )
    out = []
    for g in gws:
        gw = g["id"]
        site = None
        if g["has_site"]:
            site = {
                k: g[k]
                for k in (
                    "main_fuse_a",
                    "phases",
                    "voltage_v",
                    "tariff_id",
                    "timezone",
                    "objective",
                )
            }
        out.append(
            {
                "gateway_id": gw,
                "owner_email": g["owner_email"],
                "site": site,
                "gateway": gateway_status(g, settings.online_within_s),
                "chargers": [
                    {
                        k: c[k]
                        for k in (
                            "charger_id",
                            "connector_id",
                            "max_power_w",
                            "min_power_w",
                            "phases",
                            "phase",
                        )
                    }
                    for c in chargers
                    if c["gateway_id"] == gw
                ],
                "meters": [
                    {k: m[k] for k in ("meter_id", "type", "topic", "role")}
                    for m in meters
                    if m["gateway_id"] == gw
                ],
            }
        )
    return out


_LIVE = """
WITH c AS (
    SELECT * FROM unnest($2::text[], $3::int[]) AS c(charger_id, connector_id)
)
SELECT c.charger_id, st.data AS status_data, st.ts AS status_at,
       pw.value AS power_w, pw.ts AS power_at,
       ses.transaction_id, ses.started_at, ses.meter_start_wh,
       reg.value AS register_wh, soc.value AS soc_pct, soc.ts AS soc_at,
       ss.state AS schedule_state, ss.limit_w, ss.at AS schedule_at,
       pref.mode
FROM c
LEFT JOIN LATERAL (
    SELECT e.data, e.ts FROM events e JOIN streams s ON s.id = e.stream_id
    WHERE s.gateway_id = $1 AND s.device_id = c.charger_id AND s.name = 'status'
      AND coalesce(e.data->>'connector_id', '1') <> '0'
    ORDER BY e.ts DESC LIMIT 1) st ON true
LEFT JOIN LATERAL (
    SELECT r.value, r.ts FROM readings r JOIN streams s ON s.id = r.stream_id
    WHERE s.gateway_id = $1 AND s.name = 'power_w' AND r.ts >= $4
      AND s.device_id IN (c.charger_id, c.charger_id || '-' || c.connector_id)
    ORDER BY r.ts DESC LIMIT 1) pw ON true
LEFT JOIN LATERAL (
    SELECT * FROM sessions x WHERE x.gateway_id = $1
      AND x.charger_id = c.charger_id AND x.stopped_at IS NULL
    ORDER BY x.started_at DESC NULLS LAST LIMIT 1) ses ON true
LEFT JOIN LATERAL (
    SELECT r.value FROM readings r JOIN streams s ON s.id = r.stream_id
    WHERE s.gateway_id = $1 AND s.name = 'import_energy_wh'
      AND s.device_id IN (c.charger_id, c.charger_id || '-' || c.connector_id)
      AND ses.started_at IS NOT NULL AND r.ts >= ses.started_at
    ORDER BY r.ts DESC LIMIT 1) reg ON true
LEFT JOIN LATERAL (
    SELECT r.value, r.ts FROM readings r JOIN streams s ON s.id = r.stream_id
    WHERE s.gateway_id = $1 AND s.name = 'soc_pct'
      AND s.device_id IN (c.charger_id, c.charger_id || '-' || c.connector_id)
      AND ses.started_at IS NOT NULL AND r.ts >= ses.started_at
    ORDER BY r.ts DESC LIMIT 1) soc ON true
LEFT JOIN schedule_status ss
    ON ss.gateway_id = $1 AND ss.charger_id = c.charger_id
LEFT JOIN charging_preferences pref
    ON pref.gateway_id = $1 AND pref.charger_id = c.charger_id
ORDER BY c.charger_id
"""


async def charger_ids(db: asyncpg.Pool, gw: str) -> tuple[list[str], list[int]]:
    """Chargers of a site: the registered ones and any seen in a session."""
    rows = await db.fetch(
        "SELECT charger_id, connector_id FROM site_chargers WHERE gateway_id = $1"
        " UNION SELECT DISTINCT ON (charger_id) charger_id, coalesce(connector_id, 1)"
        " FROM sessions WHERE gateway_id = $1 AND charger_id NOT IN"
        " (SELECT charger_id FROM site_chargers WHERE gateway_id = $1)",
        gw,
    )
    return [r["charger_id"] for r in rows], [max(1, r["connector_id"]) for r in rows]


def _status_text(data: Any) -> str | None:
    if isinstance(data, str):
        data = json.loads(data)
    if isinstance(data, dict):
        status = data.get("status")
        return status if isinstance(status, str) else None
    return None


# ------------------------------------------------------------ cost and carbon


async def _tariff(
    db: asyncpg.Pool | asyncpg.Connection, gw: str
) -> tuple[str | None, float | None]:
    row = await db.fetchrow(
        "SELECT s.tariff_id, t.kind, t.flat_price_p_per_kwh FROM sites s"
        " LEFT JOIN tariffs t ON t.id = s.tariff_id WHERE s.gateway_id = $1",
        gw,
    )
    if row is None:
        return None, None
    return row["tariff_id"], row["flat_price_p_per_kwh"]


def _slot_floor(t: datetime) -> datetime:
    ms = int(t.timestamp() * 1000)
    return datetime.fromtimestamp((ms - ms % SLOT_MS) / 1000, UTC)


def spread_evenly(
    energy_wh: float, start: datetime, end: datetime
) -> dict[datetime, float]:
    """``energy_wh`` shared over the half-hour slots of [start, end) by time."""
    if end <= start:
        return {_slot_floor(start): energy_wh}
    total = (end - start).total_seconds()
    out: dict[datetime, float] = {}
    slot = _slot_floor(start)
    while slot < end:
        lo, hi = max(slot, start), min(slot + SLOT, end)
        out[slot] = energy_wh * (hi - lo).total_seconds() / total
        slot += SLOT
    return out


async def session_slots(
    db: asyncpg.Pool | asyncpg.Connection,
    gw: str,
    s: asyncpg.Record,
    now: datetime,
) -> tuple[float | None, dict[datetime, float]]:
    """The session's energy (Wh) and its share per half-hour slot: from the
    charger's register readings where there are some, else spread evenly."""
    start = s["started_at"]
    if start is None:
        return s["energy_wh"], {}
    end = s["stopped_at"] or now
    devices = [s["charger_id"], f"{s['charger_id']}-{s['connector_id'] or 1}"]
    rows = await db.fetch(
        "SELECT to_timestamp(floor(extract(epoch FROM r.ts) / 1800) * 1800) AS slot,"
        " max(r.value) AS wh FROM readings r JOIN streams s ON s.id = r.stream_id"
        " WHERE s.gateway_id = $1 AND s.device_id = ANY($2::text[])"
        " AND s.name = 'import_energy_wh' AND r.ts >= $3 AND r.ts <= $4"
        " GROUP BY 1 ORDER BY 1",
        gw,
        devices,
        start,
        end,
    )
    energy = s["energy_wh"]
    begin = s["meter_start_wh"]
    if rows and begin is not None:
        out: dict[datetime, float] = {}
        last = begin
        for r in rows:
            out[r["slot"]] = max(0.0, r["wh"] - last)
            last = max(last, r["wh"])
        stop = s["meter_stop_wh"]
        if stop is not None and stop > last:  # after the last reading
            slot = _slot_floor(end)
            out[slot] = out.get(slot, 0.0) + stop - last
            last = stop
        return (energy if energy is not None else last - begin), out
    if energy is None:
        return None, {}
    return energy, spread_evenly(max(0.0, energy), start, end)


async def price_energy(
    db: asyncpg.Pool | asyncpg.Connection,
    tariff_id: str | None,
    flat_p: float | None,
    slots: dict[datetime, float],
) -> dict[str, float | None]:
    """Cost (p) and carbon (g) of energy per slot; ``priced_energy_wh`` says how
    much of it had a known price."""
    if not slots:
        return {"cost_p": None, "carbon_g": None, "priced_energy_wh": 0.0}
    curve: dict[datetime, tuple[float | None, float | None]] = {}
    if tariff_id is not None:
        rows = await db.fetch(
            "SELECT slot_start, price_p_per_kwh, carbon_g_per_kwh FROM tariff_slots"
            " WHERE tariff_id = $1 AND slot_start >= $2 AND slot_start <= $3",
            tariff_id,
            min(slots),
            max(slots),
        )
        curve = {
            r["slot_start"]: (r["price_p_per_kwh"], r["carbon_g_per_kwh"]) for r in rows
        }
    cost = carbon = priced = carbon_wh = 0.0
    for slot, wh in slots.items():
        price, grams = curve.get(slot, (None, None))
        price = price if price is not None else flat_p
        if price is not None:
            cost += wh / 1000 * price
            priced += wh
        if grams is not None:
            carbon += wh / 1000 * grams
            carbon_wh += wh
    return {
        "cost_p": round(cost, 3) if priced else None,
        "carbon_g": round(carbon, 3) if carbon_wh else None,
        "priced_energy_wh": round(priced, 3),
    }


# ---------------------------------------------------------- manual readings


_PREV_REGISTER = """
SELECT ts, wh FROM (
    SELECT ts, register_wh AS wh FROM manual_readings
    WHERE gateway_id = $1 AND meter_id = $2 AND ts < $3
    UNION ALL
    (SELECT r.ts, r.value FROM readings r JOIN streams s ON s.id = r.stream_id
     WHERE s.gateway_id = $1 AND s.device_id = $2 AND s.name = 'import_energy_wh'
       AND r.ts < $3 ORDER BY r.ts DESC LIMIT 1)
) x ORDER BY ts DESC LIMIT 1
"""

_NEXT_REGISTER = """
SELECT ts, wh FROM (
    SELECT ts, register_wh AS wh FROM manual_readings
    WHERE gateway_id = $1 AND meter_id = $2 AND ts > $3
    UNION ALL
    (SELECT r.ts, r.value FROM readings r JOIN streams s ON s.id = r.stream_id
     WHERE s.gateway_id = $1 AND s.device_id = $2 AND s.name = 'import_energy_wh'
       AND r.ts > $3 ORDER BY r.ts LIMIT 1)
) x ORDER BY ts LIMIT 1
"""


def _reading_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "meter_id": row["meter_id"],
        "ts": row["ts"],
        "register_kwh": row["register_wh"] / 1000,
        "idempotency_key": row["idempotency_key"],
        "created_at": row["created_at"],
    }


async def store_manual_reading(
    conn: asyncpg.Connection,
    user: Principal,
    gw: str,
    meter: str,
    body: ManualReading,
) -> tuple[bool, asyncpg.Record]:
    """Validate and store; ``(created, row)``. A replay of an identical reading
    (same key, or same meter and instant) returns the stored one."""
    wh = round(body.register_kwh * 1000, 3)
    ts = body.ts.astimezone(UTC)
    async with conn.transaction():
        # one submission per meter at a time, so two cannot both pass the checks
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('fusebox-manual:' || $1 || '/' "
            "|| $2))",
            gw,
            meter,
        )
        same = await conn.fetchrow(
            "SELECT * FROM manual_readings WHERE gateway_id = $1 AND"
            " (($3::text IS NOT NULL AND idempotency_key = $3)"
            " OR (meter_id = $2 AND ts = $4))",
            gw,
            meter,
            body.idempotency_key,
            ts,
        )
        if same is not None:
            if (
                same["meter_id"] == meter
                and same["ts"] == ts
                and abs(same["register_wh"] - wh) < 1e-6
            ):
                return False, same
            if body.idempotency_key and same["idempotency_key"] == body.idempotency_key:
                raise HTTPException(
                    409, "idempotency_key was already used for a different reading"
                )
            raise HTTPException(
                409,
                f"meter {meter!r} already has a different reading at {ts.isoformat()}",
            )
        prev = await conn.fetchrow(_PREV_REGISTER, gw, meter, ts)
        if prev is not None:
            if wh < prev["wh"]:
                raise field_error(
                    "register_kwh",
                    f"below the last reading ({prev['wh'] / 1000:g} kWh at "
                    f"{prev['ts'].isoformat()}); a register never runs backwards",
                )
            hours = (ts - prev["ts"]).total_seconds() / 3600
            most = MAX_AVERAGE_IMPORT_W * hours + READING_SLACK_WH
            if wh - prev["wh"] > most:
                raise field_error(
                    "register_kwh",
                    f"implausible: {(wh - prev['wh']) / 1000:g} kWh since the last "
                    f"reading ({prev['wh'] / 1000:g} kWh at {prev['ts'].isoformat()})"
                    f" is more than {MAX_AVERAGE_IMPORT_W / 1000:g} kW on average; "
                    "check the digits",
                )
        nxt = await conn.fetchrow(_NEXT_REGISTER, gw, meter, ts)
        if nxt is not None and wh > nxt["wh"]:
            raise field_error(
                "register_kwh",
                f"above a later reading ({nxt['wh'] / 1000:g} kWh at "
                f"{nxt['ts'].isoformat()})",
            )
        row = await conn.fetchrow(
            "INSERT INTO manual_readings (gateway_id, meter_id, ts, register_wh,"
            " idempotency_key, submitted_by) VALUES ($1, $2, $3, $4, $5, $6)"
            " RETURNING *",
            gw,
            meter,
            ts,
            wh,
            body.idempotency_key,
            user.id,
        )
        assert row is not None
        return True, row


# ------------------------------------------------------------------- routes


def add_people_routes(app: FastAPI) -> None:
    """Register login, the owner's views and the operator's fleet on ``app``."""

    @app.post("/v1/auth/login")
    async def login(body: LoginBody, request: Request, db: Db) -> dict[str, Any]:
        """E-mail and password for a bearer token. Repeated failures for one
        e-mail or from one address are refused with 429 and ``Retry-After``."""
        st = _settings(request)
        by_email: FailureLimiter = request.app.state.login_by_email
        by_ip: FailureLimiter = request.app.state.login_by_ip
        email = normalise_email(body.email)
        ip = client_ip(request)
        wait = max(by_email.retry_after(email), by_ip.retry_after(ip))
        if wait > 0:
            raise too_many(wait, "logins")
        row = await db.fetchrow(
            "SELECT id, email, role, password_hash FROM users WHERE lower(email) = $1",
            email,
        )
        ok = await asyncio.to_thread(
            verify_password, body.password, row["password_hash"] if row else None
        )
        if not ok or row is None:
            by_email.fail(email)
            by_ip.fail(ip)
            raise HTTPException(
                401, "wrong e-mail or password", headers={"WWW-Authenticate": "Bearer"}
            )
        by_email.reset(email)
        token, tok = await issue_token(
            db, row["id"], timedelta(seconds=st.token_ttl_s), ip
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_at": tok["expires_at"],
            "user": {"id": row["id"], "email": row["email"], "role": row["role"]},
        }

    @app.post("/v1/auth/logout", status_code=204)
    async def logout(db: Db, user: User) -> Response:
        """Revoke the token of this request."""
        await db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_sha256 = $1"
            " AND revoked_at IS NULL",
            user.token_sha256,
        )
        return Response(status_code=204)

    @app.post("/v1/auth/logout_all")
    async def logout_all(db: Db, user: User) -> dict[str, Any]:
        """Revoke every token of this account (all devices)."""
        done = await db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1"
            " AND revoked_at IS NULL",
            user.id,
        )
        return {"revoked": int(done.split()[-1])}

    @app.get("/v1/me")
    async def me(db: Db, user: User) -> dict[str, Any]:
        gws = await db.fetch(VISIBLE_GATEWAYS + " ORDER BY g.id", user.id, user.role)
        return {
            "id": user.id,
            "email": user.email,
            "role": user.role,
            "gateway_ids": [r["id"] for r in gws] if user.role != "operator" else None,
        }

    # ------------------------------------------------------------- owner

    @app.get("/v1/sites")
    async def sites(request: Request, db: Db, user: User) -> list[dict[str, Any]]:
        """The caller's sites (an installer's: assigned; an operator's: all) with
        chargers, meters and gateway status."""
        gws = await db.fetch(VISIBLE_GATEWAYS, user.id, user.role)
        return await site_view(db, [r["id"] for r in gws], _settings(request))

    @app.get("/v1/sites/{gateway_id}")
    async def site(
        gateway_id: GatewayPath, request: Request, db: Db, user: User
    ) -> dict[str, Any]:
        await gateway_access(db, user, gateway_id, Access.READ)
        [one] = await site_view(db, [gateway_id], _settings(request))
        return one

    @app.get("/v1/gateways/{gateway_id}/live")
    async def live(gateway_id: GatewayPath, db: Db, user: User) -> dict[str, Any]:
        """Each charger now: connector status, power, the open session's energy and
        the EV's state of charge where the charger reports it, the plan's limit."""
        await gateway_access(db, user, gateway_id, Access.READ)
        ids, connectors = await charger_ids(db, gateway_id)
        now = datetime.now(UTC)
        rows = await db.fetch(
            _LIVE, gateway_id, ids, connectors, now - LIVE_POWER_MAX_AGE
        )
        out = []
        for r in rows:
            session = None
            if r["transaction_id"] is not None:
                energy = None
                if r["register_wh"] is not None and r["meter_start_wh"] is not None:
                    energy = max(0.0, r["register_wh"] - r["meter_start_wh"])
                session = {
                    "transaction_id": r["transaction_id"],
                    "started_at": r["started_at"],
                    "energy_wh": energy,
                }
            out.append(
                {
                    "charger_id": r["charger_id"],
                    "status": _status_text(r["status_data"]),
                    "status_at": r["status_at"],
                    "power_w": r["power_w"],
                    "power_at": r["power_at"],
                    "session": session,
                    "soc_pct": r["soc_pct"],
                    "soc_at": r["soc_at"],
                    "mode": r["mode"] or "smart",
                    "schedule_state": r["schedule_state"],
                    "limit_w": r["limit_w"],
                }
            )
        return {"gateway_id": gateway_id, "at": now, "chargers": out}

    @app.get("/v1/gateways/{gateway_id}/sessions")
    async def sessions(
        gateway_id: GatewayPath,
        db: Db,
        user: User,
        charger_id: Annotated[
            str | None, Query(pattern=r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$")
        ] = None,
        since: UtcDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Charging sessions, newest first, with energy, cost (site tariff) and
        carbon. Energy is split over half-hour slots by the charger's register
        readings (evenly over the session where there are none)."""
        await gateway_access(db, user, gateway_id, Access.READ)
        rows = await db.fetch(
            "SELECT * FROM sessions WHERE gateway_id = $1"
            " AND ($2::text IS NULL OR charger_id = $2)"
            " AND ($3::timestamptz IS NULL OR started_at >= $3)"
            " ORDER BY started_at DESC NULLS LAST LIMIT $4",
            gateway_id,
            charger_id,
            since,
            limit,
        )
        tariff_id, flat = await _tariff(db, gateway_id)
        now = datetime.now(UTC)
        out = []
        for s in rows:
            energy, slots = await session_slots(db, gateway_id, s, now)
            priced = await price_energy(db, tariff_id, flat, slots)
            out.append(
                {
                    "charger_id": s["charger_id"],
                    "transaction_id": s["transaction_id"],
                    "started_at": s["started_at"],
                    "stopped_at": s["stopped_at"],
                    "stop_reason": s["stop_reason"],
                    "energy_wh": energy,
                    **priced,
                }
            )
        return {"gateway_id": gateway_id, "tariff_id": tariff_id, "sessions": out}

    @app.post("/v1/gateways/{gateway_id}/meters/{meter_id}/readings")
    async def submit_reading(
        gateway_id: GatewayPath,
        meter_id: MeterPath,
        body: ManualReading,
        response: Response,
        db: Db,
        user: User,
    ) -> dict[str, Any]:
        """A meter reading typed in: 201 when stored, 200 when the same reading was
        already stored (same ``idempotency_key``, or same meter and ``ts``), 422
        naming ``register_kwh`` when below the last reading, implausibly far above
        it, or above a later one; 409 when it contradicts a stored one."""
        await gateway_access(db, user, gateway_id, Access.CONTROL)
        if body.ts > datetime.now(UTC) + timedelta(minutes=5):
            raise field_error("ts", "in the future")
        if not await db.fetchval(
            "SELECT 1 FROM site_meters WHERE gateway_id = $1 AND meter_id = $2",
            gateway_id,
            meter_id,
        ):
            raise HTTPException(404, f"no meter {meter_id!r} on {gateway_id!r}")
        async with db.acquire() as conn:
            created, row = await store_manual_reading(
                conn, user, gateway_id, meter_id, body
            )
        response.status_code = 201 if created else 200
        return {**_reading_out(row), "created": created}

    @app.get("/v1/gateways/{gateway_id}/meters/{meter_id}/readings")
    async def manual_readings(
        gateway_id: GatewayPath,
        meter_id: MeterPath,
        db: Db,
        user: User,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        """Readings typed in for this meter, newest first."""
        await gateway_access(db, user, gateway_id, Access.READ)
        rows = await db.fetch(
            "SELECT * FROM manual_readings WHERE gateway_id = $1 AND meter_id = $2"
            " ORDER BY ts DESC LIMIT $3",
            gateway_id,
            meter_id,
            limit,
        )
        return [_reading_out(r) for r in rows]

    # ---------------------------------------------------------- operator

    @app.get("/v1/fleet")
    async def fleet(request: Request, db: Db, user: User) -> dict[str, Any]:
        """Every gateway: online or offline (its last status, and how recent),
        backlog, thinned and rejected counts, software version. Operators only."""
        require_role(user, "operator")
        st = _settings(request)
        rows = await db.fetch(
            "SELECT g.*, s.gateway_id IS NOT NULL AS has_site,"
            " (SELECT max(stored_through_seq) FROM gateway_epochs e"
            "  WHERE e.gateway_id = g.id) AS stored_through_seq"
            " FROM gateways g LEFT JOIN sites s ON s.gateway_id = g.id ORDER BY g.id"
        )
        gateways = []
        versions: dict[str, int] = {}
        for r in rows:
            status = gateway_status(r, st.online_within_s)
            version = r["software"] or "unknown"
            versions[version] = versions.get(version, 0) + 1
            gateways.append(
                {
                    "gateway_id": r["id"],
                    **status,
                    "status_at": r["status_at"],
                    "stored_through_seq": r["stored_through_seq"],
                    "claimed": r["claimed_at"] is not None,
                    "has_site": r["has_site"],
                }
            )
        online = sum(1 for g in gateways if g["online"])
        return {
            "gateways_total": len(gateways),
            "online": online,
            "offline": len(gateways) - online,
            "backlog_records_total": sum(g["backlog_records"] or 0 for g in gateways),
            "thinned_total": sum(g["thinned_total"] for g in gateways),
            "rejected_total": sum(g["rejected_total"] for g in gateways),
            "software_versions": versions,
            "gateways": gateways,
        }
