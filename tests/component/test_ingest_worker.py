"""``cloud.ingest.IngestWorker`` as one real service: a private Mosquitto, a fresh
PostgreSQL, and the test acting as a gateway over aiomqtt (it publishes batches on
``up/batch`` and reads the answers on ``down/ack``).

Covers redelivery, out-of-order ranges, batches that fail the contract, admission
control under a slow database, an unreachable database, and gateway status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import asyncpg
import msgpack
import pytest

from cloud.db import migrate
from cloud.ingest import IngestWorker
from protocols import contract
from protocols.urls import parse_mqtt_url
from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import ProxyFactory
from tests.harness.timing import eventually, timeout

GW = "gw-worker-1"
EPOCH = 777
TS_MS = int(datetime(2024, 5, 10, tzinfo=UTC).timestamp() * 1000)
STREAMS = [("meter-1", "import_energy_wh"), ("meter-1", "power_w")]

Answer = contract.Ack | contract.Busy | contract.Reject


def value_of(seq: int) -> float:
    """Values that only survive the trip if nothing rounds them on the way."""
    return 6_613_405.0 + seq + 0.125 if seq % 2 else -951.3 * seq - 0.1


def batch_payload(
    first: int,
    last: int,
    *,
    gw: str = GW,
    epoch: int = EPOCH,
    tweak: Callable[[dict[str, Any]], None] | None = None,
) -> bytes:
    """A wire batch with one reading per seq (odd: energy, even: power)."""
    data = contract.batch_dict(
        gw=gw,
        epoch=epoch,
        first_seq=first,
        last_seq=last,
        sent_ms=TS_MS,
        streams=STREAMS,
        readings=[
            (s, TS_MS + s * 1000, 0 if s % 2 else 1, value_of(s))
            for s in range(first, last + 1)
        ],
        events=[],
    )
    if tweak is not None:
        tweak(data)
    return contract.pack(data)


class Gateway:
    """The test's side of the contract: publish on ``up/...``, read ``down/ack``."""

    def __init__(self, client: aiomqtt.Client, gw: str) -> None:
        self.client = client
        self.gw = gw
        self.answers: asyncio.Queue[Answer] = asyncio.Queue()

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray), payload
            await self.answers.put(contract.unpack_down(bytes(payload)))

    async def send(self, payload: bytes, *, gw: str | None = None) -> None:
        await self.client.publish(contract.up_batch(gw or self.gw), payload, qos=1)

    async def status(self, st: contract.GatewayStatus) -> None:
        await self.client.publish(contract.up_status(self.gw), contract.pack(st), qos=1)

    async def answer(self, within_s: float | None = None) -> Answer:
        return await asyncio.wait_for(
            self.answers.get(), timeout(10) if within_s is None else within_s
        )


@contextlib.asynccontextmanager
async def gateway(
    broker_url: str, gw: str = GW, *, will: aiomqtt.Will | None = None
) -> AsyncIterator[Gateway]:
    target = parse_mqtt_url(broker_url)
    async with aiomqtt.Client(
        target.host,
        target.port,
        identifier=f"test-{gw}",
        will=will,
        keepalive=5,
        timeout=timeout(10),
    ) as client:
        await client.subscribe(contract.down_ack(gw), qos=1)
        gateway = Gateway(client, gw)
        pump = asyncio.create_task(gateway.pump(), name=f"pump-{gw}")
        try:
            yield gateway
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump


@contextlib.asynccontextmanager
async def running(worker: IngestWorker) -> AsyncIterator[IngestWorker]:
    task = asyncio.create_task(worker.run(), name="ingest-worker")
    try:
        ready = asyncio.create_task(worker.ready.wait())
        done, _ = await asyncio.wait(
            {ready, task}, timeout=timeout(15), return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            ready.cancel()
            task.result()  # raises what ended it
        assert ready in done, "ingest worker did not subscribe in time"
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout(15))


