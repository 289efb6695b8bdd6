"""Nothing lost: each fault from issue 2, then the meters' ledgers are reconciled
against the cloud's rows (every reading stored exactly once, exact values).

Each test runs the real processes: simulated meters, the site and cloud Mosquitto,
``fusebox edge run``, ``fusebox cloud ingest`` and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.e2e.stack import Stack
from tests.harness.procs import ProxyFactory
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e

FORMATS = (("glow", "glow-1"), ("tasmota", "tasmota-1"), ("shelly", "shellypro3em-1"))
# the outages the issue names; FUSEBOX_E2E_OUTAGE_SCALE shortens them for a quick run
SCALE = float(os.environ.get("FUSEBOX_E2E_OUTAGE_SCALE", "1"))


def _meters(stack: Stack, formats: tuple[tuple[str, str], ...] = FORMATS) -> None:
    for fmt, device in formats:
        stack.add_meter(fmt, device)
    stack.write_edge_config()


async def _start_meters(stack: Stack, *, count: int, interval_s: float) -> None:
    await stack.edge_ready()
    for device in stack.meters:
        stack.start_meter(device, count=count, interval_s=interval_s)


async def _some_stored(stack: Stack, n: int = 10) -> None:
    async def enough() -> bool:
        return await stack.stored_count() >= n

    await eventually(enough, timeout_s=timeout(60), message=f"{n} readings stored")


async def _finish(stack: Stack, *, budget_s: float = 120) -> None:
    await stack.wait_meters_done(timeout(budget_s))
    rec = await stack.wait_reconciled(timeout(budget_s))
    assert rec.ledgered > 0
    assert rec.exact, str(rec)


async def test_cloud_broker_killed_for_60s(stack: Stack) -> None:
    _meters(stack)
    stack.ingest()
    edge = stack.edge()
    await _start_meters(stack, count=600, interval_s=0.1 * max(SCALE, 0.2))
    await _some_stored(stack)
    stack.cloud.kill()
    before = await stack.stored_count()
    await asyncio.sleep(60 * SCALE)
    # readings kept flowing into the outbox while the cloud was gone
    assert stack.metrics()["fusebox_outbox_backlog_records"] > 0
    assert stack.metrics()["fusebox_uplink_connected"] == 0
    stack.cloud.start()
    await _finish(stack)
    assert await stack.stored_count() > before
    assert edge.is_running


async def test_ingest_worker_killed_mid_stream_another_takes_over(stack: Stack) -> None:
    _meters(stack)
    first = stack.ingest("ingest-1")
    second = stack.ingest("ingest-2")
    stack.edge()
    await _start_meters(stack, count=400, interval_s=0.05)
    await _some_stored(stack, 50)
    first.kill()  # SIGKILL: batches it held are never acked, the edge resends
    at_kill = await stack.stored_count()
    await _finish(stack)
    assert await stack.stored_count() > at_kill
    assert second.is_running


async def test_two_ingest_workers_share_the_stream(stack: Stack) -> None:
    _meters(stack)
    workers = [stack.ingest("ingest-1"), stack.ingest("ingest-2")]
    stack.edge()
    await _start_meters(stack, count=300, interval_s=0.03)
    await _finish(stack)
    # both took part: each logged its first stored batch
    for w in workers:
        assert "first batch stored" in w.log_text(), w.log_tail(20)


async def test_postgres_unreachable_for_30s(
    stack: Stack, tcp_proxy_factory: ProxyFactory
) -> None:
    _meters(stack)
    proxy = tcp_proxy_factory(stack.dsn)
    ingest = stack.ingest(dsn=proxy.url_for(stack.dsn))
    stack.edge()
    await _start_meters(stack, count=500, interval_s=0.1 * max(SCALE, 0.2))
    await _some_stored(stack)
    proxy.pause()
    await asyncio.sleep(30 * SCALE)
    # the cloud answered busy instead of piling work up; the edge kept the readings
    assert stack.metrics()["fusebox_uplink_busy_total"] > 0
    assert stack.metrics()["fusebox_outbox_backlog_records"] > 0
    proxy.resume()
    await _finish(stack)
    assert ingest.is_running


async def test_edge_killed_and_restarted(stack: Stack) -> None:
    _meters(stack)
    stack.ingest()
    edge = stack.edge("edge-1")
    await _start_meters(stack, count=500, interval_s=0.04)
    for round_ in range(3):
        await _some_stored(stack, 20 + 60 * round_)
        edge.kill()  # SIGKILL at an arbitrary instant
        await asyncio.sleep(1.0)
        edge = stack.edge(f"edge-{round_ + 2}")
    await _finish(stack)
    # redelivered meter messages were recognised, not stored twice
    assert edge.is_running


async def test_site_broker_restarted(stack: Stack) -> None:
    _meters(stack)
    stack.ingest()
    edge = stack.edge()
    await _start_meters(stack, count=400, interval_s=0.05)
    await _some_stored(stack, 30)
    stack.site.restart()
    await _some_stored(stack, 200)
    stack.site.restart(kill=True)
    await _finish(stack)
    assert edge.is_running


async def test_edge_stops_cleanly_on_sigterm(stack: Stack) -> None:
    _meters(stack, FORMATS[:1])
    stack.ingest()
    edge = stack.edge()
    await _start_meters(stack, count=50, interval_s=0.02)
    await _finish(stack)
    assert edge.pid is not None
    os.kill(edge.pid, signal.SIGTERM)
    assert await edge.wait_async(timeout_s=timeout(15)) == 0
    assert "outbox closed cleanly" in edge.log_text()
