"""The full-disk policy end to end: with the cloud unreachable and a tiny outbox
cap, power samples are thinned, every energy register still reaches the cloud
exactly once, and the thinned count reaches the cloud in the gateway status."""

from __future__ import annotations

import asyncpg
import pytest

from tests.e2e.stack import GATEWAY, Stack
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e


async def test_thinning_keeps_registers_and_reports_the_count(stack: Stack) -> None:
    for fmt, device in (("glow", "glow-1"), ("tasmota", "tasmota-1")):
        stack.add_meter(fmt, device)
    stack.write_edge_config(cap_mb=0.25)
    stack.cloud.stop()  # the cloud is gone: everything piles up in the outbox
    stack.edge()
    await stack.edge_ready()
    for device in stack.meters:
        stack.start_meter(device, count=1500, interval_s=0.005)
    await stack.wait_meters_done(timeout(120))

    metrics = stack.metrics()
    thinned = metrics["fusebox_outbox_thinned_total"]
    assert thinned > 0
    assert metrics["fusebox_outbox_used_bytes"] <= 0.25 * 1024 * 1024 * 1.1

    stack.cloud.start()
    stack.ingest()
    rec = await stack.wait_reconciled(timeout(120), power_complete=False)
    # every energy register arrived exactly once; power samples were thinned
    assert not rec.missing and not rec.duplicated, str(rec)
    assert not rec.wrong_value and not rec.unexpected, str(rec)
    assert rec.ledgered == 3000
    assert rec.power_rows < rec.ledgered

    async def reported() -> bool:
        conn = await asyncpg.connect(stack.dsn)
        try:
            row = await conn.fetchrow(
                "SELECT thinned_total FROM gateways WHERE id = $1", GATEWAY
            )
        finally:
            await conn.close()
        return row is not None and row["thinned_total"] == int(
            stack.metrics()["fusebox_outbox_thinned_total"]
        )

    await eventually(reported, timeout_s=timeout(20), message="thinned count in cloud")
