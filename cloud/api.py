"""The cloud HTTP API: readings (issue 2), smart charging (issue 4), and the
people's side (issue 5): accounts, owners, installers and operators.

Every endpoint but ``/healthz``, ``/openapi.json`` and ``POST /v1/auth/login``
needs a bearer token (``cloud.auth``), and every gateway-scoped one checks tenancy:
what a caller may not see is 404, never 403. Device traffic never passes through
this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cloud.api_installer import add_installer_routes
from cloud.api_people import add_people_routes
from cloud.api_readings import add_readings_routes
from cloud.api_scheduling import add_scheduling_routes
from cloud.auth import (
    VISIBLE_GATEWAYS,
    ApiSettings,
    FailureLimiter,
    User,
    bootstrap_operator,
)
from cloud.web import mount as mount_web_app

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


async def _pool(request: Request) -> asyncpg.Pool:
    p: asyncpg.Pool = request.app.state.pool
    return p


Pool = Annotated[asyncpg.Pool, Depends(_pool)]

HEALTHZ_TIMEOUT_S = 2.0
"""``/healthz`` answers within this, whatever state PostgreSQL is in."""


async def database_problem(pool: asyncpg.Pool, timeout_s: float) -> str | None:
    """What keeps ``pool`` from answering ``SELECT 1`` within ``timeout_s``, in
    words, or None when it answered.

    One deadline covers all of it: waiting for a free pooled connection, opening a
    new one (the pool's own connect timeout is longer), the query, and handing the
    connection back. A pooled connection found dead (the server restarted, the link
    was cut) is replaced within the same deadline, so a database that is back
    reports healthy at once.
    """
    deadline_s = time.monotonic() + timeout_s
    problem, stale = await _select_one(pool, timeout_s, deadline_s)
    while stale and time.monotonic() < deadline_s:
        problem, stale = await _select_one(pool, timeout_s, deadline_s)
    return problem


def _terminate(conn: asyncpg.pool.PoolConnectionProxy) -> None:
    with contextlib.suppress(asyncpg.InterfaceError):  # released already
        conn.terminate()


async def _select_one(
    pool: asyncpg.Pool, timeout_s: float, deadline_s: float
) -> tuple[str | None, bool]:
    """One attempt of :func:`database_problem`: ``(problem, the pooled connection
    was dead)``. A connection that does not answer is terminated rather than
    cancelled: a cancel request needs a new connection to the same unreachable
    server, and releasing a connection waits for its cancellation to finish."""

    def remaining_s() -> float:
        return max(0.01, deadline_s - time.monotonic())

    busy = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
    try:
        async with asyncio.timeout(remaining_s()):
            conn = await pool.acquire()
    except TimeoutError:
        if busy:
            return (
                f"no free database connection within {timeout_s:g} s: all "
                f"{pool.get_max_size()} pooled connections are in use (pool exhausted)"
            ), False
        return (
            f"could not connect to PostgreSQL within {timeout_s:g} s "
            "(unreachable or not answering)"
        ), False
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"could not connect to PostgreSQL: {type(exc).__name__}: {exc}", False
    try:
        await conn.fetchval("SELECT 1", timeout=remaining_s())
        return None, False
    except TimeoutError:
        _terminate(conn)
        return f"PostgreSQL did not answer SELECT 1 within {timeout_s:g} s", False
    except asyncpg.PostgresConnectionError as exc:
        _terminate(conn)
        return f"database connection lost: {exc}", True
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        _terminate(conn)
        return f"database error: {type(exc).__name__}: {exc}", False
    finally:
        # shielded inside asyncpg: a release that hangs is left to finish alone
        with contextlib.suppress(TimeoutError, OSError, asyncpg.InterfaceError):
            async with asyncio.timeout(remaining_s()):
                await pool.release(conn)


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

    @app.get(
        "/healthz",
        responses={503: {"description": "the database did not answer in time"}},
    )
    async def healthz(db: Pool) -> Any:
        """200 ``{"ok": true}`` when PostgreSQL answers ``SELECT 1`` within
        ``HEALTHZ_TIMEOUT_S``, else 503 ``{"ok": false, "detail": why}``, also
        within that time (a load balancer's check must not hang)."""
        problem = await database_problem(db, HEALTHZ_TIMEOUT_S)
        if problem is not None:
            log.warning("healthz: %s", problem)
            return JSONResponse(
                status_code=503, content={"ok": False, "detail": problem}
            )
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

    add_readings_routes(app)
    add_people_routes(app)
    add_scheduling_routes(app)
    add_installer_routes(app)
    mount_web_app(app)
    return app
