"""One bad value from a gateway costs only itself (issue 10), with a real Mosquitto,
a real PostgreSQL, the real ingest worker and the real scheduler.

Before: a charger id outside the lease's pattern in a session event was folded
into ``sessions`` and then the scheduler could not plan that site at all; a NUL
character (device id, event text), a NaN or binary data inside an event made
PostgreSQL refuse the whole batch, which the worker took for an outage (every
gateway answered "busy", the batch resent forever). Now the worker stores the
rest, acks the whole range and counts what it left out, logging each reason once
per gateway; the scheduler leaves a bad charger out and plans the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from cloud.db import migrate
from cloud.ingest import BatchStore
from cloud.screening import (
    CHARGER_ID_PATTERN,
    DEVICE_ID_NUL,
    EVENT_DATA_UNSTORABLE,
    SESSION_EVENT_INVALID,
    charger_id_problem,
    compose_skipping,
    screen_batch,
    unstorable,
)
from protocols import contract
from tests.component.test_ingest_worker import gateway, make_worker, running
from tests.component.test_scheduler import (
    T0,
    _inputs,
    edge,
    make_scheduler,
    plug_in,
    prefer,
)
from tests.component.test_scheduler import (
    running as scheduler_running,
)
from tests.harness.mosquitto import MosquittoServer
from tests.harness.timing import eventually, timeout

GW = "gw-sched-1"  # the scheduler tests' gateway
EPOCH = 99
TS_MS = int(datetime(2026, 1, 15, 17, 0, tzinfo=UTC).timestamp() * 1000)
BAD_IDS = ["bad id/../x", "x" * 300, "", "CP 1", "ÄÖ", "a+b/c"]


def started(charger: Any, tx: str) -> dict[str, Any]:
    return {
        "charger_id": charger,
        "transaction_id": tx,
        "connector_id": 1,
        "started_at": "2026-01-15T17:00:00Z",
        "meter_start_wh": 1000.0,
    }


def poisoned_batch(first: int, gw: str = GW) -> bytes:
    """Ten records, ``first..first+9``: two good readings and one good session
    among every kind of bad value a gateway could send."""
    s = first
    streams = [
        ("meter-1", "power_w"),  # 0
        ("m\x00x", "power_w"),  # 1: NUL in a device id
        ("CP-1", "session_started"),  # 2
        ("bad id/../x", "session_started"),  # 3
        ("cp-2", "status"),  # 4
    ]
    readings = [(s, TS_MS, 0, 230.5), (s + 1, TS_MS, 1, 1.0), (s + 9, TS_MS, 0, 7.25)]
    events = [
        (s + 2, TS_MS, 2, started("CP-1", f"tx-{s}")),
        (s + 3, TS_MS, 3, started("bad id/../x", f"tx-{s}")),  # pattern
        (s + 4, TS_MS, 2, started("x" * 300, f"tx-{s}")),  # EventError
        (s + 5, TS_MS, 4, {"info": "a\x00b"}),  # NUL in text
        (s + 6, TS_MS, 4, {"value": float("nan")}),  # NaN
        (s + 7, TS_MS, 4, {"blob": b"\x01\x02"}),  # binary
        (s + 8, TS_MS, 2, started("C\x00P", f"tx-{s}")),  # NUL in a charger id
    ]
    return contract.pack(
        contract.batch_dict(
            gw=gw,
            epoch=EPOCH,
            first_seq=first,
            last_seq=first + 9,
            sent_ms=TS_MS,
            streams=streams,
            readings=readings,
            events=events,
        )
    )


# --------------------------------------------------------------------------- rules


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("bad", [*BAD_IDS, None, 7, "y" * 49])
def test_charger_ids_outside_the_lease_pattern(bad: Any) -> None:
    assert charger_id_problem(bad) is not None


@pytest.mark.parametrize("good", ["CP-1", "a" * 48, "*-_=:+|@.", "0"])
def test_charger_ids_inside_the_lease_pattern(good: str) -> None:
    assert charger_id_problem(good) is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"a": "x\x00"}, "NUL"),
        ({"a\x00": 1}, "NUL"),
        ({"a": [1, {"b": float("inf")}]}, "non-finite"),
        ({"a": b"x"}, "bytes"),
        ({b"k": 1}, "not text"),
        ({"a": nested(40)}, "deeper"),
    ],
)
def test_unstorable_event_data(data: Any, problem: str) -> None:
    assert problem in (unstorable(data) or "")


def test_screening_renumbers_streams_and_keeps_the_range() -> None:
    batch = contract.unpack_batch(poisoned_batch(1))
    clean, findings = screen_batch(batch)
    assert (clean.first_seq, clean.last_seq) == (1, 10)
    assert [r[0] for r in clean.readings] == [1, 10]
    assert [e[0] for e in clean.events] == [3, 4, 5]
    assert "m\x00x" not in [d for d, _ in clean.streams]
    for seq, _ts, idx, _v in clean.readings:
        assert clean.streams[idx] == ("meter-1", "power_w"), seq
    assert sorted((f.reason, f.seq) for f in findings) == [
        (DEVICE_ID_NUL, 2),
        (EVENT_DATA_UNSTORABLE, 6),
        (EVENT_DATA_UNSTORABLE, 7),
        (EVENT_DATA_UNSTORABLE, 8),
        (EVENT_DATA_UNSTORABLE, 9),
    ]
    good = contract.unpack_batch(poisoned_batch(1))
    good = good.model_copy(update={"events": [], "readings": good.readings[:1]})
    assert screen_batch(good) == (good, [])


# --------------------------------------------------------------------------- ingest


async def test_a_poisoned_batch_stores_the_rest_and_is_acked_whole(
    pg_dsn: str, mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(pg_dsn)
    caplog.set_level(logging.DEBUG, logger="fusebox.cloud.ingest")
    worker = make_worker(pg_dsn, mosquitto)
    async with running(worker), gateway(mosquitto.url, GW) as gw:
        await gw.send(poisoned_batch(1))
        answer = await gw.answer()
        assert isinstance(answer, contract.Ack), answer
        assert (answer.first_seq, answer.last_seq) == (1, 10)
        assert answer.stored_through_seq == 10
        # the same values again, twice (a resend and a new batch): counted, not
        # logged at WARNING again
        await gw.send(poisoned_batch(1))
        await gw.send(poisoned_batch(11))
        answers = [await gw.answer(), await gw.answer()]
        assert all(isinstance(a, contract.Ack) for a in answers), answers
        assert max(a.stored_through_seq for a in answers) == 20  # type: ignore[union-attr]
        # the worker never took it for a database outage: another gateway is fine
        async with gateway(mosquitto.url, "gw-other") as other:
            await other.send(poisoned_batch(1, gw="gw-other"))
            assert isinstance(await other.answer(), contract.Ack)
        assert worker.metrics.busy_sent == 0 and worker.metrics.db_failures == 0
        counts = dict(worker.store.quarantine.counts)
    per_batch = {
        DEVICE_ID_NUL: 1,
        EVENT_DATA_UNSTORABLE: 4,
        CHARGER_ID_PATTERN: 1,
        SESSION_EVENT_INVALID: 1,
    }
    assert counts == {k: 4 * v for k, v in per_batch.items()}
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "seq" in r.getMessage()
    ]
    # once per gateway and reason
    assert len(warnings) == 2 * len(per_batch), warnings
    assert any("'bad id/../x'" in w and "not folded" in w for w in warnings)

    conn = await asyncpg.connect(pg_dsn)
    try:
        readings = await conn.fetch(
            "SELECT seq, device_id, value FROM readings_v WHERE gateway_id = $1"
            " ORDER BY seq",
            GW,
        )
        assert [tuple(r) for r in readings] == [
            (1, "meter-1", 230.5),
            (10, "meter-1", 7.25),
            (11, "meter-1", 230.5),
            (20, "meter-1", 7.25),
        ]
        sessions = await conn.fetch(
            "SELECT charger_id, transaction_id FROM sessions WHERE gateway_id = $1"
            " ORDER BY transaction_id",
            GW,
        )
        assert [tuple(r) for r in sessions] == [("CP-1", "tx-1"), ("CP-1", "tx-11")]
        # the bad sessions are kept raw for an operator, just not folded
        raw = await conn.fetchval(
            "SELECT count(*) FROM events WHERE gateway_id = $1", GW
        )
        assert raw == 2 * 3
    finally:
        await conn.close()


async def test_a_nul_in_a_stream_that_is_also_good_elsewhere(pg_dsn: str) -> None:
    """BatchStore alone: a stream left empty by the screening is not created."""
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    await BatchStore.init_connection(conn)
    try:
        store = BatchStore()
        batch = contract.unpack_batch(poisoned_batch(1))
        assert await store.store(conn, batch) == 10
        devices = await conn.fetch("SELECT device_id FROM streams ORDER BY device_id")
        assert [r["device_id"] for r in devices] == ["CP-1", "bad id/../x", "meter-1"]
        assert store.bad_session_events == 2
    finally:
        await conn.close()


# --------------------------------------------------------------------------- scheduler


def test_compose_skipping_leaves_out_only_the_charger_that_fails() -> None:
    good = _inputs()
    bad = _inputs(charger_id="CP-9", connector_id=100).chargers[0]
    site = dataclasses.replace(good, chargers=(*good.chargers, bad))
    kw: dict[str, Any] = {"now": T0, "version": 3, "validity": timedelta(hours=1)}
    composed, used, skipped = compose_skipping(site, **kw)
    assert [c.charger_id for c in composed.lease.chargers] == ["CP-1"]
    assert used.chargers == good.chargers
    assert [cid for cid, _ in skipped] == ["CP-9"]
    assert "connector_id" in skipped[0][1] and "\n" not in skipped[0][1]
    # nothing wrong: the same as compose_lease, nothing skipped
    assert compose_skipping(good, **kw)[2] == []
    # the site's own settings at fault (no charger fails alone): raised as before
    no_prices = dataclasses.replace(good, chargers=(), prices=(float("nan"),))
    with pytest.raises(ValueError, match="price"):
        compose_skipping(no_prices, **kw)


async def test_a_bad_charger_is_left_out_and_the_site_is_planned(
    pg_dsn: str, mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Sessions stored before the ingest screened them (or by any other path):
    ids outside the pattern and a connector the lease refuses."""
    await migrate(pg_dsn)
    db = await asyncpg.connect(pg_dsn)
    caplog.set_level(logging.WARNING, logger="fusebox.cloud.scheduler")
    try:
        await db.execute("INSERT INTO gateways (id) VALUES ($1)", GW)
        await prefer(db, "CP-1", kwh=10.0)
        await plug_in(db, "CP-1", tx="tx-good")
        for i, bad in enumerate(BAD_IDS[:2]):
            await plug_in(db, bad, tx=f"tx-bad-{i}")
        await plug_in(db, "CP-9", tx="tx-connector")
        await db.execute(
            "UPDATE sessions SET connector_id = 100 WHERE charger_id = 'CP-9'"
        )
        # a 1 kW charger with no minimum set: 6 A (1,380 W) is above its maximum,
        # so the planner refuses that request by name and it gets no periods
        await db.execute(
            "INSERT INTO site_chargers (gateway_id, charger_id, max_power_w)"
            " VALUES ($1, 'CP-3', 1000)",
            GW,
        )
        await plug_in(db, "CP-3", tx="tx-small")
        sched = make_scheduler(pg_dsn, mosquitto)
        async with edge(mosquitto) as gw, scheduler_running(sched):
            await eventually(
                lambda: gw.lease(1), timeout_s=timeout(15), message="lease v1"
            )
            v1 = gw.lease(1)
            assert v1 is not None
            assert [c.charger_id for c in v1.chargers] == ["CP-1", "CP-3"]
            assert v1.chargers[0].periods  # really planned
            assert not v1.chargers[1].periods
            # several cycles later: no failure, no churn of new versions
            await asyncio.sleep(1.5)
            assert sched.metrics.planning_failures == 0
            assert gw.lease(2) is None
            assert sched.metrics.chargers_skipped == 3
            # a good charger plugging in is still planned, with the first
            await plug_in(db, "CP-2", tx="tx-2", at=T0 + timedelta(minutes=1))
            await eventually(
                lambda: gw.lease(2), timeout_s=timeout(15), message="lease v2"
            )
            v2 = gw.lease(2)
            assert v2 is not None
            assert sorted(c.charger_id for c in v2.chargers) == [
                "CP-1",
                "CP-2",
                "CP-3",
            ]
        skipped = [
            r.getMessage() for r in caplog.records if "left out" in r.getMessage()
        ]
        assert len(skipped) == 3, skipped  # once per charger, not per plan
        assert any("'bad id/../x'" in m and "pattern" in m for m in skipped)
        assert any("'CP-9'" in m and "connector_id" in m for m in skipped)
        assert "cannot plan" not in caplog.text
        refused = [m for m in caplog.messages if "gets no periods" in m]
        assert len(refused) == 1, refused  # once, not per plan
        assert "'CP-3'" in refused[0] and "max_power_w 1000 W" in refused[0]
    finally:
        await db.close()
