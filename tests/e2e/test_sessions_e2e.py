"""Charging sessions reach the cloud exactly once: ``fusebox sim charger`` (1.6 and
2.0.1) -> the real edge process (OCPP server, outbox, uplink) -> ingest ->
PostgreSQL ``sessions``; also with the edge SIGKILLed mid-session and with the
cloud ingest down until the session is over."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.e2e.stack import GATEWAY, Stack, read_charger_ledger
from tests.harness.procs import free_port
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery"
CHARGER = "SIM1"
TAG = "TAG1"
SCENARIO = [
    {"at": 1, "action": "plug", "connector": 1},
    {"at": 2, "action": "authorize+start", "connector": 1, "id_tag": TAG},
    {"at": 9, "action": "stop", "connector": 1},
    {"at": 10, "action": "unplug", "connector": 1},
]


async def _sessions(stack: Stack) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT charger_id, transaction_id, connector_id, id_tag, "
                "meter_start_wh, meter_stop_wh, energy_wh, stopped_at "
                "FROM sessions WHERE gateway_id = $1",
                GATEWAY,
            )
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["plain", "edge_killed", "cloud_offline"])
@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_session_reaches_the_cloud_exactly_once(
    stack: Stack, version: str, mode: str
) -> None:
    port = free_port()
    stack.write_edge_config()
    stack.add_ocpp_charger(port=port, charger=CHARGER, password=PASSWORD, id_tag=TAG)
    if mode != "cloud_offline":
        stack.ingest()
    edge = stack.edge()
    sim, ledger, _ = stack.start_scenario_charger(
        url=f"ws://127.0.0.1:{port}/ocpp",
        charger=CHARGER,
        password=PASSWORD,
        version=version,
        scenario=SCENARIO,
    )
    if mode == "edge_killed":

        def metered() -> bool:
            return any(line["kind"] == "meter" for line in read_charger_ledger(ledger))

        await eventually(metered, timeout_s=timeout(30), message="session running")
        edge.kill()  # SIGKILL mid-session
        await asyncio.sleep(0.5)
        stack.edge(name="edge-2")
    code = await asyncio.to_thread(sim.wait, timeout_s=timeout(90))
    assert code == 0
    lines = read_charger_ledger(ledger)
    starts = [line for line in lines if line["kind"] == "start"]
    stops = [line for line in lines if line["kind"] == "stop"]
    assert len(starts) == 1 and len(stops) == 1, lines
    start, stop = starts[0], stops[0]
    assert start["transaction_id"] == stop["transaction_id"]
    assert start["transaction_id"] not in (None, -1)
    assert stop["meter_stop_wh"] > start["meter_start_wh"]
    if mode == "cloud_offline":
        assert await _sessions(stack) == []
        stack.ingest()

    async def folded() -> bool:
        rows = await _sessions(stack)
        return len(rows) == 1 and rows[0]["stopped_at"] is not None

    await eventually(folded, timeout_s=timeout(60), message="session in the cloud")
    await asyncio.sleep(1)  # anything redelivered late would land now
    rows = await _sessions(stack)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["charger_id"] == CHARGER
    assert row["transaction_id"] == str(start["transaction_id"])
    assert row["connector_id"] == 1 and row["id_tag"] == TAG
    assert row["meter_start_wh"] == start["meter_start_wh"]
    assert row["meter_stop_wh"] == stop["meter_stop_wh"]
    assert row["energy_wh"] == stop["meter_stop_wh"] - start["meter_start_wh"]
