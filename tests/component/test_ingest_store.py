"""``cloud.ingest.BatchStore`` on a real PostgreSQL: idempotence, coverage, epochs,
partitions, events, concurrent workers, gateway status; migrations."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from cloud.db import migrate, migrations
from cloud.ingest import BatchStore
from protocols import contract

GW = "gw-1"
EPOCH = 4242
TS_MS = int(datetime(2024, 5, 10, tzinfo=UTC).timestamp() * 1000)
STREAMS = [("meter-1", "power_w"), ("meter-1", "import_energy_wh"), ("cp-1", "fault")]


def make_batch(
    first: int,
    last: int,
    *,
    seqs: list[int] | None = None,
    gw: str = GW,
    epoch: int = EPOCH,
    events: list[tuple[int, int, int, dict[str, Any]]] | None = None,
    ts_of: Any = None,
) -> contract.Batch:
    """Readings for ``seqs`` (default: every seq of the range), alternating between
    power and energy; validated through the wire form like the ingest worker does."""
    ts_of = ts_of or (lambda seq: TS_MS + seq * 1000)
    seqs = list(range(first, last + 1)) if seqs is None else seqs
    event_seqs = {e[0] for e in events or []}
    readings = [
        (s, ts_of(s), s % 2, float(s * 10)) for s in seqs if s not in event_seqs
    ]
    return contract.unpack_batch(
        contract.pack(
            contract.batch_dict(
                gw=gw,
                epoch=epoch,
                first_seq=first,
                last_seq=last,
                sent_ms=TS_MS,
                streams=STREAMS,
                readings=readings,
                events=events or [],
            )
        )
    )


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(pg_dsn)
    c = await asyncpg.connect(pg_dsn)
    await BatchStore.init_connection(c)
    try:
        yield c
    finally:
        await c.close()


async def reading_seqs(conn: asyncpg.Connection, gw: str = GW) -> list[int]:
    rows = await conn.fetch(
        "SELECT seq FROM readings WHERE gateway_id = $1 ORDER BY seq", gw
    )
    return [r["seq"] for r in rows]


async def stored_through(conn: asyncpg.Connection, epoch: int = EPOCH) -> int:
    value = await conn.fetchval(
        "SELECT stored_through_seq FROM gateway_epochs WHERE gateway_id = $1 "
        "AND epoch = $2",
        GW,
        epoch,
    )
    assert value is not None
    return int(value)


async def test_store_is_idempotent(conn: asyncpg.Connection) -> None:
    store = BatchStore()
    batch = make_batch(1, 50)
    assert await store.store(conn, batch) == 50
    assert await store.store(conn, batch) == 50
    # a fresh process (empty caches) storing it again changes nothing either
    assert await BatchStore().store(conn, batch) == 50
    assert await reading_seqs(conn) == list(range(1, 51))
    rows = await conn.fetch(
        "SELECT seq, device_id, quantity, value, ts FROM readings_v "
        "WHERE seq IN (1, 2) ORDER BY seq"
    )
    assert [tuple(r) for r in rows] == [
        (
            1,
            "meter-1",
            "import_energy_wh",
            10.0,
            datetime.fromtimestamp((TS_MS + 1000) / 1000, tz=UTC),
        ),
        (
            2,
            "meter-1",
            "power_w",
            20.0,
            datetime.fromtimestamp((TS_MS + 2000) / 1000, tz=UTC),
        ),
    ]
    assert await conn.fetchval("SELECT count(*) FROM streams") == 3


async def test_out_of_order_ranges_merge(conn: asyncpg.Connection) -> None:
    store = BatchStore()
    # live goes first: nothing contiguous from 1 yet
    assert await store.store(conn, make_batch(101, 150)) == 0
    assert await store.store(conn, make_batch(61, 80)) == 0
    assert await store.store(conn, make_batch(151, 160)) == 0
    ranges = await conn.fetch(
        "SELECT first_seq, last_seq FROM covered_ranges ORDER BY first_seq"
    )
    assert [tuple(r) for r in ranges] == [(61, 80), (101, 150), (151, 160)]
    # backlog 1..60 joins 61..80 but not 101..
    assert await store.store(conn, make_batch(1, 60)) == 80
    assert await stored_through(conn) == 80
    # 81..100 closes the last gap: everything through 160
    assert await store.store(conn, make_batch(81, 100)) == 160
    assert await conn.fetchval("SELECT count(*) FROM covered_ranges") == 0
    # an old batch redelivered later returns the watermark unchanged
    assert await store.store(conn, make_batch(1, 60)) == 160
    assert await reading_seqs(conn) == list(range(1, 161))


async def test_overlapping_ranges_merge(conn: asyncpg.Connection) -> None:
    store = BatchStore()
    assert await store.store(conn, make_batch(20, 40)) == 0
    assert await store.store(conn, make_batch(30, 50)) == 0
    assert await store.store(conn, make_batch(1, 25)) == 50
    assert await conn.fetchval("SELECT count(*) FROM covered_ranges") == 0


async def test_thinned_gaps_count_as_covered(conn: asyncpg.Connection) -> None:
    store = BatchStore()
    assert await store.store(conn, make_batch(1, 10, seqs=[1, 2, 5, 9])) == 10
    # a range with nothing left in it at all still covers its sequence numbers
    assert await store.store(conn, make_batch(11, 20, seqs=[])) == 20
    assert await store.store(conn, make_batch(31, 40, seqs=[33])) == 20
    assert await store.store(conn, make_batch(21, 30, seqs=[30])) == 40
    assert await reading_seqs(conn) == [1, 2, 5, 9, 30, 33]


async def test_epochs_are_tracked_separately(conn: asyncpg.Connection) -> None:
    store = BatchStore()
    assert await store.store(conn, make_batch(1, 100, epoch=1)) == 100
    # the outbox was wiped: a new epoch starts from 1 again
    assert await store.store(conn, make_batch(1, 10, epoch=2)) == 10
    assert await store.store(conn, make_batch(21, 30, epoch=2)) == 10
    assert await stored_through(conn, epoch=1) == 100
    assert await stored_through(conn, epoch=2) == 10
    ranges = await conn.fetch("SELECT epoch, first_seq, last_seq FROM covered_ranges")
    assert [tuple(r) for r in ranges] == [(2, 21, 30)]
    assert await store.store(conn, make_batch(101, 110, epoch=1)) == 110
    assert await stored_through(conn, epoch=2) == 10


async def test_partitions_are_created_for_a_batch_spanning_two_months(
    conn: asyncpg.Connection,
) -> None:
    jan_end = int(datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)
    feb_start = int(datetime(2024, 2, 1, 0, 0, 1, tzinfo=UTC).timestamp() * 1000)

    batch = make_batch(1, 4, ts_of=lambda s: jan_end if s <= 2 else feb_start)
    assert await BatchStore().store(conn, batch) == 4
    rows = await conn.fetch(
        "SELECT seq, tableoid::regclass::text AS part FROM readings ORDER BY seq"
    )
    assert [tuple(r) for r in rows] == [
        (1, "readings_y2024m01"),
        (2, "readings_y2024m01"),
        (3, "readings_y2024m02"),
        (4, "readings_y2024m02"),
    ]
    # another process finds them there already
    batch = make_batch(5, 6, ts_of=lambda s: feb_start + s)
    assert await BatchStore().store(conn, batch) == 6
    parts = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'readings'::regclass ORDER BY 1"
    )
    assert [r["relname"] for r in parts] == ["readings_y2024m01", "readings_y2024m02"]


async def test_events_are_stored_as_jsonb(conn: asyncpg.Connection) -> None:
    data = {"connector": 2, "code": "GroundFailure", "detail": {"a": [1, None, True]}}
    batch = make_batch(1, 3, events=[(2, TS_MS + 5, 2, data)])
    assert await BatchStore().store(conn, batch) == 3
    assert await BatchStore().store(conn, batch) == 3
    rows = await conn.fetch(
        "SELECT e.seq, e.ts, s.device_id, s.name, jsonb_typeof(e.data) AS t, "
        "e.data->>'code' AS code, e.data FROM events e "
        "JOIN streams s ON s.id = e.stream_id"
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["seq"], row["device_id"], row["name"], row["t"], row["code"]) == (
        2,
        "cp-1",
        "fault",
        "object",
        "GroundFailure",
    )
    assert row["ts"] == datetime.fromtimestamp((TS_MS + 5) / 1000, tz=UTC)
    assert json.loads(row["data"]) == data
    assert await reading_seqs(conn) == [1, 3]


async def test_two_workers_storing_overlapping_batches(
    conn: asyncpg.Connection, pg_dsn: str
) -> None:
    other = await asyncpg.connect(pg_dsn)
    third = await asyncpg.connect(pg_dsn)
    try:
        for c in (other, third):
            await BatchStore.init_connection(c)
        stores = [(BatchStore(), other), (BatchStore(), third)]
        rng = random.Random(5)
        # both workers get every batch (a redelivery after a lost ack), in
        # different orders, and the ranges overlap as well
        batches = [make_batch(s, s + 149) for s in range(1, 2001, 100)]
        answers: list[int] = []
        for _round in range(3):
            order_a = batches[:]
            order_b = batches[:]
            rng.shuffle(order_a)
            rng.shuffle(order_b)

            async def run(
                store: BatchStore, c: asyncpg.Connection, order: list[contract.Batch]
            ) -> None:
                for b in order:
                    answers.append(await store.store(c, b))

            async with asyncio.timeout(60):
                await asyncio.gather(run(*stores[0], order_a), run(*stores[1], order_b))
        assert await reading_seqs(conn) == list(range(1, 2051))
        dup = await conn.fetchval(
            "SELECT count(*) FROM (SELECT seq FROM readings GROUP BY seq "
            "HAVING count(*) > 1) d"
        )
        assert dup == 0
        assert await stored_through(conn) == 2050
        assert max(answers) == 2050
        assert await conn.fetchval("SELECT count(*) FROM covered_ranges") == 0
        assert await conn.fetchval("SELECT count(*) FROM streams") == 3
    finally:
        await other.close()
        await third.close()


def _status(**kw: Any) -> contract.GatewayStatus:
    fields: dict[str, Any] = {
        "gw": GW,
        "state": "online",
        "sent_ms": TS_MS,
        "software": "fusebox-edge 1.0",
        "backlog_records": 500,
        "backlog_oldest_ms": TS_MS - 60_000,
        "outbox_bytes": 8192,
        "outbox_cap_bytes": 2**29,
        "appended_total": 1000,
        "thinned_total": 40,
        "rejected_total": 2,
        "acked_through_seq": 500,
    }
    fields.update(kw)
    return contract.GatewayStatus(**fields)


async def _gateway(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT state, software, backlog_records, backlog_oldest, outbox_bytes, "
        "outbox_cap_bytes, appended_total, thinned_total, rejected_total, "
        "acked_through_seq, last_seen IS NOT NULL AS seen FROM gateways WHERE id = $1",
        GW,
    )
    assert row is not None
    return dict(row)


async def test_update_status_upserts_the_gateway(conn: asyncpg.Connection) -> None:
    store = BatchStore()
    await store.update_status(conn, _status())
    assert await _gateway(conn) == {
        "state": "online",
        "software": "fusebox-edge 1.0",
        "backlog_records": 500,
        "backlog_oldest": datetime.fromtimestamp((TS_MS - 60_000) / 1000, tz=UTC),
        "outbox_bytes": 8192,
        "outbox_cap_bytes": 2**29,
        "appended_total": 1000,
        "thinned_total": 40,
        "rejected_total": 2,
        "acked_through_seq": 500,
        "seen": True,
    }
    # an older status arrives late (or the edge restarted its counters): the
    # totals never go down; the last will has no software: the old one stays
    await store.update_status(
        conn,
        _status(
            state="offline",
            software="",
            backlog_records=0,
            backlog_oldest_ms=None,
            thinned_total=10,
            rejected_total=0,
            acked_through_seq=1000,
        ),
    )
    got = await _gateway(conn)
    assert (got["state"], got["software"], got["backlog_records"]) == (
        "offline",
        "fusebox-edge 1.0",
        0,
    )
    assert got["backlog_oldest"] is None
    assert (got["thinned_total"], got["rejected_total"]) == (40, 2)
    assert got["acked_through_seq"] == 1000
    await store.update_status(conn, _status(thinned_total=41))
    assert (await _gateway(conn))["thinned_total"] == 41
    assert await conn.fetchval("SELECT count(*) FROM gateways") == 1


async def test_status_for_a_gateway_first_seen_by_a_batch(
    conn: asyncpg.Connection,
) -> None:
    store = BatchStore()
    await store.store(conn, make_batch(1, 5))
    before = await _gateway(conn)
    assert (before["state"], before["thinned_total"], before["seen"]) == (
        "unknown",
        0,
        False,
    )
    await BatchStore().update_status(conn, _status(thinned_total=3))
    after = await _gateway(conn)
    assert (after["state"], after["thinned_total"], after["seen"]) == (
        "online",
        3,
        True,
    )


# ------------------------------------------------------------------ migrations


async def test_migrations_are_idempotent(pg_dsn: str) -> None:
    names = [name for _v, name, _sql in migrations()]
    assert names and names[0] == "0001_init.sql"
    assert await migrate(pg_dsn) == names
    assert await migrate(pg_dsn) == []
    c = await asyncpg.connect(pg_dsn)
    try:
        rows = await c.fetch("SELECT version, name FROM schema_migrations ORDER BY 1")
        assert [r["name"] for r in rows] == names
    finally:
        await c.close()


async def test_concurrent_migrations_apply_once(pg_dsn: str) -> None:
    names = [name for _v, name, _sql in migrations()]
    async with asyncio.timeout(60):
        results = await asyncio.gather(*(migrate(pg_dsn) for _ in range(3)))
    assert sorted(results, key=len) == [[], [], names]
    c = await asyncpg.connect(pg_dsn)
    try:
        assert await c.fetchval("SELECT count(*) FROM schema_migrations") == len(names)
        assert await c.fetchval("SELECT to_regclass('readings') IS NOT NULL")
    finally:
        await c.close()
