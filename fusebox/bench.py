"""``fusebox bench pipeline``: the durable reading path, measured end to end.

1. the edge buffers N readings in its outbox (meter-shaped appends, durable group
   commit) in its own process: ``outbox_append_per_s`` and its peak RSS;
2. an ingest worker process and the edge's uplink drain that backlog into
   PostgreSQL rows, acks and pruning included: ``drain_per_s``;
3. baseline in the same run: the same rows COPYed straight into a table of the
   same shape in the same PostgreSQL: ``copy_per_s``; ``drain_vs_copy`` is the
   fraction of the physical limit the whole path reaches.

Targets: ``FUSEBOX_DATABASE_URL`` and ``FUSEBOX_CLOUD_MQTT_URL``, else embedded
(PostgreSQL from the wheel, a private Mosquitto or amqtt). The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fusebox.bench_edge import DEVICES, START


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def _run_json(cmd: list[str], label: str) -> dict[str, Any]:
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"[bench] {label} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def _copy_baseline(dsn: str, n: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_copy (gateway_id text NOT NULL, seq bigint NOT NULL,"
            " ts timestamptz NOT NULL, stream_id integer NOT NULL,"
            " value double precision NOT NULL,"
            " stored_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (gateway_id, seq, ts))"
        )
        chunk = 10_000
        elapsed = 0.0
        for first in range(0, n, chunk):
            rows = []
            for k in range(first, min(n, first + chunk)):
                i = k // 2
                ts = START + timedelta(seconds=10 * (i // DEVICES))
                rows.append(
                    ("bench-gw", k + 1, ts, (i % DEVICES) * 2 + k % 2, float(k))
                )
            t0 = time.perf_counter()
            await conn.copy_records_to_table(
                "bench_copy",
                records=rows,
                columns=["gateway_id", "seq", "ts", "stream_id", "value"],
            )
            elapsed += time.perf_counter() - t0
        return n / elapsed
    finally:
        await conn.close()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM readings")
        return n
    finally:
        await conn.close()


async def create_db(admin_dsn: str, name: str, *, drop: bool = False) -> None:
    """Create (or, with ``drop``, force-drop) the benchmark's own database."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_targets(state: Path) -> Iterator[tuple[str, str, str]]:
    """``(dsn, mqtt_url, shared)`` for one benchmark run: ``FUSEBOX_DATABASE_URL``
    and ``FUSEBOX_CLOUD_MQTT_URL`` if set, else embedded servers under ``state``;
    the run gets a database of its own, dropped afterwards. ``shared`` is the
    ingest worker's ``--shared`` answer for that broker."""
    from fusebox import embedded

    stops = []
    try:
        admin = os.environ.get("FUSEBOX_DATABASE_URL")
        if not admin:
            pg = embedded.start_embedded_postgres(state / "pg")
            stops.append(pg.stop)
            admin = pg.admin_dsn
        mqtt_url = os.environ.get("FUSEBOX_CLOUD_MQTT_URL")
        shared = "yes"
        if not mqtt_url:
            broker = embedded.pick_broker(state / "broker")
            stops.append(broker.stop)
            mqtt_url = broker.url
            shared = "yes" if broker.supports_shared_subscriptions else "no"
        dbname = f"fusebox_bench_{os.getpid()}"
        asyncio.run(create_db(admin, dbname))
        try:
            yield _with_database(admin, dbname), mqtt_url, shared
        finally:
            asyncio.run(create_db(admin, dbname, drop=True))
    finally:
        for stop in reversed(stops):
            stop()


def start_ingest(dsn: str, mqtt_url: str, shared: str) -> subprocess.Popen[bytes]:
    """Migrate, then start one ``fusebox cloud ingest`` process (quiet logs)."""
    py = sys.executable
    subprocess.run(
        [py, "-m", "fusebox", "cloud", "migrate", "--database-url", dsn],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return subprocess.Popen(
        [
            py,
            "-m",
            "fusebox",
            "--log-level",
            "warning",
            "cloud",
            "ingest",
            "--database-url",
            dsn,
            "--mqtt-url",
            mqtt_url,
            "--shared",
            shared,
        ],
    )


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(args.state_dir)
    shutil.rmtree(state / "edge", ignore_errors=True)
    (state / "edge").mkdir(parents=True, exist_ok=True)
    with bench_targets(state) as (dsn, mqtt_url, shared):
        return _measure(args, state, dsn, mqtt_url, shared)


def _measure(
    args: argparse.Namespace, state: Path, dsn: str, mqtt_url: str, shared: str
) -> dict[str, Any]:
    n = args.readings
    db = str(state / "edge" / "outbox.db")
    py = sys.executable
    fill = _run_json(
        [py, "-m", "fusebox.bench_edge", "fill", "--db", db, "--readings", str(n)],
        f"edge: buffering {n:,} readings in the outbox",
    )
    print(
        f"[bench] outbox append: {fill['append_per_s']:,.0f} readings/s durable, "
        f"{fill['outbox_bytes'] / 1e6:.1f} MB, edge peak RSS {fill['rss_mb']:.0f} MB",
        file=sys.stderr,
    )
    ingest = start_ingest(dsn, mqtt_url, shared)
    try:
        time.sleep(2.0)  # let the worker subscribe before the first batch
        drain = _run_json(
            [
                py,
                "-m",
                "fusebox.bench_edge",
                "drain",
                "--db",
                db,
                "--mqtt-url",
                mqtt_url,
            ],
            f"edge -> ingest -> PostgreSQL: draining {n:,} readings",
        )
    finally:
        ingest.terminate()
        ingest.wait(30)
    stored = asyncio.run(_count(dsn))
    print(
        f"[bench] drain: {drain['drain_per_s']:,.0f} readings/s "
        f"({drain['drain_s']:.1f} s), "
        f"{stored:,} rows in PostgreSQL, edge peak RSS {drain['rss_mb']:.0f} MB",
        file=sys.stderr,
    )
    print(f"[bench] baseline: raw COPY of {n:,} rows ...", file=sys.stderr)
    copy_per_s = asyncio.run(_copy_baseline(dsn, n))
    print(f"[bench] COPY: {copy_per_s:,.0f} rows/s", file=sys.stderr)
    return {
        "bench": "pipeline",
        "readings": n,
        "outbox_append_per_s": round(fill["append_per_s"]),
        "drain_per_s": round(drain["drain_per_s"]),
        "copy_per_s": round(copy_per_s),
        "drain_vs_copy": round(drain["drain_per_s"] / copy_per_s, 3),
        "edge_rss_mb": round(max(fill["rss_mb"], drain["rss_mb"]), 1),
        "outbox_mb": round(fill["outbox_bytes"] / 1e6, 1),
        "rows_stored": stored,
        "lost": n - stored,
        "busy_answers": drain["busy"],
        "resends": drain["timeouts"],
    }


def run_bench(args: argparse.Namespace) -> int:
    if args.name == "pipeline":
        result = run_pipeline(args)
    elif args.name == "fleet":
        from fusebox.bench_fleet import run_fleet

        result = run_fleet(args)
    elif args.name == "ocpp":
        from fusebox.bench_ocpp import run_ocpp

        result = run_ocpp(args)
    else:  # argparse restricts the choices
        raise SystemExit(f"unknown bench {args.name}")
    print(json.dumps(result))
    return 0 if result.get("lost", 0) == 0 else 1
