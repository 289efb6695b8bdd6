"""``fusebox bench ocpp``: many chargers on one edge process.

N chargers connect (OCPP-J 1.6, Basic auth, no compression), boot, report status,
then each sends MeterValues every ``--meter-interval`` seconds and a Heartbeat every
``--heartbeat-interval`` seconds, spread evenly. Measured over the steady window:
messages per second answered, request-to-CallResult latency (p50/p99), answers
that were CallErrors or missing, the edge's RSS and the RSS each connection costs.

Baseline in the same run: the same load against a bare websocket server that
answers every CALL with an empty CallResult (no OCPP, no outbox), so
``p99_vs_baseline`` shows what the edge's own work adds.

The load generator is plain websockets with raw frames (it must not be the
bottleneck being measured); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import websockets

PASSWORD = "bench-password-0123"

_ECHO_SERVER = r"""
import asyncio, json, sys, websockets
async def handle(ws):
    async for frame in ws:
        msg = json.loads(frame)
        if msg[0] == 2:
            await ws.send(json.dumps([3, msg[1], {}]))
async def main():
    async with websockets.serve(handle, "127.0.0.1", int(sys.argv[1]),
                                subprotocols=["ocpp1.6"], compression=None,
                                ping_interval=None):
        await asyncio.Future()
