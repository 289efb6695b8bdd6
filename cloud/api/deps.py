"""The dependencies every API router shares, as ``Annotated`` aliases a handler
names in its signature (the full-stack-fastapi-template ``api/deps.py``).

* ``Db``: the process's asyncpg pool (``app.state.pool``, opened by the lifespan in
  ``cloud.api.app``); ``Settings``: its ``ApiSettings``.
* ``User``: the caller, from the bearer token (``cloud.auth.current_user``); a
  missing, unknown, expired or revoked token is 401.
* Access checks stay calls in the handler body (``gateway_access``,
  ``charger_access``, ``require_role``), not dependencies, so a malformed request
  is answered 422 before anyone is asked who they are allowed to see.
* Path parameter types (``GatewayPath`` ...) and the datetime types the bodies and
  queries share (``UtcDatetime``: aware, returned in UTC, years 1970 to 9000).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Path, Request
from pydantic import AfterValidator, AwareDatetime

from cloud.auth import (
    VISIBLE_GATEWAYS,
    Access,
    ApiSettings,
    Principal,
    User,
    gateway_access,
    require_role,
)

__all__ = [
    "VISIBLE_GATEWAYS",
    "Access",
    "ChargerPath",
    "Db",
    "GatewayPath",
    "MeterPath",
    "Principal",
    "Settings",
    "TariffPath",
    "User",
    "UtcDatetime",
    "UtcOrNaiveDatetime",
    "charger_access",
    "gateway_access",
    "require_role",
]

GATEWAY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
CHARGER_PATTERN = r"^[A-Za-z0-9*\-_=:+|@.]{1,48}$"
TARIFF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
METER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


async def _pool(request: Request) -> asyncpg.Pool:
    p: asyncpg.Pool = request.app.state.pool
    return p


def _settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.api_settings
    return s


Db = Annotated[asyncpg.Pool, Depends(_pool)]
Settings = Annotated[ApiSettings, Depends(_settings)]

GatewayPath = Annotated[str, Path(pattern=GATEWAY_PATTERN)]
ChargerPath = Annotated[str, Path(pattern=CHARGER_PATTERN)]
TariffPath = Annotated[str, Path(pattern=TARIFF_PATTERN)]
MeterPath = Annotated[str, Path(pattern=METER_PATTERN)]


def _utc_in_range(v: datetime) -> datetime:
    """UTC, and within years 1970-9000 (PostgreSQL and Python both represent it)."""
    try:
        utc = v.astimezone(UTC) if v.tzinfo is not None else v.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError("out of range") from None
    if not EARLIEST <= utc <= LATEST:
        raise ValueError("must be between 1970 and 9000")
    return utc


# a timezone-aware instant, returned in UTC
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc_in_range)]
# the same, a missing zone read as UTC (the readings endpoint always allowed it)
UtcOrNaiveDatetime = Annotated[datetime, AfterValidator(_utc_in_range)]


async def charger_access(
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
