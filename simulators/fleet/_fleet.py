"""``Fleet``: thousands of simulated gateways across a few worker processes.

A library first (the CLI ``fusebox sim fleet`` and ``fusebox bench surge`` use it)::

    fleet = Fleet(FleetConfig(mqtt_url="mqtt://127.0.0.1:1883", gateways=10_000))
    async with fleet:                       # spawns the workers, gateways connect
        await fleet.offline()               # the cloud is gone: backlog builds
        await fleet.backfill(3600, 10)      # ... or an hour of it at once
        await fleet.online()                # jittered reconnect, live first
        await fleet.pause_readings()
        await fleet.wait_drained(timeout_s=120)
        result = await fleet.reconcile(dsn) # ledgers vs PostgreSQL readings
    # leaving the block stops the workers

Every gateway has its own MQTT connection, client id ``fusebox-edge-<id>`` and,
if ``accounts`` maps its id to ``(username, password)``, its own account (what a
broker with per-gateway ACLs requires: ``cloud.broker_auth``). Gateways are
spread evenly over ``processes`` workers (default: one per
``gateways_per_process``); each method sends one command to every worker and
combines their answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from protocols.backoff import Backoff
from protocols.urls import parse_mqtt_url
from simulators.fleet._chargers import ChargerSettings
from simulators.fleet._gateway import GatewaySettings
from simulators.fleet._reconcile import Reconciliation
from simulators.fleet._worker import WorkerSpec, WorkerStats, worker_main

__all__ = ["Fleet", "FleetConfig", "FleetError"]

log = logging.getLogger("fusebox.sim.fleet")


class FleetError(RuntimeError):
    """A worker process failed or did not answer; the message says which."""


@dataclass(slots=True)
class FleetConfig:
    """A fleet: how many gateways, where their cloud broker is, how they send.

    ``accounts`` maps gateway ids to ``(username, password)``; without an entry a
    gateway uses the URL's user and password (or none: an anonymous broker).
    Gateway ids are ``{prefix}-{n:05d}``, ``n`` from 1.
    """

    mqtt_url: str | None
    gateways: int
    prefix: str = "fleet"
    interval_s: float = 10.0
    processes: int | None = None
    gateways_per_process: int = 2500
    accounts: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    window: int = 4
    ack_timeout_s: float = 30.0
    linger_s: float = 0.5
    status_interval_s: float = 10.0
    reconnect_cap_s: float = 30.0
    ramp_s: float | None = None
    seed: int = 1
    online: bool = True
    producing: bool = True
    log_level: int = logging.WARNING
    chargers: int = 0
    ocpp_url: str | None = None
    charger_password: str | None = None
    charger_prefix: str = "CP"
    charger_meter_interval_s: float = 10.0
    charger_heartbeat_s: float = 60.0
    chargers_per_process: int = 5000

    def charger_ids(self) -> list[str]:
        """Every charger id: ``{charger_prefix}{n:05d}``, ``n`` from 0."""
        return [f"{self.charger_prefix}{n:05d}" for n in range(self.chargers)]

    def gateway_ids(self) -> list[str]:
        """Every gateway id of the fleet, in order."""
        return [f"{self.prefix}-{n:05d}" for n in range(1, self.gateways + 1)]

    def process_count(self) -> int:
        """Worker processes: as given, else one per ``gateways_per_process``."""
        if self.processes is not None:
            return max(1, min(self.processes, self.gateways + self.chargers))
        return max(
            1,
            math.ceil(self.gateways / self.gateways_per_process),
            math.ceil(self.chargers / self.chargers_per_process),
        )

    def check(self) -> None:
        """``ValueError`` naming the first bad setting."""
        if self.gateways < 0 or self.chargers < 0:
            raise ValueError("gateways and chargers cannot be negative")
        if self.gateways + self.chargers < 1:
            raise ValueError("a fleet needs at least one gateway or charger")
        if self.chargers and not self.ocpp_url:
            raise ValueError(
                "chargers need the OCPP server's URL (--ocpp-url, ocpp_url)"
            )
        if self.charger_meter_interval_s <= 0 or self.charger_heartbeat_s <= 0:
            raise ValueError("charger intervals must be positive")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {self.interval_s}")
        if self.processes is not None and self.processes < 1:
            raise ValueError(f"processes must be at least 1, not {self.processes}")
        if not 1 <= self.window <= 64:
            raise ValueError(f"window must be 1..64, not {self.window}")
        if self.ack_timeout_s <= 0 or self.status_interval_s <= 0:
            raise ValueError("ack_timeout_s and status_interval_s must be positive")
        if not self.gateways:
            return
        if not self.mqtt_url:
            raise ValueError("gateways need the cloud broker's URL (mqtt_url)")
        target = parse_mqtt_url(self.mqtt_url)  # BadURL (a ValueError) says why
        if target.tls:
            raise ValueError(
                f"{self.mqtt_url}: the fleet's MQTT client speaks plain TCP only; "
                "point it at a loopback or private listener (mqtt://)"
            )


class Fleet:
    """Start with ``async with Fleet(config)`` (or ``start``/``stop``)."""

    def __init__(self, config: FleetConfig) -> None:
        config.check()
        self.config = config
        self._procs: list[BaseProcess] = []
        self._conns: list[Connection] = []
        self._locks: list[asyncio.Lock] = []
        self.started_at = 0.0

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _specs(self) -> list[WorkerSpec]:
        c = self.config
        target = parse_mqtt_url(c.mqtt_url or "mqtt://127.0.0.1:1883")
        settings = GatewaySettings(
            host=target.host,
            port=target.port,
            window=c.window,
            ack_timeout_s=c.ack_timeout_s,
            linger_s=c.linger_s,
            reconnect=Backoff(0.5, c.reconnect_cap_s),
            status_interval_s=c.status_interval_s,
        )
        ids = c.gateway_ids()
        charger_ids = c.charger_ids()
        chargers = ChargerSettings(
            url=c.ocpp_url or "ws://127.0.0.1:9000/ocpp",
            password=c.charger_password,
            meter_interval_s=c.charger_meter_interval_s,
            heartbeat_s=c.charger_heartbeat_s,
        )
        n = c.process_count()
        default = (target.username, target.password)
        ramp_s = c.ramp_s if c.ramp_s is not None else c.gateways / 1000.0
        specs = []
        for i in range(n):
            mine = tuple(ids[i::n])
            accounts = {
                g: c.accounts.get(g, default)
                for g in mine
                if g in c.accounts or default[0] is not None
            }
            specs.append(
                WorkerSpec(
                    index=i,
                    gateway_ids=mine,
                    accounts=accounts,  # type: ignore[arg-type]
                    settings=settings,
                    interval_s=c.interval_s,
                    ramp_s=ramp_s,
                    seed=c.seed,
                    online=c.online,
                    producing=c.producing,
                    log_level=c.log_level,
                    charger_ids=tuple(charger_ids[i::n]),
                    chargers=chargers,
                )
            )
        return specs

    async def start(self) -> None:
        """Spawn the workers; their gateways connect over ``ramp_s`` seconds
        (default one second per thousand gateways)."""
        ctx = multiprocessing.get_context("spawn")
        for spec in self._specs():
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(child, spec),
                name=f"fusebox-fleet-{spec.index}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
            self._locks.append(asyncio.Lock())
        self.started_at = time.monotonic()
        await self.stats(timeout_s=120.0)  # every worker up and answering

    async def _call(self, i: int, message: tuple[Any, ...], timeout_s: float) -> Any:
        conn, proc = self._conns[i], self._procs[i]

        def exchange() -> Any:
            conn.send(message)
            if not conn.poll(timeout_s):
                raise FleetError(
                    f"fleet worker {i} (pid {proc.pid}) did not answer "
                    f"{message[0]!r} within {timeout_s:.0f} s"
                )
            return conn.recv()

        async with self._locks[i]:
            try:
                answer = await asyncio.to_thread(exchange)
            except (EOFError, OSError, BrokenPipeError) as exc:
                raise FleetError(
                    f"fleet worker {i} (pid {proc.pid}) is gone (exit code "
                    f"{proc.exitcode}): {exc or type(exc).__name__}"
                ) from None
        if isinstance(answer, Exception):
            raise FleetError(str(answer))
        return answer

    async def _all(self, *message: Any, timeout_s: float = 30.0) -> list[Any]:
        return list(
            await asyncio.gather(
                *(self._call(i, message, timeout_s) for i in range(len(self._conns)))
            )
        )

    @staticmethod
    def _sum(parts: list[WorkerStats]) -> WorkerStats:
        total = WorkerStats(processes=0)
        for part in parts:
            total = total + part
        return total

    async def stats(self, *, timeout_s: float = 30.0) -> WorkerStats:
        """The whole fleet's counters now (``processes`` = workers answering)."""
        return self._sum(await self._all("stats", timeout_s=timeout_s))

    async def offline(self) -> WorkerStats:
        """Every gateway loses the cloud: links cut, reconnects fail, readings
        pile up in the outboxes."""
        return self._sum(await self._all("offline"))

    async def online(self) -> WorkerStats:
        """The cloud is back: each gateway reconnects when its backoff ends."""
        return self._sum(await self._all("online"))

    async def pause_readings(self) -> WorkerStats:
        """The meters stop (to let the fleet drain to zero)."""
        return self._sum(await self._all("readings", False))

    async def resume_readings(self) -> WorkerStats:
        """The meters go on."""
        return self._sum(await self._all("readings", True))

    async def backfill(self, seconds: float, interval_s: float) -> int:
        """Each gateway's readings for the last ``seconds`` at ``interval_s``, at
        once (a backlog without waiting for it); returns how many readings."""
        parts = await self._all("backfill", seconds, interval_s, timeout_s=300.0)
        return int(sum(parts))

    async def wait_drained(
        self, *, timeout_s: float, poll_s: float = 0.5
    ) -> WorkerStats:
        """Until no gateway holds a reading (pause readings first), or
        ``timeout_s``; returns the last stats either way."""
        deadline = time.monotonic() + timeout_s
        while True:
            s = await self.stats()
            if s.held == 0 or time.monotonic() >= deadline:
                return s
            await asyncio.sleep(poll_s)

    async def reconcile(self, dsn: str, *, timeout_s: float = 600.0) -> Reconciliation:
        """Every gateway's ledger against PostgreSQL's ``readings`` at ``dsn``."""
        parts = await self._all("reconcile", dsn, timeout_s=timeout_s)
        total = Reconciliation()
        for part in parts:
            total = total + part
        return total

    async def measure(self, on: bool) -> None:
        """Start (dropping older samples) or stop keeping the chargers' call
        latencies."""
        await self._all("measure", on)

    async def latencies_ms(self) -> list[float]:
        """The chargers' call latencies kept since ``measure(True)``, taken out."""
        parts = await self._all("latencies", timeout_s=120.0)
        return [x for part in parts for x in part]

    async def stop(self) -> WorkerStats | None:
        """Stop every worker (gateways disconnect cleanly); the final stats."""
        final: WorkerStats | None = None
        if self._conns:
            try:
                final = self._sum(await self._all("stop", timeout_s=30.0))
            except FleetError as exc:
                log.warning("fleet: %s", exc)
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 30)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns, self._locks = [], [], []
        return final
