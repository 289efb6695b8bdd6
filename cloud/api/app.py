"""``create_app``: the API process's FastAPI app, composed of one router per
resource (``cloud.api.*``), the error handlers, the web app's pages and the docs
(``cloud.api.docs``), with every request admitted or refused first by priority
class (``cloud.api.admission``) and every body capped and strictly parsed
(``cloud.api.limits``). Its lifespan opens the database pool, the bounded
password-hashing pool (``cloud.passwords.HashPool``) and the intake of manual
readings (``cloud.intake``), whose consumer runs as a task of this process
unless ``FUSEBOX_INTAKE_CONSUMER=off``."""

from __future__ import annotations

import asyncio
import contextlib
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
from cloud.api.admission import (
    Admission,
    AdmissionPlan,
    AdmissionSettings,
    default_limits,
)
from cloud.api.docs import add_docs
from cloud.api.errors import add_error_handlers
from cloud.api.limits import guard_requests
from cloud.auth import (
    ApiSettings,
    FailureLimiter,
    LoginThrottle,
    bootstrap_operator,
    hashing_busy,
)
from cloud.intake import Intake, IntakeConsumer, IntakeSettings, intake_from_settings
from cloud.passwords import HashPool, HashPoolFull
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


def _admission(app: FastAPI, settings: AdmissionSettings | None) -> None:
    """Admission control around everything (``FUSEBOX_ADMISSION=off``: the
    surge benchmark's comparison only); the plan is ``app.state.admission``."""
    s = settings or AdmissionSettings()
    plan = AdmissionPlan(default_limits(s.api_max_in_flight), s.api_max_in_flight)
    app.state.admission = plan
    app.add_middleware(Admission, plan=plan, enabled=s.admission == "on")


@contextlib.asynccontextmanager
async def _intake_running(
    app: FastAPI, intake: Intake, consume: bool
) -> AsyncIterator[None]:
    """Open ``intake`` (``app.state.intake``) and, if ``consume``, run its
    consumer as a task (``app.state.intake_consumer``) for the app's life."""
    await intake.start()
    app.state.intake = intake
    task: asyncio.Task[None] | None = None
    if consume:
        app.state.intake_consumer = IntakeConsumer(intake, app.state.pool)
        task = asyncio.create_task(
            app.state.intake_consumer.run(), name="intake-consumer"
        )
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await intake.close()


def create_app(
    dsn: str,
    *,
    settings: ApiSettings | None = None,
    intake: Intake | None = None,
    intake_settings: IntakeSettings | None = None,
    admission: AdmissionSettings | None = None,
    hash_pool: HashPool | None = None,
) -> FastAPI:
    """The API app on PostgreSQL at ``dsn``; ``settings``, the intake,
    admission and the hashing pool default to the ``FUSEBOX_*`` environment
    (``ApiSettings``, ``IntakeSettings``, ``AdmissionSettings``,
    ``HashPoolSettings``)."""
    api_settings = settings or ApiSettings()
    in_settings = intake_settings or IntakeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Open the pools, the intake (and the bootstrap operator) for the
        app's life."""
        app.state.pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=8, timeout=10
        )
        app.state.hash_pool = hash_pool or HashPool.from_settings()
        try:
            await bootstrap_operator(app.state.pool, api_settings)
            async with _intake_running(
                app,
                intake or intake_from_settings(in_settings, dsn),
                in_settings.intake_consumer == "on",
            ):
                yield
        finally:
            app.state.hash_pool.close()
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
    app.add_exception_handler(HashPoolFull, hashing_busy)
    for router in ROUTERS:
        app.include_router(router)
    mount_web_app(app)
    add_docs(app)
    guard_requests(app)  # body caps, strict JSON, nosniff: around everything
    _admission(app, admission)  # outermost: refused before the body is read
    return app
