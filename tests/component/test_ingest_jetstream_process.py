"""``fusebox cloud ingest --backbone nats://...`` as a process, SIGKILLed while a
real edge (outbox + uplink over MQTT to nats-server) keeps sending, then started
again: every reading is stored exactly once with its exact value and the outbox
drains."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from edge.outbox import Outbox
from tests.component.test_ingest_jetstream import (
    db,
    drained,
    edge_readings,
    edge_uplink,
    rows_as_edge_readings,
    uplink_running,
)
from tests.harness.nats import Backbone
from tests.harness.procs import Procs
from tests.harness.timing import eventually, timeout

__all__ = ["db"]  # the fixture, shared with test_ingest_worker


async def test_ingest_process_killed_and_restarted_loses_and_doubles_nothing(
    db: asyncpg.Connection,
    nats_backbone: Backbone,
    pg_dsn: str,
    procs: Procs,
    tmp_path: Path,
) -> None:
    argv = [
        "fusebox",
        "cloud",
        "ingest",
        "--database-url",
        pg_dsn,
        "--backbone",
        ",".join(nats_backbone.nats_urls),
    ]
    ingest = procs.start(argv, name="ingest")
    outbox = Outbox.open(tmp_path / "outbox.db", cap_bytes=0)
    await outbox.start()
    try:
        await outbox.append(edge_readings(2_000))
        uplink = edge_uplink(outbox, nats_backbone.mqtt_urls[0])
        async with uplink_running(uplink):

            async def some_stored() -> bool:
                return bool(await db.fetchval("SELECT count(*) FROM readings"))

            await eventually(
                some_stored, timeout_s=timeout(30), message="first batch stored"
            )
            ingest.kill()
            # the gateway keeps publishing into the stream while no ingest runs
            await outbox.append(edge_readings(6_000)[2_000:])
            stored_while_down = await db.fetchval("SELECT count(*) FROM readings")
            ingest = procs.start(argv, name="ingest-again")
            await drained(outbox, timeout(60))
        assert uplink.metrics.rejects == 0
    finally:
        await outbox.close()
    assert stored_while_down < 6_000
    assert await rows_as_edge_readings(db) == edge_readings(6_000)
    assert await db.fetchval("SELECT count(*) FROM readings") == 6_000
