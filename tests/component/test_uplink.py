"""The edge uplink against a real Mosquitto and a scripted cloud: live readings go
ahead of backlog, Busy pauses sending, a lost ack means a resend, the status is
retained with a last will."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from edge.outbox import Outbox
from edge.uplink import Uplink, UplinkConfig
from protocols import contract
from protocols.backoff import Backoff
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url
from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import ProxyFactory
from tests.harness.timing import eventually, timeout

GW = "gw-up"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeCloud:
    """Records every batch; answers as ``decide(batch, n)`` says (None: silence)."""

    url: str
    decide: Callable[[contract.Batch, int], object]
    batches: list[tuple[float, contract.Batch]] = field(default_factory=list)
    stored: set[int] = field(default_factory=set)
    delay_s: float = 0.0

    async def run(self, ready: asyncio.Event) -> None:
        t = parse_mqtt_url(self.url)
        async with aiomqtt.Client(t.host, t.port, identifier="fake-cloud") as c:
            await c.subscribe(contract.up_batch(GW), qos=1)
            ready.set()
            async for m in c.messages:
                batch = contract.unpack_batch(bytes(m.payload))  # type: ignore[arg-type]
                self.batches.append((time.monotonic(), batch))
                answer = self.decide(batch, len(self.batches))
                if isinstance(answer, contract.Ack):
                    self.stored.update(r[0] for r in batch.readings)
                await asyncio.sleep(self.delay_s)
                if answer is not None:
                    await c.publish(
                        contract.down_ack(GW),
                        contract.pack(answer),
                        qos=1,  # type: ignore[arg-type]
                    )


def ack(b: contract.Batch, through: int = 0) -> contract.Ack:
    return contract.Ack(
        gw=GW,
        epoch=b.epoch,
        first_seq=b.first_seq,
        last_seq=b.last_seq,
        stored_through_seq=through,
    )


def readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading("m1", "power_w", T0 + timedelta(seconds=start + i), float(i))
        for i in range(n)
    ]


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, broker: MosquittoServer, cloud: FakeCloud, **cfg: object
) -> AsyncIterator[tuple[Outbox, Uplink]]:
    outbox = Outbox.open(tmp_path / "o.db", cap_bytes=0)
    await outbox.start()
    ready = asyncio.Event()
    cloud_task = asyncio.create_task(cloud.run(ready))
    await ready.wait()
    config = UplinkConfig(
        gateway_id=GW,
        target=parse_mqtt_url(broker.url),
        client_id="edge-up",
        resend=Backoff(0.05, 0.2),
        **cfg,  # type: ignore[arg-type]
    )
    uplink = Uplink(outbox, config, rng=random.Random(1))
    try:
        yield outbox, uplink
    finally:
        cloud_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cloud_task
        await outbox.close()


async def test_live_readings_overtake_the_backlog(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    cloud = FakeCloud(mosquitto.url, lambda b, n: ack(b), delay_s=0.05)
    async with running(tmp_path, mosquitto, cloud, window=1, batch_max_records=100) as (
        outbox,
        uplink,
    ):
        await outbox.append(readings(3000))  # 30 batches of backlog
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: len(cloud.batches) >= 3,
            timeout_s=timeout(10),
            message="backlog started",
        )
        live = await outbox.append(readings(1, start=10_000))
        await eventually(
            lambda: live.first_seq in cloud.stored,
            timeout_s=timeout(10),
            message="live reading stored",
        )
        backlog_done = all(s in cloud.stored for s in range(1, 3001))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not backlog_done, "the live reading waited for the whole backlog"


async def test_busy_pauses_sending_then_resends(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    def decide(b: contract.Batch, n: int) -> object:
        if n == 1:
            return contract.Busy(
                gw=GW,
                epoch=b.epoch,
                first_seq=b.first_seq,
                last_seq=b.last_seq,
                retry_after_s=1.0,
                reason="test",
            )
        return ack(b)

    cloud = FakeCloud(mosquitto.url, decide)
    async with running(tmp_path, mosquitto, cloud, window=4, batch_max_records=10) as (
        outbox,
        uplink,
    ):
        await outbox.append(readings(10))
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: len(cloud.batches) >= 1,
            timeout_s=timeout(10),
            message="first batch",
        )
        await outbox.append(readings(5, start=100))  # more arrives during the pause

        async def drained() -> bool:
            return (await outbox.stats()).backlog_records == 0

        await eventually(drained, timeout_s=timeout(10), message="acked and pruned")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(cloud.stored) == 15
    t_busy = cloud.batches[0][0]
    # nothing at all was sent for retry_after_s after the Busy
    assert cloud.batches[1][0] - t_busy >= 1.0
    assert uplink.metrics.busy == 1


async def test_lost_ack_means_resend_and_duplicates_are_harmless(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    cloud = FakeCloud(mosquitto.url, lambda b, n: None if n == 1 else ack(b))
    async with running(
        tmp_path, mosquitto, cloud, window=1, batch_max_records=50, ack_timeout_s=0.5
    ) as (outbox, uplink):
        await outbox.append(readings(50))
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: len(cloud.stored) == 50,
            timeout_s=timeout(10),
            message="stored after resend",
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert cloud.batches[0][1].first_seq == cloud.batches[1][1].first_seq == 1
    assert uplink.metrics.timeouts == 1


async def test_status_retained_and_last_will_says_offline(
    tmp_path: Path, mosquitto: MosquittoServer, tcp_proxy_factory: ProxyFactory
) -> None:
    async def retained_state() -> str:
        async with aiomqtt.Client("127.0.0.1", mosquitto.mqtt_port) as c:
            await c.subscribe(contract.up_status(GW), qos=1)
            async with asyncio.timeout(timeout(5)):
                async for m in c.messages:
                    status = contract.unpack_status(bytes(m.payload))  # type: ignore[arg-type]
                    return status.state
        return ""

    cloud = FakeCloud(mosquitto.url, lambda b, n: ack(b))
    proxy = tcp_proxy_factory(mosquitto.url)
    outbox = Outbox.open(tmp_path / "o.db", cap_bytes=0)
    await outbox.start()
    ready = asyncio.Event()
    cloud_task = asyncio.create_task(cloud.run(ready))
    await ready.wait()
    uplink = Uplink(
        outbox,
        UplinkConfig(
            gateway_id=GW,
            target=parse_mqtt_url(proxy.url_for(mosquitto.url)),
            client_id="edge-up",
            keepalive_s=1,
        ),
    )
    task = asyncio.create_task(uplink.run())
    try:
        await eventually(
            lambda: uplink.metrics.connected, timeout_s=timeout(10), message="up"
        )
        assert await retained_state() == "online"
        # the link dies without a DISCONNECT: the broker publishes the will
        proxy.pause()

        async def offline() -> bool:
            return await retained_state() == "offline"

        await eventually(offline, timeout_s=timeout(10), message="will published")
        proxy.resume()

        async def online() -> bool:
            return await retained_state() == "online"

        await eventually(online, timeout_s=timeout(20), message="online again")
    finally:
        for t in (task, cloud_task):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await t
        await outbox.close()


async def _announce_ingest(url: str, worker: str, *, gone: bool = False) -> None:
    """Publish (retained) what an ingest worker says when it subscribes, or the
    empty payload its last will leaves when it dies."""
    t = parse_mqtt_url(url)
    payload = b"" if gone else contract.pack(contract.IngestPresence(worker=worker))
    async with aiomqtt.Client(t.host, t.port, identifier=f"fake-{worker}") as c:
        await c.publish(contract.ingest_presence(worker), payload, qos=1, retain=True)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    ("worker", "gone"),
    [("ingest-a", False), ("ingest-b", True)],
    ids=["a worker comes", "the worker that held it goes"],
)
async def test_a_batch_whose_answer_is_lost_is_resent_when_a_worker_comes_or_goes(
    tmp_path: Path, mosquitto: MosquittoServer, worker: str, gone: bool
) -> None:
    # the first batch vanishes (published while no worker held it, or held by a
    # worker that dies: its will clears its presence); the ack timeout is far
    # beyond the test's patience, so only the presence can save it
    cloud = FakeCloud(mosquitto.url, lambda b, n: None if n == 1 else ack(b))
    async with running(
        tmp_path, mosquitto, cloud, batch_max_records=50, ack_timeout_s=600
    ) as (outbox, uplink):
        await outbox.append(readings(50))
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: len(cloud.batches) == 1, timeout_s=timeout(10), message="sent"
        )
        await _announce_ingest(mosquitto.url, worker, gone=gone)
        await eventually(
            lambda: len(cloud.stored) == 50,
            timeout_s=timeout(10),
            message="resent when the worker came or went",
        )
        await _stop(task)
    assert uplink.metrics.timeouts == 0
    assert uplink.metrics.resent_on_presence == 1
    assert [b.first_seq for _, b in cloud.batches] == [1, 1]


async def test_retained_presence_at_connect_resends_nothing(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    await _announce_ingest(mosquitto.url, "ingest-c")
    cloud = FakeCloud(mosquitto.url, lambda b, n: ack(b) if n > 1 else None)
    async with running(
        tmp_path, mosquitto, cloud, batch_max_records=50, ack_timeout_s=600
    ) as (outbox, uplink):
        await outbox.append(readings(50))
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: len(cloud.batches) == 1, timeout_s=timeout(10), message="sent"
        )
        # the edge got the retained presence on subscribing: old news, no resend
        await asyncio.sleep(1.0)
        assert len(cloud.batches) == 1
        assert uplink.metrics.resent_on_presence == 0
        await _announce_ingest(mosquitto.url, "ingest-c")  # restarted: news
        await eventually(
            lambda: len(cloud.stored) == 50, timeout_s=timeout(10), message="resent"
        )
        await _stop(task)
    assert uplink.metrics.resent_on_presence == 1


async def _batches_for(
    tmp_path: Path, broker: MosquittoServer, linger_s: float, messages: int
) -> int:
    """Batches the uplink sends for ``messages`` rounds of three meters 50 ms
    apart, each meter's message its own commit."""
    cloud = FakeCloud(broker.url, lambda b, n: ack(b))
    async with running(tmp_path / f"l{linger_s}", broker, cloud, linger_s=linger_s) as (
        outbox,
        uplink,
    ):
        task = asyncio.create_task(uplink.run())
        await eventually(
            lambda: uplink.metrics.connected, timeout_s=timeout(10), message="up"
        )
        for i in range(messages):
            for meter in ("m1", "m2", "m3"):
                ts = T0 + timedelta(milliseconds=50 * i)
                await outbox.append([Reading(meter, "power_w", ts, float(i))])
            await asyncio.sleep(0.05)
        await eventually(
            lambda: len(cloud.stored) == 3 * messages,
            timeout_s=timeout(10),
            message="all stored",
        )
        await _stop(task)
    return uplink.metrics.batches_sent


async def test_live_readings_of_several_meters_share_batches(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """Three meters every 50 ms for 3 s: with a 0.5 s linger they go in a handful
    of batches, not one batch (and one cloud transaction) per message."""
    at_once = await _batches_for(tmp_path, mosquitto, 0.0, 60)
    lingering = await _batches_for(tmp_path, mosquitto, 0.5, 60)
    # 3 s of readings at 0.5 s: about 6 batches (a few more for scheduling slack)
    assert lingering <= 12, (at_once, lingering)
    assert at_once > 2 * lingering, (at_once, lingering)
