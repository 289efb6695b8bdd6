"""Meter readings typed in by hand (a meter read by eye, or a check on one the
gateway reads): stored once, idempotently, and only when plausible next to the
readings before and after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import Field, field_validator

from cloud.api.deps import (
    Access,
    Db,
    GatewayPath,
    MeterPath,
    Principal,
    User,
    UtcDatetime,
    gateway_access,
)
from cloud.api.errors import field_error
from protocols.bodies import RequestBody

router = APIRouter()

_IDEMPOTENCY_KEY = r"^[A-Za-z0-9_.:\-]{1,128}$"

# a household supply rarely imports more than this on average (100 A at 230 V is
# 23 kW): a manual reading implying more since the last is a typo
MAX_AVERAGE_IMPORT_W = 25_000.0
# meter displays show whole kWh: allow that much on top of the average
READING_SLACK_WH = 1_000.0
EARLIEST_READING = datetime(2000, 1, 1, tzinfo=UTC)


class ManualReading(RequestBody):
    """A meter's import register, read by eye and typed in."""

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


async def _check_plausible(
    conn: asyncpg.Connection, gw: str, meter: str, ts: datetime, wh: float
) -> None:
    """422 naming ``register_kwh`` when ``wh`` at ``ts`` is below the reading
    before it, implausibly far above it, or above the reading after it."""
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
        await _check_plausible(conn, gw, meter, ts, wh)
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


@router.post("/v1/gateways/{gateway_id}/meters/{meter_id}/readings")
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


@router.get("/v1/gateways/{gateway_id}/meters/{meter_id}/readings")
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
