"""``fusebox bench api``: the owner's app under load, against the real API process.

The API runs as its own process (``fusebox cloud api``, one uvicorn process, as
deployed) on PostgreSQL: ``--database-url`` or ``FUSEBOX_DATABASE_URL`` (an admin
DSN: the bench makes its own database there and drops it after), else embedded.
N owners are seeded, each with a site, a charger with an EV charging (readings, a
session, status), a site meter and a manual meter, a plan over priced slots and
preferences. Then N concurrent clients (asyncio + httpx, one connection each):

1. **baseline**: ``GET /healthz`` (no auth, one ``SELECT 1``) for ``--duration`` s,
   the cost of HTTP, the framework and a pooled database round trip;
2. **login**: each client logs in once (``POST /v1/auth/login``, scrypt on the
   API's bounded hashing pool); a login refused with 503 (the pool is full) is
   sent again after its ``Retry-After`` plus full jitter, as the web app does,
   and ``login.refused`` counts those answers;
3. **reads**: the owner's dashboard, ``GET /v1/sites`` and
   ``GET /v1/gateways/{gw}/live``, then ``GET /v1/gateways/{gw}/plan``, in a loop;
4. **submissions**: ``POST /v1/gateways/{gw}/meters/{m}/readings`` with rising
   register values and an idempotency key each, answered 202 once in the durable
   intake (issue 11); every tenth is a replay of the previous one (the same id,
   not stored twice); then the bench waits until the intake's consumer has
   stored every one (``drain_s``);
4b. **login flood** (issue 11): half the clients log in again and again while
   the other half read as in 3; ``reads_under_login_flood`` is the reads'
   figures, ``login_flood`` the logins' (rate, p99, answers refused fast);
5. **readings on a small history, then on a year** (``--days``, default 365; 0
   skips them): every client, as the first owner, pages that owner's readings
   (``GET /v1/gateways/{gw}/readings``, its ``Link rel="next"``, and the
   ``quantity=power_w`` filter) while the gateway holds a day of history; then
   the rest of ``--days`` is COPYed in before it and the same load runs again.
   The history is one reading every ``HISTORY_STEP_S`` s on three streams (9.46 M
   rows for a year). ``readings_year_vs_small`` is the latency ratio: 1 means a
   page's cost does not grow with the stored history.

Figures are per HTTP request: ``rps``, ``p50_ms``, ``p99_ms``, ``errors`` (any
answer other than the expected status, or no answer), ``refused`` (429/503 with
``Retry-After``, admission control's fast answer, not an error);
``*_vs_baseline`` is the throughput ratio against /healthz on the same server in
the same run, so it shows what authentication and the database queries cost.
The load generator shares the machine with the server and PostgreSQL. The last
line printed is one JSON object; the exit code is 1 only if the run could not be
made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil

from fusebox.bench import create_db
from fusebox.bench_load import BUSY, Stats, retry_wait_s
from fusebox.bench_load import figures as _figures
from fusebox.bench_load import timed as _timed

PASSWORD = "bench-password-1"
CHARGER = "CP-1"
SITE_METER = "main"
MANUAL_METER = "manual"
TARIFF = "bench-tariff"
SLOT_S = 1800
REPLAY_EVERY = 10
HISTORY_STEP_S = 10
"""One reading per stream this often in the seeded history: a meter's real rate."""
HISTORY_STREAMS = (
    (SITE_METER, "power_w"),
    (CHARGER, "power_w"),
    (CHARGER, "import_energy_wh"),
)
HISTORY_FIRST_SEQ = 1_000_000  # above the seeded batch's seqs
SMALL_HISTORY_DAYS = 1.0
"""The small history the year is compared with: enough for every page to be full."""
_COPY_INSTANTS = 50_000  # instants per COPY: 150,000 rows, about 6 MB in flight


def _log(msg: str) -> None:
    print(f"[bench api] {msg}", file=sys.stderr, flush=True)


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


# ------------------------------------------------------------------- seeding


