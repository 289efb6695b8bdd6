"""Fleet chargers: OCPP-J 1.6 charge points as light as a load generator must be.

Each connects to the OCPP server (an edge, or a CPO's central system) at
``{url}/{charger_id}`` with Basic auth, sends BootNotification and, once it is
answered, StatusNotification (Charging); then MeterValues (an energy register
and the power) every ``meter_interval_s`` and a Heartbeat every
``heartbeat_s``, phases spread at random. It answers the server's own CALLs as a
well-behaved charger does (capabilities, charging profiles accepted). While
``measuring``, the time from each CALL to its answer is kept, for p50/p99.

For the full behaviour of a charger (connectors, transactions, an EV's battery,
quirks) use ``fusebox sim charger``; this one only carries the load.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from protocols.backoff import Backoff, Reconnect
from simulators.fleet._ws import WsConnection, WsError, open_ws

__all__ = ["ChargerCounters", "ChargerPool", "ChargerSettings"]

log = logging.getLogger("fusebox.sim.fleet")

_CONFIGURATION = {
    "SupportedFeatureProfiles": "Core,SmartCharging",
    "ChargeProfileMaxStackLevel": "8",
    "ChargingScheduleMaxPeriods": "24",
    "ChargingScheduleAllowedChargingRateUnit": "Current",
    "MaxChargingProfilesInstalled": "10",
    "NumberOfConnectors": "1",
}
_ACCEPTED = ("SetChargingProfile", "ClearChargingProfile", "ChangeConfiguration")
CALL_TIMEOUT_S = 30.0


def server_call_answer(action: str) -> dict[str, Any]:
    """What a well-behaved charger answers the server's CALL ``action`` with."""
    if action == "GetConfiguration":
        return {
            "configurationKey": [
                {"key": k, "readonly": True, "value": v}
                for k, v in _CONFIGURATION.items()
            ]
        }
    return {"status": "Accepted" if action in _ACCEPTED else "Rejected"}


@dataclass(frozen=True, slots=True)
class ChargerSettings:
    """Where the fleet's chargers connect and how often they talk."""

    url: str
    password: str | None
    meter_interval_s: float = 10.0
    heartbeat_s: float = 60.0
    connect_concurrency: int = 50  # handshakes in flight per worker process


@dataclass(slots=True)
class ChargerCounters:
    """What a pool's chargers saw (summed over workers by the fleet)."""

    chargers: int = 0
    chargers_connected: int = 0
    charger_connects: int = 0
    answered: int = 0
    call_errors: int = 0
    call_timeouts: int = 0
    server_calls: int = 0
    connect_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class _Charger:
    __slots__ = ("energy_wh", "id", "n", "pool", "waiting", "ws")

    def __init__(self, charger_id: str, pool: ChargerPool) -> None:
        self.id = charger_id
        self.pool = pool
        self.ws: WsConnection | None = None
        self.waiting: dict[str, tuple[float, str]] = {}
        self.n = 0
        self.energy_wh = 1000.0

    def call(self, action: str, payload: dict[str, Any]) -> None:
        ws = self.ws
        if ws is None or not ws.connected:
            return
        self.n += 1
        uid = f"{self.n}"
        self.waiting[uid] = (time.perf_counter(), action)
        ws.send_text(json.dumps([2, uid, action, payload]))

    def on_text(self, text: str) -> None:
        msg = json.loads(text)
        pool = self.pool
        if msg[0] == 2:
            pool.counters.server_calls += 1
            assert self.ws is not None
            self.ws.send_text(json.dumps([3, msg[1], server_call_answer(msg[2])]))
            return
        sent = self.waiting.pop(msg[1], None)
        if sent is None:
            return
        started, action = sent
        if pool.measuring:
            pool.counters.latencies_ms.append((time.perf_counter() - started) * 1000)
        pool.counters.answered += 1
        if msg[0] != 3:
            pool.counters.call_errors += 1
        if action == "BootNotification":
            self.call(
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
            )

    def meter_values(self, interval_s: float) -> None:
        self.energy_wh += 7000.0 * interval_s / 3600.0
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self.call(
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": stamp,
                        "sampledValue": [
                            {
                                "value": f"{self.energy_wh:.1f}",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                            {
                                "value": "7000",
                                "measurand": "Power.Active.Import",
                                "unit": "W",
                            },
                        ],
                    }
                ],
            },
        )


