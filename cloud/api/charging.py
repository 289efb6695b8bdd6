"""An owner's side of smart charging: charging preferences per charger, the
current plan, and boost (a command the scheduler relays to the gateway).

Handlers only read and write PostgreSQL; the scheduler (a separate process) picks
the changes up, replans and talks to the gateways."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Body, HTTPException, Path
from pydantic import Field, model_validator

from cloud.api.deps import (
    Access,
    ChargerPath,
    Db,
    GatewayPath,
    Principal,
    User,
    UtcDatetime,
    charger_access,
    gateway_access,
)
from protocols.bodies import RequestBody
from protocols.lease import SLOT_MS

router = APIRouter()

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class Preferences(RequestBody):
    """An owner's charging preferences for one charger: the mode and the target
    to reach by ``ready_by``."""

    mode: Literal["smart", "boost", "off"] = "smart"
    ready_by: Annotated[str, Field(pattern=_HHMM, description="HH:MM, site time")] = (
        "07:30"
    )
    target_energy_kwh: Annotated[float, Field(gt=0, le=1000)] | None = None
    target_soc_pct: Annotated[float, Field(gt=0, le=100)] | None = None
    battery_kwh: Annotated[float, Field(gt=0, le=1000)] | None = None
    max_price_p_per_kwh: Annotated[float, Field(ge=-1000, le=1000)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Preferences:
        soc = self.target_soc_pct is not None or self.battery_kwh is not None
        if self.target_energy_kwh is not None and soc:
            raise ValueError(
                "give target_energy_kwh, or target_soc_pct with battery_kwh, not both"
            )
        if self.target_energy_kwh is None and not (
            self.target_soc_pct is not None and self.battery_kwh is not None
        ):
            raise ValueError(
                "give target_energy_kwh, or target_soc_pct with battery_kwh"
            )
        return self


class BoostBody(RequestBody):
    """How long a boost lasts: until an instant, or for some minutes."""

    until: UtcDatetime | None = None
    duration_min: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None

    @model_validator(mode="after")
    def _not_both(self) -> BoostBody:
        if self.until is not None and self.duration_min is not None:
            raise ValueError("give until or duration_min, not both")
        return self


def _prefs_out(row: asyncpg.Record) -> dict[str, Any]:
    out = {k: row[k] for k in (*Preferences.model_fields, "updated_at")}
    out["ready_by"] = row["ready_by"].strftime("%H:%M")
    return out


def _planned_w(lease: dict[str, Any], at_ms: int) -> dict[str, float]:
    """Each charger's planned limit at ``at_ms`` (its lease period covering it)."""
    out: dict[str, float] = {}
    for c in lease.get("chargers") or []:
        for period in c.get("periods") or []:
            if period["start_ms"] <= at_ms < period["end_ms"]:
                out[c["charger_id"]] = period["limit_w"]
                break
    return out


def _command_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "id",
            "gateway_id",
            "charger_id",
            "action",
            "created_at",
            "until",
            "duration_s",
            "published_at",
            "result_ok",
            "result_detail",
            "result_at",
        )
    }


@router.put("/v1/gateways/{gateway_id}/chargers/{charger_id}/preferences")
async def put_preferences(
    gateway_id: GatewayPath,
    charger_id: ChargerPath,
    body: Preferences,
    db: Db,
    user: User,
) -> dict[str, Any]:
    """Set (or change) the owner's charging preferences for a charger."""
    await charger_access(db, user, gateway_id, charger_id, Access.CONTROL)
    hh, mm = body.ready_by.split(":")
    row = await db.fetchrow(
        "INSERT INTO charging_preferences (gateway_id, charger_id, mode, ready_by,"
        " target_energy_kwh, target_soc_pct, battery_kwh, max_price_p_per_kwh)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (gateway_id, charger_id) DO UPDATE SET mode = excluded.mode,"
        " ready_by = excluded.ready_by,"
        " target_energy_kwh = excluded.target_energy_kwh,"
        " target_soc_pct = excluded.target_soc_pct,"
        " battery_kwh = excluded.battery_kwh,"
        " max_price_p_per_kwh = excluded.max_price_p_per_kwh, updated_at = now()"
        " RETURNING *",
        gateway_id,
        charger_id,
        body.mode,
        dtime(int(hh), int(mm)),
        body.target_energy_kwh,
        body.target_soc_pct,
        body.battery_kwh,
        body.max_price_p_per_kwh,
    )
    return _prefs_out(row)


