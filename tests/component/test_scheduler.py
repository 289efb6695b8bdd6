"""``cloud.scheduler.Scheduler`` as one real service: a private Mosquitto, a fresh
PostgreSQL, a simulated clock, and the test acting as ingest (session rows), the
API (preferences, prices, commands) and the gateway (it reads ``down/schedule`` and
``down/cmd`` and reports on ``up/schedule_status`` and ``up/cmd_result``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import aiomqtt
import asyncpg
import pytest

from cloud.db import migrate
from cloud.scheduler import (
    ChargerInputs,
    Scheduler,
    SchedulerSettings,
    SiteInputs,
    SiteRow,
    cap_periods,
    compose_lease,
    load_prices,
    next_local_time,
)
from protocols import contract
from protocols.clock import Clock
from protocols.lease import (
    SLOT_MS,
    CommandResult,
    Lease,
    ScheduleStatus,
    down_cmd,
    down_schedule,
    unpack_command,
    unpack_lease,
    up_cmd_result,
    up_schedule_status,
)
from protocols.planning import SLOT, SchedulePeriod, SlotCurve
from protocols.urls import parse_mqtt_url
from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import ProxyFactory
from tests.harness.timing import eventually, timeout

GW = "gw-sched-1"
CP = "CP-1"
# simulated time: a January evening (London is on UTC then)
T0 = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)
CHEAP = (
    datetime(2026, 1, 16, 2, 0, tzinfo=UTC),
    datetime(2026, 1, 16, 5, 0, tzinfo=UTC),
)
LATE = (
    datetime(2026, 1, 15, 23, 0, tzinfo=UTC),
    datetime(2026, 1, 16, 0, 30, tzinfo=UTC),
)


def sim_clock(speed: float = 1.0, start: datetime = T0) -> Clock:
    return Clock(start=start, anchor=time.time(), speed=speed, real=time.time)


def price_curve(cheap: tuple[datetime, datetime], dear: float = 30.0) -> SlotCurve:
    """Two days from the day before T0: ``dear`` p/kWh except 5 p in ``cheap``."""
    start = T0 - timedelta(days=1)
    values = []
    for i in range(4 * 48):
        t = start + SLOT * i
        values.append(5.0 if cheap[0] <= t < cheap[1] else dear)
    return SlotCurve(start, tuple(values))


def energy_kwh(lease_charger: Any) -> float:
    return sum(
        p.limit_w * (p.end_ms - p.start_ms) / 3_600_000_000
        for p in lease_charger.periods
    )


def charging_windows(lease_charger: Any) -> list[tuple[datetime, datetime]]:
    return [
        (
            datetime.fromtimestamp(p.start_ms / 1000, UTC),
            datetime.fromtimestamp(p.end_ms / 1000, UTC),
        )
        for p in lease_charger.periods
        if p.limit_w > 0
    ]


@dataclass
class Edge:
    """The test's gateway: what arrived on ``down/...``."""

    client: aiomqtt.Client
    leases: list[tuple[Lease, bool]] = field(default_factory=list)
    commands: list[Any] = field(default_factory=list)

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray)
            if message.topic.value.endswith("/down/schedule"):
                self.leases.append((unpack_lease(bytes(payload)), message.retain))
            else:
                self.commands.append(unpack_command(bytes(payload)))

    def lease(self, version: int) -> Lease | None:
        return next((le for le, _ in self.leases if le.version == version), None)

    async def report(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)


@contextlib.asynccontextmanager
async def edge(broker: MosquittoServer, name: str = "edge") -> AsyncIterator[Edge]:
    target = parse_mqtt_url(broker.url)
    async with aiomqtt.Client(
        target.host, target.port, identifier=f"test-{name}", timeout=timeout(10)
    ) as client:
        await client.subscribe(down_schedule(GW), qos=1)
        await client.subscribe(down_cmd(GW), qos=1)
        e = Edge(client)
        pump = asyncio.create_task(e.pump())
        try:
            yield e
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    task = asyncio.create_task(scheduler.run(), name="scheduler")
    try:
        await eventually(
            lambda: scheduler.ready.is_set() or task.done(),
            timeout_s=timeout(15),
            message="scheduler subscribed",
        )
        if task.done():
            task.result()
        yield scheduler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout(15))


