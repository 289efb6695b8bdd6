"""Commissioning (``GET /v1/gateways/{gateway_id}/commissioning``): what works
in an installation and what does not, as pass/fail checks with what to do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query

from cloud.api.deps import Access, Db, GatewayPath, User, gateway_access

router = APIRouter()

# an EV is charging when its charger draws at least this; idle below the other
_EV_CHARGING_W = 1000.0
_EV_IDLE_W = 200.0


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


async def _fuse_check(db: asyncpg.Pool, gw: str) -> dict[str, Any]:
    """Whether the site and its main fuse are set."""
    site = await db.fetchrow("SELECT * FROM sites WHERE gateway_id = $1", gw)
    return _check(
        "fuse_limit_set",
        site is not None and site["main_fuse_a"] > 0,
        f"main fuse {site['main_fuse_a']:g} A, {site['phases']} phase(s)"
        if site is not None
        else "no site yet: POST /v1/sites with main_fuse_a",
    )


async def _charger_checks(
    db: asyncpg.Pool, gw: str, cid: str, now: datetime, recent: timedelta
) -> list[dict[str, Any]]:
    """Whether charger ``cid`` was heard from within ``recent`` and accepted a
    charging profile (or at least had its capabilities read)."""
    seen = await db.fetchval(
        "SELECT max(e.ts) FROM events e JOIN streams s ON s.id = e.stream_id"
        " WHERE s.gateway_id = $1 AND s.device_id = $2"
        " AND s.name IN ('boot', 'status') AND e.ts >= $3",
        gw,
        cid,
        now - recent,
    )
    connected = _check(
        "charger_connected",
        seen is not None,
        f"last boot/status {seen.isoformat()}"
        if seen
        else f"no boot or status from {cid} in the last "
        f"{recent.total_seconds() / 60:g} min: is it pointed at the gateway?",
        charger_id=cid,
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
    accepted = _check(
        "charger_accepted_profile",
        bool(applied or caps),
        "a charging profile was applied"
        if applied
        else "smart-charging capabilities read"
        if caps
        else f"{cid} has not accepted a charging profile yet",
        charger_id=cid,
    )
    return [connected, accepted]


async def _meter_check(
    db: asyncpg.Pool, gw: str, m: asyncpg.Record, now: datetime, fresh: timedelta
) -> dict[str, Any]:
    """Whether meter ``m`` sent a reading within ``fresh``."""
    last = await db.fetchval(
        "SELECT max(r.ts) FROM readings r JOIN streams s ON s.id = r.stream_id"
        " WHERE s.gateway_id = $1 AND s.device_id = $2 AND r.ts >= $3",
        gw,
        m["meter_id"],
        now - fresh,
    )
    return _check(
        "meter_data_fresh",
        last is not None,
        f"last reading {last.isoformat()}"
        if last
        else f"no reading from {m['meter_id']} in the last "
        f"{fresh.total_seconds() / 60:g} min: check its topic "
        f"({m['topic']}) and the site broker",
        meter_id=m["meter_id"],
    )


async def commissioning_report(
    db: asyncpg.Pool, gw: str, *, recent: timedelta, fresh: timedelta
) -> dict[str, Any]:
    """The checks of :func:`commissioning` for gateway ``gw``, in order: fuse,
    each charger, each meter, the site meter's sign; ``passed`` if all pass."""
    now = datetime.now(UTC)
    checks: list[dict[str, Any]] = [await _fuse_check(db, gw)]
    chargers = await db.fetch(
        "SELECT * FROM site_chargers WHERE gateway_id = $1 ORDER BY charger_id", gw
    )
    if not chargers:
        checks.append(_check("chargers_registered", False, "no charger registered yet"))
    charger_devices: list[str] = []
    for c in chargers:
        cid = c["charger_id"]
        charger_devices += [cid, f"{cid}-{c['connector_id']}"]
        checks += await _charger_checks(db, gw, cid, now, recent)
    meters = await db.fetch(
        "SELECT * FROM site_meters WHERE gateway_id = $1 AND type <> 'manual'"
        " ORDER BY meter_id",
        gw,
    )
    if not meters:
        checks.append(_check("meters_registered", False, "no meter registered yet"))
    for m in meters:
        checks.append(await _meter_check(db, gw, m, now, fresh))
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


@router.get("/v1/gateways/{gateway_id}/commissioning")
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