asyncio.run(main())
"""


_CONFIGURATION = {
    "SupportedFeatureProfiles": "Core,SmartCharging",
    "ChargeProfileMaxStackLevel": "8",
    "ChargingScheduleMaxPeriods": "24",
    "ChargingScheduleAllowedChargingRateUnit": "Current",
    "MaxChargingProfilesInstalled": "10",
    "NumberOfConnectors": "1",
}


def _answer(action: str) -> dict[str, Any]:
    """What a well-behaved charger answers the edge's CALLs with."""
    if action == "GetConfiguration":
        return {
            "configurationKey": [
                {"key": k, "readonly": True, "value": v}
                for k, v in _CONFIGURATION.items()
            ]
        }
    if action in ("SetChargingProfile", "ClearChargingProfile", "ChangeConfiguration"):
        return {"status": "Accepted"}
    return {"status": "Rejected"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    answered: int = 0
    call_errors: int = 0
    failures: int = 0
    measuring: bool = False
    server_calls: int = 0  # CALLs from the edge, answered


class Charger:
    def __init__(self, cp_id: str, url: str, load: Load) -> None:
        self.id = cp_id
        self.url = url
        self.load = load
        self.ws: Any = None
        self.waiting: dict[str, asyncio.Future[list[Any]]] = {}
        self.n = 0
        self.energy_wh = 1000.0

    async def connect(self) -> None:
        token = base64.b64encode(f"{self.id}:{PASSWORD}".encode()).decode()
        self.ws = await websockets.connect(
            f"{self.url}/{self.id}",
            subprotocols=[websockets.Subprotocol("ocpp1.6")],
            additional_headers={"Authorization": f"Basic {token}"},
            compression=None,
            ping_interval=None,
            open_timeout=60,
        )
        asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.ws:
                msg = json.loads(frame)
                if msg[0] == 2:  # the edge asks (capabilities, fail-safe profile)
                    self.load.server_calls += 1
                    await self.ws.send(json.dumps([3, msg[1], _answer(msg[2])]))
                    continue
                fut = self.waiting.pop(msg[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    async def call(self, action: str, payload: dict[str, Any]) -> None:
        self.n += 1
        uid = f"{self.id}-{self.n}"
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting[uid] = fut
        started = time.perf_counter()
        try:
            await self.ws.send(json.dumps([2, uid, action, payload]))
            async with asyncio.timeout(30):
                answer = await fut
        except (TimeoutError, websockets.ConnectionClosed):
            self.waiting.pop(uid, None)
            if self.load.measuring:
                self.load.failures += 1
            return
        if not self.load.measuring:
            return
        self.load.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.load.answered += 1
        if answer[0] != 3:
            self.load.call_errors += 1

    async def boot(self) -> None:
        await self.call(
            "BootNotification",
            {"chargePointVendor": "Fusebox", "chargePointModel": "Bench"},
        )
        await self.call(
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
        )

    async def meter_values(self) -> None:
        self.energy_wh += 19.0
        await self.call(
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {
                        "timestamp": _now(),
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

    async def run(
        self,
        meter_s: float,
        heartbeat_s: float,
        stop: asyncio.Event,
        rng: random.Random,
    ) -> None:
        # spread the fleet evenly over the interval instead of in lockstep
        next_meter = time.monotonic() + rng.uniform(0, meter_s)
        next_beat = time.monotonic() + rng.uniform(0, heartbeat_s)
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_meter:
                asyncio.get_running_loop().create_task(self.meter_values())
                next_meter += meter_s
            if now >= next_beat:
                asyncio.get_running_loop().create_task(self.call("Heartbeat", {}))
                next_beat += heartbeat_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(
                    max(0.0, min(next_meter, next_beat) - time.monotonic())
                ):
                    await stop.wait()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(url: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    load = Load()
    chargers = [Charger(f"CP{i:05d}", url, load) for i in range(args.chargers)]
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(100)  # connect in waves: a reconnect storm has limits too

    async def bring_up(c: Charger) -> None:
        async with sem:
            await c.connect()
            await c.boot()

    await asyncio.gather(*(bring_up(c) for c in chargers))
    connect_s = time.perf_counter() - t0
    print(
        f"[bench] {label}: {len(chargers)} chargers up in {connect_s:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    rng = random.Random(1)
    tasks = [
        asyncio.create_task(
            c.run(args.meter_interval, args.heartbeat_interval, stop, rng)
        )
        for c in chargers
    ]
    await asyncio.sleep(args.meter_interval)  # warm up: one full cycle
    # the fleet's objects live as long as the run: out of the collector's way,
    # so the load generator's own GC pauses do not count as the server's latency
    gc.collect()
    gc.freeze()
    load.measuring = True
    t_measure = time.perf_counter()
    for _ in range(int(args.duration // 10)):
        await asyncio.sleep(10)
        print(
            f"[bench] {label}: {load.answered:,} answers so far",
            file=sys.stderr,
            flush=True,
        )
    await asyncio.sleep(args.duration % 10)
    elapsed = time.perf_counter() - t_measure
    load.measuring = False
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    gc.unfreeze()
    await asyncio.gather(*(c.ws.close() for c in chargers), return_exceptions=True)
    return {
        "connect_s": connect_s,
        "msgs_per_s": load.answered / elapsed,
        "p50_ms": _percentile(load.latencies_ms, 0.50),
        "p99_ms": _percentile(load.latencies_ms, 0.99),
        "call_errors": load.call_errors,
        "failures": load.failures,
        "server_calls": load.server_calls,
    }


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"[bench] {what} exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.1)
    raise SystemExit(f"[bench] {what} did not listen on {port}")


def _edge_config(state: Path, port: int, n: int) -> Path:
    chargers = "".join(
        f'[[chargers]]\nid = "CP{i:05d}"\npassword = "{PASSWORD}"\n\n' for i in range(n)
    )
    config = state / "edge.toml"
    config.write_text(
        f"""gateway_id = "gw-bench-ocpp"
[cloud]
# no cloud in this bench: the uplink retries in the background, events stay queued
mqtt_url = "mqtt://127.0.0.1:{_free_port()}"
[outbox]
path = "{state / "outbox.db"}"
[ocpp]
port = {port}
heartbeat_interval_s = 60

{chargers}"""
    )
    return config


def run_ocpp(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir) / "ocpp"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    py = sys.executable

    echo_port = _free_port()
    echo = subprocess.Popen([py, "-c", _ECHO_SERVER, str(echo_port)])
    try:
        _wait_port(echo_port, echo, "baseline server")
        baseline = asyncio.run(_drive(f"ws://127.0.0.1:{echo_port}", args, "baseline"))
    finally:
        echo.terminate()
        echo.wait(10)

    port = _free_port()
    config = _edge_config(state, port, args.chargers)
    log = (state / "edge.log").open("wb")
    edge = subprocess.Popen(
        [
            py,
            "-m",
            "fusebox",
            "--log-level",
            "warning",
            "edge",
            "run",
            "--config",
            str(config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_port(port, edge, "edge")
        ps = psutil.Process(edge.pid)
        rss_idle = ps.memory_info().rss
        peak = [rss_idle]

        async def measured() -> dict[str, Any]:
            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], ps.memory_info().rss)
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(sample())
            try:
                return await _drive(f"ws://127.0.0.1:{port}/ocpp", args, "edge")
            finally:
                sampler.cancel()

        result = asyncio.run(measured())
    finally:
        edge.terminate()
        try:
            edge.wait(30)
        except subprocess.TimeoutExpired:
            edge.kill()
            edge.wait()
            raise SystemExit(
                f"[bench] the edge did not stop within 30 s of SIGTERM: see {log.name}"
            ) from None
        finally:
            log.close()
    n = args.chargers
    return {
        "bench": "ocpp",
        "chargers": n,
        "msgs_per_s": round(result["msgs_per_s"], 1),
        "p50_ms": round(result["p50_ms"], 2),
        "p99_ms": round(result["p99_ms"], 2),
        "edge_rss_mb": round(peak[0] / 2**20, 1),
        "kib_per_connection": round((peak[0] - rss_idle) / 1024 / n, 1),
        "connect_s": round(result["connect_s"], 1),
        "call_errors": result["call_errors"],
        "failures": result["failures"],
        # the edge's own CALLs (capability discovery, fail-safe profile), answered
        "edge_calls_answered": result["server_calls"],
        "baseline_p99_ms": round(baseline["p99_ms"], 2),
        "p99_vs_baseline": round(result["p99_ms"] / baseline["p99_ms"], 2)
        if baseline["p99_ms"] > 0
        else None,
        "baseline_msgs_per_s": round(baseline["msgs_per_s"], 1),
        "load_generator_pid_cpu_s": round(sum(os.times()[:2]), 1),
    }
