"""Admission control of the API (issue 11) on the real app and PostgreSQL,
through httpx's ASGI transport: a saturated class is refused at once with 503
and ``Retry-After`` while its requests are still held and the other classes are
served; a request past its class's deadline is answered 503, not left hanging;
a full hashing pool refuses logins fast while reads go on; and
``FUSEBOX_ADMISSION=off`` (the benchmark's switch) really admits everything."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from cloud.api import create_app
from cloud.api.admission import AdmissionSettings, Priority
from cloud.auth import create_user, issue_token
from cloud.db import migrate
from cloud.ingest import BatchStore
from cloud.intake import SqliteIntake
from cloud.passwords import HashPool
from protocols import contract
from tests.harness.timing import eventually, timeout

PASSWORD = "admission-test-password-7"
MAX_IN_FLIGHT = 8  # reads: 6 of their own; the process: 8


async def seed_owner(dsn: str, gw: str = "gw-1", meter: str = "m-1") -> str:
    """An owner (password ``PASSWORD``) with a site on ``gw`` and a manual meter
    ``meter``; returns a bearer token of theirs."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await BatchStore.init_connection(conn)
        await BatchStore().update_status(
            conn, contract.GatewayStatus(gw=gw, state="online")
        )
        uid = await create_user(conn, f"owner-{gw}@example.com", "owner", PASSWORD)
        await conn.execute(
            "INSERT INTO sites (gateway_id, owner_id, main_fuse_a) VALUES ($1, $2, 60)",
            gw,
            uid,
        )
        await conn.execute(
            "INSERT INTO site_meters (gateway_id, meter_id, type, role)"
            " VALUES ($1, $2, 'manual', 'other')",
            gw,
            meter,
        )
        token, _ = await issue_token(conn, uid, timedelta(hours=1), None)
        return token
    finally:
        await conn.close()


@dataclass
class Held:
    """A read route that waits until released: a slow dependency."""

    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    entered: int = 0
    cancelled: int = 0

    def add_to(self, app: FastAPI) -> None:
        """``GET /v1/gateways/{gateway_id}/held``, classed as an owner read."""

        async def held(gateway_id: str) -> dict[str, Any]:
            self.entered += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return {"held": gateway_id}

        app.add_api_route("/v1/gateways/{gateway_id}/held", held, methods=["GET"])


@dataclass
class Api:
    """The app under test, a client with the owner's token, the held route."""

    app: FastAPI
    client: httpx.AsyncClient
    held: Held


@contextlib.asynccontextmanager
async def open_api(
    dsn: str,
    tmp_path: Path,
    *,
    admission: Literal["on", "off"] = "on",
    hash_pool: HashPool | None = None,
) -> AsyncIterator[Api]:
    """The app on ``dsn`` (admission ``on`` or ``off``), with the held route."""
    token = await seed_owner(dsn)
    app = create_app(
        dsn,
        intake=SqliteIntake(tmp_path / "intake.sqlite3"),
        admission=AdmissionSettings(
            admission=admission, api_max_in_flight=MAX_IN_FLIGHT
        ),
        hash_pool=hash_pool,
    )
    held = Held()
    held.add_to(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout(30),
        ) as client:
            try:
                yield Api(app, client, held)
            finally:
                held.release.set()


@pytest.fixture
async def api(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(pg_dsn, tmp_path) as a:
        yield a


async def _hold(api: Api, n: int) -> list[asyncio.Task[httpx.Response]]:
    """``n`` held reads, each in the handler before this returns."""
    tasks = [
        asyncio.create_task(api.client.get("/v1/gateways/gw-1/held")) for _ in range(n)
    ]
    await eventually(
        lambda: api.held.entered >= n, timeout_s=timeout(10), message=f"{n} held"
    )
    return tasks


def _reading(minutes_ago: float, kwh: float) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"ts": ts.isoformat(), "register_kwh": kwh}