async def _seed(dsn: str, owners: int) -> list[tuple[str, str]]:
    """N owners with a site each; returns ``(email, gateway_id)`` per owner."""
    from cloud.auth import hash_password
    from cloud.db import migrate
    from cloud.ingest import BatchStore
    from protocols import contract

    await migrate(dsn)
    pw_hash = await asyncio.to_thread(hash_password, PASSWORD)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    minute_ms = 60_000
    start_ms = now_ms - now_ms % minute_ms - 30 * minute_ms
    first_slot = int(now.timestamp()) // SLOT_S * SLOT_S - SLOT_S
    conn = await asyncpg.connect(dsn)
    try:
        await BatchStore.init_connection(conn)
        store = BatchStore()
        await conn.execute("INSERT INTO tariffs (id) VALUES ($1)", TARIFF)
        await conn.executemany(
            "INSERT INTO tariff_slots VALUES ($1, $2, $3, $4)",
            [
                (
                    TARIFF,
                    datetime.fromtimestamp(first_slot + i * SLOT_S, UTC),
                    10.0 + (i % 12) * 2.5,
                    80.0 + (i % 7) * 20,
                )
                for i in range(50)
            ],
        )
        out = []
        for i in range(owners):
            email = f"owner{i}@bench.example"
            gw = f"bench-gw-{i:04d}"
            owner_id = await conn.fetchval(
                "INSERT INTO users (email, role, password_hash)"
                " VALUES ($1, 'owner', $2) RETURNING id",
                email,
                pw_hash,
            )
            await store.update_status(
                conn, contract.GatewayStatus(gw=gw, state="online", software="bench")
            )
            await conn.execute(
                "INSERT INTO sites (gateway_id, owner_id, main_fuse_a, tariff_id)"
                " VALUES ($1, $2, 60, $3)",
                gw,
                owner_id,
                TARIFF,
            )
            await conn.execute(
                "INSERT INTO site_chargers (gateway_id, charger_id, max_power_w)"
                " VALUES ($1, $2, 7400)",
                gw,
                CHARGER,
            )
            await conn.executemany(
                "INSERT INTO site_meters (gateway_id, meter_id, type, topic, role)"
                " VALUES ($1, $2, $3, $4, $5)",
                [
                    (gw, SITE_METER, "glow", f"glow/{gw}", "site"),
                    (gw, MANUAL_METER, "manual", None, "other"),
                ],
            )
            await conn.execute(
                "INSERT INTO charging_preferences (gateway_id, charger_id, mode,"
                " ready_by, target_energy_kwh) VALUES ($1, $2, 'smart', '07:30', 20)",
                gw,
                CHARGER,
            )
            await _seed_plan(conn, gw, first_slot, now)
            await store.store(conn, _readings_batch(contract, gw, start_ms, now_ms))
            out.append((email, gw))
        return out
    finally:
        await conn.close()


async def _seed_plan(
    conn: asyncpg.Connection, gw: str, first_slot: int, now: datetime
) -> None:
    start_ms = (first_slot + SLOT_S) * 1000
    lease = {
        "slots_start_ms": start_ms,
        "price_p_per_kwh": [10.0 + (i % 12) * 2.5 for i in range(48)],
        "carbon_g_per_kwh": [80.0 + (i % 7) * 20 for i in range(48)],
        "chargers": [
            {
                "charger_id": CHARGER,
                "periods": [
                    {
                        "start_ms": start_ms + k * SLOT_S * 1000,
                        "end_ms": start_ms + (k + 1) * SLOT_S * 1000,
                        "limit_w": 7000,
                    }
                    for k in (2, 3, 4, 5, 10, 11)
                ],
            }
        ],
    }
    await conn.execute(
        "INSERT INTO plans (gateway_id, version, issued_at, valid_until, inputs_at,"
        " reason, charger_ids, lease) VALUES ($1, 1, $2, $3, now(), 'plug_in',"
        " $4, $5::jsonb)",
        gw,
        now,
        now + timedelta(hours=24),
        [CHARGER],
        json.dumps(lease),
    )


