"""Charging sessions (``GET /v1/gateways/{gateway_id}/sessions``) with their
energy, cost and carbon: energy split over half-hour slots by the charger's
register readings (evenly where there are none), priced on the site's tariff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query

from cloud.api.deps import (
    CHARGER_PATTERN,
    Access,
    Db,
    GatewayPath,
    User,
    UtcDatetime,
    gateway_access,
)
from protocols.lease import SLOT_MS

router = APIRouter()

SLOT = timedelta(milliseconds=SLOT_MS)


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


def _session_out(
    s: asyncpg.Record, energy: float | None, priced: dict[str, float | None]
) -> dict[str, Any]:
    return {
        "charger_id": s["charger_id"],
        "transaction_id": s["transaction_id"],
        "started_at": s["started_at"],
        "stopped_at": s["stopped_at"],
        "stop_reason": s["stop_reason"],
        "energy_wh": energy,
        **priced,
    }


@router.get("/v1/gateways/{gateway_id}/sessions")
async def sessions(
    gateway_id: GatewayPath,
    db: Db,
    user: User,
    charger_id: Annotated[str | None, Query(pattern=CHARGER_PATTERN)] = None,
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
        out.append(_session_out(s, energy, priced))
    return {"gateway_id": gateway_id, "tariff_id": tariff_id, "sessions": out}
