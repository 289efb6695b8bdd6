"""Tariff curves (``/v1/tariffs/{tariff_id}/prices``): platform data operators
load (and the CLI), anyone signed in reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import Field, field_validator, model_validator

from cloud.api.deps import Db, TariffPath, User, UtcDatetime, require_role
from cloud.api.errors import field_error
from cloud.tariffs import store_tariff
from protocols.bodies import RequestBody
from protocols.lease import SLOT_MS

router = APIRouter()


class PriceSlot(RequestBody):
    """One half-hour slot of a tariff curve: its price and/or carbon intensity."""

    slot_start: UtcDatetime
    price_p_per_kwh: Annotated[float, Field(ge=-1000, le=1000)] | None = None
    carbon_g_per_kwh: Annotated[float, Field(ge=0, le=5000)] | None = None

    @field_validator("slot_start")
    @classmethod
    def _on_boundary(cls, v: datetime) -> datetime:
        if int(v.timestamp() * 1000) % SLOT_MS:
            raise ValueError("slot_start must be on a :00 or :30 boundary")
        return v.astimezone(UTC)

    @model_validator(mode="after")
    def _some_value(self) -> PriceSlot:
        if self.price_p_per_kwh is None and self.carbon_g_per_kwh is None:
            raise ValueError("give price_p_per_kwh and/or carbon_g_per_kwh")
        return self


@router.put("/v1/tariffs/{tariff_id}/prices")
async def put_prices(
    tariff_id: TariffPath,
    slots: Annotated[list[PriceSlot], Body(max_length=2 * 366 * 48)],
    db: Db,
    user: User,
    kind: Literal["dynamic", "tou", "flat"] = "dynamic",
) -> dict[str, Any]:
    """Tariff curves are platform data: operators load them (and the CLI)."""
    require_role(user, "operator")
    starts = [s.slot_start for s in slots]
    if len(set(starts)) != len(starts):
        raise field_error("slots", "a slot_start appears twice")
    async with db.acquire() as conn, conn.transaction():
        await store_tariff(
            conn,
            tariff_id,
            kind,
            None,
            [(s.slot_start, s.price_p_per_kwh, s.carbon_g_per_kwh) for s in slots],
        )
    return {"tariff_id": tariff_id, "kind": kind, "slots": len(slots)}


@router.get("/v1/tariffs/{tariff_id}/prices")
async def get_prices(
    tariff_id: TariffPath,
    db: Db,
    _user: User,
    since: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 96,
) -> dict[str, Any]:
    """The tariff's slots from ``since`` (default: its first), oldest first."""
    tariff = await db.fetchrow("SELECT * FROM tariffs WHERE id = $1", tariff_id)
    if tariff is None:
        raise HTTPException(404, f"no tariff {tariff_id!r}")
    rows = await db.fetch(
        "SELECT slot_start, price_p_per_kwh, carbon_g_per_kwh FROM tariff_slots"
        " WHERE tariff_id = $1 AND ($2::timestamptz IS NULL OR slot_start >= $2)"
        " ORDER BY slot_start LIMIT $3",
        tariff_id,
        since,
        limit,
    )
    return {
        "tariff_id": tariff_id,
        "kind": tariff["kind"],
        "updated_at": tariff["updated_at"],
        "slots": [dict(r) for r in rows],
    }
