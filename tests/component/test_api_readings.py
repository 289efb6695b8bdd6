"""The readings page and CSV export against a real PostgreSQL with months of
readings in several monthly partitions: keyset pages that together return every
reading once, newest first (ties on ``ts`` included), and plans that walk an index
and read about a page of rows whatever the history holds (issue 16)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from cloud.api import create_app
from cloud.api import readings as api_readings
from cloud.auth import create_user, issue_token
from cloud.db import migrate
from fusebox.bench_api import seed_history

GW = "gw-h"
STREAMS = (("main", "power_w"), ("CP-1", "power_w"), ("CP-1", "import_energy_wh"))
NOW = datetime.now(UTC).replace(microsecond=0)
# two stretches 50 days apart, more than the default window: paging without
# `since` must step over the gap
RECENT = (NOW - timedelta(days=20), NOW - timedelta(minutes=1))
OLDER = (NOW - timedelta(days=100), NOW - timedelta(days=70))
STEP_S = 1800


@dataclass
class World:
    client: httpx.AsyncClient
    conn: asyncpg.Connection

    async def stored(self, where: str = "", *args: Any) -> list[tuple[int, str]]:
        """``(seq, ts)`` of gw-h's readings matching ``where``, newest first."""
        rows = await self.conn.fetch(
            "SELECT r.seq, r.ts FROM readings r JOIN streams s ON s.id = r.stream_id"
            f" WHERE r.gateway_id = $1 {where} ORDER BY r.ts DESC, r.seq DESC",
            GW,
            *args,
        )
        return [(r["seq"], r["ts"].isoformat()) for r in rows]

    async def walk(self, params: dict[str, Any]) -> tuple[list[tuple[int, str]], int]:
        """Every page from the first through ``Link rel="next"``: the readings as
        ``(seq, ts)`` and the number of requests."""
        got: list[tuple[int, str]] = []
        url: str | None = f"/v1/gateways/{GW}/readings"
        requests = 0
        while url is not None:
            r = await self.client.get(url, params=params if requests == 0 else None)
            assert r.status_code == 200, r.text
            requests += 1
            assert requests < 100, "paging does not end"
            page = r.json()
            assert len(page) <= params.get("limit", api_readings.DEFAULT_LIMIT)
            got += [
                (x["seq"], datetime.fromisoformat(x["ts"]).isoformat()) for x in page
            ]
            url = r.links.get("next", {}).get("url")
        return got, requests


async def _gateway(conn: asyncpg.Connection, gw: str) -> None:
    await conn.execute("INSERT INTO gateways (id) VALUES ($1)", gw)


@pytest.fixture
async def world(pg_dsn: str) -> AsyncIterator[World]:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _gateway(conn, GW)
        await seed_history(conn, GW, STREAMS, *OLDER, step_s=STEP_S, first_seq=1)
        await seed_history(
            conn, GW, STREAMS, *RECENT, step_s=STEP_S, first_seq=1_000_000
        )
        # another gateway's readings at the same instants must never show
        await _gateway(conn, "gw-other")
        await seed_history(
            conn, "gw-other", STREAMS, *RECENT, step_s=STEP_S, first_seq=1
        )
        uid = await create_user(conn, "op@example.com", "operator", None)
        token, _ = await issue_token(conn, uid, timedelta(hours=1), None)
        app = create_app(pg_dsn)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://t",
                headers={"Authorization": f"Bearer {token}"},
            ) as client,
        ):
            yield World(client, conn)
    finally:
        await conn.close()


async def test_pages_return_every_reading_once_newest_first(world: World) -> None:
    expected = await world.stored()
    assert len(expected) > 7000
    # 500 is not a multiple of the 3 readings sharing each instant
    got, requests = await world.walk({"limit": 500})
    assert got == expected
    # pages, plus one at each end of the gap and an empty last one
    assert requests <= len(expected) // 500 + 5


@pytest.mark.parametrize(
    ("params", "where", "args"),
    [
        ({"quantity": "power_w", "limit": 333}, "AND s.name = $2", ("power_w",)),
        (
            {"device_id": "CP-1", "quantity": "import_energy_wh", "limit": 1000},
            "AND s.device_id = $2 AND s.name = $3",
            ("CP-1", "import_energy_wh"),
        ),
        ({"device_id": "nope"}, "AND s.device_id = $2", ("nope",)),
    ],
)
async def test_filtered_pages_return_every_match_once(
    world: World, params: dict[str, Any], where: str, args: tuple[str, ...]
) -> None:
    expected = await world.stored(where, *args)
    got, _ = await world.walk(params)
    assert got == expected


async def test_since_and_until_bound_the_pages(world: World) -> None:
    since, until = NOW - timedelta(days=90), NOW - timedelta(days=10)
    expected = await world.stored("AND r.ts >= $2 AND r.ts < $3", since, until)
    assert expected
    got, requests = await world.walk(
        {"since": since.isoformat(), "until": until.isoformat(), "limit": 1000}
    )
    assert got == expected
    assert requests == len(expected) // 1000 + 1  # the last page has no Link


