"""The edge agent: outbox, meters, uplink, metrics and the installer's local API
under one TaskGroup."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time

from edge import ConfigError
from edge.claim import claim_path_beside, load_or_create
from edge.config import EdgeConfig
from edge.controller import Controller
from edge.local_api import LocalApiServer, LocalSite, Overrides, overrides_path_beside
from edge.meters import MeterService
from edge.metrics import age_seconds, bind_metrics, render_lines, serve_metrics
from edge.ocpp.server import OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from protocols.backoff import Backoff
from protocols.clock import Clock
from protocols.urls import parse_mqtt_url

log = logging.getLogger("fusebox.edge")

SOFTWARE = "fusebox-edge/0.1.0"


class EdgeAgent:
    def __init__(self, config: EdgeConfig, *, clock: Clock | None = None) -> None:
        # what the installer set on the local page (fuse, approved chargers)
        # applies on top of the config file; ConfigError if it is unreadable
        self.overrides = Overrides(overrides_path_beside(config.outbox.path))
        config = self.overrides.apply(config)
        self.config = config
        self.clock = clock or Clock()
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
                transactions_path=store_path_beside(config.outbox.path),
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
            outbox_path = config.outbox.path
            self.controller = Controller(
                config,
                self.ocpp,
                clock=self.clock,
                post=lambda leaf, payload, key: self.uplink.post(
                    leaf, payload, key=key
                ),
                lease_path=outbox_path.with_name(outbox_path.stem + "-lease.msgpack"),
                # on a fast simulated clock, evaluate as often in simulated time
                # as the real clock would (a minute / 10 s), within real bounds
                tick_s=min(5.0, max(0.05, self.clock.real_seconds(60.0))),
                min_interval_s=min(0.2, max(0.01, self.clock.real_seconds(10.0))),
            )
            self.meters.observers.append(self.controller.on_meter)
            self.uplink.on_down = self.controller.on_down
        # the code the installer types to claim this gateway; only its hash
        # leaves the site (in the gateway status)
        self.claim = load_or_create(claim_path_beside(config.outbox.path))
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
        s = await self.outbox.stats()
        u = self.uplink.metrics
        c = s.counters
        samples: list[tuple[str, str, dict[str, str], float]] = [
            (
                "fusebox_outbox_backlog_records",
                "records waiting for the cloud",
                {},
                s.backlog_records,
            ),
            (
                "fusebox_outbox_backlog_age_seconds",
                "age of the oldest waiting record",
                {},
                age_seconds(s.backlog_oldest_ms),
            ),
            (
                "fusebox_outbox_used_bytes",
                "bytes in use in the outbox",
                {},
                s.used_bytes,
            ),
            ("fusebox_outbox_cap_bytes", "outbox disk cap", {}, s.cap_bytes),
            (
                "fusebox_outbox_appended_total",
                "records appended",
                {},
                c["appended_total"],
            ),
            (
                "fusebox_outbox_thinned_total",
                "power samples thinned at the cap",
                {},
                c["thinned_total"],
            ),
            (
                "fusebox_outbox_thinned_by_reason_total",
                "power samples thinned, by what ran short",
                {"reason": "cap"},
                c["thinned_total"] - c["thinned_disk_total"],
            ),
            (
                "fusebox_outbox_thinned_by_reason_total",
                "power samples thinned, by what ran short",
                {"reason": "disk"},
                c["thinned_disk_total"],
            ),
            (
                "fusebox_outbox_refused_total",
                "readings refused (the device keeps and resends them), by reason",
                {"reason": "cap"},
                c["refused_cap_total"],
            ),
            (
                "fusebox_outbox_refused_total",
                "readings refused (the device keeps and resends them), by reason",
                {"reason": "disk_full"},
                c["refused_disk_total"],
            ),
            (
                "fusebox_outbox_disk_free_bytes",
                "free bytes on the outbox's file system",
                {},
                s.fs_free_bytes,
            ),
            (
                "fusebox_outbox_limit_bytes",
                "bytes the outbox may hold now (the cap, or less: disk short)",
                {},
                s.limit_bytes,
            ),
            (
                "fusebox_outbox_reserve_bytes",
                "space held back for pruning on a full disk (0: given back)",
                {},
                s.reserve_bytes,
            ),
            (
                "fusebox_outbox_prunes_pending",
                "acknowledged ranges not deleted yet (the disk was full)",
                {},
                s.prunes_pending,
            ),
            (
                "fusebox_outbox_duplicates_total",
                "redelivered readings dropped",
                {},
                c["duplicate_total"],
            ),
            (
                "fusebox_outbox_rejected_total",
                "records the cloud rejected",
                {},
                c["rejected_total"],
            ),
            (
                "fusebox_meters_connected",
                "1 when subscribed on the site broker",
                {},
                1.0 if self.meters.connected else 0.0,
            ),
            (
                "fusebox_uplink_connected",
                "1 when the cloud broker is connected",
                {},
                1.0 if u.connected else 0.0,
            ),
            ("fusebox_uplink_batches_sent_total", "batches sent", {}, u.batches_sent),
            ("fusebox_uplink_acks_total", "acks received", {}, u.acks),
            ("fusebox_uplink_busy_total", "busy answers received", {}, u.busy),
            (
                "fusebox_uplink_timeouts_total",
                "batches resent for want of an ack",
                {},
                u.timeouts,
            ),
            (
                "fusebox_uplink_resent_on_presence_total",
                "batches resent at once because an ingest worker came or went",
                {},
                u.resent_on_presence,
            ),
            (
                "fusebox_uplink_records_acked_total",
                "records pruned after an ack",
                {},
                u.records_acked,
            ),
        ]
        if self.controller is not None:
            samples += self.controller.metrics()
        for d in self.meters.drivers:
            lab = {"meter": d.id}
            samples.append(
                (
                    "fusebox_meter_readings_total",
                    "readings stored",
                    lab,
                    d.counters.readings,
                )
            )
            for reason, n in sorted(d.counters.bad.items()):
                samples.append(
                    (
                        "fusebox_meter_bad_payloads_total",
                        "payloads not stored, by reason",
                        {**lab, "reason": reason},
                        n,
                    )
                )
        return render_lines(samples)
