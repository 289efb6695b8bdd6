"""The smart-charging part of the cloud API (issue 4): site and charger settings,
owners' charging preferences, the current plan, boost, and tariff prices.

Handlers only read and write PostgreSQL; the scheduler (a separate process) picks
the changes up, replans and talks to the gateways. A bad body is answered 422 with
the field named (``detail[].loc``), an unknown gateway or charger 404. Owner and
installer authentication: every endpoint needs a bearer token (``cloud.auth``);
site and charger settings are the installer's, preferences and boost the owner's
(or the installer's), reads anyone's who may see the gateway (an operator sees
all). A gateway the caller may not see is 404, like one that does not exist.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request
from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    field_validator,
    model_validator,
)

from cloud.api_errors import field_error
from cloud.auth import Access, Principal, User, gateway_access, require_role
from cloud.tariffs import store_tariff
from protocols.bodies import RequestBody
from protocols.lease import SLOT_MS

_GATEWAY = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_CHARGER = r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$"
_TARIFF = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"

_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _utc_in_range(v: datetime) -> datetime:
    """UTC, and within years 1970-9000 (PostgreSQL and Python both represent it)."""
    try:
        utc = v.astimezone(UTC) if v.tzinfo is not None else v.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("out of range") from None
    if not _EARLIEST <= utc <= _LATEST:
        raise ValueError("must be between 1970 and 9000")
    return utc


# a timezone-aware instant, returned in UTC
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc_in_range)]
# the same, a missing zone read as UTC (the readings endpoint always allowed it)
UtcOrNaiveDatetime = Annotated[datetime, AfterValidator(_utc_in_range)]

GatewayPath = Annotated[str, Path(pattern=_GATEWAY)]
ChargerPath = Annotated[str, Path(pattern=_CHARGER)]
TariffPath = Annotated[str, Path(pattern=_TARIFF)]


class SiteSettings(RequestBody):
    main_fuse_a: Annotated[float, Field(gt=0, le=2000)]
    phases: Literal[1, 3] = 1
    voltage_v: Annotated[float, Field(gt=0, le=1000)] = 230.0
    tariff_id: Annotated[str, Field(pattern=_TARIFF)] | None = None
    timezone: str = "Europe/London"
    objective: Literal["cost", "carbon", "mix"] = "cost"
    carbon_weight: Annotated[float, Field(ge=0, le=1)] = 0.5
    base_load_w: Annotated[float, Field(ge=0, le=1_000_000)] | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


class ChargerSettings(RequestBody):
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


class Preferences(RequestBody):
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
    until: UtcDatetime | None = None
    duration_min: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None = None

    @model_validator(mode="after")
    def _not_both(self) -> BoostBody:
        if self.until is not None and self.duration_min is not None:
            raise ValueError("give until or duration_min, not both")
        return self


class PriceSlot(RequestBody):
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


async def _db(request: Request) -> asyncpg.Pool:
    p: asyncpg.Pool = request.app.state.pool
    return p


Db = Annotated[asyncpg.Pool, Depends(_db)]


async def _charger(
    db: asyncpg.Pool, user: Principal, gw: str, charger: str, access: Access
) -> None:
    """404 unless the caller may see the gateway and the charger is configured or
    has been seen in a session; 403 if their role may not do ``access``."""
    await gateway_access(db, user, gw, access)
    known = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM site_chargers WHERE gateway_id = $1"
        " AND charger_id = $2) OR EXISTS (SELECT 1 FROM sessions"
        " WHERE gateway_id = $1 AND charger_id = $2)",
        gw,
        charger,
    )
    if not known:
        raise HTTPException(404, f"no charger {charger!r} on gateway {gw!r}")


def _site_out(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in (*SiteSettings.model_fields, "updated_at")}


def _prefs_out(row: asyncpg.Record) -> dict[str, Any]:
    out = {k: row[k] for k in (*Preferences.model_fields, "updated_at")}
    out["ready_by"] = row["ready_by"].strftime("%H:%M")
    return out


def add_scheduling_routes(app: FastAPI) -> None:
    """Register the smart-charging endpoints on ``app`` (its ``state.pool``)."""

    @app.put("/v1/gateways/{gateway_id}/site")
    async def put_site(
        gateway_id: GatewayPath, body: SiteSettings, db: Db, user: User
    ) -> dict[str, Any]:
        await gateway_access(db, user, gateway_id, Access.INSTALL)
        row = await db.fetchrow(
            "INSERT INTO sites (gateway_id, main_fuse_a, phases, voltage_v, tariff_id,"
            " timezone, objective, carbon_weight, base_load_w)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (gateway_id) DO UPDATE SET"
            " main_fuse_a = excluded.main_fuse_a, phases = excluded.phases,"
            " voltage_v = excluded.voltage_v,"
            " tariff_id = excluded.tariff_id, timezone = excluded.timezone,"
            " objective = excluded.objective, carbon_weight = excluded.carbon_weight,"
            " base_load_w = excluded.base_load_w, updated_at = now() RETURNING *",
            gateway_id,
            body.main_fuse_a,
            body.phases,
            body.voltage_v,
            body.tariff_id,
            body.timezone,
            body.objective,
            body.carbon_weight,
            body.base_load_w,
        )
        return _site_out(row)

    @app.get("/v1/gateways/{gateway_id}/site")
    async def get_site(gateway_id: GatewayPath, db: Db, user: User) -> dict[str, Any]:
        await gateway_access(db, user, gateway_id, Access.READ)
        row = await db.fetchrow("SELECT * FROM sites WHERE gateway_id = $1", gateway_id)
        if row is None:
            raise HTTPException(404, f"gateway {gateway_id!r} has no site settings")
        return _site_out(row)

    @app.put("/v1/gateways/{gateway_id}/chargers/{charger_id}")
    async def put_charger(
        gateway_id: GatewayPath,
        charger_id: ChargerPath,
        body: ChargerSettings,
        db: Db,
        user: User,
    ) -> dict[str, Any]:
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
        return {k: row[k] for k in ("charger_id", *ChargerSettings.model_fields)}

    @app.get("/v1/gateways/{gateway_id}/chargers/{charger_id}")
    async def get_charger(
        gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
    ) -> dict[str, Any]:
        await gateway_access(db, user, gateway_id, Access.READ)
        row = await db.fetchrow(
            "SELECT * FROM site_chargers WHERE gateway_id = $1 AND charger_id = $2",
            gateway_id,
            charger_id,
        )
        if row is None:
            raise HTTPException(404, f"no charger {charger_id!r} on {gateway_id!r}")
        return {k: row[k] for k in ("charger_id", *ChargerSettings.model_fields)}

    @app.put("/v1/gateways/{gateway_id}/chargers/{charger_id}/preferences")
    async def put_preferences(
        gateway_id: GatewayPath,
        charger_id: ChargerPath,
        body: Preferences,
        db: Db,
        user: User,
    ) -> dict[str, Any]:
        await _charger(db, user, gateway_id, charger_id, Access.CONTROL)
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

    @app.get("/v1/gateways/{gateway_id}/chargers/{charger_id}/preferences")
    async def get_preferences(
        gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
    ) -> dict[str, Any]:
        await _charger(db, user, gateway_id, charger_id, Access.READ)
        row = await db.fetchrow(
            "SELECT * FROM charging_preferences WHERE gateway_id = $1"
            " AND charger_id = $2",
            gateway_id,
            charger_id,
        )
        if row is None:
            raise HTTPException(404, f"no preferences for charger {charger_id!r}")
        return _prefs_out(row)

    @app.get("/v1/gateways/{gateway_id}/plan")
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
        await _charger(db, user, gw, charger, Access.CONTROL)
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

    @app.post("/v1/gateways/{gateway_id}/chargers/{charger_id}/boost", status_code=202)
    async def boost(
        gateway_id: GatewayPath,
        charger_id: ChargerPath,
        db: Db,
        user: User,
        body: Annotated[BoostBody | None, Body()] = None,
    ) -> dict[str, Any]:
        return await _command(db, user, gateway_id, charger_id, "boost", body)

    @app.post(
        "/v1/gateways/{gateway_id}/chargers/{charger_id}/cancel_boost",
        status_code=202,
    )
    async def cancel_boost(
        gateway_id: GatewayPath, charger_id: ChargerPath, db: Db, user: User
    ) -> dict[str, Any]:
        return await _command(db, user, gateway_id, charger_id, "cancel_boost", None)

    @app.get("/v1/gateways/{gateway_id}/commands/{command_id}")
    async def get_command(
        gateway_id: GatewayPath,
        command_id: Annotated[str, Path(max_length=64)],
        db: Db,
        user: User,
    ) -> dict[str, Any]:
        await gateway_access(db, user, gateway_id, Access.READ)
        row = await db.fetchrow(
            "SELECT * FROM commands WHERE gateway_id = $1 AND id = $2",
            gateway_id,
            command_id,
        )
        if row is None:
            raise HTTPException(404, f"no command {command_id!r} on {gateway_id!r}")
        return _command_out(row)

    @app.put("/v1/tariffs/{tariff_id}/prices")
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

    @app.get("/v1/tariffs/{tariff_id}/prices")
    async def get_prices(
        tariff_id: TariffPath,
        db: Db,
        _user: User,
        since: UtcDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=20_000)] = 96,
    ) -> dict[str, Any]:
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