def make_scheduler(
    dsn: str, broker: MosquittoServer, clock: Clock | None = None, **kw: Any
) -> Scheduler:
    settings = SchedulerSettings(interval_s=0.2, **kw)
    return Scheduler(
        dsn=dsn,
        mqtt=parse_mqtt_url(broker.url),
        clock=clock or sim_clock(),
        settings=settings,
    )


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("INSERT INTO gateways (id) VALUES ($1)", GW)
        yield conn
    finally:
        await conn.close()


async def plug_in(
    conn: asyncpg.Connection, charger: str = CP, tx: str = "tx-1", at: datetime = T0
) -> None:
    await conn.execute(
        "INSERT INTO sessions (gateway_id, charger_id, transaction_id, connector_id,"
        " started_at, meter_start_wh) VALUES ($1, $2, $3, 1, $4, 1000)",
        GW,
        charger,
        tx,
        at - timedelta(minutes=10),
    )


async def prefer(
    conn: asyncpg.Connection,
    charger: str = CP,
    *,
    kwh: float = 10.0,
    ready_by: dtime = dtime(7, 0),
    mode: str = "smart",
) -> None:
    await conn.execute(
        "INSERT INTO charging_preferences (gateway_id, charger_id, mode, ready_by,"
        " target_energy_kwh) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (gateway_id, charger_id) DO UPDATE SET mode = excluded.mode,"
        " ready_by = excluded.ready_by, target_energy_kwh = excluded.target_energy_kwh,"
        " updated_at = now()",
        GW,
        charger,
        mode,
        ready_by,
        kwh,
    )


async def reasons(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT reason FROM plans WHERE gateway_id = $1 ORDER BY version", GW
    )
    return [r["reason"] for r in rows]


# ------------------------------------------------------------------ planning


