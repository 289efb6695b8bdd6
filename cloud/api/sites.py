"""Sites: the caller's sites with their chargers, meters and gateway status; a
site's settings (the installer's); and creating a claimed gateway's site for an
owner."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import APIRouter, HTTPException
from pydantic import Field, field_validator

from cloud.api.deps import (
    GATEWAY_PATTERN,
    TARIFF_PATTERN,
    VISIBLE_GATEWAYS,
    Access,
    Db,
    GatewayPath,
    Settings,
    User,
    gateway_access,
)
from cloud.api.errors import field_error
from cloud.api.gateways import gateway_status
from cloud.auth import ApiSettings, normalise_email
from protocols.bodies import RequestBody

router = APIRouter()

_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,189}$"


class SiteSettings(RequestBody):
    """A site's settings: its supply, tariff, time zone and what to optimise."""

    main_fuse_a: Annotated[float, Field(gt=0, le=2000)]
    phases: Literal[1, 3] = 1
    voltage_v: Annotated[float, Field(gt=0, le=1000)] = 230.0
    tariff_id: Annotated[str, Field(pattern=TARIFF_PATTERN)] | None = None
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


class SiteCreate(SiteSettings):
    """A claimed gateway's site, for the owner with ``owner_email``."""

    gateway_id: Annotated[str, Field(pattern=GATEWAY_PATTERN)]
    owner_email: Annotated[str, Field(pattern=_EMAIL, max_length=254)]


def _site_out(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in (*SiteSettings.model_fields, "updated_at")}


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


@router.get("/v1/sites")
async def sites(db: Db, user: User, st: Settings) -> list[dict[str, Any]]:
    """The caller's sites (an installer's: assigned; an operator's: all) with
    chargers, meters and gateway status."""
    gws = await db.fetch(VISIBLE_GATEWAYS, user.id, user.role)
    return await site_view(db, [r["id"] for r in gws], st)


@router.get("/v1/sites/{gateway_id}")
async def site(
    gateway_id: GatewayPath, db: Db, user: User, st: Settings
) -> dict[str, Any]:
    """One site the caller may see, with chargers, meters and gateway status."""
    await gateway_access(db, user, gateway_id, Access.READ)
    [one] = await site_view(db, [gateway_id], st)
    return one


@router.put("/v1/gateways/{gateway_id}/site")
async def put_site(
    gateway_id: GatewayPath, body: SiteSettings, db: Db, user: User
) -> dict[str, Any]:
    """Set (or change) the site's settings; the installer's."""
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


@router.get("/v1/gateways/{gateway_id}/site")
async def get_site(gateway_id: GatewayPath, db: Db, user: User) -> dict[str, Any]:
    """The site's settings; 404 before they are set."""
    await gateway_access(db, user, gateway_id, Access.READ)
    row = await db.fetchrow("SELECT * FROM sites WHERE gateway_id = $1", gateway_id)
    if row is None:
        raise HTTPException(404, f"gateway {gateway_id!r} has no site settings")
    return _site_out(row)


@router.post("/v1/sites", status_code=201)
async def create_site(
    body: SiteCreate, db: Db, user: User, st: Settings
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
    [one] = await site_view(db, [body.gateway_id], st)
    return one
