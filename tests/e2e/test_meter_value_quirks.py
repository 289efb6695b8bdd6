"""No reading is lost to one bad sampled value, end to end (issue 10, item 2).

``fusebox sim charger --quirks`` (1.6 and 2.0.1) runs a session against the real
edge process (strict schema validation: the charger is configured without any
tolerance) and mixes into every transaction message sampled values that the
OCPP schemas refuse: a 1.6 unit ``Hz`` and ``kV``, a 1.6 value sent as a number,
a 2.0.1 register sent as text, unknown measurands, ``"abc"``, ``"NaN"``,
``"1e999"``, ``"-Infinity"``; the 1.6 stop carries them in ``transactionData``.
Reconciled against the charger's ledger (one line per message the edge
answered with a CallResult):

* every energy register the charger sent is in PostgreSQL exactly once, with its
  value, and nothing else is there for the charger;
* the tolerated quirks were stored too (1.6: a frequency and a voltage at the
  time of every quirky message);
* the edge's metrics count every quirk under its reason
  (``fusebox_ocpp_values_skipped_total`` / ``..._tolerated_total``);
* the session reached the cloud once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import pytest

from tests.component.test_charger_sim_quirks import (
    expected_counts,
    expected_registers,
    ts_ms,
)
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
    {"at": 12, "action": "stop", "connector": 1},
    {"at": 13, "action": "unplug", "connector": 1},
]


async def _fetch(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _rows(stack: Stack, quantity: str) -> list[tuple[int, float]]:
    rows = await _fetch(
        stack,
        "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, value "
        "FROM readings_v WHERE gateway_id = $1 AND device_id = $2 "
        "AND quantity = $3 ORDER BY seq",
        GATEWAY,
        CHARGER,
        quantity,
    )
    return [(r["ts_ms"], r["value"]) for r in rows]


def _metric_counts(metrics: dict[str, float], name: str) -> Counter[str]:
    prefix = f'{name}{{charger="{CHARGER}",reason="'
    return Counter(
        {
            key.removeprefix(prefix).removesuffix('"}'): int(value)
            for key, value in metrics.items()
            if key.startswith(prefix)
        }
    )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_quirky_charger_loses_no_reading_on_the_way_to_the_cloud(
    stack: Stack, version: str
) -> None:
    port = free_port()
    stack.write_edge_config()
    stack.add_ocpp_charger(port=port, charger=CHARGER, password=PASSWORD, id_tag=TAG)
    stack.ingest()
    edge = stack.edge()
    sim, ledger_path, _ = stack.start_scenario_charger(
        url=f"ws://127.0.0.1:{port}/ocpp",
        charger=CHARGER,
        password=PASSWORD,
        version=version,
        scenario=SCENARIO,
        extra=("--quirks",),
    )
    code = await sim.wait_async(timeout_s=timeout(90))
    assert code == 0, sim.log_tail(30)
    assert edge.is_running
    ledger: list[dict[str, Any]] = read_charger_ledger(ledger_path)
    quirky = [line for line in ledger if line.get("quirks")]
    assert len(quirky) >= 5, ledger
    if version == "1.6":
        assert quirky[-1]["kind"] == "stop" and "energy_wh" in quirky[-1]
    expected = expected_registers(ledger)

    # --- every register once, with its value; nothing else
    async def all_stored() -> bool:
        return {ts for ts, _ in await _rows(stack, "import_energy_wh")} >= set(expected)

    await eventually(all_stored, timeout_s=timeout(60), message="registers stored")
    await asyncio.sleep(1)  # a late duplicate would land now
    registers = await _rows(stack, "import_energy_wh")
    assert [t for t, n in Counter(ts for ts, _ in registers).items() if n > 1] == []
    assert dict(registers) == expected

    # --- the tolerated quirks were stored as readings too
    if version == "1.6":
        stamps = {ts_ms(line["timestamp"]) for line in quirky}
        for quantity, value in (("frequency_hz", 50.0), ("voltage_v", 230.0)):
            rows = await _rows(stack, quantity)
            assert {ts for ts, _ in rows} == stamps, quantity
            assert {v for _, v in rows} == {value}

    # --- every quirk counted under its reason
    skipped, tolerated = expected_counts(version, ledger)
    metrics = stack.metrics()
    assert _metric_counts(metrics, "fusebox_ocpp_values_skipped_total") == skipped
    assert _metric_counts(metrics, "fusebox_ocpp_values_tolerated_total") == tolerated
    assert "Traceback" not in edge.log_text()

    # --- and the session, once
    async def session_folded() -> bool:
        rows = await _fetch(
            stack,
            "SELECT stopped_at FROM sessions WHERE gateway_id = $1 AND charger_id = $2",
            GATEWAY,
            CHARGER,
        )
        return len(rows) == 1 and rows[0]["stopped_at"] is not None

    await eventually(session_folded, timeout_s=timeout(60), message="session stored")