@router.get("/v1/gateways/{gateway_id}/chargers/{charger_id}/preferences")
async def get_preferences(
    gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
) -> dict[str, Any]:
    """A charger's charging preferences; 404 before they are set."""
    await charger_access(db, user, gateway_id, charger_id, Access.READ)
    row = await db.fetchrow(
        "SELECT * FROM charging_preferences WHERE gateway_id = $1 AND charger_id = $2",
        gateway_id,
        charger_id,
    )
    if row is None:
        raise HTTPException(404, f"no preferences for charger {charger_id!r}")
    return _prefs_out(row)


@router.get("/v1/gateways/{gateway_id}/plan")
async def get_plan(gateway_id: GatewayPath, db: Db, user: User) -> dict[str, Any]:
    """The newest lease, plus its curve as ``slots`` with start times and each
    charger's planned power in them (``planned_w``)."""
    await gateway_access(db, user, gateway_id, Access.READ)
    row = await db.fetchrow(
        "SELECT * FROM plans WHERE gateway_id = $1 ORDER BY version DESC LIMIT 1",
        gateway_id,
    )
    if row is None:
        raise HTTPException(404, f"no plan for gateway {gateway_id!r} yet")
    lease = json.loads(row["lease"])
    start = lease["slots_start_ms"]
    carbon = lease.get("carbon_g_per_kwh") or []
    slots = [
        {
            "slot_start": datetime.fromtimestamp((start + i * SLOT_MS) / 1000, UTC),
            "price_p_per_kwh": p,
            "carbon_g_per_kwh": carbon[i] if i < len(carbon) else None,
            "planned_w": _planned_w(lease, start + i * SLOT_MS),
        }
        for i, p in enumerate(lease["price_p_per_kwh"])
    ]
    return {
        "gateway_id": gateway_id,
        "version": row["version"],
        "reason": row["reason"],
        "issued_at": row["issued_at"],
        "valid_until": row["valid_until"],
        "published_at": row["published_at"],
        "feasible": row["feasible"],
        "cost_p": row["cost_p"],
        "carbon_g": row["carbon_g"],
        "lease": lease,
        "slots": slots,
    }


async def _command(
    db: asyncpg.Pool,
    user: Principal,
    gw: str,
    charger: str,
    action: str,
    body: BoostBody | None,
) -> dict[str, Any]:
    """Queue ``action`` for the charger (the scheduler relays it)."""
    await charger_access(db, user, gw, charger, Access.CONTROL)
    row = await db.fetchrow(
        "INSERT INTO commands (id, gateway_id, charger_id, action, until,"
        " duration_s) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        uuid.uuid4().hex,
        gw,
        charger,
        action,
        body.until if body else None,
        body.duration_min * 60 if body and body.duration_min else None,
    )
    return _command_out(row)


@router.post("/v1/gateways/{gateway_id}/chargers/{charger_id}/boost", status_code=202)
async def boost(
    gateway_id: GatewayPath,
    charger_id: ChargerPath,
    db: Db,
    user: User,
    body: Annotated[BoostBody | None, Body()] = None,
) -> dict[str, Any]:
    """Charge at full power now, until ``until`` or for ``duration_min``; 202:
    the command is queued for the gateway."""
    return await _command(db, user, gateway_id, charger_id, "boost", body)


@router.post(
    "/v1/gateways/{gateway_id}/chargers/{charger_id}/cancel_boost",
    status_code=202,
)
async def cancel_boost(
    gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
) -> dict[str, Any]:
    """End a boost: back to the charger's preferences; 202: queued for the
    gateway."""
    return await _command(db, user, gateway_id, charger_id, "cancel_boost", None)


@router.get("/v1/gateways/{gateway_id}/commands/{command_id}")
async def get_command(
    gateway_id: GatewayPath,
    command_id: Annotated[str, Path(max_length=64)],
    db: Db,
    user: User,
) -> dict[str, Any]:
    """A command (boost, cancel) and what the gateway answered, once it has."""
    await gateway_access(db, user, gateway_id, Access.READ)
    row = await db.fetchrow(
        "SELECT * FROM commands WHERE gateway_id = $1 AND id = $2",
        gateway_id,
        command_id,
    )
    if row is None:
        raise HTTPException(404, f"no command {command_id!r} on {gateway_id!r}")
    return _command_out(row)