def make_worker(dsn: str, broker: MosquittoServer, **kwargs: Any) -> IngestWorker:
    return IngestWorker(dsn=dsn, mqtt=parse_mqtt_url(broker.url), shared=True, **kwargs)


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def stored(conn: asyncpg.Connection) -> list[tuple[int, str, float, datetime]]:
    rows = await conn.fetch(
        "SELECT seq, quantity, value, ts FROM readings_v WHERE gateway_id = $1 "
        "ORDER BY seq",
        GW,
    )
    return [(r["seq"], r["quantity"], r["value"], r["ts"]) for r in rows]


def expected_rows(seqs: range) -> list[tuple[int, str, float, datetime]]:
    return [
        (
            s,
            "import_energy_wh" if s % 2 else "power_w",
            value_of(s),
            datetime.fromtimestamp((TS_MS + s * 1000) / 1000, tz=UTC),
        )
        for s in seqs
    ]


def ack(first: int, last: int, through: int) -> contract.Ack:
    return contract.Ack(
        gw=GW, epoch=EPOCH, first_seq=first, last_seq=last, stored_through_seq=through
    )


# ------------------------------------------------------------------------ storing


async def test_redelivered_batch_is_acked_twice_and_stored_once(
    db: asyncpg.Connection, mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    async with (
        running(make_worker(pg_dsn, mosquitto)),
        gateway(mosquitto.url) as gw,
    ):
        payload = batch_payload(1, 10)
        await gw.send(payload)
        await gw.send(payload)
        answers = [await gw.answer(), await gw.answer()]
    assert answers == [ack(1, 10, 10), ack(1, 10, 10)]
    assert await db.fetchval("SELECT count(*) FROM readings") == 10
    assert await stored(db) == expected_rows(range(1, 11))


async def test_out_of_order_batches_ack_the_contiguous_watermark(
    db: asyncpg.Connection, mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    async with (
        running(make_worker(pg_dsn, mosquitto)),
        gateway(mosquitto.url) as gw,
    ):
        await gw.send(batch_payload(11, 20))
        assert await gw.answer() == ack(11, 20, 0)  # stored, but 1..10 is a gap
        await gw.send(batch_payload(1, 10))
        assert await gw.answer() == ack(1, 10, 20)
    assert await stored(db) == expected_rows(range(1, 21))
    assert await db.fetchval("SELECT count(*) FROM covered_ranges") == 0


# ------------------------------------------------------------------- bad batches


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def tweak(data: dict[str, Any]) -> None:
        data[key] = value

    return tweak


def _reading_outside_range(data: dict[str, Any]) -> None:
    _seq, ts, stream, value = data["readings"][-1]
    data["readings"][-1] = (99, ts, stream, value)


def _nan_value(data: dict[str, Any]) -> None:
    seq, ts, stream, _ = data["readings"][2]
    data["readings"][2] = (seq, ts, stream, math.nan)


# (id, payload, whether the payload names gw/epoch/range so a Reject can be sent,
#  a fragment of the reason)
BAD_BATCHES = [
    ("not-msgpack", b"\xc1\xc1 this is not MessagePack", False, "not MessagePack"),
    ("not-a-map", msgpack.packb([1, 2, 3]), False, "top level is not a map"),
    (
        "wrong-version",
        batch_payload(1, 5, tweak=_set("v", 2)),
        True,
        "contract version 2 is not 1",
    ),
    (
        "reading-seq-outside-range",
        batch_payload(1, 5, tweak=_reading_outside_range),
        True,
        "reading seq 99 outside 1..5",
    ),
    ("nan-value", batch_payload(1, 5, tweak=_nan_value), True, "not finite"),
    (
        # the payload names another gateway than the topic it came on: there is no
        # consistent gateway to answer, so the worker records it and stays silent
        "gateway-mismatch",
        batch_payload(1, 5, gw="gw-someone-else"),
        False,
        "gateway id in payload does not match topic",
    ),
]


@pytest.mark.parametrize(
    ("payload", "answered", "reason"),
    [pytest.param(p, a, r, id=i) for i, p, a, r in BAD_BATCHES],
)
async def test_bad_batch_is_rejected_recorded_logged_and_work_goes_on(
    db: asyncpg.Connection,
    mosquitto: MosquittoServer,
    pg_dsn: str,
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
    answered: bool,
    reason: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="fusebox.cloud.ingest")
    worker = make_worker(pg_dsn, mosquitto)
    async with running(worker), gateway(mosquitto.url) as gw:
        await gw.send(payload)
        if answered:
            reject = await gw.answer()
            assert isinstance(reject, contract.Reject), reject
            assert (reject.gw, reject.epoch, reject.first_seq, reject.last_seq) == (
                GW,
                EPOCH,
                1,
                5,
            )
            assert reason in reject.reason
        # the next good batch is stored; answers keep their order, so an unexpected
        # Reject for the bad batch would show up here instead of the Ack
        await gw.send(batch_payload(1, 5))
        assert await gw.answer() == ack(1, 5, 5)
    assert worker.metrics.rejected == 1
    rows = await db.fetch(
        "SELECT gateway_id, topic, reason, first_seq, last_seq FROM rejected_batches"
    )
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["gateway_id"] == GW
    assert row["topic"] == contract.up_batch(GW)
    assert reason in row["reason"]
    if answered:
        assert (row["first_seq"], row["last_seq"]) == (1, 5)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "rejected batch" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert reason in warnings[0]
    assert await stored(db) == expected_rows(range(1, 6))


# -------------------------------------------------------------- admission control


async def test_full_queue_answers_busy_at_once_and_admitted_batches_are_acked(
    db: asyncpg.Connection, mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    burst = [(10 * i + 1, 10 * i + 10) for i in range(8)]
    async with (
        running(make_worker(pg_dsn, mosquitto, queue_max=1, concurrency=1)),
        gateway(mosquitto.url) as gw,
    ):
        # a slow database: storing blocks on the coverage table until the lock goes
        locker = await asyncpg.connect(pg_dsn)
        try:
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE gateway_epochs IN ACCESS EXCLUSIVE MODE")
            sent_at = time.monotonic()
            for first, last in burst:
                await gw.send(batch_payload(first, last))
            # one batch in the database, at most one queued: the rest are refused
            # at once; nothing is acked while the lock is held
            busy: list[contract.Busy] = []
            refused_within_s = 0.0
            with contextlib.suppress(TimeoutError):
                while True:
                    answer = await gw.answer(timeout(1.5))
                    assert isinstance(answer, contract.Busy), answer
                    busy.append(answer)
                    refused_within_s = time.monotonic() - sent_at
            assert len(busy) >= len(burst) - 2, busy
        finally:
            await locker.close()  # rolls back: releases the lock
        assert refused_within_s < timeout(3), refused_within_s
        for b in busy:
            assert b.reason == "ingest queue full"
            assert b.retry_after_s >= 1
        refused = {(b.first_seq, b.last_seq) for b in busy}
        admitted = [r for r in burst if r not in refused]
        assert 1 <= len(admitted) <= 2, admitted
        acks = [await gw.answer() for _ in admitted]
        assert all(isinstance(a, contract.Ack) for a in acks), acks
        assert sorted((a.first_seq, a.last_seq) for a in acks) == admitted
    stored_seqs = {row[0] for row in await stored(db)}
    assert stored_seqs == {
        s for first, last in admitted for s in range(first, last + 1)
    }


async def test_unreachable_database_answers_busy_then_recovers(
    db: asyncpg.Connection,
    mosquitto: MosquittoServer,
    pg_dsn: str,
    tcp_proxy_factory: ProxyFactory,
) -> None:
    proxy = tcp_proxy_factory(pg_dsn)
    worker = make_worker(proxy.url_for(pg_dsn), mosquitto)
    async with running(worker), gateway(mosquitto.url) as gw:
        await gw.send(batch_payload(1, 10))
        assert await gw.answer() == ack(1, 10, 10)

        proxy.pause()
        for first in (11, 21, 31):
            await gw.send(batch_payload(first, first + 9))
            answer = await gw.answer()
            assert isinstance(answer, contract.Busy), answer
            assert answer.reason == "database unavailable"
            assert (answer.first_seq, answer.last_seq) == (first, first + 9)
            assert answer.retry_after_s >= 1

        proxy.resume()

        # the edge resends after retry_after_s; until the worker probes the
        # database again it may still answer busy
        async def resent_and_acked() -> bool:
            await gw.send(batch_payload(11, 20))
            answer = await gw.answer()
            if isinstance(answer, contract.Busy):
                assert answer.reason == "database unavailable"
                return False
            assert answer == ack(11, 20, 20)
            return True

        await eventually(
            resent_and_acked,
            timeout_s=timeout(30),
            interval_s=1.0,
            message="batch 11..20 acked after PostgreSQL came back",
        )
    assert worker.metrics.db_failures >= 1
    assert await stored(db) == expected_rows(range(1, 21))


# --------------------------------------------------------------- gateway status


async def test_status_updates_the_gateway_row_and_the_last_will_marks_it_offline(
    db: asyncpg.Connection,
    mosquitto: MosquittoServer,
    pg_dsn: str,
    tcp_proxy_factory: ProxyFactory,
) -> None:
    async def gateway_row() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT state, backlog_records, thinned_total, software FROM gateways "
            "WHERE id = $1",
            GW,
        )

    # the gateway reaches the broker through a proxy, so the test can cut its
    # connection as a power cut would and the broker publishes its will
    link = tcp_proxy_factory(mosquitto.url)
    will = aiomqtt.Will(
        contract.up_status(GW),
        contract.pack(contract.GatewayStatus(gw=GW, state="offline")),
        qos=1,
        retain=True,
    )
    async with running(make_worker(pg_dsn, mosquitto)):
        with contextlib.suppress(aiomqtt.MqttError):
            async with gateway(link.url_for(mosquitto.url), will=will) as gw:
                await gw.status(
                    contract.GatewayStatus(
                        gw=GW,
                        state="online",
                        software="1.2.3",
                        backlog_records=42,
                        thinned_total=7,
                    )
                )

                async def online() -> bool:
                    row = await gateway_row()
                    return row is not None and tuple(row) == ("online", 42, 7, "1.2.3")

                await eventually(online, timeout_s=timeout(10), message="status stored")
                link.pause()  # no DISCONNECT: the broker sends the will

                async def offline() -> bool:
                    row = await gateway_row()
                    return row is not None and row["state"] == "offline"

                await eventually(
                    offline, timeout_s=timeout(10), message="last will stored"
                )
    row = await gateway_row()
    assert row is not None
    # the will carries zero counters: the backlog is what it says, thinned only rises
    assert tuple(row) == ("offline", 0, 7, "1.2.3")


async def _retained_presence(broker: MosquittoServer) -> dict[str, bytes]:
    """Every retained ingest presence a newly subscribing edge would get now."""
    seen: dict[str, bytes] = {}
    t = parse_mqtt_url(broker.url)
    async with aiomqtt.Client(t.host, t.port, identifier="presence-reader") as c:
        await c.subscribe(contract.INGEST_PRESENCE_FILTER, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for m in c.messages:
                    seen[m.topic.value] = bytes(m.payload)  # type: ignore[arg-type]
    return seen


async def test_presence_is_retained_while_subscribed_and_cleared_on_stop(
    db: asyncpg.Connection, pg_dsn: str, mosquitto: MosquittoServer
) -> None:
    worker = make_worker(pg_dsn, mosquitto, client_id="ingest-p1")
    topic = contract.ingest_presence("ingest-p1")
    async with running(worker):
        seen = await _retained_presence(mosquitto)
        assert list(seen) == [topic]
        presence = contract.unpack_presence(seen[topic])
        assert presence is not None and presence.worker == "ingest-p1"
    # a clean stop clears it: an edge subscribing later hears of no worker
    assert await _retained_presence(mosquitto) == {}


async def test_a_client_id_that_cannot_be_a_topic_level_is_hashed(
    db: asyncpg.Connection, pg_dsn: str, mosquitto: MosquittoServer
) -> None:
    worker = make_worker(pg_dsn, mosquitto, client_id="ingest/+/odd id")
    async with running(worker):
        seen = await _retained_presence(mosquitto)
    [topic] = seen
    worker_id = topic.rsplit("/", 1)[-1]
    assert worker_id.startswith("w") and len(worker_id) == 17
    assert contract.ingest_presence(worker_id) == topic
