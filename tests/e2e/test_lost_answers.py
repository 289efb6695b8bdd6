"""A batch whose answer is lost is resent when an ingest subscription comes or goes,
not after the ack timeout (issue 16, item 3).

The edge runs with the default 30 s ack timeout here (the other e2e tests use 3 s),
so a stall would show as a timeout in its metrics; each test asserts there was
none, that the resend came from the ingest presence, and reconciles every meter's
ledger against PostgreSQL (nothing lost, nothing doubled).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.stack import Stack
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e

FORMATS = (("glow", "glow-1"), ("tasmota", "tasmota-1"))
ACK_TIMEOUT_S = 30.0


async def _start(stack: Stack, *, count: int, interval_s: float) -> None:
    for fmt, device in FORMATS:
        stack.add_meter(fmt, device)
    stack.write_edge_config(ack_timeout_s=ACK_TIMEOUT_S)
    stack.edge()
    await stack.edge_ready()
    for device in stack.meters:
        stack.start_meter(device, count=count, interval_s=interval_s)


async def _stored_at_least(stack: Stack, n: int) -> None:
    async def enough() -> bool:
        return await stack.stored_count() >= n

    await eventually(enough, timeout_s=timeout(60), message=f"{n} readings stored")


async def _reconciled_without_a_timeout(stack: Stack) -> None:
    await stack.wait_meters_done(timeout(120))
    # well inside one ack timeout: a stall would not make it
    rec = await stack.wait_reconciled(timeout(25))
    assert rec.ledgered > 0
    assert rec.exact, str(rec)
    metrics = stack.metrics()
    assert metrics["fusebox_uplink_timeouts_total"] == 0, metrics
    assert metrics["fusebox_uplink_resent_on_presence_total"] > 0, metrics


async def test_ingest_killed_and_restarted(stack: Stack) -> None:
    ingest = stack.ingest("ingest-1")
    await _start(stack, count=300, interval_s=0.05)
    await _stored_at_least(stack, 30)
    ingest.kill()  # SIGKILL: the batches it held are lost with it
    await asyncio.sleep(2.0)  # the edge keeps publishing into the void meanwhile
    stack.ingest("ingest-2")
    await _reconciled_without_a_timeout(stack)


async def test_cloud_broker_restarted_and_the_edge_back_before_ingest(
    stack: Stack,
) -> None:
    ingest = stack.ingest("ingest-1")
    await _start(stack, count=300, interval_s=0.05)
    await _stored_at_least(stack, 30)
    ingest.kill()
    stack.cloud.restart(kill=True)

    async def edge_back() -> bool:
        return stack.metrics()["fusebox_uplink_connected"] == 1

    await eventually(edge_back, timeout_s=timeout(30), message="edge reconnected")
    # the edge resends everything unacknowledged now, to a broker no ingest
    # worker has subscribed to yet: those batches go nowhere
    await asyncio.sleep(2.0)
    stack.ingest("ingest-2")
    await _reconciled_without_a_timeout(stack)
