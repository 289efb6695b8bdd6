"""Gateways: the list the caller may see (``GET /v1/gateways``) and a site's
chargers right now (``GET /v1/gateways/{gateway_id}/live``): connector status,
power, the open session, the EV's state of charge and the plan's limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter
from pydantic import BaseModel

from cloud.api.deps import (
    VISIBLE_GATEWAYS,
    Access,
    Db,
    GatewayPath,
    User,
    gateway_access,
)

router = APIRouter()

LIVE_POWER_MAX_AGE = timedelta(minutes=5)


class GatewayPublic(BaseModel):
    """A gateway as ``GET /v1/gateways`` lists it."""

    id: str
    state: str
    last_seen: datetime | None
    software: str | None
    backlog_records: int | None
    backlog_oldest: datetime | None
    thinned_total: int
    rejected_total: int
    stored_through_seq: int | None


def gateway_status(row: asyncpg.Record | dict[str, Any], online_within_s: float) -> Any:
    """A gateway's status as the API shows it: ``online`` when its last status
    said so within ``online_within_s``, its backlog and counters."""
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


def _live_charger(r: asyncpg.Record) -> dict[str, Any]:
    """One row of the live query as the API shows it."""
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
    return {
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


@router.get("/v1/gateways", response_model=list[GatewayPublic])
async def gateways(db: Db, user: User) -> list[dict[str, Any]]:
    """The gateways the caller may see (an operator: all)."""
    rows = await db.fetch(
        "SELECT g.*, (SELECT max(stored_through_seq) FROM gateway_epochs e "
        "WHERE e.gateway_id = g.id) AS stored_through_seq "
        f"FROM gateways g WHERE g.id IN ({VISIBLE_GATEWAYS}) ORDER BY id",
        user.id,
        user.role,
    )
    return [dict(r) for r in rows]


@router.get("/v1/gateways/{gateway_id}/live")
async def live(gateway_id: GatewayPath, db: Db, user: User) -> dict[str, Any]:
    """Each charger now: connector status, power, the open session's energy and
    the EV's state of charge where the charger reports it, the plan's limit."""
    await gateway_access(db, user, gateway_id, Access.READ)
    ids, connectors = await charger_ids(db, gateway_id)
    now = datetime.now(UTC)
    rows = await db.fetch(_LIVE, gateway_id, ids, connectors, now - LIVE_POWER_MAX_AGE)
    out = [_live_charger(r) for r in rows]
    return {"gateway_id": gateway_id, "at": now, "chargers": out}
