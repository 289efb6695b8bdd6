"""The cloud HTTP API against a real PostgreSQL, through httpx's ASGI transport.

The client is an operator (sees every gateway); tenancy is tested in
test_api_roles.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import httpx
import pytest

from cloud.api import create_app
from cloud.auth import create_user, issue_token
from cloud.db import migrate
from cloud.ingest import BatchStore
from protocols import contract

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
async def client(pg_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await BatchStore.init_connection(conn)
        store = BatchStore()
        batch = contract.unpack_batch(
            contract.pack(
                contract.batch_dict(
                    gw="gw-a",
                    epoch=7,
                    first_seq=1,
                    last_seq=4,
                    sent_ms=T0_MS,
                    streams=[("m1", "import_energy_wh"), ("m1", "power_w")],
                    readings=[
                        (1, T0_MS, 0, 1000.0),
                        (2, T0_MS, 1, 250.0),
                        (3, T0_MS + 10_000, 0, 1001.0),
                        (4, T0_MS + 10_000, 1, 300.0),
                    ],
                    events=[],
                )
            )
        )
        await store.store(conn, batch)
        await store.update_status(
            conn,
            contract.GatewayStatus(gw="gw-a", state="online", thinned_total=3),
        )
        uid = await create_user(conn, "op@example.com", "operator", None)
        token, _ = await issue_token(conn, uid, timedelta(hours=1), None)
    finally:
        await conn.close()
    app = create_app(pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {token}"},
        ) as c:
            yield c


async def test_health(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"ok": True}


async def test_gateways_show_status_and_watermark(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/gateways")
    assert r.status_code == 200
    [gw] = r.json()
    assert gw["id"] == "gw-a"
    assert gw["state"] == "online"
    assert gw["thinned_total"] == 3
    assert gw["stored_through_seq"] == 4


async def test_readings_filter_by_quantity_newest_first(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get(
        "/v1/gateways/gw-a/readings", params={"quantity": "import_energy_wh"}
    )
    assert r.status_code == 200
    rows = r.json()
    assert [(x["seq"], x["value"]) for x in rows] == [(3, 1001.0), (1, 1000.0)]
    assert rows[0]["device_id"] == "m1"
    assert rows[0]["ts"].startswith("2026-01-01T00:00:10")


async def test_readings_since_and_limit(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/v1/gateways/gw-a/readings",
        params={"since": "2026-01-01T00:00:05Z", "limit": 1},
    )
    assert r.status_code == 200
    assert len(r.json()) == 1
    assert r.json()[0]["ts"].startswith("2026-01-01T00:00:10")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"quantity": "watts"}, "quantity"),
        ({"limit": 0}, "limit"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_bad_query_is_422_naming_the_field(
    client: httpx.AsyncClient, params: dict[str, object], field: str
) -> None:
    r = await client.get("/v1/gateways/gw-a/readings", params=params)
    assert r.status_code == 422
    assert field in r.text


async def test_unknown_gateway_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/gateways/nope/readings")
    assert r.status_code == 404
    assert "nope" in r.json()["detail"]


async def test_reads_need_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/v1/gateways", "/v1/gateways/gw-a/readings"):
        r = await client.get(path, headers={"Authorization": ""})
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/healthz", headers={"Authorization": ""})).is_success


async def test_readings_csv_streams_oldest_first(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/v1/gateways/gw-a/readings.csv",
        params={"since": "2026-01-01T00:00:00Z", "quantity": "power_w"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0] == "ts,device_id,quantity,value"
    assert [x.split(",")[1:] for x in lines[1:]] == [
        ["m1", "power_w", "250.0"],
        ["m1", "power_w", "300.0"],
    ]
    r = await client.get(
        "/v1/gateways/gw-a/readings.csv", params={"since": "2026-01-01T00:00:00"}
    )
    assert r.status_code == 422 and "since" in r.text  # no zone
    r = await client.get("/v1/gateways/gw-a/readings.csv")
    assert r.status_code == 422 and "since" in r.text
