"""Session events fold into one ``sessions`` row per transaction, exactly once, in
any order, against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from cloud.db import migrate
from cloud.ingest import BatchStore
from protocols import contract
from protocols.events import EventError, SessionStarted, parse_event

T0_MS = 1_767_225_600_000
STREAMS = [("cp-1", "session_started"), ("cp-1", "session_stopped"), ("m1", "power_w")]


def started(tx: str, wh: float = 1000.0) -> dict[str, Any]:
    return {
        "charger_id": "cp-1",
        "transaction_id": tx,
        "connector_id": 1,
        "id_tag": "TAG1",
        "started_at": "2026-01-01T18:00:00Z",
        "meter_start_wh": wh,
    }


def stopped(tx: str, wh: float = 8500.0) -> dict[str, Any]:
    return {
        "charger_id": "cp-1",
        "transaction_id": tx,
        "stopped_at": "2026-01-02T06:30:00Z",
        "meter_stop_wh": wh,
        "reason": "EVDisconnected",
    }


def batch(first: int, events: list[tuple[int, int, dict[str, Any]]]) -> contract.Batch:
    return contract.unpack_batch(
        contract.pack(
            contract.batch_dict(
                gw="gw-s",
                epoch=1,
                first_seq=first,
                last_seq=max(s for s, _, _ in events),
                sent_ms=T0_MS,
                streams=STREAMS,
                readings=[],
                events=[(s, T0_MS + s, idx, d) for s, idx, d in events],
            )
        )
    )


@pytest.fixture
async def conn(pg_dsn: str) -> Any:
    await migrate(pg_dsn)
    c = await asyncpg.connect(pg_dsn)
    await BatchStore.init_connection(c)
    yield c
    await c.close()


async def sessions(c: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await c.fetch(
        "SELECT transaction_id, connector_id, id_tag, meter_start_wh, meter_stop_wh,"
        " energy_wh, stop_reason FROM sessions ORDER BY transaction_id"
    )
    return [dict(r) for r in rows]


async def test_start_then_stop_is_one_session_with_its_energy(conn: Any) -> None:
    store = BatchStore()
    await store.store(conn, batch(1, [(1, 0, started("T1"))]))
    await store.store(conn, batch(2, [(2, 1, stopped("T1"))]))
    assert await sessions(conn) == [
        {
            "transaction_id": "T1",
            "connector_id": 1,
            "id_tag": "TAG1",
            "meter_start_wh": 1000.0,
            "meter_stop_wh": 8500.0,
            "energy_wh": 7500.0,
            "stop_reason": "EVDisconnected",
        }
    ]


async def test_stop_overtaking_start_and_redelivery_still_one_row(conn: Any) -> None:
    store = BatchStore()
    late = batch(1, [(1, 0, started("T2"))])
    early = batch(2, [(2, 1, stopped("T2"))])
    for b in (early, late, early, late):  # out of order, then delivered again
        await store.store(conn, b)
    [row] = await sessions(conn)
    assert row["energy_wh"] == 7500.0
    assert row["id_tag"] == "TAG1"


async def test_a_malformed_session_event_is_stored_raw_and_not_folded(
    conn: Any,
) -> None:
    store = BatchStore()
    bad = started("T3")
    del bad["meter_start_wh"]
    await store.store(conn, batch(1, [(1, 0, bad), (2, 1, stopped("T4"))]))
    assert [r["transaction_id"] for r in await sessions(conn)] == ["T4"]
    assert await conn.fetchval("SELECT count(*) FROM events") == 2
    assert store.bad_session_events == 1


def test_parse_event_names_the_bad_field() -> None:
    with pytest.raises(EventError, match="meter_start_wh"):
        parse_event("session_started", {**started("T"), "meter_start_wh": -5})
    assert isinstance(parse_event("session_started", started("T")), SessionStarted)
    assert parse_event("connector_faulted", {"anything": 1}) is None
