"""The full-disk policy end to end: with the cloud unreachable and a tiny outbox
cap, power samples are thinned, every energy register still reaches the cloud
exactly once, and the thinned count reaches the cloud in the gateway status.

And a really full disk (issue 16): the edge's state directory on a 2 MB tmpfs
that fills up while the cloud is away, or that something else fills right after
a WAL checkpoint. The edge never exits; when the cloud is back it prunes, takes
the readings the site broker kept for it, and every register reaches the cloud
exactly once; the thinned and refused counts reach the cloud too."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.stack import GATEWAY, Stack
from tests.harness.procs import Proc
from tests.harness.timing import eventually, timeout
from tests.harness.tmpfs import mounted_tmpfs

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


# ------------------------------------------------------------ a real full disk

DISK = 2 * 1024 * 1024


@pytest.fixture
def state_disk(tmp_path: Path) -> Iterator[Path]:
    """The edge's state directory on a 2 MB tmpfs, unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "state", DISK) as mnt:
        yield mnt


def _ballast(path: Path, size: int | None) -> None:
    """Something else on the gateway's disk: ``size`` bytes, or every free byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"\1" * 4096
        written = 0
        with contextlib.suppress(OSError):  # ENOSPC: full
            while size is None or written < size:
                n = len(block) if size is None else min(len(block), size - written)
                written += os.write(fd, block[:n])
    finally:
        os.close(fd)


def _edge_on(stack: Stack, state: Path) -> Proc:
    config = stack.write_edge_config(cap_mb=64)
    text = config.read_text()
    config.write_text(
        text.replace(f'path = "{stack.work / "outbox.db"}"', f'path = "{state}/o.db"')
    )
    assert f"{state}/o.db" in config.read_text()
    return stack.edge()


async def _gateway_row(stack: Stack) -> dict[str, int] | None:
    conn = await asyncpg.connect(stack.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT thinned_total, thinned_disk_total, refused_cap_total, "
            "refused_disk_total FROM gateways WHERE id = $1",
            GATEWAY,
        )
    finally:
        await conn.close()
    return None if row is None else dict(row)


async def _cloud_back_and_reconciled(stack: Stack, edge: Proc, ledgered: int) -> None:
    metrics = stack.metrics()
    refused = metrics['fusebox_outbox_refused_total{reason="disk_full"}']
    assert refused > 0, "the disk never filled"
    stack.cloud.start()
    stack.ingest()
    rec = await stack.wait_reconciled(timeout(120), power_complete=False)
    assert not rec.missing and not rec.duplicated, str(rec)
    assert not rec.wrong_value and not rec.unexpected, str(rec)
    assert rec.ledgered == ledgered
    # the edge never died: one process, still running, never restarted
    assert edge.is_running, edge.log_tail(30)
    assert "Traceback" not in edge.log_path.read_text()

    async def reported() -> bool:
        row = await _gateway_row(stack)
        m = stack.metrics()
        return row is not None and (
            row["thinned_total"] == int(m["fusebox_outbox_thinned_total"])
            and row["thinned_disk_total"]
            == int(m['fusebox_outbox_thinned_by_reason_total{reason="disk"}'])
            and row["refused_disk_total"]
            == int(m['fusebox_outbox_refused_total{reason="disk_full"}'])
            and row["refused_disk_total"] >= refused
        )

    await eventually(
        reported, timeout_s=timeout(20), message="full-disk counts in the cloud"
    )


async def test_a_full_disk_never_kills_the_edge_and_loses_no_register(
    stack: Stack, state_disk: Path
) -> None:
    """Other files leave the outbox 600 kB of the 2 MB disk; the cloud is
    away while three meters publish far more than fits."""
    _ballast(state_disk / "ballast", 1400 * 1024)
    for fmt, device in (("glow", "glow-1"), ("tasmota", "tasmota-1"), ("glow", "g2")):
        stack.add_meter(fmt, device)
    stack.cloud.stop()
    edge = _edge_on(stack, state_disk)
    await stack.edge_ready()
    for device in stack.meters:
        stack.start_meter(device, count=3000, interval_s=0.004)
    await stack.wait_meters_done(timeout(120))
    m = stack.metrics()
    assert m['fusebox_outbox_thinned_by_reason_total{reason="disk"}'] > 0
    assert m["fusebox_outbox_reserve_bytes"] > 0  # SQLite never saw a full disk
    await _cloud_back_and_reconciled(stack, edge, 9000)


async def test_a_disk_filled_after_a_wal_checkpoint_still_drains(
    stack: Stack, state_disk: Path
) -> None:
    """The edge's WAL has been checkpointed; then something else takes every
    free byte. The reserve lets the prunes run when the cloud comes back."""
    for fmt, device in (("glow", "glow-1"), ("tasmota", "tasmota-1")):
        stack.add_meter(fmt, device)
    stack.cloud.stop()
    edge = _edge_on(stack, state_disk)
    await stack.edge_ready()
    for device in stack.meters:
        stack.start_meter(device, count=1200, interval_s=0.01)
    await eventually(
        lambda: stack.metrics()["fusebox_outbox_appended_total"] >= 1000,
        timeout_s=timeout(30),
        message="readings in the outbox",
    )
    _ballast(state_disk / "ballast", None)
    await stack.wait_meters_done(timeout(120))
    await _cloud_back_and_reconciled(stack, edge, 2400)
