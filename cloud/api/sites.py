"""Sites: the caller's sites with their chargers, meters and gateway status; a
site's settings (the installer's); creating a claimed gateway's site for an
owner (an invitation by e-mail that answers the same whether or not the e-mail
has an account); and the owner's view of the installers with access to their
home, which they may keep or revoke (``cloud.installer_access``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import APIRouter, HTTPException, Path
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
    require_role,
)
from cloud.api.gateways import gateway_status
from cloud.auth import ApiSettings, normalise_email
from cloud.installer_access import installers, keep, revoke, take_over_invited_sites
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


def _settings_args(body: Any) -> tuple[Any, ...]:
    """The site settings of a create or update body, in the order both SQL
    statements take them ($2..$9)."""
    return (
        body.main_fuse_a,
        body.phases,
        body.voltage_v,
        body.tariff_id,
        body.timezone,
        body.objective,
        body.carbon_weight,
        body.base_load_w,
    )


async def site_view(
    db: asyncpg.Pool, gateway_ids: list[str], settings: ApiSettings
) -> list[dict[str, Any]]:
    """Sites with their chargers, meters and gateway status, one per gateway."""
    gws = await db.fetch(
        "SELECT g.*, s.main_fuse_a, s.phases, s.voltage_v, s.tariff_id, s.timezone,"
        " s.objective, coalesce(u.email, s.owner_invite_email) AS owner_email,"
        " s.gateway_id IS NOT NULL AS has_site"
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
    chargers, meters and gateway status. An owner takes over the sites set up
    for their e-mail here (``cloud.installer_access``)."""
    if user.role == "owner":
        grace = timedelta(days=st.installer_access_days)
        await take_over_invited_sites(db, user.id, user.email, grace)
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
        *_settings_args(body),
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


_CREATE = """
INSERT INTO sites (gateway_id, main_fuse_a, phases, voltage_v, tariff_id, timezone,
                   objective, carbon_weight, base_load_w, owner_invite_email)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (gateway_id) DO UPDATE SET
    main_fuse_a = excluded.main_fuse_a, phases = excluded.phases,
    voltage_v = excluded.voltage_v, tariff_id = excluded.tariff_id,
    timezone = excluded.timezone, objective = excluded.objective,
    carbon_weight = excluded.carbon_weight, base_load_w = excluded.base_load_w,
    owner_invite_email = CASE WHEN sites.owner_id IS NULL
                              THEN excluded.owner_invite_email END,
    updated_at = now()
"""


@router.post("/v1/sites", status_code=201)
async def create_site(
    body: SiteCreate, db: Db, user: User, st: Settings
) -> dict[str, Any]:
    """Create (or update) the site of a gateway the installer claimed, for the
    owner with ``owner_email``. The answer is the same whether or not an account
    has that e-mail: the site waits for its owner, who takes it over at their
    next login (an account the operator makes later for that e-mail too). Until
    then the e-mail may be corrected; after it, another owner's e-mail is 409."""
    await gateway_access(db, user, body.gateway_id, Access.INSTALL)
    email = normalise_email(body.owner_email)
    async with db.acquire() as conn, conn.transaction():
        owner = await conn.fetchval(
            # the site row stays locked, so a take-over waits for this change
            "SELECT u.email FROM sites s LEFT JOIN users u ON u.id = s.owner_id"
            " WHERE s.gateway_id = $1 FOR UPDATE OF s",
            body.gateway_id,
        )
        if owner is not None and owner != email:
            raise HTTPException(
                409,
                f"gateway {body.gateway_id!r}'s site has been taken over by its "
                "owner; give that owner's e-mail to change its settings",
            )
        await conn.execute(
            _CREATE,
            body.gateway_id,
            *_settings_args(body),
            email,
        )
    [one] = await site_view(db, [body.gateway_id], st)
    return one


# ------------------------------------------------------- installers' access


InstallerPath = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/v1/gateways/{gateway_id}/installers")
async def site_installers(
    gateway_id: GatewayPath, db: Db, user: User
) -> dict[str, Any]:
    """The installers who have (or had) access to the home, each with its state:
    ``active`` (not handed over yet), ``expires`` at ``expires_at``, ``kept``
    by the owner, ``expired`` or ``revoked``. For the owner (and operators)."""
    await gateway_access(db, user, gateway_id, Access.READ)
    require_role(user, "owner", "operator")
    handed_over_at = await db.fetchval(
        "SELECT handed_over_at FROM sites WHERE gateway_id = $1", gateway_id
    )
    return {
        "gateway_id": gateway_id,
        "handed_over_at": handed_over_at,
        "installers": await installers(db, gateway_id),
    }


async def _installer_action(
    db: Db, user: User, gateway_id: str, installer_id: int, keep_access: bool
) -> dict[str, Any]:
    await gateway_access(db, user, gateway_id, Access.OWN)
    change = keep if keep_access else revoke
    out = await change(db, gateway_id, installer_id)
    if out is None:
        raise HTTPException(
            404, f"user {installer_id} is no installer of gateway {gateway_id!r}"
        )
    return out


@router.post("/v1/gateways/{gateway_id}/installers/{installer_id}/keep")
async def keep_installer(
    gateway_id: GatewayPath, installer_id: InstallerPath, db: Db, user: User
) -> dict[str, Any]:
    """The owner keeps an installer's access with no end (also restores it
    after expiry or revocation)."""
    return await _installer_action(db, user, gateway_id, installer_id, True)


@router.post("/v1/gateways/{gateway_id}/installers/{installer_id}/revoke")
async def revoke_installer(
    gateway_id: GatewayPath, installer_id: InstallerPath, db: Db, user: User
) -> dict[str, Any]:
    """The owner ends an installer's access to their home now."""
    return await _installer_action(db, user, gateway_id, installer_id, False)