def _readings_batch(contract: Any, gw: str, start_ms: int, now_ms: int) -> Any:
    """30 minutes of a charging EV: site and charger power, the charger's register
    and the EV's SoC each minute, the connector status and the session start."""
    streams = [
        (SITE_METER, "power_w"),
        (CHARGER, "power_w"),
        (CHARGER, "import_energy_wh"),
        (CHARGER, "soc_pct"),
        (CHARGER, "status"),
        (CHARGER, "session_started"),
    ]
    readings = []
    for m in range(30):
        ts = start_ms + m * 60_000 + 5_000
        readings.append((ts, 0, 7500.0))
        readings.append((ts, 1, 7000.0))
        readings.append((ts, 2, 1000.0 + m * 7000 / 60))
        readings.append((ts, 3, 40.0 + m * 0.5))
    events = [
        (start_ms, 4, {"connector_id": 1, "status": "Charging"}),
        (
            start_ms,
            5,
            {
                "charger_id": CHARGER,
                "transaction_id": f"tx-{gw}",
                "connector_id": 1,
                "started_at": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                "meter_start_wh": 1000.0,
            },
        ),
    ]
    rows = [(k + 1, ts, idx, v) for k, (ts, idx, v) in enumerate(readings)]
    n = len(rows)
    evs = [(n + k + 1, ts, idx, d) for k, (ts, idx, d) in enumerate(events)]
    last = n + len(evs)
    return contract.unpack_batch(
        contract.pack(
            contract.batch_dict(
                gw=gw,
                epoch=1,
                first_seq=1,
                last_seq=last,
                sent_ms=now_ms,
                streams=streams,
                readings=rows,
                events=evs,
            )
        )
    )


