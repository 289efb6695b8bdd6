"""``create_app``: the API process's FastAPI app, composed of one router per
resource (``cloud.api.*``), the error handlers, the web app's pages and the docs
(``cloud.api.docs``), with every request body capped and strictly parsed first
(``cloud.api.limits``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import APIRouter, FastAPI

from cloud.api import (
    accounts,
    bundle,
    chargers,
    charging,
    claims,
    commissioning,
    fleet,
    gateways,
    health,
    manual_readings,
    meters,
    prices,
    readings,
    sessions,
    sites,
)
from cloud.api.docs import add_docs
from cloud.api.errors import add_error_handlers
from cloud.api.limits import guard_requests
from cloud.auth import ApiSettings, FailureLimiter, LoginThrottle, bootstrap_operator
from cloud.web import mount as mount_web_app

# The order routes are matched in. Where two routers share a path with different
# methods (sites: GET then POST /v1/sites), the first listed answers a method
# neither has (405 and its Allow header), as when they were registered one by one.
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    gateways.router,
    readings.router,
    accounts.router,
    sites.router,
    sessions.router,
    manual_readings.router,
    fleet.router,
    chargers.router,
    charging.router,
    prices.router,
    claims.router,
    meters.router,
    bundle.router,
    commissioning.router,
)


def _add_limiters(app: FastAPI, settings: ApiSettings) -> None:
    """The per-process login throttle and claim limits (``cloud.auth``)."""
    app.state.login_throttle = LoginThrottle.from_settings(settings)
    app.state.claims_by_user = FailureLimiter(
        max_failures=settings.claim_max_failures,
        window_s=settings.claim_window_s,
    )


def create_app(dsn: str, *, settings: ApiSettings | None = None) -> FastAPI:
    """The API app on PostgreSQL at ``dsn``; ``settings`` default to the
    ``FUSEBOX_*`` environment (``ApiSettings``)."""
    api_settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Open the pool (and the bootstrap operator) for the app's life."""
        app.state.pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=8, timeout=10
        )
        try:
            await bootstrap_operator(app.state.pool, api_settings)
            yield
        finally:
            await app.state.pool.close()

    # the docs pages are served by cloud.api.docs, each with its CSP
    app = FastAPI(
        title="Fusebox cloud API",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.api_settings = api_settings
    _add_limiters(app, api_settings)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    mount_web_app(app)
    add_docs(app)
    guard_requests(app)  # body caps, strict JSON, nosniff: around everything
    return app
