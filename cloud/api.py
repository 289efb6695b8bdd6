"""The cloud HTTP API: readings (issue 2), smart charging (issue 4), and the
people's side (issue 5): accounts, owners, installers and operators.

Every endpoint but ``/healthz``, ``/openapi.json`` and ``POST /v1/auth/login``
needs a bearer token (``cloud.auth``), and every gateway-scoped one checks tenancy:
what a caller may not see is 404, never 403. Device traffic never passes through
this process.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from cloud.api_errors import field_error
from cloud.api_installer import add_installer_routes
from cloud.api_people import add_people_routes
from cloud.api_scheduling import (
    GatewayPath,
    UtcDatetime,
    UtcOrNaiveDatetime,
    add_scheduling_routes,
)
from cloud.auth import (
    VISIBLE_GATEWAYS,
    Access,
    ApiSettings,
    FailureLimiter,
    User,
    bootstrap_operator,
    gateway_access,
)
from cloud.web import mount as mount_web_app
from protocols.readings import QUANTITIES

log = logging.getLogger("fusebox.cloud.api")


class GatewayPublic(BaseModel):
    id: str
    state: str
    last_seen: datetime | None
    software: str | None
    backlog_records: int | None
    backlog_oldest: datetime | None
    thinned_total: int
    rejected_total: int
    stored_through_seq: int | None


class ReadingPublic(BaseModel):
    seq: int
    ts: datetime
    device_id: str
    quantity: str
    value: float


async def _pool(request: Request) -> asyncpg.Pool:
    p: asyncpg.Pool = request.app.state.pool
    return p


Pool = Annotated[asyncpg.Pool, Depends(_pool)]

_CSV_ROWS_PER_CHUNK = 2000
# checked before the query: the CSV stream cannot turn a database error into a 4xx
# once it has started
DeviceQuery = Annotated[
    str | None, Query(min_length=1, max_length=128, pattern=r"^[^\x00]+$")
]


def create_app(dsn: str, *, settings: ApiSettings | None = None) -> FastAPI:
    """The API app on PostgreSQL at ``dsn``; ``settings`` default to the
    ``FUSEBOX_*`` environment (``ApiSettings``)."""
    api_settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=8, timeout=10
        )
        try:
            await bootstrap_operator(app.state.pool, api_settings)
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="Fusebox cloud API", version="1", lifespan=lifespan)
    app.state.api_settings = api_settings
    app.state.login_by_email = FailureLimiter(
        max_failures=api_settings.login_max_failures,
        window_s=api_settings.login_window_s,
    )
    app.state.login_by_ip = FailureLimiter(
        max_failures=api_settings.login_max_failures_per_ip,
        window_s=api_settings.login_window_s,
    )
    app.state.claims_by_user = FailureLimiter(
        max_failures=api_settings.claim_max_failures,
        window_s=api_settings.claim_window_s,
    )

    @app.exception_handler(asyncpg.DataError)
    async def _data_error(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # a value PostgreSQL cannot take (out of range, bad encoding) that got
        # past validation: still the caller's input, so 422, not 500
        log.warning("api: %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=422,
            # the published ValidationError shape; which field is not known here
            content={
                "detail": [
                    {"loc": [], "msg": f"invalid input: {exc}", "type": "value_error"}
                ]
            },
        )

    @app.get("/healthz")
    async def healthz(db: Pool) -> dict[str, Any]:
        try:
            await db.fetchval("SELECT 1", timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise HTTPException(503, f"database unavailable: {exc}") from exc
        return {"ok": True}

    @app.get("/v1/gateways", response_model=list[GatewayPublic])
    async def gateways(db: Pool, user: User) -> list[dict[str, Any]]:
        """The gateways the caller may see (an operator: all)."""
        rows = await db.fetch(
            "SELECT g.*, (SELECT max(stored_through_seq) FROM gateway_epochs e "
            "WHERE e.gateway_id = g.id) AS stored_through_seq "
            f"FROM gateways g WHERE g.id IN ({VISIBLE_GATEWAYS}) ORDER BY id",
            user.id,
            user.role,
        )
        return [dict(r) for r in rows]

    @app.get("/v1/gateways/{gateway_id}/readings", response_model=list[ReadingPublic])
    async def readings(
        gateway_id: GatewayPath,
        db: Pool,
        user: User,
        device_id: DeviceQuery = None,
        quantity: str | None = None,
        since: UtcOrNaiveDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        if quantity is not None and quantity not in QUANTITIES:
            raise field_error("quantity", f"unknown quantity {quantity!r}", "query")
        await gateway_access(db, user, gateway_id, Access.READ)
        rows = await db.fetch(
            "SELECT seq, ts, device_id, quantity, value FROM readings_v "
            "WHERE gateway_id = $1 AND ($2::text IS NULL OR device_id = $2) "
            "AND ($3::text IS NULL OR quantity = $3) "
            "AND ($4::timestamptz IS NULL OR ts >= $4) ORDER BY ts DESC LIMIT $5",
            gateway_id,
            device_id,
            quantity,
            since,
            limit,
        )
        return [dict(r) for r in rows]

    @app.get(
        "/v1/gateways/{gateway_id}/readings.csv",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def readings_csv(
        gateway_id: GatewayPath,
        db: Pool,
        user: User,
        since: UtcDatetime,
        until: UtcDatetime | None = None,
        device_id: DeviceQuery = None,
        quantity: str | None = None,
    ) -> StreamingResponse:
        """Readings from ``since`` (to ``until``), oldest first, streamed as CSV
        (``ts,device_id,quantity,value``)."""
        if quantity is not None and quantity not in QUANTITIES:
            raise field_error("quantity", f"unknown quantity {quantity!r}", "query")
        if until is not None and until <= since:
            raise field_error("until", "must be after since", "query")
        await gateway_access(db, user, gateway_id, Access.READ)
        query = (
            "SELECT r.ts, s.device_id, s.name, r.value FROM readings r"
            " JOIN streams s ON s.id = r.stream_id WHERE s.gateway_id = $1"
            " AND ($2::text IS NULL OR s.device_id = $2)"
            " AND ($3::text IS NULL OR s.name = $3) AND r.ts >= $4"
            " AND ($5::timestamptz IS NULL OR r.ts < $5) ORDER BY r.ts, s.id"
        )
        args = (gateway_id, device_id, quantity, since, until)

        async def rows() -> AsyncIterator[str]:
            buf = io.StringIO()
            out = csv.writer(buf, lineterminator="\n")
            out.writerow(["ts", "device_id", "quantity", "value"])
            n = 0
            async with db.acquire() as conn, conn.transaction(readonly=True):
                async for r in conn.cursor(query, *args, prefetch=1000):
                    out.writerow(
                        [r["ts"].isoformat(), r["device_id"], r["name"], r["value"]]
                    )
                    n += 1
                    if n % _CSV_ROWS_PER_CHUNK == 0:
                        yield buf.getvalue()
                        buf.seek(0)
                        buf.truncate()
            yield buf.getvalue()

        filename = f"{gateway_id}-readings.csv"
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    add_people_routes(app)
    add_scheduling_routes(app)
    add_installer_routes(app)
    mount_web_app(app)
    return app