async def seed_history(
    conn: asyncpg.Connection,
    gw: str,
    streams: tuple[tuple[str, str], ...],
    start: datetime,
    end: datetime,
    *,
    step_s: float = HISTORY_STEP_S,
    first_seq: int,
) -> int:
    """COPY one reading per stream every ``step_s`` in ``[start, end)`` into
    ``readings`` of gateway ``gw`` (which must exist), with seqs from
    ``first_seq``; returns the rows stored. The rows are what the ingest worker
    stores, minus the batch path, so a year takes about a minute, not an hour."""
    from cloud.db import Partitions

    ids = []
    for device_id, name in streams:
        await conn.execute(
            "INSERT INTO streams (gateway_id, device_id, name) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            gw,
            device_id,
            name,
        )
        ids.append(
            await conn.fetchval(
                "SELECT id FROM streams WHERE gateway_id = $1 AND device_id = $2"
                " AND name = $3",
                gw,
                device_id,
                name,
            )
        )
    instants = int((end - start).total_seconds() // step_s)
    if instants <= 0:
        return 0
    step = timedelta(seconds=step_s)
    start_ms = int(start.timestamp() * 1000)
    await Partitions().ensure(conn, start_ms, start_ms + int(instants * step_s * 1000))
    seq = first_seq
    for i0 in range(0, instants, _COPY_INSTANTS):
        rows = []
        for i in range(i0, min(instants, i0 + _COPY_INSTANTS)):
            ts = start + i * step
            for k, stream_id in enumerate(ids):
                # a household's power, a charger's power, a rising register
                value = float((i * 7919 + k * 104_729) % 7400) if k < 2 else i * 2.0
                rows.append((gw, seq, ts, stream_id, value))
                seq += 1
        await conn.copy_records_to_table(
            "readings",
            records=rows,
            columns=["gateway_id", "seq", "ts", "stream_id", "value"],
        )
    return seq - first_seq


# ------------------------------------------------------------------ the load


@dataclass
class Client:
    http: httpx.AsyncClient
    email: str
    gw: str
    token: str | None = None
    register_kwh: float = 5000.0
    last_ts: datetime | None = None
    submitted: int = 0
    created: int = 0


async def _phase(
    label: str,
    clients: list[Client],
    duration_s: float,
    loop_body: Callable[[Client, Stats], Awaitable[None]],
    server: psutil.Process,
) -> dict[str, Any]:
    stats = Stats()
    stop_at = time.perf_counter() + duration_s

    async def run(c: Client) -> None:
        while time.perf_counter() < stop_at:
            await loop_body(c, stats)

    me = psutil.Process()
    cpu0 = sum(server.cpu_times()[:2])
    load0 = sum(me.cpu_times()[:2])
    t0 = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    elapsed = time.perf_counter() - t0
    cpu = sum(server.cpu_times()[:2]) - cpu0
    fig = _figures(stats, elapsed, cpu)
    n = fig["requests"]
    # the clients share the machine: their CPU shows whether they were the limit
    fig["client_cpu_ms_per_request"] = (
        round((sum(me.cpu_times()[:2]) - load0) * 1000 / n, 3) if n else None
    )
    _log(
        f"{label}: {fig['rps']:,.0f} requests/s, p50 {fig['p50_ms']:.1f} ms, "
        f"p99 {fig['p99_ms']:.1f} ms, {fig['errors']} errors "
        f"({fig['requests']:,} requests in {elapsed:.1f} s; CPU per request: "
        f"server {fig['server_cpu_ms_per_request']} ms, "
        f"clients {fig['client_cpu_ms_per_request']} ms)"
    )
    if stats.first_error:
        _log(f"{label}: first error: {stats.first_error}")
    return fig


async def _baseline_once(c: Client, stats: Stats) -> None:
    await _timed(stats, "healthz", lambda: c.http.get("/healthz"))


async def _reads_once(c: Client, stats: Stats) -> None:
    h = {"Authorization": f"Bearer {c.token}"}
    await _timed(stats, "sites", lambda: c.http.get("/v1/sites", headers=h))
    await _timed(
        stats, "live", lambda: c.http.get(f"/v1/gateways/{c.gw}/live", headers=h)
    )
    await _timed(
        stats, "plan", lambda: c.http.get(f"/v1/gateways/{c.gw}/plan", headers=h)
    )


async def _submit_once(c: Client, stats: Stats) -> None:
    h = {"Authorization": f"Bearer {c.token}"}
    path = f"/v1/gateways/{c.gw}/meters/{MANUAL_METER}/readings"
    replay = c.submitted > 0 and c.submitted % REPLAY_EVERY == 0
    if not replay:
        ts = datetime.now(UTC)
        if c.last_ts is not None and ts <= c.last_ts:
            ts = c.last_ts + timedelta(milliseconds=1)
        c.last_ts = ts
        c.register_kwh += 0.001  # 1 Wh: plausible however fast the loop runs
    assert c.last_ts is not None
    body = {
        "ts": c.last_ts.isoformat(),
        "register_kwh": round(c.register_kwh, 3),
        "idempotency_key": f"bench-{c.gw}-{int(c.last_ts.timestamp() * 1e6)}",
    }
    # 202: in the durable intake; 200: decided before (a replay); 201: stored
    # in the request (the API before issue 11)
    expect = (200, 201, 202)
    r = await _timed(
        stats,
        "replay" if replay else "submit",
        lambda: c.http.post(path, headers=h, json=body),
        expect,
    )
    if r is not None and r.status_code in BUSY:
        await asyncio.sleep(retry_wait_s(r, 1))
        return  # sent again next time round
    c.submitted += 1
    if r is not None and not replay:
        c.created += 1


async def _readings_once(c: Client, stats: Stats) -> None:
    """The owner's readings: the newest page, the next (older) one from its
    ``Link``, and the newest page of one quantity."""
    h = {"Authorization": f"Bearer {c.token}"}
    path = f"/v1/gateways/{c.gw}/readings"
    r = await _timed(stats, "page", lambda: c.http.get(path, headers=h))
    if r is None:
        return
    next_url = r.links.get("next", {}).get("url")
    if not r.json() or next_url is None:
        stats.fail(f"page: {len(r.json())} readings, next page {next_url!r}")
        return
    await _timed(stats, "next", lambda: c.http.get(next_url, headers=h))
    await _timed(
        stats,
        "power_w",
        lambda: c.http.get(path, params={"quantity": "power_w"}, headers=h),
    )


async def _seed_segment(
    dsn: str, gw: str, start: datetime, end: datetime, first_seq: int
) -> dict[str, Any]:
    """COPY the history in ``[start, end)`` into ``gw``, then let PostgreSQL
    settle as it would within a minute of such a load (autovacuum's ANALYZE, the
    checkpoint writing the load's pages back), so that the next phase measures the
    endpoint rather than the seed's aftermath."""
    conn = await asyncpg.connect(dsn)
    try:
        days = (end - start).total_seconds() / 86_400
        _log(f"history: COPYing {days:g} days of readings into {gw} ...")
        t0 = time.perf_counter()
        rows = await seed_history(
            conn, gw, HISTORY_STREAMS, start, end, first_seq=first_seq
        )
        seed_s = time.perf_counter() - t0
        await conn.execute("VACUUM (ANALYZE) readings")
        try:
            await conn.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            _log("history: no CHECKPOINT (needs superuser or pg_checkpoint)")
        settle_s = time.perf_counter() - t0 - seed_s
        stored = await conn.fetchval(
            "SELECT count(*) FROM readings WHERE gateway_id = $1", gw
        )
    finally:
        await conn.close()
    _log(
        f"history: {rows:,} readings in {seed_s:.1f} s ({rows / seed_s:,.0f}/s), "
        f"VACUUM ANALYZE + CHECKPOINT {settle_s:.1f} s; {gw} holds {stored:,}"
    )
    return {
        "days": round(days, 3),
        "rows_copied": rows,
        "rows_stored": stored,
        "seed_s": round(seed_s, 1),
        "settle_s": round(settle_s, 1),
    }


async def _history_phases(
    ready: list[Client],
    duration_s: float,
    server: psutil.Process,
    dsn: str,
    days: float,
) -> dict[str, Any]:
    """The readings load on the first owner's gateway holding a small history
    (``SMALL_HISTORY_DAYS``), then again once it holds ``days``. Both are seeded
    the same way, so every page is full in both and only the history differs."""
    first = ready[0]
    # every client reads as the first owner: one gateway, one access path
    readers = [Client(c.http, first.email, first.gw, first.token) for c in ready]
    small_days = min(SMALL_HISTORY_DAYS, days / 2)
    conn = await asyncpg.connect(dsn)
    try:  # the history ends where the seeded 30 minutes begin
        end = await conn.fetchval(
            "SELECT min(ts) FROM readings WHERE gateway_id = $1", first.gw
        )
    finally:
        await conn.close()
    split = end - timedelta(days=small_days)
    small_seed = await _seed_segment(dsn, first.gw, split, end, HISTORY_FIRST_SEQ)
    small = await _phase(
        f"readings, {small_days:g} days stored",
        readers,
        duration_s,
        _readings_once,
        server,
    )
    year_seed = await _seed_segment(
        dsn,
        first.gw,
        end - timedelta(days=days),
        split,
        HISTORY_FIRST_SEQ + small_seed["rows_copied"],
    )
    year = await _phase(
        f"readings, {days:g} days stored", readers, duration_s, _readings_once, server
    )

    def ratio(key: str) -> float:
        return round(year[key] / small[key], 2) if small[key] else 0.0

    return {
        "history": {
            "gateway": first.gw,
            "step_s": HISTORY_STEP_S,
            "streams": len(HISTORY_STREAMS),
            "small": small_seed,
            "year": year_seed,
        },
        "readings_small": small,
        "readings_year": year,
        "readings_year_vs_small": {"p50": ratio("p50_ms"), "p99": ratio("p99_ms")},
    }


async def _login(
    c: Client, stats: Stats, *, patience_s: float = 60.0, quiet: bool = False
) -> None:
    """Log in, honouring busy answers (Retry-After plus full jitter); still
    refused after ``patience_s`` is an error unless ``quiet`` (a phase ending)."""
    give_up = time.perf_counter() + patience_s
    attempt = 0
    while time.perf_counter() < give_up:
        r = await _timed(
            stats,
            "login",
            lambda: c.http.post(
                "/v1/auth/login", json={"email": c.email, "password": PASSWORD}
            ),
        )
        if r is None:
            return
        if r.status_code not in BUSY:
            c.token = r.json()["access_token"]
            return
        attempt += 1
        await asyncio.sleep(retry_wait_s(r, attempt))
    if not quiet:
        stats.fail(f"login: still refused after {patience_s:g} s")


async def _login_flood(
    clients: list[Client], duration_s: float, server: psutil.Process
) -> dict[str, Any]:
    """Half the clients log in again and again, the rest read: the reads'
    figures under the flood, and the logins'."""
    half = max(1, len(clients) // 2)
    loggers = [Client(c.http, c.email, c.gw) for c in clients[:half]]
    readers = clients[half:] or clients[:1]
    login_stats = Stats()
    stop_at = time.perf_counter() + duration_s

    async def flood(c: Client) -> None:
        while time.perf_counter() < stop_at:
            left_s = stop_at - time.perf_counter()
            await _login(c, login_stats, patience_s=left_s, quiet=True)

    flooding = [asyncio.create_task(flood(c)) for c in loggers]
    t0 = time.perf_counter()
    try:
        reads = await _phase(
            "reads under a login flood", readers, duration_s, _reads_once, server
        )
    finally:
        await asyncio.gather(*flooding)
    logins = _figures(login_stats, time.perf_counter() - t0, 0.0)
    logins.pop("server_cpu_ms_per_request")
    _log(
        f"login flood: {logins['rps']:.1f} logins/s, p99 {logins['p99_ms']:.0f} ms, "
        f"{logins['refused']} refused fast, {logins['errors']} errors"
    )
    return {"reads_under_login_flood": reads, "login_flood": logins}


async def _drained(
    dsn: str, created: int, timeout_s: float = 120.0
) -> tuple[int, float]:
    """Wait until ``created`` manual readings are stored (the intake's consumer
    stores them after the 202); the count stored and the seconds waited."""
    t0 = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            stored: int = await conn.fetchval(
                "SELECT count(*) FROM manual_readings WHERE meter_id = $1",
                MANUAL_METER,
            )
            waited = time.perf_counter() - t0
            if stored >= created or waited > timeout_s:
                return stored, waited
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _drive(
    base_url: str,
    owners: list[tuple[str, str]],
    duration_s: float,
    server: psutil.Process,
    dsn: str,
    history_days: float,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        Client(httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30), e, g)
        for e, g in owners
    ]
    try:
        # one request each first, so every phase starts with open connections
        warm = Stats()
        await asyncio.gather(*(_baseline_once(c, warm) for c in clients))
        baseline = await _phase(
            "baseline GET /healthz", clients, duration_s, _baseline_once, server
        )
        logins = Stats()
        t0 = time.perf_counter()
        await asyncio.gather(*(_login(c, logins) for c in clients))
        login_s = time.perf_counter() - t0
        login_fig = _figures(logins, login_s, 0.0)
        login_fig.pop("server_cpu_ms_per_request")
        login_fig["logins_per_s"] = round(len(clients) / login_s, 1)
        _log(
            f"login: {len(clients)} owners logged in in {login_s:.2f} s "
            f"({login_fig['logins_per_s']}/s), p50 {login_fig['p50_ms']:.0f} "
            f"ms, p99 {login_fig['p99_ms']:.0f} ms per answer, "
            f"{logins.refused} refused fast, {logins.errors} errors"
        )
        ready = [c for c in clients if c.token]
        if not ready:
            raise SystemExit("[bench api] no client could log in")
        # connections idle through the logins may have been closed (keep-alive)
        await asyncio.gather(*(_baseline_once(c, warm) for c in ready))
        reads = await _phase(
            "reads (sites + live + plan)", ready, duration_s, _reads_once, server
        )
        reads["errors"] += logins.errors
        submissions = await _phase(
            "submissions (manual meter readings)",
            ready,
            duration_s,
            _submit_once,
            server,
        )
        created = sum(c.created for c in ready)
        stored, drain_s = await _drained(dsn, created)
        submissions["created"] = created
        submissions["stored"] = stored
        submissions["drain_s"] = round(drain_s, 2)
        _log(f"submissions: {stored} of {created} stored {drain_s:.1f} s after")
        if stored != created:
            submissions["errors"] += abs(stored - created)
            _log(f"submissions: {created} answered 201 but {stored} rows stored")
        out = {
            "baseline": baseline,
            "login": login_fig,
            "reads": reads,
            "submissions": submissions,
            **await _login_flood(ready, duration_s, server),
        }
        if history_days > 0:
            out.update(
                await _history_phases(ready, duration_s, server, dsn, history_days)
            )
        return out
    finally:
        await asyncio.gather(*(c.http.aclose() for c in clients))


# ---------------------------------------------------------------- the process


def _start_api(dsn: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FUSEBOX_API_HOST": "127.0.0.1",
        "FUSEBOX_API_PORT": str(port),
        "FUSEBOX_DATABASE_URL": dsn,
        # manual readings wait in this file until the API's consumer stores them
        "FUSEBOX_INTAKE_PATH": str(log_path.with_name("api-intake.sqlite3")),
        # `fusebox cloud api` insists on a broker URL although the API only writes
        # it into config bundles; the bench never asks for one
        "FUSEBOX_CLOUD_MQTT_URL": os.environ.get(
            "FUSEBOX_CLOUD_MQTT_URL", "mqtt://127.0.0.1:1883"
        ),
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fusebox",
                "--log-level",
                "warning",
                "cloud",
                "api",
                "--database-url",
                dsn,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"[bench api] the API exited ({proc.returncode}):\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("[bench api] the API did not answer /healthz within 60 s")


def run_api_bench(args: argparse.Namespace) -> int:
    from fusebox import embedded

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request
    n = args.clients
    duration = args.duration if args.duration is not None else 15.0
    history_days = float(getattr(args, "days", 365))
    if n < 1 or duration <= 0 or history_days < 0:
        print(
            "fusebox bench api: --clients >= 1, --duration > 0 and --days >= 0",
            file=sys.stderr,
        )
        return 2
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    stops: list[Callable[[], None]] = []
    try:
        admin = args.database_url or os.environ.get("FUSEBOX_DATABASE_URL")
        where = "given"
        if not admin:
            shutil.rmtree(state / "api-pg", ignore_errors=True)
            pg = embedded.start_embedded_postgres(state / "api-pg")
            stops.append(pg.stop)
            admin = pg.admin_dsn
            where = "embedded"
        dbname = f"fusebox_bench_api_{os.getpid()}_{secrets.token_hex(3)}"
        asyncio.run(create_db(admin, dbname))
        stops.append(lambda: asyncio.run(create_db(admin, dbname, drop=True)))
        dsn = _with_database(admin, dbname)
        _log(f"PostgreSQL ({where}): database {dbname}; seeding {n} owners ...")
        t0 = time.perf_counter()
        owners = asyncio.run(_seed(dsn, n))
        _log(f"seeded in {time.perf_counter() - t0:.1f} s")
        port = embedded.free_tcp_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = state / "api.log"
        proc = _start_api(dsn, port, log_path)

        def stop_api() -> None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        stops.append(stop_api)
        _wait_ready(proc, base_url, log_path)
        _log(
            f"API (fusebox cloud api, pid {proc.pid}) at {base_url}; {n} clients, "
            f"{duration:g} s per phase"
        )
        phases = asyncio.run(
            _drive(
                base_url,
                owners,
                duration,
                psutil.Process(proc.pid),
                dsn,
                history_days,
            )
        )
    finally:
        for stop in reversed(stops):
            try:
                stop()
            except Exception as exc:  # cleanup must not hide the result
                _log(f"cleanup: {exc}")
    base_rps = phases["baseline"]["rps"] or 1.0
    result = {
        "bench": "api",
        "clients": n,
        "duration_s": duration,
        "database": where,
        **phases,
        "reads_vs_baseline": round(phases["reads"]["rps"] / base_rps, 3),
        "submissions_vs_baseline": round(phases["submissions"]["rps"] / base_rps, 3),
    }
    if "readings_year" in phases:
        small, year = phases["readings_small"], phases["readings_year"]
        base, history = phases["baseline"], phases["history"]
        ratios = phases["readings_year_vs_small"]
        _log(
            f"readings p50/p99: {small['p50_ms']:.1f}/{small['p99_ms']:.1f} ms on "
            f"{history['small']['days']:g} days, {year['p50_ms']:.1f}/"
            f"{year['p99_ms']:.1f} ms on {history_days:g} days (x{ratios['p50']} / "
            f"x{ratios['p99']}); baseline /healthz {base['p50_ms']:.1f}/"
            f"{base['p99_ms']:.1f} ms"
        )
    print(json.dumps(result))
    return 0
