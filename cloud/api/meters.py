"""Meters of a site, as the installer registers them (``PUT``, ``GET`` and
``DELETE /v1/gateways/{gateway_id}/meters[/{meter_id}]``): at most one measures
the whole site's import (``role`` site, the fuse guard's input)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from fastapi import APIRouter, HTTPException, Response
from pydantic import Field, field_validator, model_validator

from cloud.api.deps import Access, Db, GatewayPath, MeterPath, User, gateway_access
from protocols.bodies import RequestBody

router = APIRouter()


class MeterSettings(RequestBody):
    """A meter's registration: its type, MQTT topic and role."""

    type: Literal["glow", "tasmota", "shelly", "manual"]
    topic: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="glow: glow/<MAC>; tasmota: tele/<topic>; shelly: the MQTT "
        "prefix; manual (read by eye): none",
    )
    timezone: str | None = Field(default=None, description="tasmota only")
    role: Literal["site", "other"] | None = Field(
        default=None,
        description="site: measures the whole site's import (the fuse guard's "
        "input); default: site, or other for a manual meter",
    )

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str | None) -> str | None:
        if v is not None and (set(v) & {"#", "+", "\x00"} or v.startswith("$")):
            raise ValueError("a topic without wildcards (#, +) and not $SYS")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @model_validator(mode="after")
    def _topic_iff_mqtt(self) -> MeterSettings:
        if self.type == "manual" and self.topic is not None:
            raise ValueError("topic: a manual meter has no topic")
        if self.type != "manual" and self.topic is None:
            raise ValueError(f"topic: a {self.type} meter needs its MQTT topic")
        if self.timezone is not None and self.type != "tasmota":
            raise ValueError("timezone: only tasmota meters have one")
        if self.role is None:
            self.role = "other" if self.type == "manual" else "site"
        return self


@router.put("/v1/gateways/{gateway_id}/meters/{meter_id}")
async def put_meter(
    gateway_id: GatewayPath,
    meter_id: MeterPath,
    body: MeterSettings,
    db: Db,
    user: User,
) -> dict[str, Any]:
    """Register (or change) a meter; at most one has ``role`` site."""
    await gateway_access(db, user, gateway_id, Access.INSTALL)
    try:
        row = await db.fetchrow(
            "INSERT INTO site_meters (gateway_id, meter_id, type, topic, timezone,"
            " role) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (gateway_id, meter_id) DO UPDATE SET"
            " type = excluded.type, topic = excluded.topic,"
            " timezone = excluded.timezone, role = excluded.role,"
            " updated_at = now() RETURNING *",
            gateway_id,
            meter_id,
            body.type,
            body.topic,
            body.timezone,
            body.role,
        )
    except asyncpg.UniqueViolationError:
        raise HTTPException(
            409,
            f"gateway {gateway_id!r} already has a site meter; give this one "
            "role 'other' or change that one first",
        ) from None
    assert row is not None
    return {k: row[k] for k in ("meter_id", "type", "topic", "timezone", "role")}


@router.get("/v1/gateways/{gateway_id}/meters")
async def list_meters(
    gateway_id: GatewayPath, db: Db, user: User
) -> list[dict[str, Any]]:
    """The gateway's registered meters, each with when it last sent a reading."""
    await gateway_access(db, user, gateway_id, Access.READ)
    rows = await db.fetch(
        "SELECT m.*, (SELECT max(r.ts) FROM readings r JOIN streams s"
        " ON s.id = r.stream_id WHERE s.gateway_id = m.gateway_id"
        " AND s.device_id = m.meter_id) AS last_reading_at"
        " FROM site_meters m WHERE m.gateway_id = $1 ORDER BY m.meter_id",
        gateway_id,
    )
    return [
        {
            k: r[k]
            for k in (
                "meter_id",
                "type",
                "topic",
                "timezone",
                "role",
                "last_reading_at",
            )
        }
        for r in rows
    ]


@router.delete("/v1/gateways/{gateway_id}/meters/{meter_id}", status_code=204)
async def delete_meter(
    gateway_id: GatewayPath, meter_id: MeterPath, db: Db, user: User
) -> Response:
    """Unregister a meter; the installer's."""
    await gateway_access(db, user, gateway_id, Access.INSTALL)
    done = await db.execute(
        "DELETE FROM site_meters WHERE gateway_id = $1 AND meter_id = $2",
        gateway_id,
        meter_id,
    )
    if done.endswith(" 0"):
        raise HTTPException(404, f"no meter {meter_id!r} on {gateway_id!r}")
    return Response(status_code=204)