async def test_a_saturated_class_is_refused_fast_and_the_others_are_served(
    api: Api,
) -> None:
    reads_cap = api.app.state.admission.limits[Priority.READ].max_in_flight
    held = await _hold(api, reads_cap)
    r = await api.client.get("/v1/sites")
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "read requests in flight" in r.json()["detail"]
    # refused while every held read is still held: nothing queued behind them
    assert not any(t.done() for t in held)
    # the other classes are served meanwhile
    login = await api.client.post(
        "/v1/auth/login", json={"email": "owner-gw-1@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    sub = await api.client.post(
        "/v1/gateways/gw-1/meters/m-1/readings", json=_reading(5, 100.0)
    )
    assert sub.status_code == 202, sub.text
    assert (await api.client.get("/healthz")).status_code == 200  # never refused
    assert not any(t.done() for t in held)
    api.held.release.set()
    assert [t.status_code for t in await asyncio.gather(*held)] == [200] * reads_cap
    # the class has room again
    assert (await api.client.get("/v1/sites")).status_code == 200
    figures = api.app.state.admission.figures()
    assert figures["read"]["refused"] == 1 and figures["read"]["in_flight"] == 0


async def test_bulk_work_is_shed_before_owner_reads(api: Api) -> None:
    limits = api.app.state.admission.limits
    n = limits[Priority.BULK].admit_below_total  # in flight at which bulk is shed
    held = await _hold(api, n)
    r = await api.client.get("/v1/fleet")
    assert r.status_code == 503 and "shed first" in r.json()["detail"]
    assert int(r.headers["retry-after"]) == int(limits[Priority.BULK].retry_after_s)
    assert (await api.client.get("/v1/sites")).status_code == 200
    assert not any(t.done() for t in held)
    api.held.release.set()
    await asyncio.gather(*held)


async def test_a_request_past_its_deadline_is_answered_503_not_left_hanging(
    api: Api,
) -> None:
    plan = api.app.state.admission
    read = plan.limits[Priority.READ]
    plan.limits = {
        **plan.limits,
        Priority.READ: dataclasses.replace(read, deadline_s=timeout(0.5)),
    }
    r = await api.client.get("/v1/gateways/gw-1/held")  # never released
    assert r.status_code == 503, r.text
    assert "not answered within" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert api.held.cancelled == 1  # the handler was stopped, not left running
    assert plan.in_flight[Priority.READ] == 0


async def test_an_answer_begun_before_the_deadline_streams_on(api: Api) -> None:
    plan = api.app.state.admission
    deadline_s = timeout(0.3)
    plan.limits = {
        **plan.limits,
        Priority.READ: dataclasses.replace(
            plan.limits[Priority.READ], deadline_s=deadline_s
        ),
    }

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first,"
        await asyncio.sleep(3 * deadline_s)  # a long export, past the deadline
        yield b"last"

    async def export(gateway_id: str) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    api.app.add_api_route("/v1/gateways/{gateway_id}/export", export, methods=["GET"])
    r = await api.client.get("/v1/gateways/gw-1/export")
    assert r.status_code == 200 and r.text == "first,last"


async def test_a_full_hashing_pool_refuses_logins_fast_while_reads_work(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with open_api(pg_dsn, tmp_path, hash_pool=HashPool(1, 0)) as api:
        await _full_pool_refuses_logins(api)


async def _full_pool_refuses_logins(api: Api) -> None:
    pool: HashPool = api.app.state.hash_pool
    stuck = threading.Event()
    hogging = asyncio.create_task(pool.run(stuck.wait, timeout(30)))
    await eventually(
        lambda: pool.slots.taken == 1, timeout_s=timeout(5), message="pool busy"
    )
    body = {"email": "owner-gw-1@example.com", "password": PASSWORD}
    r = await api.client.post("/v1/auth/login", json=body)
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert "too many logins" in r.json()["detail"]
    assert not hogging.done()  # refused while the pool was still busy
    assert (await api.client.get("/v1/sites")).status_code == 200
    assert pool.slots.refused == 1
    stuck.set()
    await hogging
    r = await api.client.post("/v1/auth/login", json=body)
    assert r.status_code == 200, r.text


async def test_admission_off_admits_everything(pg_dsn: str, tmp_path: Path) -> None:
    async with open_api(pg_dsn, tmp_path, admission="off") as api:
        await _everything_admitted(api)


async def _everything_admitted(api: Api) -> None:
    n = MAX_IN_FLIGHT + 4  # more than the process may have in flight
    held = await _hold(api, n)
    assert api.held.entered == n
    assert (await api.client.get("/v1/sites")).status_code == 200
    assert api.app.state.admission.figures()["read"]["admitted"] == 0
    api.held.release.set()
    assert {t.status_code for t in await asyncio.gather(*held)} == {200}
