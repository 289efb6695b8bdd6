"""Meter readings typed in by hand (a meter read by eye, or a check on one the
gateway reads), issue 11: accepted into the durable intake (``cloud.intake``)
and answered 202 with a submission id, never written to PostgreSQL inside the
request. The intake's consumer stores each one once, idempotently, and only
when plausible next to the readings before and after it; the owner follows it
at ``GET /v1/gateways/{gw}/submissions/{id}`` (``accepted``, then ``stored`` or
``refused`` with the reason)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import Field, field_validator

from cloud.api.deps import (
    Access,
    Db,
    GatewayPath,
    MeterPath,
    User,
    UtcDatetime,
    gateway_access,
)
from cloud.api.errors import field_error
from cloud.intake import Intake, IntakeError, Submission
from protocols.bodies import RequestBody

router = APIRouter()

_IDEMPOTENCY_KEY = r"^[A-Za-z0-9_.:\-]{1,128}$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

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


def _reading_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "meter_id": row["meter_id"],
        "ts": row["ts"],
        "register_kwh": row["register_wh"] / 1000,
        "idempotency_key": row["idempotency_key"],
        "created_at": row["created_at"],
    }


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


def _submission_out(
    sub_id: str,
    gw: str,
    meter: str,
    ts: datetime,
    register_wh: float,
    key: str | None,
    state: str,
    reason: str | None = None,
    reading_id: int | None = None,
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "state": state,
        "reason": reason,
        "reading_id": reading_id,
        "gateway_id": gw,
        "meter_id": meter,
        "ts": ts,
        "register_kwh": register_wh / 1000,
        "idempotency_key": key,
        "location": f"/v1/gateways/{gw}/submissions/{sub_id}",
    }


def _decided_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        **_submission_out(
            str(row["id"]),
            row["gateway_id"],
            row["meter_id"],
            row["ts"],
            row["register_wh"],
            row["idempotency_key"],
            row["state"],
            row["reason"],
            row["reading_id"],
        ),
        "decided_at": row["decided_at"],
    }


async def _decided(db: asyncpg.Pool, gw: str, sub_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT * FROM manual_submissions WHERE id = $1 AND gateway_id = $2",
        uuid.UUID(sub_id),
        gw,
    )
    return row


def _busy(exc: IntakeError) -> HTTPException:
    return HTTPException(
        503,
        f"the reading was not accepted: {exc}; send it again",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


@router.post(
    "/v1/gateways/{gateway_id}/meters/{meter_id}/readings",
    status_code=202,
    responses={
        200: {"description": "the same reading, decided before: its outcome"},
        409: {"description": "the idempotency_key names a different reading"},
        503: {"description": "the intake cannot take it now; see Retry-After"},
    },
)
async def submit_reading(
    gateway_id: GatewayPath,
    meter_id: MeterPath,
    body: ManualReading,
    request: Request,
    response: Response,
    db: Db,
    user: User,
) -> dict[str, Any]:
    """A meter reading typed in: 202 once the intake keeps it, with the
    submission's ``id`` and ``location`` (``state``: ``accepted``); the same
    reading again (same ``idempotency_key``, or same meter, ``ts`` and value)
    has the same id, and once decided is answered 200 with the outcome. 409 when
    the key was already used for a stored, different reading; 503 with
    ``Retry-After`` when the intake cannot take it now. Plausibility (not below
    the last reading, not implausibly far above it, not above a later one) is
    decided by the intake's consumer: ``refused`` with the reason."""
    await gateway_access(db, user, gateway_id, Access.CONTROL)
    if body.ts > datetime.now(UTC) + timedelta(minutes=5):
        raise field_error("ts", "in the future")
    if not await db.fetchval(
        "SELECT 1 FROM site_meters WHERE gateway_id = $1 AND meter_id = $2",
        gateway_id,
        meter_id,
    ):
        raise HTTPException(404, f"no meter {meter_id!r} on {gateway_id!r}")
    sub = Submission.new(
        gateway_id,
        meter_id,
        body.ts,
        round(body.register_kwh * 1000, 3),
        body.idempotency_key,
        user.id,
        datetime.now(UTC),
    )
    done = await _decided(db, gateway_id, sub.id)
    if done is not None:
        response.status_code = 200
        return _decided_out(done)
    if body.idempotency_key:
        same = await db.fetchrow(
            "SELECT meter_id, ts, register_wh FROM manual_readings"
            " WHERE gateway_id = $1 AND idempotency_key = $2",
            gateway_id,
            body.idempotency_key,
        )
        if same is not None and (
            (same["meter_id"], same["ts"]) != (meter_id, sub.ts)
            or abs(same["register_wh"] - sub.register_wh) >= 1e-6
        ):
            raise HTTPException(
                409, "idempotency_key was already used for a different reading"
            )
    try:
        await _intake(request).accept(sub)
    except IntakeError as exc:
        raise _busy(exc) from None
    response.status_code = 202
    response.headers["Location"] = f"/v1/gateways/{gateway_id}/submissions/{sub.id}"
    return _submission_out(
        sub.id,
        gateway_id,
        meter_id,
        sub.ts,
        sub.register_wh,
        sub.idempotency_key,
        "accepted",
    )


@router.get("/v1/gateways/{gateway_id}/submissions/{submission_id}")
async def submission(
    gateway_id: GatewayPath,
    submission_id: Annotated[str, Path(pattern=_UUID)],
    request: Request,
    db: Db,
    user: User,
) -> dict[str, Any]:
    """A submitted reading: ``accepted`` (in the intake), ``stored``
    (``reading_id``) or ``refused`` (``reason``); 404 if unknown."""
    await gateway_access(db, user, gateway_id, Access.READ)
    sub_id = str(uuid.UUID(submission_id))
    done = await _decided(db, gateway_id, sub_id)
    if done is not None:
        return _decided_out(done)
    try:
        waiting = await _intake(request).pending(gateway_id, sub_id)
    except IntakeError as exc:
        raise _busy(exc) from None
    if waiting is None:
        # decided (and gone from the intake) since the first look?
        done = await _decided(db, gateway_id, sub_id)
        if done is not None:
            return _decided_out(done)
        raise HTTPException(404, f"no submission {submission_id!r} on {gateway_id!r}")
    return _submission_out(
        waiting.id,
        waiting.gateway_id,
        waiting.meter_id,
        waiting.ts,
        waiting.register_wh,
        waiting.idempotency_key,
        "accepted",
    )


@router.get("/v1/gateways/{gateway_id}/meters/{meter_id}/readings")
async def manual_readings(
    gateway_id: GatewayPath,
    meter_id: MeterPath,
    db: Db,
    user: User,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """Readings typed in for this meter and stored, newest first."""
    await gateway_access(db, user, gateway_id, Access.READ)
    rows = await db.fetch(
        "SELECT * FROM manual_readings WHERE gateway_id = $1 AND meter_id = $2"
        " ORDER BY ts DESC LIMIT $3",
        gateway_id,
        meter_id,
        limit,
    )
    return [_reading_out(r) for r in rows]
