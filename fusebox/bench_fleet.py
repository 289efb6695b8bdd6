"""``fusebox bench fleet``: a fleet of gateways in steady state against one ingest.

``--gateways`` gateways (each its own outbox and uplink, all in this process), each
with three meters publishing every ``--meter-interval`` seconds at their own phase,
send their live readings through the cloud broker to one ``fusebox cloud ingest``
process, which stores them in PostgreSQL. Two phases of ``--duration`` seconds
with the same load, each on fresh gateway ids:

1. **baseline**: ``linger_s = 0``, every meter message goes as soon as it is
   committed (how the edge sent before issue 16): about one batch, and one cloud
   transaction, per meter message;
2. **linger**: the edges' ``--linger`` (the default config's 0.5 s): live readings
   wait up to that long to share a batch with the other meters' and their own next.

Per phase it prints readings appended, batches sent, batches and busy answers per
second, readings per batch, ack timeouts, and the rows PostgreSQL holds against the
readings appended (``lost``). Last, the ratios linger / baseline. The outboxes run
``synchronous=NORMAL``: this measures the cloud path, not the gateways' fsyncs.

Targets as for ``fusebox bench pipeline`` (``FUSEBOX_DATABASE_URL``,
``FUSEBOX_CLOUD_MQTT_URL``, else embedded). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg

from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from fusebox.bench import bench_targets, start_ingest
from protocols import contract
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url

METERS = ("meter-a", "meter-b", "meter-c")
DRAIN_TIMEOUT_S = 120.0


@dataclass(slots=True)
class _Gateway:
    id: str
    outbox: Outbox
    uplink: Uplink
    appended: int = 0


async def _wait_for_ingest(mqtt_url: str, timeout_s: float = 30.0) -> None:
    """Until an ingest worker's presence is retained (it has subscribed)."""
    t = parse_mqtt_url(mqtt_url)
    async with aiomqtt.Client(
        t.host, t.port, username=t.username, password=t.password
    ) as client:
        await client.subscribe(contract.INGEST_PRESENCE_FILTER, qos=1)
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                if message.payload:
                    return


async def _meter(
    gw: _Gateway, meter: str, interval_s: float, stop: asyncio.Event, rng: random.Random
) -> None:
    """One meter: an energy register and a power sample every ``interval_s``."""
    await asyncio.sleep(rng.uniform(0, interval_s))
    energy_wh = rng.uniform(1e5, 1e6)
    while not stop.is_set():
        now = datetime.now(UTC)
        energy_wh += rng.uniform(0, 2)
        result = await gw.outbox.append(
            [
                Reading(meter, "import_energy_wh", now, round(energy_wh, 3)),
                Reading(meter, "power_w", now, round(rng.uniform(100, 7000), 1)),
            ]
        )
        gw.appended += result.accepted
        await asyncio.sleep(interval_s)


async def _open_gateways(
    state: Path, prefix: str, n: int, mqtt_url: str, linger_s: float
) -> list[_Gateway]:
    target = parse_mqtt_url(mqtt_url)
    gateways = []
    for i in range(n):
        gw_id = f"{prefix}-{i:03d}"
        outbox = Outbox.open(state / f"{gw_id}.db", cap_bytes=0, synchronous="NORMAL")
        await outbox.start()
        config = UplinkConfig(
            gateway_id=gw_id,
            target=target,
            client_id=f"fusebox-bench-{gw_id}",
            linger_s=linger_s,
            status_interval_s=30.0,
        )
        gateways.append(_Gateway(gw_id, outbox, Uplink(outbox, config)))
    return gateways


