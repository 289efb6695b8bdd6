"""The cloud HTTP API (read side of issue 2; owners, installers and operators come
with issue 5). Device traffic never passes through this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel

from cloud.api_scheduling import add_scheduling_routes
from protocols.readings import QUANTITIES


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


def create_app(dsn: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=8, timeout=10
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(title="Fusebox cloud API", version="1", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz(db: Pool) -> dict[str, Any]:
        try:
            await db.fetchval("SELECT 1", timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise HTTPException(503, f"database unavailable: {exc}") from exc
        return {"ok": True}

    @app.get("/v1/gateways", response_model=list[GatewayPublic])
    async def gateways(db: Pool) -> list[dict[str, Any]]:
        rows = await db.fetch(
            "SELECT g.*, (SELECT max(stored_through_seq) FROM gateway_epochs e "
            "WHERE e.gateway_id = g.id) AS stored_through_seq "
            "FROM gateways g ORDER BY id"
        )
        return [dict(r) for r in rows]

    @app.get("/v1/gateways/{gateway_id}/readings", response_model=list[ReadingPublic])
    async def readings(
        gateway_id: str,
        db: Pool,
        device_id: str | None = None,
        quantity: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        if quantity is not None and quantity not in QUANTITIES:
            raise HTTPException(422, f"unknown quantity {quantity!r}")
        if not await db.fetchval("SELECT 1 FROM gateways WHERE id = $1", gateway_id):
            raise HTTPException(404, f"no gateway {gateway_id!r}")
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

    add_scheduling_routes(app)
    return app
