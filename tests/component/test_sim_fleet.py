"""``simulators.fleet``: a fleet of simulated gateways against a real Mosquitto, a
real ingest worker and a real PostgreSQL.

The story of ``fusebox bench surge`` in small: the fleet runs, loses the cloud
(backlog builds, in real time and as an hour's backfill), comes back with
jittered reconnects, drains, and its ledgers reconcile with ``readings``: every
reading stored exactly once with its exact value, none lost, no duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from cloud.db import migrate
from cloud.ingest import IngestWorker
from cloud.ingest_jetstream import JetStreamIngest
from protocols.urls import parse_mqtt_url
from simulators.fleet import Fleet, FleetConfig, WorkerStats
from tests.harness.mosquitto import MosquittoServer
from tests.harness.nats import Backbone
from tests.harness.timing import eventually, timeout


@contextlib.asynccontextmanager
async def ingest(dsn: str, mqtt_url: str) -> AsyncIterator[IngestWorker]:
    """A real ingest worker in this process, subscribed when the block starts."""
    await migrate(dsn)
    worker = IngestWorker(dsn=dsn, mqtt=parse_mqtt_url(mqtt_url), shared=True)
    task = asyncio.create_task(worker.run(), name="ingest")
    try:
        await eventually(
            worker.ready.is_set, timeout_s=timeout(15), message="ingest subscribed"
        )
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(timeout(15)):
                await task


async def _until(
    fleet: Fleet, what: str, check: Callable[[WorkerStats], bool]
) -> WorkerStats:
    """Poll the fleet's stats until ``check`` holds; those stats."""
    seen: list[WorkerStats] = []

    async def ok() -> bool:
        seen.append(await fleet.stats())
        return check(seen[-1])

    await eventually(ok, timeout_s=timeout(60), interval_s=0.3, message=what)
    return seen[-1]


async def test_fleet_outage_backlog_and_reconnect_store_every_reading_once(
    mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    n = 200
    config = FleetConfig(
        mqtt_url=mosquitto.url,
        gateways=n,
        prefix="fleet-t1",
        interval_s=1.0,
        processes=2,
        reconnect_cap_s=2.0,
        ramp_s=1.0,
        status_interval_s=2.0,
    )
    async with ingest(pg_dsn, mosquitto.url), Fleet(config) as fleet:
        up = await _until(
            fleet,
            "all gateways connected, readings acked",
            lambda s: s.connected == n and s.acked > 2 * n,
        )
        assert up.processes == 2 and up.gateways == n

        await fleet.offline()
        cut = await _until(fleet, "every link cut", lambda s: s.connected == 0)
        await asyncio.sleep(3.0)  # readings keep coming while the cloud is away
        offline = await fleet.stats()
        assert offline.acked == cut.acked, offline  # nothing acked while away
        assert offline.held >= cut.held + 2 * n * 2, offline  # the backlog grows

        await fleet.online()
        await _until(fleet, "every gateway reconnected", lambda s: s.connected == n)
        await fleet.pause_readings()
        drained = await fleet.wait_drained(timeout_s=timeout(90))
        assert drained.held == 0, drained
        assert drained.connects >= 2 * n  # each came back once at least
        assert drained.rejects == 0

        result = await fleet.reconcile(pg_dsn)
    assert result.produced == drained.produced > offline.held
    assert result.gateways == n
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.mismatched == 0
    assert result.unexpected == 0
    assert result.stored == result.produced
    assert result.clean


async def test_fleet_with_an_hour_of_backlog_drains_it_exactly_once(
    mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    """The recovery storm in small: gateways that were away an hour (readings
    every 10 s, backfilled) reconnect together and the cloud stores it all."""
    n = 100
    config = FleetConfig(
        mqtt_url=mosquitto.url,
        gateways=n,
        prefix="fleet-t2",
        processes=1,
        online=False,
        reconnect_cap_s=1.0,
    )
    async with ingest(pg_dsn, mosquitto.url), Fleet(config) as fleet:
        backfilled = await fleet.backfill(3600, 10.0)
        assert backfilled == n * 2 * 360
        before = await fleet.stats()
        assert before.connected == 0 and before.held >= backfilled
        await fleet.online()
        await fleet.pause_readings()
        drained = await fleet.wait_drained(timeout_s=timeout(90))
        assert drained.held == 0, drained
        result = await fleet.reconcile(pg_dsn)
    assert result.produced == drained.produced >= backfilled
    assert (result.lost, result.duplicates, result.mismatched) == (0, 0, 0)
    assert result.unexpected == 0 and result.stored == result.produced


async def test_fleet_on_the_nats_backbone_through_jetstream_ingest(
    nats_backbone: Backbone, pg_dsn: str
) -> None:
    """The same gateways, pointed at nats-server's MQTT listener (the cluster's
    front door), drained by the JetStream ingest door: stored exactly once."""
    await migrate(pg_dsn)
    door = JetStreamIngest(
        dsn=pg_dsn, nats_urls=nats_backbone.nats_urls, name="ingest-fleet"
    )
    task = asyncio.create_task(door.run(), name="jetstream-ingest")
    n = 40
    config = FleetConfig(
        mqtt_url=nats_backbone.mqtt_urls[0],
        gateways=n,
        prefix="fleet-nats",
        processes=1,
        online=False,
        reconnect_cap_s=1.0,
    )
    try:
        await eventually(
            door.ready.is_set, timeout_s=timeout(15), message="door consuming"
        )
        async with Fleet(config) as fleet:
            backfilled = await fleet.backfill(600, 10.0)
            await fleet.online()
            await fleet.pause_readings()
            drained = await fleet.wait_drained(timeout_s=timeout(60))
            assert drained.held == 0 and drained.connected == n, drained
            result = await fleet.reconcile(pg_dsn)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(timeout(15)):
                await task
    assert result.produced == drained.produced >= backfilled == n * 2 * 60
    assert result.clean and result.stored == result.produced, result
