"""The durable intake of manual meter readings (issue 11, ``cloud.intake``) with
real PostgreSQL and, for the cluster's intake, a real nats-server (JetStream):
readings are answered 202 and kept while the consumer is down, then stored once
each when it catches up, also when a consumer died after storing and before
acknowledging; a replay has the same id and stores nothing twice; an unreadable
message is dropped and counted while the rest flows; a full intake answers 503
with ``Retry-After`` and keeps what it accepted."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from cloud.api import create_app
from cloud.intake import (
    INTAKE_STREAM,
    Intake,
    IntakeConsumer,
    IntakeSettings,
    JetStreamIntake,
    SqliteIntake,
    Submission,
    decide,
)
from tests.component.test_api_admission import seed_owner
from tests.harness.nats import Backbone
from tests.harness.timing import eventually, timeout

URL = "/v1/gateways/gw-1/meters/m-1/readings"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
N = 20


def _body(i: int) -> dict[str, Any]:
    """Reading ``i``: one a minute, 0.5 kWh apart (plausible), with a key."""
    return {
        "ts": (T0 + timedelta(minutes=i)).isoformat(),
        "register_kwh": 1000.0 + 0.5 * i,
        "idempotency_key": f"k-{i}",
    }


@contextlib.asynccontextmanager
async def _client(
    dsn: str, token: str, intake: Intake, *, consume: bool
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        dsn,
        intake=intake,
        intake_settings=IntakeSettings(intake_consumer="on" if consume else "off"),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {token}"},
        ) as c,
    ):
        yield c


async def _submit_all(c: httpx.AsyncClient, expect: int = 202) -> list[str]:
    ids = []
    for i in range(N):
        r = await c.post(URL, json=_body(i))
        assert r.status_code == expect, r.text
        ids.append(r.json()["id"])
    return ids


async def _stored(dsn: str) -> list[tuple[str, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT idempotency_key, register_wh FROM manual_readings ORDER BY ts"
        )
        return [(r["idempotency_key"], r["register_wh"]) for r in rows]
    finally:
        await conn.close()


EXPECTED = [(f"k-{i}", 1_000_000.0 + 500.0 * i) for i in range(N)]


async def _states(c: httpx.AsyncClient, ids: list[str]) -> set[str]:
    out = set()
    for sub_id in ids:
        r = await c.get(f"/v1/gateways/gw-1/submissions/{sub_id}")
        assert r.status_code == 200, r.text
        out.add(r.json()["state"])
    return out


async def test_sqlite_intake_keeps_readings_while_the_consumer_is_down(
    pg_dsn: str, tmp_path: Path
) -> None:
    token = await seed_owner(pg_dsn)
    path = tmp_path / "intake.sqlite3"
    async with _client(pg_dsn, token, SqliteIntake(path), consume=False) as c:
        ids = await _submit_all(c)
        assert len(set(ids)) == N
        assert await _states(c, ids) == {"accepted"}
        # nothing written to PostgreSQL in the requests
        assert await _stored(pg_dsn) == []
        # replays while waiting: the same ids, kept once
        replayed = await _submit_all(c)
        assert replayed == ids
    # the API process restarts (the file is all that is left), now consuming
    async with _client(pg_dsn, token, SqliteIntake(path), consume=True) as c:

        async def all_stored() -> bool:
            return await _states(c, ids) == {"stored"}

        await eventually(all_stored, timeout_s=timeout(20), message="all stored")
        assert await _stored(pg_dsn) == EXPECTED
        # decided: a replay is answered 200 with the outcome, not stored again
        assert await _submit_all(c, expect=200) == ids
    assert await _stored(pg_dsn) == EXPECTED
    # delivered again after a crash between COMMIT and ack: decided once
    sub = Submission.from_bytes(
        Submission.new(
            "gw-1",
            "m-1",
            T0,
            1_000_000.0,
            "k-0",
            None,
            datetime.now(UTC),
        ).to_bytes()
    )
    assert sub.id == ids[0]
    conn = await asyncpg.connect(pg_dsn)
    try:
        outcome = await decide(conn, sub)
        assert outcome is not None and not outcome.new and outcome.state == "stored"
        assert await conn.fetchval("SELECT count(*) FROM manual_submissions") == N
    finally:
        await conn.close()
    assert await _stored(pg_dsn) == EXPECTED


async def _stream_messages(backbone: Backbone) -> int:
    nc = await backbone.connect()
    try:
        info = await nc.jetstream().stream_info(INTAKE_STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_jetstream_intake_consumer_down_then_caught_up_nothing_lost_or_doubled(
    pg_dsn: str, nats_backbone: Backbone
) -> None:
    token = await seed_owner(pg_dsn)
    urls = nats_backbone.nats_urls
    ack_wait_s = timeout(1)
    api_intake = JetStreamIntake(urls, ack_wait_s=ack_wait_s)
    async with _client(pg_dsn, token, api_intake, consume=False) as c:
        ids = await _submit_all(c)
        # 202 came after the PubAck: the stream holds every one
        assert await _stream_messages(nats_backbone) == N
        assert await _states(c, ids) == {"accepted"}
        assert await _submit_all(c) == ids  # replays: deduplicated by message id
        assert await _stream_messages(nats_backbone) == N
        assert await _stored(pg_dsn) == []
        # an unreadable message among them (a poisoned consumer must not stop)
        nc = await nats_backbone.connect()
        try:
            await nc.jetstream().publish(
                "fusebox.intake.manual.gw-1.garbage", b"\xff not json"
            )
        finally:
            await nc.close()
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        try:
            # a consumer stores five, then dies before acknowledging them
            dying = JetStreamIntake(urls, ack_wait_s=ack_wait_s)
            await dying.start()
            first = await dying.fetch(5, timeout(5))
            assert len(first) == 5
            async with pool.acquire() as conn:
                for d in first:
                    assert d.submission is not None
                    assert await decide(conn, d.submission) is not None
            await dying.close()
            assert len(await _stored(pg_dsn)) == 5
            # the consumer service comes back and catches up
            again = JetStreamIntake(urls, ack_wait_s=ack_wait_s)
            await again.start()
            consumer = IntakeConsumer(again, pool, batch=8)
            try:

                async def caught_up() -> bool:
                    await consumer.drain_once(wait_s=timeout(0.5))
                    return await _states(c, ids) == {"stored"}

                await eventually(
                    caught_up, timeout_s=timeout(30), message="consumer caught up"
                )
                # the five stored before the crash came again: decided once
                await eventually(
                    lambda: consumer.unreadable == 1,
                    timeout_s=timeout(10),
                    message="the unreadable message dropped",
                )
            finally:
                await again.close()
        finally:
            await pool.close()
        assert consumer.decided == N - 5
        assert await _stored(pg_dsn) == EXPECTED


async def test_a_full_jetstream_intake_refuses_with_retry_after(
    pg_dsn: str, nats_backbone: Backbone
) -> None:
    token = await seed_owner(pg_dsn)
    intake = JetStreamIntake(nats_backbone.nats_urls, max_msgs=3)
    async with _client(pg_dsn, token, intake, consume=False) as c:
        for i in range(3):
            r = await c.post(URL, json=_body(i))
            assert r.status_code == 202, r.text
        r = await c.post(URL, json=_body(3))
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "full" in r.json()["detail"], r.json()  # IntakeFull, not IntakeDown
    assert await _stream_messages(nats_backbone) == 3


async def test_an_unreachable_backbone_refuses_readings_and_serves_the_rest(
    pg_dsn: str,
) -> None:
    token = await seed_owner(pg_dsn)
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    intake = JetStreamIntake([f"nats://127.0.0.1:{port}"])
    async with _client(pg_dsn, token, intake, consume=True) as c:
        r = await c.post(URL, json=_body(0))
        assert r.status_code == 503, r.text
        assert int(r.headers["retry-after"]) >= 1
        assert "not reachable" in r.json()["detail"]
        assert (await c.get("/v1/sites")).status_code == 200
    assert await _stored(pg_dsn) == []
