"""``cloud.ingest_jetstream.JetStreamIngest`` on a real backbone: a private
nats-server (JetStream, its MQTT listener, the ``FUSEBOX_UP``/``FUSEBOX_DEAD``
streams of ``cloud.backbone``) and a fresh PostgreSQL.

Gateways speak MQTT to nats-server as they would in production: a real edge
outbox + uplink, or the test's own MQTT client publishing contract batches and
reading ``down/ack``. Every test reconciles: each reading stored exactly once with
its exact value. Faults: the consumer stopped while gateways keep publishing,
PostgreSQL unreachable while the backbone keeps accepting, a lost JetStream ack
(redelivery), poison among good messages, oversized and malformed batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
import nats
import pytest
from nats.aio.msg import Msg

from cloud.backbone.streams import DEAD_STREAM
from cloud.ingest_core import BatchStore
from cloud.ingest_jetstream import (
    JetStreamConfig,
    JetStreamIngest,
    dead_letter_subject,
    subject_to_topic,
    topic_to_subject,
)
from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from protocols import contract
from protocols.backoff import Backoff
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url
from tests.component.test_ingest_worker import (
    EPOCH,
    GW,
    ack,
    batch_payload,
    db,
    expected_rows,
    gateway,
    running,
    stored,
)
from tests.harness.nats import Backbone
from tests.harness.procs import ProxyFactory
from tests.harness.timing import eventually, timeout

__all__ = ["db"]  # the fixture, shared with test_ingest_worker

T0 = datetime(2026, 3, 31, 6, 0, tzinfo=UTC)


def make_door(dsn: str, backbone: Backbone, **kwargs: Any) -> JetStreamIngest:
    """A JetStream ingest on every node of ``backbone``; config overrides as
    ``JetStreamConfig`` keywords."""
    cfg = JetStreamConfig(**kwargs)
    return JetStreamIngest(
        dsn=dsn, nats_urls=backbone.nats_urls, config=cfg, name="ingest-test"
    )


async def dead_letters(backbone: Backbone, want: int) -> list[Msg]:
    """The first ``want`` messages of ``FUSEBOX_DEAD`` (waits for them)."""
    nc = await backbone.connect()
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("fusebox.dead.>", stream=DEAD_STREAM)
        got: list[Msg] = []

        async def enough() -> bool:
            with contextlib.suppress(nats.errors.TimeoutError):
                got.extend(await sub.fetch(want - len(got), timeout=0.5))
            return len(got) >= want

        await eventually(enough, timeout_s=timeout(15), message=f"{want} dead letters")
        return got
    finally:
        await nc.close()


# ------------------------------------------------------------------- pure helpers


def test_subjects_and_topics_map_as_nats_server_maps_them() -> None:
    assert topic_to_subject(contract.down_ack("gw-1")) == "fusebox.v1.gw.gw-1.down.ack"
    assert subject_to_topic("fusebox.v1.gw.gw-1.up.batch") == contract.up_batch("gw-1")
    # a "." in a topic level travels as "//"
    assert topic_to_subject("a/b.c/d") == "a.b//c.d"
    assert subject_to_topic("a.b//c.d") == "a/b.c/d"
    assert dead_letter_subject("ingest", "fusebox.v1.gw.gw-7.up.batch") == (
        "fusebox.dead.ingest.gw-7"
    )
    assert dead_letter_subject("ingest", "fusebox.v1.other") == "fusebox.dead.ingest._"


# ------------------------------------------------------------ a real edge uplink


def edge_readings(n: int) -> list[Reading]:
    """``n`` meter readings of three devices, one a second from ``T0``."""
    return [
        Reading(
            f"m{i % 3}",
            "power_w" if i % 2 else "import_energy_wh",
            T0 + timedelta(seconds=i),
            1000.0 * i + 0.25,
        )
        for i in range(n)
    ]


async def rows_as_edge_readings(conn: asyncpg.Connection) -> list[Reading]:
    """Every stored reading, as the edge appended it, in seq order."""
    rows = await conn.fetch(
        "SELECT device_id, quantity, value, ts FROM readings_v ORDER BY seq"
    )
    return [Reading(r["device_id"], r["quantity"], r["ts"], r["value"]) for r in rows]


def edge_uplink(outbox: Outbox, mqtt_url: str) -> Uplink:
    """A real uplink of gateway ``GW`` to ``mqtt_url`` (nats-server's MQTT
    listener), resending unanswered batches after a few seconds."""
    return Uplink(
        outbox,
        UplinkConfig(
            gateway_id=GW,
            target=parse_mqtt_url(mqtt_url),
            client_id=f"fusebox-edge-{GW}",
            batch_max_records=500,
            resend=Backoff(0.2, 1.0),
            ack_timeout_s=timeout(3),
        ),
        rng=random.Random(3),
    )


@contextlib.asynccontextmanager
async def uplink_running(uplink: Uplink) -> AsyncIterator[Uplink]:
    """``uplink.run()`` as a task for the ``with`` body."""
    task = asyncio.create_task(uplink.run(), name="uplink")
    try:
        yield uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drained(outbox: Outbox, within_s: float) -> None:
    """Wait until the cloud acked everything in ``outbox``."""

    async def empty() -> bool:
        return (await outbox.stats()).backlog_records == 0

    await eventually(empty, timeout_s=within_s, message="outbox drained by acks")


async def test_edge_uplink_through_the_backbone_is_stored_once_and_pruned(
    db: asyncpg.Connection, nats_backbone: Backbone, pg_dsn: str, tmp_path: Path
) -> None:
    """A real outbox and uplink speak MQTT to nats-server; the JetStream door
    stores every reading once and the Acks prune the outbox."""
    n = 3_000
    outbox = Outbox.open(tmp_path / "outbox.db", cap_bytes=0)
    await outbox.start()
    try:
        await outbox.append(edge_readings(n))
        uplink = edge_uplink(outbox, nats_backbone.mqtt_urls[0])
        async with running(make_door(pg_dsn, nats_backbone)), uplink_running(uplink):
            await drained(outbox, timeout(30))
        assert uplink.metrics.acks >= n // 500
        assert uplink.metrics.rejects == 0
    finally:
        await outbox.close()
    assert await rows_as_edge_readings(db) == edge_readings(n)


# ------------------------------------------------------------------------ faults


async def test_stopped_consumer_catches_up_on_what_gateways_published_meanwhile(
    db: asyncpg.Connection, nats_backbone: Backbone, pg_dsn: str
) -> None:
    async with gateway(nats_backbone.mqtt_urls[0]) as gw:
        # the first run creates the durable consumer, which outlives the process
        async with running(make_door(pg_dsn, nats_backbone)):
            await gw.send(batch_payload(1, 10))
            assert await gw.answer() == ack(1, 10, 10)
        for first in range(11, 61, 10):
            await gw.send(batch_payload(first, first + 9))
        with contextlib.suppress(TimeoutError):
            early = await gw.answer(timeout(1))
            pytest.fail(f"answered while no ingest ran: {early}")
        door = make_door(pg_dsn, nats_backbone)
        async with running(door):
            answers = [await gw.answer() for _ in range(5)]
    assert sorted((a.first_seq, a.last_seq) for a in answers) == [
        (f, f + 9) for f in range(11, 61, 10)
    ]
    assert all(isinstance(a, contract.Ack) for a in answers), answers
    assert max(a.stored_through_seq for a in answers) == 60  # type: ignore[union-attr]
    assert await stored(db) == expected_rows(range(1, 61))


async def test_two_processes_share_the_durable_consumer(
    db: asyncpg.Connection, nats_backbone: Backbone, pg_dsn: str
) -> None:
    one, two = make_door(pg_dsn, nats_backbone), make_door(pg_dsn, nats_backbone)
    async with running(one), running(two), gateway(nats_backbone.mqtt_urls[0]) as gw:
        for first in range(1, 401, 10):
            await gw.send(batch_payload(first, first + 9))
        answers = [await gw.answer() for _ in range(40)]
    assert all(isinstance(a, contract.Ack) for a in answers), answers
    assert one.metrics.batches_stored + two.metrics.batches_stored == 40
    assert await stored(db) == expected_rows(range(1, 401))


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
async def test_unreachable_database_answers_busy_and_the_stream_keeps_the_batch(
    db: asyncpg.Connection,
    nats_backbone: Backbone,
    pg_dsn: str,
    tcp_proxy_factory: ProxyFactory,
    mode: Literal["refuse", "blackhole"],
) -> None:
    """PostgreSQL refusing connections, or blackholed (answering nothing: the
    statement times out), while the backbone keeps accepting batches."""
    proxy = tcp_proxy_factory(pg_dsn)
    door = JetStreamIngest(
        dsn=proxy.url_for(pg_dsn),
        nats_urls=nats_backbone.nats_urls,
        command_timeout_s=timeout(3),
    )
    async with running(door), gateway(nats_backbone.mqtt_urls[0]) as gw:
        await gw.send(batch_payload(1, 10))
        assert await gw.answer() == ack(1, 10, 10)
        proxy.pause(mode=mode)
        await gw.send(batch_payload(11, 20))
        busy = await gw.answer(timeout(20))
        assert isinstance(busy, contract.Busy), busy
        assert (busy.first_seq, busy.last_seq, busy.reason) == (
            11,
            20,
            "database unavailable",
        )
        # the backbone keeps accepting while PostgreSQL is gone
        await gw.send(batch_payload(21, 30))
        proxy.resume()
        # nobody resends: the held message and the queued one are stored
        answers = [await gw.answer(timeout(30)) for _ in range(2)]
    acks = [a for a in answers if isinstance(a, contract.Ack)]
    assert sorted((a.first_seq, a.last_seq) for a in acks) == [(11, 20), (21, 30)]
    assert max(a.stored_through_seq for a in acks) == 30
    assert door.metrics.db_failures >= 1
    assert door.metrics.dead_lettered == 0
    assert await stored(db) == expected_rows(range(1, 31))


class _LosesFirstAck(JetStreamIngest):
    """Dies, in effect, between COMMIT (and the answer) and the JetStream ack:
    the first ack never reaches the server."""

    lost = 0

    async def ack(self, msg: Msg) -> None:
        """Drop the first ack; the rest go as usual."""
        if not self.lost:
            self.lost += 1
            return
        await super().ack(msg)


async def test_a_lost_ack_means_a_redelivery_stored_as_a_no_op(
    db: asyncpg.Connection, nats_backbone: Backbone, pg_dsn: str
) -> None:
    door = _LosesFirstAck(
        dsn=pg_dsn,
        nats_urls=nats_backbone.nats_urls,
        config=JetStreamConfig(ack_wait_s=timeout(2)),
    )
    async with running(door), gateway(nats_backbone.mqtt_urls[0]) as gw:
        await gw.send(batch_payload(1, 10))
        first, again = await gw.answer(), await gw.answer(timeout(15))
        # a gateway's own duplicate is the same no-op
        await gw.send(batch_payload(1, 10))
        third = await gw.answer()
    assert first == again == third == ack(1, 10, 10)
    assert door.metrics.batches_stored == 3
    assert await stored(db) == expected_rows(range(1, 11))


async def test_poison_goes_to_the_dead_letters_and_the_rest_flows(
    db: asyncpg.Connection,
    nats_backbone: Backbone,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_store = BatchStore.store

    async def store(self: BatchStore, conn: asyncpg.Connection, batch: Any) -> int:
        if batch.first_seq == 21:
            raise RuntimeError("a bug meeting batch 21..30")
        return await real_store(self, conn, batch)

    monkeypatch.setattr(BatchStore, "store", store)
    door = make_door(pg_dsn, nats_backbone)
    async with running(door), gateway(nats_backbone.mqtt_urls[0]) as gw:
        await gw.send(batch_payload(1, 10))
        await gw.send(b"\xc1\xc1 not MessagePack at all")
        await gw.send(batch_payload(21, 30))  # the core fails on it
        await gw.send(batch_payload(11, 20))
        answers = [await gw.answer(), await gw.answer()]
        with contextlib.suppress(TimeoutError):
            extra = await gw.answer(timeout(1))
            pytest.fail(f"poison was answered: {extra}")
        dead = await dead_letters(nats_backbone, 2)
    assert answers == [ack(1, 10, 10), ack(11, 20, 20)]
    assert await stored(db) == expected_rows(range(1, 21))
    by_reason = {m.headers["Fusebox-Reason"]: m for m in dead if m.headers}
    assert set(by_reason) == {"rejected", "ingest_error"}
    garbage = by_reason["rejected"]
    assert garbage.subject == f"fusebox.dead.ingest.{GW}"
    assert garbage.data == b"\xc1\xc1 not MessagePack at all"
    assert garbage.headers is not None
    assert "not MessagePack" in garbage.headers["Fusebox-Detail"]
    assert garbage.headers["Fusebox-Subject"] == topic_to_subject(contract.up_batch(GW))
    bug = by_reason["ingest_error"]
    assert bug.data == batch_payload(21, 30)
    assert bug.headers is not None
    assert "a bug meeting batch 21..30" in bug.headers["Fusebox-Detail"]
    assert door.metrics.dead_lettered == 2
    assert door.metrics.poisoned == 1
    assert door.dead.counts == {"rejected": 1, "ingest_error": 1}
    assert await db.fetchval("SELECT count(*) FROM rejected_batches") == 1


async def test_a_message_delivered_too_often_is_dead_lettered_unprocessed(
    db: asyncpg.Connection, nats_backbone: Backbone, pg_dsn: str
) -> None:
    """A message whose holder died each time (here: a raw consumer client that
    fetches it and never answers) is not tried a ``max_deliver + 1``-th time."""
    settings = {"ack_wait_s": timeout(1), "max_deliver": 2}
    async with running(make_door(pg_dsn, nats_backbone, **settings)):
        pass  # creates the durable consumer
    async with gateway(nats_backbone.mqtt_urls[0]) as gw:
        await gw.send(batch_payload(1, 10))
        nc = await nats_backbone.connect()
        try:
            holder = await nc.jetstream().pull_subscribe_bind("ingest", "FUSEBOX_UP")
            for _ in range(2):  # fetched, then "crashed": redelivered after ack_wait
                [msg] = await holder.fetch(1, timeout=timeout(10))
                assert msg.data == batch_payload(1, 10)
        finally:
            await nc.close()
        door = make_door(pg_dsn, nats_backbone, **settings)
        async with running(door):
            dead = await dead_letters(nats_backbone, 1)
            await gw.send(batch_payload(11, 20))
            assert await gw.answer() == ack(11, 20, 0)
    assert dead[0].headers is not None
    assert dead[0].headers["Fusebox-Reason"] == "too_many_deliveries"
    assert dead[0].headers["Fusebox-Deliveries"] == "3"
    assert door.metrics.batches_stored == 1
    assert door.metrics.dead_lettered == 1
    assert await stored(db) == expected_rows(range(11, 21))


# ------------------------------------------------------------------ bad batches


def _pad(n_bytes: int) -> Callable[[dict[str, Any]], None]:
    def tweak(data: dict[str, Any]) -> None:
        data["pad"] = b"x" * n_bytes  # after the head keys, as a big batch's rows

    return tweak


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(
            batch_payload(1, 5, tweak=_pad(contract.MAX_BATCH_BYTES)),
            f"exceeds {contract.MAX_BATCH_BYTES}",
            id="oversized",
        ),
        pytest.param(
            batch_payload(1, 5, tweak=lambda d: d.update(first_seq=6)),
            "last_seq is below first_seq",
            id="malformed",
        ),
    ],
)
async def test_oversized_or_malformed_batch_gets_a_clear_reject_and_harms_nothing(
    db: asyncpg.Connection,
    nats_backbone: Backbone,
    pg_dsn: str,
    payload: bytes,
    reason: str,
) -> None:
    door = make_door(pg_dsn, nats_backbone)
    async with running(door), gateway(nats_backbone.mqtt_urls[0]) as gw:
        await gw.send(batch_payload(1, 5))
        await gw.send(payload)
        await gw.send(batch_payload(6, 10))
        answers = [await gw.answer() for _ in range(3)]
    # the Reject goes out at once, the Acks after COMMIT: any order
    [reject] = [a for a in answers if isinstance(a, contract.Reject)]
    assert (reject.gw, reject.epoch) == (GW, EPOCH)
    assert reason in reject.reason
    acks = sorted((a.first_seq, a.last_seq) for a in answers if a is not reject)
    assert acks == [(1, 5), (6, 10)]
    assert door.metrics.rejected == 1
    assert await stored(db) == expected_rows(range(1, 11))


async def test_a_cluster_node_killed_under_load_loses_and_doubles_nothing(
    db: asyncpg.Connection, nats_cluster: Backbone, pg_dsn: str, tmp_path: Path
) -> None:
    """Three nodes, R3 stream: SIGKILL the node the door is connected to while a
    real edge (on another node's MQTT listener) drains; the door reconnects to
    another node and every reading is stored exactly once."""
    n = 6_000
    outbox = Outbox.open(tmp_path / "outbox.db", cap_bytes=0)
    await outbox.start()
    try:
        await outbox.append(edge_readings(n))
        door = make_door(pg_dsn, nats_cluster)
        async with running(door):
            assert door.nc is not None and door.nc.connected_url is not None
            port = door.nc.connected_url.port
            urls = nats_cluster.nats_urls
            [door_node] = [i for i, u in enumerate(urls) if u.endswith(f":{port}")]
            edge_node = (door_node + 1) % len(urls)
            uplink = edge_uplink(outbox, nats_cluster.mqtt_urls[edge_node])
            async with uplink_running(uplink):

                async def flowing() -> bool:
                    return door.metrics.batches_stored >= 2

                await eventually(flowing, timeout_s=timeout(30), message="flowing")
                nats_cluster.kill(door_node)
                # resends of batches PUBACKed during the stream's leader election
                # (about 10 s) back off with jitter: give them two minutes
                await drained(outbox, timeout(120))
        assert uplink.metrics.rejects == 0
    finally:
        await outbox.close()
    assert await rows_as_edge_readings(db) == edge_readings(n)
