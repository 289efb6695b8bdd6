"""Chargers of a site, as the installer registers them (``PUT``, ``GET`` and
``DELETE /v1/gateways/{gateway_id}/chargers/{charger_id}``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Response
from pydantic import Field, model_validator

from cloud.api.deps import Access, ChargerPath, Db, GatewayPath, User, gateway_access
from protocols.bodies import RequestBody

router = APIRouter()


class ChargerSettings(RequestBody):
    """A charger's registration: its connector, power range and phases."""

    connector_id: Annotated[int, Field(ge=1, le=64)] = 1
    max_power_w: Annotated[float, Field(gt=0, le=1_000_000)] = 7400.0
    min_power_w: Annotated[float, Field(ge=0, le=1_000_000)] | None = None
    phases: Literal[1, 3] = 1
    phase: Annotated[int, Field(ge=1, le=3)] = 1

    @model_validator(mode="after")
    def _min_below_max(self) -> ChargerSettings:
        if self.min_power_w is not None and self.min_power_w > self.max_power_w:
            raise ValueError("min_power_w must not exceed max_power_w")
        return self


def _charger_out(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in ("charger_id", *ChargerSettings.model_fields)}


@router.put("/v1/gateways/{gateway_id}/chargers/{charger_id}")
async def put_charger(
    gateway_id: GatewayPath,
    charger_id: ChargerPath,
    body: ChargerSettings,
    db: Db,
    user: User,
) -> dict[str, Any]:
    """Register (or change) a charger; the installer's."""
    await gateway_access(db, user, gateway_id, Access.INSTALL)
    row = await db.fetchrow(
        "INSERT INTO site_chargers (gateway_id, charger_id, connector_id,"
        " max_power_w, min_power_w, phases, phase)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (gateway_id, charger_id) DO UPDATE SET"
        " connector_id = excluded.connector_id, max_power_w = excluded.max_power_w,"
        " min_power_w = excluded.min_power_w, phases = excluded.phases,"
        " phase = excluded.phase, updated_at = now() RETURNING *",
        gateway_id,
        charger_id,
        body.connector_id,
        body.max_power_w,
        body.min_power_w,
        body.phases,
        body.phase,
    )
    return _charger_out(row)


@router.get("/v1/gateways/{gateway_id}/chargers/{charger_id}")
async def get_charger(
    gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
) -> dict[str, Any]:
    """A registered charger's settings."""
    await gateway_access(db, user, gateway_id, Access.READ)
    row = await db.fetchrow(
        "SELECT * FROM site_chargers WHERE gateway_id = $1 AND charger_id = $2",
        gateway_id,
        charger_id,
    )
    if row is None:
        raise HTTPException(404, f"no charger {charger_id!r} on {gateway_id!r}")
    return _charger_out(row)


@router.delete("/v1/gateways/{gateway_id}/chargers/{charger_id}", status_code=204)
async def delete_charger(
    gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
) -> Response:
    """Unregister a charger; the installer's."""
    await gateway_access(db, user, gateway_id, Access.INSTALL)
    done = await db.execute(
        "DELETE FROM site_chargers WHERE gateway_id = $1 AND charger_id = $2",
        gateway_id,
        charger_id,
    )
    if done.endswith(" 0"):
        raise HTTPException(404, f"no charger {charger_id!r} on {gateway_id!r}")
    return Response(status_code=204)