async def _wait_drained(gateways: list[_Gateway]) -> None:
    """Until every outbox is acknowledged and pruned, or ``DRAIN_TIMEOUT_S``
    (whatever is left then counts as lost)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            for gw in gateways:
                while (await gw.outbox.stats()).backlog_records:
                    gw.outbox.changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await gw.outbox.changed.wait()


async def _phase(
    args: argparse.Namespace, state: Path, mqtt_url: str, name: str, linger_s: float
) -> tuple[list[_Gateway], float]:
    """Run one phase; returns its gateways (closed) and the seconds it ran."""
    rng = random.Random(f"{name}-{args.gateways}")
    gateways = await _open_gateways(
        state, f"fleet-{name}", args.gateways, mqtt_url, linger_s
    )
    stop = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            uplinks = [tg.create_task(gw.uplink.run()) for gw in gateways]
            started = time.monotonic()
            for gw in gateways:
                for meter in METERS:
                    tg.create_task(_meter(gw, meter, args.meter_interval, stop, rng))
            while (elapsed := time.monotonic() - started) < args.duration:
                await asyncio.sleep(min(5.0, args.duration - elapsed))
                _progress(name, gateways, time.monotonic() - started)
            stop.set()
            ran_s = time.monotonic() - started
            await _wait_drained(gateways)
            for task in uplinks:
                task.cancel()
    finally:
        for gw in gateways:
            with contextlib.suppress(Exception):
                await gw.outbox.close()
    return gateways, ran_s


def _progress(name: str, gateways: list[_Gateway], elapsed_s: float) -> None:
    sent = sum(g.uplink.metrics.batches_sent for g in gateways)
    busy = sum(g.uplink.metrics.busy for g in gateways)
    appended = sum(g.appended for g in gateways)
    print(
        f"  {name}: {elapsed_s:4.0f} s, {appended:,} readings, {sent:,} batches, "
        f"{busy:,} busy",
        file=sys.stderr,
        flush=True,
    )


async def _stored(dsn: str, prefix: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM readings WHERE gateway_id LIKE $1", prefix + "-%"
        )
        return n
    finally:
        await conn.close()


def _figures(
    name: str, gateways: list[_Gateway], ran_s: float, stored: int
) -> dict[str, Any]:
    m = [g.uplink.metrics for g in gateways]
    appended = sum(g.appended for g in gateways)
    batches = sum(x.batches_sent for x in m)
    return {
        "linger_s": gateways[0].uplink.cfg.linger_s,
        "readings": appended,
        "batches": batches,
        "batches_per_s": round(batches / ran_s, 1),
        "readings_per_batch": round(appended / max(1, batches), 1),
        "busy": sum(x.busy for x in m),
        "busy_per_s": round(sum(x.busy for x in m) / ran_s, 2),
        "timeouts": sum(x.timeouts for x in m),
        "stored": stored,
        "lost": appended - stored,
    }


async def _measure(
    args: argparse.Namespace, state: Path, dsn: str, mqtt_url: str
) -> dict[str, Any]:
    phases: dict[str, dict[str, Any]] = {}
    for name, linger_s in (("baseline", 0.0), ("linger", args.linger)):
        print(
            f"[bench] {name}: {args.gateways} gateways x {len(METERS)} meters every "
            f"{args.meter_interval} s for {args.duration:.0f} s, linger {linger_s} s",
            file=sys.stderr,
            flush=True,
        )
        gateways, ran_s = await _phase(args, state, mqtt_url, name, linger_s)
        stored = await _stored(dsn, f"fleet-{name}")
        phases[name] = f = _figures(name, gateways, ran_s, stored)
        print(
            f"[bench] {name}: {f['batches_per_s']} batches/s, "
            f"{f['readings_per_batch']} readings/batch, {f['busy_per_s']} busy/s, "
            f"{f['timeouts']} timeouts, {f['stored']:,} of {f['readings']:,} "
            f"stored ({f['lost']} lost)",
            file=sys.stderr,
            flush=True,
        )
    base, lin = phases["baseline"], phases["linger"]
    return {
        "bench": "fleet",
        "gateways": args.gateways,
        "meters_per_gateway": len(METERS),
        "meter_interval_s": args.meter_interval,
        "baseline": base,
        "linger": lin,
        "batches_vs_baseline": round(lin["batches"] / max(1, base["batches"]), 3),
        "busy_vs_baseline": round(lin["busy"] / max(1, base["busy"]), 3),
        "lost": base["lost"] + lin["lost"],
    }


def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir)
    fleet_dir = state / "fleet"
    shutil.rmtree(fleet_dir, ignore_errors=True)
    fleet_dir.mkdir(parents=True, exist_ok=True)
    # fifty uplinks' routine lines (connected, backlog) would bury the figures
    logging.getLogger("fusebox.edge").setLevel(logging.WARNING)
    with bench_targets(state) as (dsn, mqtt_url, shared):
        ingest = start_ingest(dsn, mqtt_url, shared)
        try:
            asyncio.run(_wait_for_ingest(mqtt_url))
            return asyncio.run(_measure(args, fleet_dir, dsn, mqtt_url))
        finally:
            ingest.terminate()
            ingest.wait(30)