class ChargerPool:
    """A worker's chargers: ``run(stop)`` connects them (``connect_concurrency``
    at a time), boots them and drives their messages until ``stop``."""

    def __init__(
        self, charger_ids: list[str], settings: ChargerSettings, rng: random.Random
    ) -> None:
        self.settings = settings
        self.rng = rng
        self.chargers = [_Charger(cid, self) for cid in charger_ids]
        self.counters = ChargerCounters(chargers=len(charger_ids))
        self.measuring = False
        url = urllib.parse.urlsplit(settings.url)
        if url.scheme != "ws" or not url.hostname:
            raise ValueError(
                f"{settings.url}: fleet chargers need a ws://host:port/path URL "
                "(plain websockets; no TLS)"
            )
        self._host, self._port = url.hostname, url.port or 80
        self._path = url.path.rstrip("/")

    async def _connect(
        self, c: _Charger, sem: asyncio.Semaphore, stop: asyncio.Event
    ) -> None:
        """Connect and boot ``c``; a failed attempt is counted and retried after
        a capped full-jitter backoff, as a real charger retries."""
        reconnect = Reconnect(Backoff(1.0, 30.0))
        password = self.settings.password
        auth = None if password is None else (c.id, password)
        while not stop.is_set():
            async with sem:
                try:
                    c.ws = await open_ws(
                        self._host,
                        self._port,
                        f"{self._path}/{c.id}",
                        c.on_text,
                        subprotocol="ocpp1.6",
                        basic_auth=auth,
                    )
                except (WsError, OSError, TimeoutError) as exc:
                    self.counters.connect_failures += 1
                    if self.counters.connect_failures == 1:
                        log.warning(
                            "fleet: charger %s could not connect (%s); chargers "
                            "retry with backoff",
                            c.id,
                            type(exc).__name__ if not str(exc) else exc,
                        )
                else:
                    self.counters.charger_connects += 1
                    c.call(
                        "BootNotification",
                        {"chargePointVendor": "Fusebox", "chargePointModel": "Fleet"},
                    )
                    return
            await asyncio.sleep(reconnect.failed(self.rng))

    async def run(self, stop: asyncio.Event) -> None:
        """Connect every charger, then send meter values and heartbeats."""
        sem = asyncio.Semaphore(self.settings.connect_concurrency)
        await asyncio.gather(*(self._connect(c, sem, stop) for c in self.chargers))
        meter_s, beat_s = self.settings.meter_interval_s, self.settings.heartbeat_s
        now = time.monotonic()
        due: list[tuple[float, int, int]] = []
        for i in range(len(self.chargers)):
            due.append((now + self.rng.uniform(0, meter_s), i, 0))
            due.append((now + self.rng.uniform(0, beat_s), i, 1))
        heapq.heapify(due)
        next_sweep = now + 1.0
        while not stop.is_set() and due:
            now = time.monotonic()
            while due[0][0] <= now:
                at, i, kind = heapq.heappop(due)
                c = self.chargers[i]
                if kind == 0:
                    c.meter_values(meter_s)
                else:
                    c.call("Heartbeat", {})
                heapq.heappush(due, (at + (beat_s if kind else meter_s), i, kind))
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + 1.0
            try:
                async with asyncio.timeout(max(0.0, min(due[0][0], next_sweep) - now)):
                    await stop.wait()
            except TimeoutError:
                pass

    def _sweep(self, _now: float) -> None:
        """Count CALLs unanswered for ``CALL_TIMEOUT_S`` as timeouts."""
        limit = time.perf_counter() - CALL_TIMEOUT_S
        for c in self.chargers:
            late = [uid for uid, (t, _) in c.waiting.items() if t < limit]
            for uid in late:
                del c.waiting[uid]
            self.counters.call_timeouts += len(late)

    def snapshot(self, *, take_latencies: bool = False) -> ChargerCounters:
        """The counters now; with ``take_latencies`` the samples move out."""
        c = self.counters
        connected = sum(
            1 for ch in self.chargers if ch.ws is not None and ch.ws.connected
        )
        samples = c.latencies_ms if take_latencies else []
        if take_latencies:
            c.latencies_ms = []
        return ChargerCounters(
            chargers=c.chargers,
            chargers_connected=connected,
            charger_connects=c.charger_connects,
            answered=c.answered,
            call_errors=c.call_errors,
            call_timeouts=c.call_timeouts,
            server_calls=c.server_calls,
            connect_failures=c.connect_failures,
            latencies_ms=samples,
        )

    def close(self) -> None:
        """Close every connection."""
        for c in self.chargers:
            if c.ws is not None:
                c.ws.close()