async def test_plug_in_leases_cheapest_slots_and_replans_on_changes(
    db: asyncpg.Connection, mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    await load_prices(pg_dsn, "default", prices=price_curve(CHEAP))
    await prefer(db, kwh=10.0, ready_by=dtime(7, 0))
    await plug_in(db)
    async with running(make_scheduler(pg_dsn, mosquitto)) as sched:
        await eventually(
            lambda: db.fetchval(
                "SELECT published_at IS NOT NULL FROM plans WHERE version = 1"
            ),
            timeout_s=timeout(15),
            message="first lease published",
        )
        # a gateway connecting later gets it, retained
        async with edge(mosquitto) as gw:
            await eventually(
                lambda: gw.leases, timeout_s=timeout(10), message="retained lease"
            )
            lease, retained = gw.leases[0]
            assert retained
            assert lease.version == 1
            assert lease.gw == GW
            [cp] = lease.chargers
            assert cp.charger_id == CP and cp.mode == "smart" and cp.feasible
            assert energy_kwh(cp) == pytest.approx(10.0, abs=0.05)
            for s, e in charging_windows(cp):
                assert CHEAP[0] <= s and e <= CHEAP[1], (s, e)
            assert cp.request is not None
            ready_by = datetime(2026, 1, 16, 7, 0, tzinfo=UTC)
            assert cp.request.ready_by_ms == ready_by.timestamp() * 1000
            assert cp.request.energy_needed_kwh == pytest.approx(10.0)
            # the curve covers at least the ready-by and starts at the current slot
            assert lease.slots_start_ms == T0.timestamp() * 1000
            assert lease.slots_end_ms >= ready_by.timestamp() * 1000
            assert lease.slots_end_ms - lease.slots_start_ms <= 48 * 2 * SLOT_MS
            assert lease.valid_until_ms - lease.issued_ms == 3600 * 1000
            assert sched.metrics.reasons == {"plug_in": 1}

            # the owner wants less: a new version with 4 kWh
            await prefer(db, kwh=4.0, ready_by=dtime(7, 0))
            await eventually(
                lambda: gw.lease(2), timeout_s=timeout(15), message="lease v2"
            )
            v2 = gw.lease(2)
            assert v2 is not None
            assert energy_kwh(v2.chargers[0]) == pytest.approx(4.0, abs=0.05)

            # new prices: the cheap window moves to the late evening
            await load_prices(pg_dsn, "default", prices=price_curve(LATE))
            await eventually(
                lambda: gw.lease(3), timeout_s=timeout(15), message="lease v3"
            )
            v3 = gw.lease(3)
            assert v3 is not None
            windows = charging_windows(v3.chargers[0])
            assert windows
            for s, e in windows:
                assert LATE[0] <= s and e <= LATE[1], (s, e)
            assert energy_kwh(v3.chargers[0]) == pytest.approx(4.0, abs=0.05)

            # the car leaves: a lease without chargers
            await db.execute(
                "UPDATE sessions SET stopped_at = $1, updated_at = now()", T0
            )
            await eventually(
                lambda: gw.lease(4), timeout_s=timeout(15), message="lease v4"
            )
            v4 = gw.lease(4)
            assert v4 is not None and v4.chargers == []
        assert await reasons(db) == ["plug_in", "preferences", "prices", "unplug"]
        # nothing more to do: no further versions
        await asyncio.sleep(1.0)
        assert await db.fetchval("SELECT max(version) FROM plans") == 4


async def test_two_evs_share_the_fuse_and_a_lease_is_refreshed(
    db: asyncpg.Connection, mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    await load_prices(pg_dsn, "default", prices=price_curve(CHEAP))
    await db.execute(
        "INSERT INTO sites (gateway_id, main_fuse_a, base_load_w) VALUES ($1, 40, 0)",
        GW,
    )
    for cp in ("CP-1", "CP-2"):
        await prefer(db, cp, kwh=15.0)
        await plug_in(db, cp, tx=f"tx-{cp}")
    # validity 60 s of simulated time at 30x: refreshed about every second
    clock = sim_clock(speed=30.0)
    sched = make_scheduler(
        pg_dsn, mosquitto, clock, lease_validity_s=60, refresh_before_s=20
    )
    async with edge(mosquitto) as gw, running(sched):
        await eventually(
            lambda: gw.lease(2), timeout_s=timeout(20), message="a refreshed lease"
        )
        v1 = gw.lease(1)
        assert v1 is not None
        assert {c.charger_id for c in v1.chargers} == {"CP-1", "CP-2"}
        # jointly under 40 A x 230 V = 9200 W at every instant
        edges = sorted({p.start_ms for c in v1.chargers for p in c.periods})
        for t in edges:
            load = sum(c.limit_at(t) or 0.0 for c in v1.chargers)
            assert load <= 40 * 230 + 1e-6
        for c in v1.chargers:
            assert energy_kwh(c) == pytest.approx(15.0, abs=0.05)
    assert (await reasons(db))[:2] == ["plug_in", "refresh"]


async def test_without_prices_plans_flat_and_warns(
    db: asyncpg.Connection,
    mosquitto: MosquittoServer,
    pg_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await plug_in(db)  # no preferences either: the defaults apply
    caplog.set_level(logging.WARNING, logger="fusebox.cloud.scheduler")
    async with edge(mosquitto) as gw, running(make_scheduler(pg_dsn, mosquitto)):
        await eventually(lambda: gw.leases, timeout_s=timeout(15), message="lease")
    lease = gw.leases[0][0]
    assert set(lease.price_p_per_kwh) == {24.5}
    assert energy_kwh(lease.chargers[0]) == pytest.approx(20.0, abs=0.05)
    assert "NO PRICES LOADED for tariff 'default'" in caplog.text


# ------------------------------------------------------- commands and reports


async def test_boost_is_sent_and_reports_are_stored(
    db: asyncpg.Connection, mosquitto: MosquittoServer, pg_dsn: str
) -> None:
    await db.execute(
        "INSERT INTO commands (id, gateway_id, charger_id, action, duration_s)"
        " VALUES ('cmd-1', $1, $2, 'boost', 1800)",
        GW,
        CP,
    )
    async with (
        edge(mosquitto) as gw,
        running(make_scheduler(pg_dsn, mosquitto)) as sched,
    ):
        await eventually(
            lambda: gw.commands, timeout_s=timeout(15), message="command sent"
        )
        [cmd] = gw.commands
        assert (cmd.id, cmd.gw, cmd.action, cmd.charger_id) == (
            "cmd-1",
            GW,
            "boost",
            CP,
        )
        assert cmd.until_ms is not None
        assert cmd.until_ms - cmd.issued_ms == 1800 * 1000
        assert await db.fetchval(
            "SELECT published_at IS NOT NULL FROM commands WHERE id = 'cmd-1'"
        )

        at_ms = int(T0.timestamp() * 1000)
        # garbage, a payload for another gateway, and a schema violation
        await gw.report(up_schedule_status(GW), b"\xc1not msgpack")
        await gw.report(
            up_schedule_status(GW),
            contract.pack(
                ScheduleStatus(
                    gw="gw-other", charger_id=CP, lease_version=1, state="applied",
                    limit_w=3000, at_ms=at_ms,
                )
            ),
        )  # fmt: skip
        await gw.report(
            up_cmd_result(GW), contract.pack({"v": 1, "type": "cmd_result", "id": ""})
        )
        await gw.report(
            up_schedule_status(GW),
            contract.pack(
                ScheduleStatus(
                    gw=GW, charger_id=CP, lease_version=3, state="fuse_limited",
                    limit_w=2300, planned_w=7000, at_ms=at_ms, detail="spike",
                )
            ),
        )  # fmt: skip
        await gw.report(
            up_cmd_result(GW),
            contract.pack(
                CommandResult(id="cmd-1", gw=GW, ok=True, detail="boosting",
                              at_ms=at_ms)
            ),
        )  # fmt: skip
        await eventually(
            lambda: db.fetchval("SELECT result_ok FROM commands WHERE id = 'cmd-1'"),
            timeout_s=timeout(10),
            message="command result stored",
        )
        status = await eventually(
            lambda: db.fetchrow("SELECT * FROM schedule_status"),
            timeout_s=timeout(10),
            message="schedule status stored",
        )
        assert sched.metrics.bad_payloads == 3
    assert (status["charger_id"], status["state"], status["lease_version"]) == (
        CP,
        "fuse_limited",
        3,
    )
    assert (status["limit_w"], status["planned_w"], status["detail"]) == (
        2300,
        7000,
        "spike",
    )
    assert await db.fetchval("SELECT count(*) FROM schedule_status_history") == 1
    row = await db.fetchrow("SELECT * FROM commands WHERE id = 'cmd-1'")
    assert row["result_detail"] == "boosting"
    assert row["result_at"] == T0


# ---------------------------------------------------------------- failures


async def test_survives_postgres_outages_and_recovers(
    db: asyncpg.Connection,
    mosquitto: MosquittoServer,
    pg_dsn: str,
    tcp_proxy_factory: ProxyFactory,
) -> None:
    await load_prices(pg_dsn, "default", prices=price_curve(CHEAP))
    await prefer(db)
    await plug_in(db)
    proxy = tcp_proxy_factory(pg_dsn)
    proxy.pause()  # unreachable from the start
    sched = make_scheduler(proxy.url_for(pg_dsn), mosquitto)
    async with edge(mosquitto) as gw, running(sched):
        await eventually(
            lambda: sched.metrics.db_failures >= 3,
            timeout_s=timeout(15),
            message="cycles failing on the database",
        )
        # a report arriving meanwhile waits for the database
        status = ScheduleStatus(
            gw=GW, charger_id=CP, lease_version=0, state="not_connected", limit_w=0,
            at_ms=int(T0.timestamp() * 1000),
        )  # fmt: skip
        await gw.report(up_schedule_status(GW), contract.pack(status))
        assert not gw.leases
        proxy.resume()
        await eventually(lambda: gw.lease(1), timeout_s=timeout(20), message="v1")
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM schedule_status"),
            timeout_s=timeout(10),
            message="queued report stored after recovery",
        )
        # cut again mid-run, change the preferences, heal: the change is planned
        proxy.pause()
        failures = sched.metrics.db_failures
        await eventually(
            lambda: sched.metrics.db_failures > failures,
            timeout_s=timeout(10),
            message="the second outage noticed",
        )
        await prefer(db, kwh=6.0)
        proxy.resume()
        await eventually(lambda: gw.lease(2), timeout_s=timeout(20), message="v2")
        v2 = gw.lease(2)
        assert v2 is not None
        assert energy_kwh(v2.chargers[0]) == pytest.approx(6.0, abs=0.05)


# ------------------------------------------------------------ pure helpers


def _inputs(**charger: Any) -> SiteInputs:
    fields: dict[str, Any] = {
        "charger_id": CP,
        "connector_id": 1,
        "max_power_w": 7000.0,
        "min_power_w": None,
        "phases": 1,
        "phase": 1,
        "mode": "smart",
        "ready_by": datetime(2026, 1, 16, 7, 0, tzinfo=UTC),
        "energy_needed_kwh": 7.0,
        "register_wh": 1000.0,
        "max_price_p_per_kwh": None,
    }
    fields.update(charger)
    curve = price_curve(CHEAP).window(T0, T0 + timedelta(hours=24))
    return SiteInputs(
        gateway_id=GW,
        inputs_at=T0,
        site=SiteRow(60, 1, 230, "default", "Europe/London", "cost", 0.5, 0.0),
        chargers=(ChargerInputs(**fields),),
        slots_start=T0,
        prices=curve.values,
        carbon=(),
        base_load_w=0.0,
        price_note="",
    )


def test_compose_boost_off_and_price_cap() -> None:
    v = timedelta(hours=1)
    boost = compose_lease(_inputs(mode="boost"), now=T0, version=5, validity=v)
    [cp] = boost.lease.chargers
    assert cp.mode == "boost"
    assert [(p.start_ms, p.end_ms, p.limit_w) for p in cp.periods] == [
        (T0.timestamp() * 1000, (T0 + timedelta(hours=1)).timestamp() * 1000, 7000)
    ]
    off = compose_lease(_inputs(mode="off"), now=T0, version=5, validity=v)
    assert off.lease.chargers[0].periods == []
    assert off.lease.chargers[0].request is None
    # a cap below every price: nothing may be charged, and it says so
    capped = compose_lease(
        _inputs(max_price_p_per_kwh=4.0), now=T0, version=5, validity=v
    )
    assert energy_kwh(capped.lease.chargers[0]) == 0
    assert not capped.lease.chargers[0].feasible
    # a cap above the cheap slots changes nothing
    fine = compose_lease(
        _inputs(max_price_p_per_kwh=6.0), now=T0, version=5, validity=v
    )
    assert energy_kwh(fine.lease.chargers[0]) == pytest.approx(7.0, abs=0.05)
    assert fine.lease.chargers[0].feasible


def test_cap_periods_splits_at_slot_boundaries() -> None:
    start = T0
    prices = [10.0, 30.0, 10.0]
    periods = [SchedulePeriod(start, start + 3 * SLOT, 1000.0, 4.3)]
    out, removed = cap_periods(periods, start, prices, 20.0)
    assert [(p.start, p.end, p.limit_w) for p in out] == [
        (start, start + SLOT, 1000.0),
        (start + SLOT, start + 2 * SLOT, 0.0),
        (start + 2 * SLOT, start + 3 * SLOT, 1000.0),
    ]
    assert removed == pytest.approx(0.5)


def test_next_local_time_follows_the_site_zone() -> None:
    from zoneinfo import ZoneInfo

    london = ZoneInfo("Europe/London")
    summer = datetime(2026, 7, 1, 22, 0, tzinfo=UTC)  # 23:00 BST
    assert next_local_time(summer, dtime(7, 30), london) == datetime(
        2026, 7, 2, 6, 30, tzinfo=UTC
    )
    morning = datetime(2026, 1, 15, 7, 29, tzinfo=UTC)
    assert next_local_time(morning, dtime(7, 30), london) == datetime(
        2026, 1, 15, 7, 30, tzinfo=UTC
    )
    assert next_local_time(
        datetime(2026, 1, 15, 7, 30, tzinfo=UTC), dtime(7, 30), london
    ) == datetime(2026, 1, 16, 7, 30, tzinfo=UTC)
