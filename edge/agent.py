"""The edge agent: outbox, meters, uplink, metrics and the installer's local API
under one TaskGroup."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time

from edge import ConfigError
from edge.claim import load_or_create
from edge.config import EdgeConfig
from edge.controller import Controller
from edge.local_api import LocalApiServer, LocalSite
from edge.meters import MeterService
from edge.metrics import (
    age_seconds,
    bind_metrics,
    discovery_samples,
    meter_samples,
    ocpp_value_samples,
    outbox_samples,
    render_lines,
    serve_metrics,
    uplink_samples,
)
from edge.ocpp.server import OcppServer
from edge.outbox import Outbox
from edge.overrides import Overrides
from edge.paths import StatePaths
from edge.uplink import Uplink, UplinkConfig
from protocols.backoff import Backoff
from protocols.clock import Clock
from protocols.urls import parse_mqtt_url

log = logging.getLogger("fusebox.edge")

SOFTWARE = "fusebox-edge/0.1.0"


class EdgeAgent:
    """The gateway's parts, built from ``config``: the config in force
    (``load_config``'s). The installer's overrides are applied here as well, which
    changes nothing on ``load_config``'s and makes a config built any other way
    (``parse_config``) the one in force too; ``ConfigError`` if the overrides file
    is damaged."""

    def __init__(self, config: EdgeConfig, *, clock: Clock | None = None) -> None:
        # the files kept beside the outbox: claim code, overrides, OCPP, lease
        self.paths = StatePaths.beside(config.outbox.path)
        # the local page writes its changes (fuse, approved chargers) here
        self.overrides = Overrides(self.paths.overrides)
        config = self.overrides.apply(config)
        self.config = config
        self.clock = clock or Clock(real=time.time)
        self.outbox = Outbox.open(
            config.outbox.path,
            cap_bytes=int(config.outbox.cap_mb * 1024 * 1024),
            synchronous=config.outbox.synchronous,
        )
        self.meters = MeterService(config, self.outbox, clock=self.clock.now)
        # chargers connect to the gateway: only listen when there are any to expect
        self.ocpp: OcppServer | None = None
        self.controller: Controller | None = None
        if config.chargers or config.ocpp.allow_discovery:
            self.ocpp = OcppServer(
                config.ocpp,
                config.chargers,
                self.outbox,
                clock=self.clock.now,
                transactions_path=self.paths.ocpp_transactions,
            )
        target = parse_mqtt_url(config.cloud.mqtt_url)
        if config.cloud.username:
            target = dataclasses.replace(
                target, username=config.cloud.username, password=config.cloud.password
            )
        u = config.uplink
        self.uplink = Uplink(
            self.outbox,
            UplinkConfig(
                gateway_id=config.gateway_id,
                target=target,
                client_id=config.cloud.client_id or f"fusebox-edge-{config.gateway_id}",
                batch_max_records=u.batch_max_records,
                window=u.window,
                ack_timeout_s=u.ack_timeout_s,
                linger_s=u.linger_s,
                resend=Backoff(u.retry_base_s, u.retry_cap_s),
                status_interval_s=u.status_interval_s,
                software=SOFTWARE,
            ),
            extra_status=lambda: {
                "dropped_bad_input_total": self.meters.bad_total,
                "claim_sha256": self.claim.sha256,
                # full disk, by reason (the outbox thread replaces the dict whole)
                **{
                    k: self.outbox.store.counters[k]
                    for k in (
                        "thinned_disk_total",
                        "refused_cap_total",
                        "refused_disk_total",
                    )
                },
            },
        )
        # with discovery on and no charger yet, the controller waits for the
        # installer to approve one (the local page adds it live)
        if self.ocpp is not None and config.site.control != "off":
            self.controller = Controller(
                config,
                self.ocpp,
                clock=self.clock,
                post=lambda leaf, payload, key: self.uplink.post(
                    leaf, payload, key=key
                ),
                lease_path=self.paths.lease,
                # on a fast simulated clock, evaluate as often in simulated time
                # as the real clock would (a minute / 10 s), within real bounds
                tick_s=min(5.0, max(0.05, self.clock.real_seconds(60.0))),
                min_interval_s=min(0.2, max(0.01, self.clock.real_seconds(10.0))),
            )
            self.meters.observers.append(self.controller.on_meter)
            self.uplink.on_down = self.controller.on_down
        # the code the installer types to claim this gateway; only its hash
        # leaves the site (in the gateway status)
        self.claim = load_or_create(self.paths.claim)
        self.local_api: LocalApiServer | None = None
        if config.local_api_on:
            self.local_api = LocalApiServer(
                LocalSite(
                    config=config,
                    claim=self.claim,
                    overrides=self.overrides,
                    ocpp=self.ocpp,
                    controller=self.controller,
                    meters=self.meters,
                    uplink=self.uplink,
                    outbox=self.outbox,
                    software=SOFTWARE,
                    now=self.clock.now,
                ),
                config.local_api.listen,
            )

    async def run(self) -> None:
        """Run every part until cancelled.

        Raises ``ConfigError`` before anything starts when ``metrics.listen``
        cannot be bound (``fusebox edge run`` exits 2 with the message).
        """
        metrics_sock = None
        if self.config.metrics.listen:
            try:
                metrics_sock = bind_metrics(self.config.metrics.listen)
            except ConfigError:
                await self._close_outbox()
                raise
        try:
            await self._run(metrics_sock)
        finally:
            if metrics_sock is not None:
                metrics_sock.close()

    async def _run(self, metrics_sock: socket.socket | None) -> None:
        await self.outbox.start()
        log.info(
            "edge %s: outbox %s (epoch %d), %d meter(s), cloud %s",
            self.config.gateway_id,
            self.config.outbox.path,
            self.outbox.store.epoch,
            len(self.meters.drivers),
            parse_mqtt_url(self.config.cloud.mqtt_url).url(),
        )
        log.info("claim code: %s (%s)", self.claim.code, self.claim.path)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.meters.run(), name="meters")
                tg.create_task(self.uplink.run(), name="uplink")
                tg.create_task(self._progress(), name="progress")
                if self.ocpp is not None:
                    tg.create_task(self.ocpp.run(), name="ocpp")
                if self.controller is not None:
                    tg.create_task(self.controller.run(), name="controller")
                if self.local_api is not None:
                    tg.create_task(self.local_api.serve(), name="local-api")
                if metrics_sock is not None:
                    tg.create_task(
                        serve_metrics(metrics_sock, self.render_metrics),
                        name="metrics",
                    )
        finally:
            await self._close_outbox()

    async def _close_outbox(self) -> None:
        """Close the outbox even if cancelled again meanwhile.

        A shutdown can deliver more than one cancel (``run_until_signalled``
        repeats it after its grace period); one arriving here used to abandon
        the close half-way. The close itself is bounded (it waits for the commit
        loop and one SQLite close), and the forced exit bounds it as well.
        """
        closing = asyncio.ensure_future(self.outbox.close())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await closing
            raise
        finally:
            if closing.done() and not closing.cancelled() and not closing.exception():
                log.info("edge %s: outbox closed cleanly", self.config.gateway_id)

    async def _progress(self) -> None:
        last_app, last_acked, last_t = -1, 0, time.monotonic()
        while True:
            await asyncio.sleep(10)
            s = await self.outbox.stats()
            now = time.monotonic()
            app = s.counters["appended_total"]
            acked = self.uplink.metrics.records_acked
            if app != last_app or s.backlog_records:
                log.info(
                    "edge: %.0f readings/s in, %.0f/s acked by cloud; backlog %d "
                    "(oldest %.0f s), outbox %.1f MB of %.1f MB, thinned %d, cloud %s",
                    (app - max(last_app, 0)) / (now - last_t),
                    (acked - last_acked) / (now - last_t),
                    s.backlog_records,
                    age_seconds(s.backlog_oldest_ms),
                    s.used_bytes / 1e6,
                    s.cap_bytes / 1e6,
                    s.counters["thinned_total"],
                    "connected" if self.uplink.metrics.connected else "unreachable",
                )
            last_app, last_acked, last_t = app, acked, now

    async def render_metrics(self) -> str:
        """The Prometheus text of every part (README: "Edge metrics")."""
        samples = outbox_samples(await self.outbox.stats())
        samples += uplink_samples(self.uplink.metrics)
        samples += meter_samples(self.meters)
        if self.ocpp is not None:
            samples += discovery_samples(self.ocpp.discovery.registry)
        if self.ocpp is not None:
            samples += ocpp_value_samples(self.ocpp)
        if self.controller is not None:
            samples += self.controller.metrics()
        return render_lines(samples)
