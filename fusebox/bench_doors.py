"""The two ingest front doors side by side: the same batches, the same PostgreSQL.

    python -m fusebox.bench_doors [--gateways 4] [--batches 50] [--readings 1000]

Each door runs as its own ``fusebox cloud ingest`` process: the MQTT door
subscribed (``$share``) to a private Mosquitto, the JetStream door (``--backbone``)
consuming ``FUSEBOX_UP`` of a private one-node nats-server, to whose MQTT
listener the gateways publish. ``--gateways`` MQTT clients each send
``--batches`` batches of ``--readings`` readings with at most ``--window`` in
flight (as the edge's uplink does) and count the Acks. Printed per door:
batches/s and readings/s from the first batch sent to the last Ack, and the rows
in PostgreSQL (each door gets a fresh database: they must equal the readings
sent). The last line is JSON. PostgreSQL: ``FUSEBOX_DATABASE_URL`` (an admin
DSN) or the local server on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg

from cloud.backbone.cluster import BackboneCluster
from cloud.backbone.streams import ensure_streams
from fusebox.bench import create_db
from fusebox.embedded import MosquittoProcess
from protocols import contract
from protocols.urls import parse_mqtt_url

TS0_MS = 1_774_915_200_000  # 2026-03-31T00:00Z, Meter Reading Day
LOCAL_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def batch(gw: str, first: int, n: int) -> bytes:
    """Batch ``first..first+n-1`` of gateway ``gw``: one power reading a second."""
    return contract.pack(
        contract.batch_dict(
            gw=gw,
            epoch=1,
            first_seq=first,
            last_seq=first + n - 1,
            sent_ms=TS0_MS,
            streams=[("meter", "power_w")],
            readings=[
                (s, TS0_MS + s * 1000, 0, float(s % 7000))
                for s in range(first, first + n)
            ],
            events=[],
        )
    )


async def gateway(mqtt_url: str, gw: str, args: argparse.Namespace) -> float:
    """Send this gateway's batches with a window; return when the first was sent
    (after a warm-up batch acked: the door is listening)."""
    t = parse_mqtt_url(mqtt_url)
    payloads = [
        batch(gw, 2 + i * args.readings, args.readings) for i in range(args.batches)
    ]
    async with aiomqtt.Client(t.host, t.port, identifier=f"bench-{gw}") as client:
        await client.subscribe(contract.down_ack(gw), qos=1)
        answers: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            async for m in client.messages:
                await answers.put(contract.unpack_down(bytes(m.payload)))

        pumping = asyncio.create_task(pump())
        try:
            while True:  # warm-up: seq 1 until acked
                await client.publish(contract.up_batch(gw), batch(gw, 1, 1), qos=1)
                try:
                    async with asyncio.timeout(2):
                        if isinstance(await answers.get(), contract.Ack):
                            break
                except TimeoutError:
                    continue
            started = time.perf_counter()
            window = asyncio.Semaphore(args.window)
            acked = 0
            for payload in payloads:
                await window.acquire()
                await client.publish(contract.up_batch(gw), payload, qos=1)
                while not answers.empty() or window.locked():
                    answer = await answers.get()
                    if not isinstance(answer, contract.Ack):
                        raise SystemExit(f"[bench] {gw}: not acked: {answer}")
                    acked += 1
                    window.release()
            while acked < len(payloads):
                answer = await answers.get()
                if not isinstance(answer, contract.Ack):
                    raise SystemExit(f"[bench] {gw}: not acked: {answer}")
                acked += 1
            return started
        finally:
            pumping.cancel()


async def measure(
    door: str, mqtt_url: str, dsn: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Drive one door's broker with every gateway; rates and rows stored."""
    gws = [f"bench-gw-{i}" for i in range(args.gateways)]
    tasks = [asyncio.create_task(gateway(mqtt_url, gw, args)) for gw in gws]
    starts = await asyncio.gather(*tasks)
    elapsed_s = time.perf_counter() - min(starts)
    conn = await asyncpg.connect(dsn)
    try:
        rows = int(await conn.fetchval("SELECT count(*) FROM readings"))
    finally:
        await conn.close()
    n_batches = args.gateways * args.batches
    return {
        "door": door,
        "batches_per_s": round(n_batches / elapsed_s, 1),
        "readings_per_s": round(n_batches * args.readings / elapsed_s),
        "rows": rows - args.gateways,  # less the warm-up readings
        "expected_rows": n_batches * args.readings,
    }


def run_door(
    door: str, state: Path, admin: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Start the broker and the ingest process of ``door``, measure, stop them."""
    dbname = f"fusebox_doors_{door}_{os.getpid()}"
    asyncio.run(create_db(admin, dbname))
    dsn = admin.rsplit("/", 1)[0] + "/" + dbname
    cluster = None
    broker = None
    if door == "mqtt":
        broker = MosquittoProcess(state_dir=state / "mosquitto").start()
        mqtt_url = broker.url
        flags = ["--mqtt-url", mqtt_url, "--shared", "yes"]
    else:
        cluster = BackboneCluster.create(state / "backbone").start()
        asyncio.run(ensure_streams(cluster.nats_urls[0], 1))
        mqtt_url = cluster.mqtt_urls[0]
        flags = ["--backbone", cluster.nats_urls[0]]
    py = sys.executable
    quiet = [py, "-m", "fusebox", "--log-level", "warning"]
    flags += ["--concurrency", str(args.concurrency)]
    ingest = subprocess.Popen(
        [*quiet, "cloud", "ingest", "--database-url", dsn, *flags]
    )
    try:
        print(f"[bench] {door} door ...", file=sys.stderr, flush=True)
        result = asyncio.run(measure(door, mqtt_url, dsn, args))
        print(
            f"[bench] {door}: {result['batches_per_s']:,.1f} batches/s, "
            f"{result['readings_per_s']:,} readings/s, {result['rows']:,} rows",
            file=sys.stderr,
        )
        return result
    finally:
        ingest.terminate()
        ingest.wait(30)
        if broker is not None:
            broker.stop()
        if cluster is not None:
            cluster.stop()
        asyncio.run(create_db(admin, dbname, drop=True))


def main(argv: list[str] | None = None) -> int:
    """Run both doors; print figures and a JSON line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateways", type=int, default=4)
    p.add_argument("--batches", type=int, default=50, help="per gateway")
    p.add_argument("--readings", type=int, default=1000, help="per batch")
    p.add_argument("--window", type=int, default=4, help="batches in flight")
    p.add_argument("--concurrency", type=int, default=4, help="database connections")
    p.add_argument(
        "--order", default="mqtt,jetstream", help="which door runs first (warm-up)"
    )
    args = p.parse_args(argv)
    admin = os.environ.get("FUSEBOX_DATABASE_URL", LOCAL_ADMIN)
    with tempfile.TemporaryDirectory(prefix="fusebox-doors-") as tmp:
        doors = args.order.split(",")
        results = [run_door(d, Path(tmp) / d, admin, args) for d in doors]
    by_door = {r["door"]: r for r in results}
    mqtt, js = by_door["mqtt"], by_door["jetstream"]
    print(
        json.dumps(
            {
                "bench": "ingest_doors",
                "gateways": args.gateways,
                "batches": args.gateways * args.batches,
                "readings_per_batch": args.readings,
                "mqtt": mqtt,
                "jetstream": js,
                "jetstream_vs_mqtt": round(
                    js["readings_per_s"] / mqtt["readings_per_s"], 3
                ),
            }
        )
    )
    lost = any(r["rows"] != r["expected_rows"] for r in results)
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
