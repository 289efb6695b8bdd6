"""Entry points of the cloud services. The CLI (``fusebox cloud ...``) resolves the
connection targets (and starts embedded servers when none are given) and calls
these with real URLs."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from cloud.api import create_app
from cloud.auth import ApiSettings
from cloud.db import migrate
from cloud.ingest import IngestWorker
from cloud.intake import IntakeSettings
from cloud.scheduler import Scheduler, SchedulerSettings
from cloud.settings import CloudSettings
from protocols.clock import Clock
from protocols.urls import parse_mqtt_url

log = logging.getLogger("fusebox.cloud")


def _targets(settings: CloudSettings) -> tuple[str, str]:
    if not settings.database_url or not settings.cloud_mqtt_url:
        raise ValueError("database_url and cloud_mqtt_url must be resolved first")
    return settings.database_url, settings.cloud_mqtt_url


async def run_ingest(settings: CloudSettings, *, shared: bool) -> None:
    """Migrate the database, then run one ingest worker until cancelled: on the
    backbone's JetStream stream when ``backbone_url`` is set (then only the
    database must be resolved), else on MQTT (both targets must be)."""
    if settings.backbone_url:
        await run_ingest_jetstream(settings)
        return
    dsn, mqtt_url = _targets(settings)
    await migrate(dsn)
    worker = IngestWorker(
        dsn=dsn,
        mqtt=parse_mqtt_url(mqtt_url),
        shared=shared,
        concurrency=settings.ingest_concurrency,
        queue_max=settings.ingest_queue,
        client_id=settings.ingest_client_id,
    )
    await worker.run()


async def run_ingest_jetstream(settings: CloudSettings) -> None:
    """Migrate, then consume ``FUSEBOX_UP`` as the durable ``ingest`` until
    cancelled (``cloud.ingest_jetstream``)."""
    from cloud.ingest_jetstream import JetStreamIngest

    if not settings.database_url or not settings.backbone_url:
        raise ValueError("database_url and backbone_url must be resolved first")
    await migrate(settings.database_url)
    urls = [u.strip() for u in settings.backbone_url.split(",") if u.strip()]
    worker = JetStreamIngest(
        dsn=settings.database_url,
        nats_urls=urls,
        concurrency=settings.ingest_concurrency,
        name=settings.ingest_client_id,
    )
    await worker.run()


def api_config(settings: CloudSettings, app: FastAPI) -> uvicorn.Config:
    """uvicorn's configuration of the API: ``api_host``/``api_port``, and proxy
    headers only from ``FUSEBOX_TRUSTED_PROXIES`` (uvicorn's own default would
    believe ``X-Forwarded-For`` from loopback, letting a local client choose its
    address for the login throttle)."""
    trusted = settings.trusted_proxy_list
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        lifespan="on",
        proxy_headers=bool(trusted),
        # never None: uvicorn would read FORWARDED_ALLOW_IPS (default loopback)
        forwarded_allow_ips=trusted or [],
    )


async def run_api(settings: CloudSettings) -> None:
    """Migrate the database, then serve the HTTP API until cancelled; the broker URL is
    optional (only config bundles name it)."""
    # the API never speaks MQTT (decision 3); the broker URL only goes into the
    # gateways' config bundles, so it may be unset here
    dsn, mqtt_url = settings.database_url, settings.cloud_mqtt_url
    if not dsn:
        raise ValueError("database_url must be resolved first")
    await migrate(dsn)
    # the broker URL that config bundles name (FUSEBOX_PUBLIC_MQTT_URL wins)
    # the SQLite intake of manual readings lives in this process's state dir
    # (a --state-dir flag is not in the environment IntakeSettings reads)
    intake = IntakeSettings().model_copy(update={"state_dir": Path(settings.state_dir)})
    app = create_app(
        dsn, settings=ApiSettings(cloud_mqtt_url=mqtt_url), intake_settings=intake
    )
    server = uvicorn.Server(api_config(settings, app))
    log.info("api: serving on http://%s:%d", settings.api_host, settings.api_port)
    # The surrounding process owns the signals: one Ctrl-C cancels every service
    # of ``fusebox cloud run``, so serve without uvicorn's own signal capture.
    await server._serve()


async def run_scheduler(
    settings: CloudSettings,
    *,
    clock: Clock | None = None,
    scheduler: SchedulerSettings | None = None,
) -> None:
    """Migrate the database, then run the scheduler until cancelled (both targets must
    be resolved)."""
    dsn, mqtt_url = _targets(settings)
    await migrate(dsn)
    service = Scheduler(
        dsn=dsn,
        mqtt=parse_mqtt_url(mqtt_url),
        clock=clock or Clock(real=time.time),
        settings=scheduler or SchedulerSettings(),
    )
    await service.run()


async def run_all(
    settings: CloudSettings, *, shared: bool, clock: Clock | None = None
) -> None:
    """Every cloud service in one process (small sites, the demo)."""
    dsn, _ = _targets(settings)
    await migrate(dsn)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run_ingest(settings, shared=shared), name="ingest")
        tg.create_task(run_api(settings), name="api")
        tg.create_task(run_scheduler(settings, clock=clock), name="scheduler")
