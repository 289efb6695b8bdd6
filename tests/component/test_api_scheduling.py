"""The smart-charging endpoints of the cloud API against a real PostgreSQL.

The client is the gateway's installer (may change site, chargers and preferences);
tariff prices are loaded by an operator. Tenancy is tested in test_api_roles.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from cloud.api import create_app
from cloud.auth import create_user, issue_token
from cloud.db import migrate

GW = "gw-a"
T0 = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(pg_dsn)
    c = await asyncpg.connect(pg_dsn)
    try:
        await c.execute("INSERT INTO gateways (id) VALUES ($1)", GW)
        # CP-seen is known from a session only, CP-1 is configured below
        await c.execute(
            "INSERT INTO sessions (gateway_id, charger_id, transaction_id,"
            " started_at) VALUES ($1, 'CP-seen', 'tx', $2)",
            GW,
            T0,
        )
        yield c
    finally:
        await c.close()


async def bearer(conn: asyncpg.Connection, email: str, role: Any) -> dict[str, str]:
    uid = await create_user(conn, email, role, None)
    token, _ = await issue_token(conn, uid, timedelta(hours=1), None)
    if role == "installer":
        await conn.execute(
            "INSERT INTO site_installers (gateway_id, user_id) VALUES ($1, $2)", GW, uid
        )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def operator(conn: asyncpg.Connection) -> dict[str, str]:
    return await bearer(conn, "op@example.com", "operator")


@pytest.fixture
async def client(
    conn: asyncpg.Connection, pg_dsn: str
) -> AsyncIterator[httpx.AsyncClient]:
    headers = await bearer(conn, "installer@example.com", "installer")
    app = create_app(pg_dsn)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as c:
            yield c


def fields_named(r: httpx.Response) -> set[str]:
    """The body fields a 422 names (last element of each ``loc``)."""
    assert r.status_code == 422, r.text
    return {str(d["loc"][-1]) for d in r.json()["detail"]}


# ------------------------------------------------------------------- site


async def test_site_round_trip(client: httpx.AsyncClient) -> None:
    body = {
        "main_fuse_a": 80,
        "phases": 3,
        "tariff_id": "agile-2025",
        "timezone": "Europe/London",
        "objective": "mix",
        "carbon_weight": 0.3,
    }
    r = await client.put(f"/v1/gateways/{GW}/site", json=body)
    assert r.status_code == 200, r.text
    r = await client.get(f"/v1/gateways/{GW}/site")
    assert r.status_code == 200
    got = r.json()
    assert {k: got[k] for k in body} == body
    assert got["voltage_v"] == 230 and got["base_load_w"] is None
    # a second PUT replaces
    r = await client.put(f"/v1/gateways/{GW}/site", json={"main_fuse_a": 60})
    assert r.json()["phases"] == 1 and r.json()["tariff_id"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"main_fuse_a": 0}, "main_fuse_a"),
        ({"main_fuse_a": 60, "phases": 2}, "phases"),
        ({"main_fuse_a": 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"main_fuse_a": 60, "tariff_id": "no spaces"}, "tariff_id"),
        ({"main_fuse_a": 60, "carbon_weight": 2}, "carbon_weight"),
        ({"main_fuse_a": 60, "fuse": 1}, "fuse"),
        ({}, "main_fuse_a"),
    ],
)
async def test_site_422_names_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await client.put(f"/v1/gateways/{GW}/site", json=body)
    assert field in fields_named(r)


async def test_unknown_gateway_404(client: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("PUT", "/v1/gateways/gw-x/site", {"main_fuse_a": 60}),
        ("GET", "/v1/gateways/gw-x/site", None),
        ("PUT", "/v1/gateways/gw-x/chargers/CP-1", {}),
        ("GET", "/v1/gateways/gw-x/chargers/CP-1/preferences", None),
        ("GET", "/v1/gateways/gw-x/plan", None),
        ("POST", "/v1/gateways/gw-x/chargers/CP-1/boost", None),
    ]:
        r = await client.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert "gw-x" in r.json()["detail"]
    # a known gateway without settings or plan
    assert (await client.get(f"/v1/gateways/{GW}/site")).status_code == 404
    assert (await client.get(f"/v1/gateways/{GW}/plan")).status_code == 404


# --------------------------------------------------------------- chargers


async def test_charger_round_trip_and_422(client: httpx.AsyncClient) -> None:
    body = {"max_power_w": 11000, "phases": 3, "min_power_w": 4140}
    r = await client.put(f"/v1/gateways/{GW}/chargers/CP-1", json=body)
    assert r.status_code == 200, r.text
    got = (await client.get(f"/v1/gateways/{GW}/chargers/CP-1")).json()
    assert got == {
        "charger_id": "CP-1",
        "connector_id": 1,
        "max_power_w": 11000,
        "min_power_w": 4140,
        "phases": 3,
        "phase": 1,
    }
    assert (await client.get(f"/v1/gateways/{GW}/chargers/CP-9")).status_code == 404
    r = await client.put(f"/v1/gateways/{GW}/chargers/CP-1", json={"max_power_w": -1})
    assert "max_power_w" in fields_named(r)
    r = await client.put(
        f"/v1/gateways/{GW}/chargers/CP-1",
        json={"max_power_w": 3000, "min_power_w": 4000},
    )
    assert r.status_code == 422 and "min_power_w" in r.text
    r = await client.put(f"/v1/gateways/{GW}/chargers/bad%20id", json={})
    assert "charger_id" in fields_named(r)


# ------------------------------------------------------------ preferences


async def test_preferences_round_trip(client: httpx.AsyncClient) -> None:
    body = {"mode": "smart", "ready_by": "07:30", "target_energy_kwh": 25}
    # a charger seen only in a session is known
    r = await client.put(f"/v1/gateways/{GW}/chargers/CP-seen/preferences", json=body)
    assert r.status_code == 200, r.text
    got = (await client.get(f"/v1/gateways/{GW}/chargers/CP-seen/preferences")).json()
    assert got["ready_by"] == "07:30" and got["target_energy_kwh"] == 25
    assert got["target_soc_pct"] is None and got["updated_at"]
    body = {
        "mode": "off",
        "ready_by": "06:00",
        "target_soc_pct": 80,
        "battery_kwh": 64,
        "max_price_p_per_kwh": 15,
    }
    r = await client.put(f"/v1/gateways/{GW}/chargers/CP-seen/preferences", json=body)
    got = r.json()
    assert {k: got[k] for k in body} == body
    assert got["target_energy_kwh"] is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"ready_by": "7:30", "target_energy_kwh": 5}, "ready_by"),
        ({"ready_by": "24:00", "target_energy_kwh": 5}, "ready_by"),
        ({"mode": "fast", "target_energy_kwh": 5}, "mode"),
        ({"target_energy_kwh": 0}, "target_energy_kwh"),
        ({"target_soc_pct": 120, "battery_kwh": 60}, "target_soc_pct"),
        ({"target_soc_pct": 80}, "battery_kwh"),
        ({"target_energy_kwh": 5, "target_soc_pct": 80, "battery_kwh": 60}, "not both"),
    ],
)
async def test_preferences_422_names_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], needle: str
) -> None:
    r = await client.put(f"/v1/gateways/{GW}/chargers/CP-seen/preferences", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text


async def test_preferences_unknown_charger_404(client: httpx.AsyncClient) -> None:
    r = await client.put(
        f"/v1/gateways/{GW}/chargers/CP-9/preferences", json={"target_energy_kwh": 5}
    )
    assert r.status_code == 404 and "CP-9" in r.json()["detail"]
    r = await client.get(f"/v1/gateways/{GW}/chargers/CP-seen/preferences")
    assert r.status_code == 404  # known charger, no preferences yet


# ------------------------------------------------------- commands and plan


async def test_boost_and_cancel_queue_commands(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    r = await client.post(
        f"/v1/gateways/{GW}/chargers/CP-seen/boost", json={"duration_min": 45}
    )
    assert r.status_code == 202, r.text
    boost = r.json()
    assert boost["action"] == "boost" and boost["duration_s"] == 2700
    assert boost["published_at"] is None
    r = await client.post(f"/v1/gateways/{GW}/chargers/CP-seen/boost")
    assert r.status_code == 202
    r = await client.post(f"/v1/gateways/{GW}/chargers/CP-seen/cancel_boost")
    assert r.status_code == 202 and r.json()["action"] == "cancel_boost"
    rows = await conn.fetch("SELECT action FROM commands ORDER BY created_at, action")
    assert sorted(r["action"] for r in rows) == ["boost", "boost", "cancel_boost"]
    got = (await client.get(f"/v1/gateways/{GW}/commands/{boost['id']}")).json()
    assert got["id"] == boost["id"]
    r = await client.post(
        f"/v1/gateways/{GW}/chargers/CP-seen/boost",
        json={"until": "2026-01-15T20:00:00"},  # no zone
    )
    assert "until" in fields_named(r)
    r = await client.post(f"/v1/gateways/{GW}/chargers/CP-9/boost")
    assert r.status_code == 404


async def test_current_plan_is_the_newest_lease_with_its_slots(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    start_ms = int(T0.timestamp() * 1000)
    for version in (1, 2):
        lease = {
            "v": 1,
            "type": "lease",
            "gw": GW,
            "version": version,
            "slots_start_ms": start_ms,
            "price_p_per_kwh": [10.0, 20.0],
            "carbon_g_per_kwh": [100.0, 200.0],
            "chargers": [],
        }
        await conn.execute(
            "INSERT INTO plans (gateway_id, version, issued_at, valid_until,"
            " inputs_at, reason, lease) VALUES ($1, $2, $3, $4, now(), 'plug_in',"
            " $5::jsonb)",
            GW,
            version,
            T0,
            T0 + timedelta(hours=1),
            json.dumps(lease),
        )
    r = await client.get(f"/v1/gateways/{GW}/plan")
    assert r.status_code == 200
    plan = r.json()
    assert plan["version"] == 2 and plan["lease"]["version"] == 2
    assert plan["slots"] == [
        {
            "slot_start": "2026-01-15T18:00:00Z",
            "price_p_per_kwh": 10.0,
            "carbon_g_per_kwh": 100.0,
            "planned_w": {},
        },
        {
            "slot_start": "2026-01-15T18:30:00Z",
            "price_p_per_kwh": 20.0,
            "carbon_g_per_kwh": 200.0,
            "planned_w": {},
        },
    ]


# ------------------------------------------------------------------ prices


async def test_prices_put_and_get(
    client: httpx.AsyncClient, conn: asyncpg.Connection, operator: dict[str, str]
) -> None:
    slots = [
        {"slot_start": "2026-01-15T18:00:00Z", "price_p_per_kwh": 30.5},
        {"slot_start": "2026-01-15T18:30:00+00:00", "price_p_per_kwh": -1.5},
        {"slot_start": "2026-01-15T19:00:00Z", "carbon_g_per_kwh": 120},
    ]
    r = await client.put("/v1/tariffs/agile/prices", json=slots)
    assert r.status_code == 403  # an installer may not load tariffs
    r = await client.put("/v1/tariffs/agile/prices", json=slots, headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["slots"] == 3
    first = await conn.fetchval("SELECT updated_at FROM tariffs WHERE id = 'agile'")
    # carbon for a slot that has a price keeps the price
    r = await client.put(
        "/v1/tariffs/agile/prices",
        json=[{"slot_start": "2026-01-15T18:00:00Z", "carbon_g_per_kwh": 90}],
        headers=operator,
    )
    assert r.status_code == 200
    assert (
        await conn.fetchval("SELECT updated_at FROM tariffs WHERE id = 'agile'") > first
    )
    got = (await client.get("/v1/tariffs/agile/prices")).json()
    assert [(s["price_p_per_kwh"], s["carbon_g_per_kwh"]) for s in got["slots"]] == [
        (30.5, 90),
        (-1.5, None),
        (None, 120),
    ]
    assert (await client.get("/v1/tariffs/nope/prices")).status_code == 404


@pytest.mark.parametrize(
    ("slots", "needle"),
    [
        ([{"slot_start": "2026-01-15T18:10:00Z", "price_p_per_kwh": 1}], "slot_start"),
        ([{"slot_start": "2026-01-15T18:00:00", "price_p_per_kwh": 1}], "slot_start"),
        ([{"slot_start": "2026-01-15T18:00:00Z", "price_p_per_kwh": 5000}], "price"),
        ([{"slot_start": "2026-01-15T18:00:00Z"}], "price_p_per_kwh"),
        (
            [
                {"slot_start": "2026-01-15T18:00:00Z", "price_p_per_kwh": 1},
                {"slot_start": "2026-01-15T18:00:00Z", "price_p_per_kwh": 2},
            ],
            "twice",
        ),
    ],
)
async def test_prices_422(
    client: httpx.AsyncClient,
    operator: dict[str, str],
    slots: list[dict[str, Any]],
    needle: str,
) -> None:
    r = await client.put("/v1/tariffs/agile/prices", json=slots, headers=operator)
    assert r.status_code == 422, r.text
    assert needle in r.text