async def test_first_page_without_since_is_the_newest(world: World) -> None:
    r = await world.client.get(f"/v1/gateways/{GW}/readings", params={"limit": 5})
    assert r.status_code == 200
    assert [x["seq"] for x in r.json()] == [s for s, _ in (await world.stored())[:5]]
    assert "before=" in r.links["next"]["url"]


BAD_PAGING: list[tuple[dict[str, Any], str]] = [
    ({"before": "yesterday"}, "before"),
    ({"before": "999999999999999999_1"}, "before"),  # past year 9999
    ({"before": "0_1"}, "before"),  # before 1970-01-02
    ({"before": "1_99999999999999999999"}, "before"),  # past bigint
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ({"limit": api_readings.MAX_LIMIT + 1}, "limit"),
]


async def test_bad_paging_is_422_naming_the_field(world: World) -> None:
    for params, field in BAD_PAGING:
        r = await world.client.get(f"/v1/gateways/{GW}/readings", params=params)
        assert r.status_code == 422, (params, r.text)
        [error] = r.json()["detail"]
        assert error["loc"] == ["query", field], params


def test_cursor_round_trips() -> None:
    ts = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    for seq in (-(2**63), 0, 2**63 - 1):
        cursor = api_readings.encode_cursor(ts, seq)
        assert api_readings.decode_cursor(cursor) == (ts, seq)


async def test_csv_is_oldest_first_across_partitions(world: World) -> None:
    since = OLDER[0] - timedelta(days=1)
    r = await world.client.get(
        f"/v1/gateways/{GW}/readings.csv",
        params={"since": since.isoformat(), "quantity": "power_w"},
    )
    assert r.status_code == 200
    lines = r.text.splitlines()[1:]
    expected = await world.stored("AND s.name = 'power_w'")
    assert len(lines) == len(expected)
    stamps = [line.split(",")[0] for line in lines]
    assert stamps == sorted(stamps)


# ---------------------------------------------------------------- the plans


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [plan]
    for child in plan.get("Plans", []):
        out += _nodes(child)
    return out


async def _plan(
    conn: asyncpg.Connection, sql: str, *args: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every node of the executed plan, and those that read ``readings``."""
    text = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
    nodes = _nodes(json.loads(text)[0]["Plan"])
    scans = [n for n in nodes if str(n.get("Relation Name", "")).startswith("readings")]
    return nodes, scans


def _rows_read(scans: list[dict[str, Any]]) -> int:
    return sum(int(n["Actual Rows"]) * int(n["Actual Loops"]) for n in scans)


@pytest.fixture
async def big(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """gw-big with 3 streams every 2 minutes for 95 days (205,200 readings in 4
    or 5 monthly partitions), analyzed as autovacuum would."""
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await _gateway(conn, "gw-big")
        await seed_history(
            conn,
            "gw-big",
            STREAMS,
            NOW - timedelta(days=95),
            NOW,
            step_s=120,
            first_seq=1,
        )
        await conn.execute("VACUUM (ANALYZE) readings")
        yield conn
    finally:
        await conn.close()


async def test_plans_read_a_page_from_the_index(big: asyncpg.Connection) -> None:
    limit = 101
    since = NOW - api_readings.DEFAULT_WINDOW
    upper = (NOW, 2**63 - 1)
    partitions = await big.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass"
    )
    assert partitions >= 4

    nodes, scans = await _plan(
        big, api_readings.GATEWAY_PAGE, "gw-big", since, *upper, limit
    )
    assert not [n for n in nodes if n["Node Type"] in ("Seq Scan", "Sort")], nodes
    assert all("gateway_id_ts_seq" in n["Index Name"] for n in scans), scans
    assert all(n["Scan Direction"] == "Backward" for n in scans), scans
    assert len(scans) <= 3 < partitions  # the window's partitions only
    assert _rows_read(scans) <= limit

    # filtered: each matching stream (2 of 3) walked for at most a page
    nodes, scans = await _plan(
        big, api_readings.STREAMS_PAGE, "gw-big", since, *upper, limit, None, "power_w"
    )
    assert not [n for n in scans if n["Node Type"] == "Seq Scan"], scans
    assert all("stream_id_ts" in n["Index Name"] for n in scans), scans
    assert len({n["Relation Name"] for n in scans}) <= 3 < partitions
    assert _rows_read(scans) <= 2 * (limit + 2)

    # the CSV streams in index order, without sorting the range first
    nodes, scans = await _plan(
        big,
        api_readings.CSV_ROWS + " LIMIT 1000",
        "gw-big",
        None,
        None,
        NOW - timedelta(days=365),
        datetime.max.replace(tzinfo=UTC),
    )
    assert not [n for n in nodes if n["Node Type"] in ("Seq Scan", "Sort")], nodes
    assert all("gateway_id_ts_seq" in n["Index Name"] for n in scans), scans
    assert _rows_read(scans) <= 1000
