"""One ingest core, two front doors: the same script of gateway traffic through
the MQTT door (``cloud.ingest.IngestWorker`` on a private Mosquitto) and the
JetStream door (``cloud.ingest_jetstream.JetStreamIngest`` on a private
nats-server) gives the same answers, the same rows and the same counters.

Only receiving, replying and acknowledging differ between the doors; decoding,
the contract checks, storing, coverage, status and rejected-batch records, and
what happens to a batch the core fails on are ``cloud.ingest_core``'s.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from cloud.ingest import IngestWorker
from cloud.ingest_core import BatchStore, IngestCore
from cloud.ingest_jetstream import JetStreamConfig, JetStreamIngest
from protocols import contract
from protocols.urls import parse_mqtt_url
from tests.component.test_ingest_worker import (
    GW,
    ack,
    batch_payload,
    db,
    expected_rows,
    gateway,
    running,
    stored,
)
from tests.harness.timing import eventually, timeout

__all__ = ["db"]  # the fixture, shared with test_ingest_worker


def _door(
    request: pytest.FixtureRequest, kind: str, dsn: str
) -> tuple[IngestWorker | JetStreamIngest, str]:
    """The door of ``kind`` on its own broker, and the gateways' MQTT URL."""
    if kind == "mqtt":
        broker = request.getfixturevalue("mosquitto")
        worker = IngestWorker(dsn=dsn, mqtt=parse_mqtt_url(broker.url), shared=True)
        return worker, str(broker.url)
    backbone = request.getfixturevalue("nats_backbone")
    door = JetStreamIngest(
        dsn=dsn, nats_urls=backbone.nats_urls, config=JetStreamConfig()
    )
    return door, str(backbone.mqtt_urls[0])


@pytest.mark.parametrize("kind", ["mqtt", "jetstream"])
async def test_both_doors_run_the_same_core_with_the_same_outcome(
    db: asyncpg.Connection,
    pg_dsn: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    real_store = BatchStore.store

    async def store(self: BatchStore, conn: asyncpg.Connection, batch: Any) -> int:
        if batch.first_seq == 31:
            raise RuntimeError("a bug meeting batch 31..40")
        return await real_store(self, conn, batch)

    monkeypatch.setattr(BatchStore, "store", store)
    door, mqtt_url = _door(request, kind, pg_dsn)
    assert type(door.core) is IngestCore
    async with running(door), gateway(mqtt_url) as gw:  # type: ignore[arg-type]
        await gw.status(
            contract.GatewayStatus(gw=GW, state="online", backlog_records=9)
        )
        script: list[tuple[bytes, Any]] = [
            (batch_payload(11, 20), ack(11, 20, 0)),  # a gap below it
            (batch_payload(1, 10), ack(1, 10, 20)),
            (batch_payload(1, 10), ack(1, 10, 20)),  # a duplicate
            (
                batch_payload(21, 30, tweak=lambda d: d.update(v=2)),
                contract.Reject(
                    gw=GW,
                    epoch=777,
                    first_seq=21,
                    last_seq=30,
                    reason="contract version 2 is not 1",
                ),
            ),
            (batch_payload(31, 40), None),  # the core fails on it: no answer
            (batch_payload(21, 30), ack(21, 30, 30)),
        ]
        answers = []
        for payload, _ in script:
            await gw.send(payload)
            if _ is not None:
                answers.append(await gw.answer())

        async def status_stored() -> bool:
            row = await db.fetchrow(
                "SELECT state, backlog_records FROM gateways WHERE id = $1", GW
            )
            return row is not None and tuple(row) == ("online", 9)

        await eventually(
            status_stored, timeout_s=timeout(10), message="status side write"
        )
    assert answers == [want for _, want in script if want is not None]
    m = door.metrics
    assert (m.batches_stored, m.rejected, m.poisoned, m.busy_sent) == (4, 1, 1, 0)
    assert m.readings_stored == 40
    assert await stored(db) == expected_rows(range(1, 31))
    rejected = await db.fetch("SELECT gateway_id, reason FROM rejected_batches")
    assert [tuple(r) for r in rejected] == [(GW, "contract version 2 is not 1")]
