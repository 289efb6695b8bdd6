"""Owners, installers and operators through the API, and tenant isolation.

Two homes, A and B, each with a gateway, an owner and an installer. Installer A
claims gw-a with the code it shows, creates the site for owner A and registers a
charger and meters (installer B the same for gw-b); then every role's views are
checked, and every way across the tenant line is tried.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from cloud.api import create_app
from cloud.auth import ApiSettings, Role, create_user, issue_token
from cloud.db import migrate
from cloud.ingest import BatchStore
from cloud.intake import SqliteIntake
from edge.config import parse_config
from protocols import contract
from tests.harness.timing import eventually, timeout

CODE_A, CODE_B = "ABCD-1234", "WXYZ-9876"
MINUTE_MS = 60_000


def sha(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class Feeder:
    """Stores readings and events as the ingest worker would."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.store = BatchStore()
        self.seq: dict[str, int] = {}

    async def feed(
        self,
        gw: str,
        streams: list[tuple[str, str]],
        readings: Sequence[tuple[int, int, float]] = (),
        events: Sequence[tuple[int, int, dict[str, Any]]] = (),
    ) -> None:
        first = self.seq.get(gw, 0) + 1
        n = first
        rows: list[tuple[int, int, int, float]] = []
        evs: list[tuple[int, int, int, dict[str, Any]]] = []
        for ts, idx, value in readings:
            rows.append((n, ts, idx, value))
            n += 1
        for ts, idx, data in events:
            evs.append((n, ts, idx, data))
            n += 1
        self.seq[gw] = n - 1
        batch = contract.unpack_batch(
            contract.pack(
                contract.batch_dict(
                    gw=gw,
                    epoch=1,
                    first_seq=first,
                    last_seq=n - 1,
                    sent_ms=int(time.time() * 1000),
                    streams=streams,
                    readings=rows,
                    events=evs,
                )
            )
        )
        await self.store.store(self.conn, batch)


@dataclass
class World:
    app: FastAPI
    client: httpx.AsyncClient
    conn: asyncpg.Connection
    feeder: Feeder
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    async def req(
        self, who: str | None, method: str, path: str, **kw: Any
    ) -> httpx.Response:
        headers = self.tokens[who] if who else {}
        return await self.client.request(method, path, headers=headers, **kw)


USERS: list[tuple[str, Role]] = [
    ("owner_a", "owner"),
    ("owner_b", "owner"),
    ("inst_a", "installer"),
    ("inst_b", "installer"),
    ("op", "operator"),
]


@pytest.fixture
async def world(pg_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    await BatchStore.init_connection(conn)
    feeder = Feeder(conn)
    for gw, code in (("gw-a", CODE_A), ("gw-b", CODE_B)):
        await feeder.store.update_status(
            conn,
            contract.GatewayStatus(
                gw=gw, state="online", software="1.2.3", claim_sha256=sha(code)
            ),
        )
    await feeder.store.update_status(
        conn, contract.GatewayStatus(gw="gw-c", state="offline", backlog_records=42)
    )
    app = create_app(
        pg_dsn,
        settings=ApiSettings(
            claim_delay_s=0.01,
            claim_max_failures=3,
            public_mqtt_url="mqtts://broker.example:8883",
        ),
        intake=SqliteIntake(tmp_path / "intake.sqlite3"),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            w = World(app, c, conn, feeder)
            for name, role in USERS:
                uid = await create_user(conn, f"{name}@example.com", role, None)
                token, _ = await issue_token(conn, uid, timedelta(hours=1), None)
                w.tokens[name] = {"Authorization": f"Bearer {token}"}
            try:
                yield w
            finally:
                await conn.close()


async def install(w: World, who: str, gw: str, code: str, owner: str) -> None:
    """The installer's visit: claim, site, charger, meters."""
    r = await w.req(who, "POST", "/v1/claims", json={"claim_code": code.lower()})
    assert r.status_code == 200, r.text
    assert r.json() == {"gateway_id": gw, "claimed": True}
    r = await w.req(
        who,
        "POST",
        "/v1/sites",
        json={
            "gateway_id": gw,
            "owner_email": f"{owner}@EXAMPLE.com",
            "main_fuse_a": 60,
            "phases": 1,
            "tariff_id": f"tariff-{gw}",
        },
    )
    assert r.status_code == 201, r.text
    cp = "CP-A" if gw == "gw-a" else "CP-B"
    r = await w.req(
        who, "PUT", f"/v1/gateways/{gw}/chargers/{cp}", json={"max_power_w": 7400}
    )
    assert r.status_code == 200, r.text
    meter = "m-a" if gw == "gw-a" else "m-b"
    r = await w.req(
        who,
        "PUT",
        f"/v1/gateways/{gw}/meters/{meter}",
        json={"type": "glow", "topic": f"glow/{meter}", "role": "site"},
    )
    assert r.status_code == 200, r.text
    r = await w.req(
        who, "PUT", f"/v1/gateways/{gw}/meters/{meter}-manual", json={"type": "manual"}
    )
    assert r.status_code == 200, r.text
    # the owner's next visit takes the site over (cloud.installer_access)
    r = await w.req(owner, "GET", "/v1/me")
    assert r.status_code == 200 and gw in r.json()["gateway_ids"], r.text


@pytest.fixture
async def installed(world: World) -> World:
    await install(world, "inst_a", "gw-a", CODE_A, "owner_a")
    await install(world, "inst_b", "gw-b", CODE_B, "owner_b")
    return world


def minute_ms(minutes_ago: int) -> int:
    now = int(time.time() * 1000)
    return now - now % MINUTE_MS - minutes_ago * MINUTE_MS


async def charge(
    w: World, gw: str, cp: str, meter: str, *, sign: float = 1.0, boot: bool = True
) -> None:
    """20 minutes of data: 10 idle, then an EV charging at 7 kW for 10."""
    streams = [
        (meter, "power_w"),
        (cp, "power_w"),
        (cp, "import_energy_wh"),
        (cp, "soc_pct"),
        (cp, "boot"),
        (cp, "status"),
        (cp, "session_started"),
        (cp, "capabilities"),
    ]
    readings: list[tuple[int, int, float]] = []
    for m in range(20, 0, -1):
        ts = minute_ms(m) + 5_000
        ev = 7000.0 if m <= 10 else 0.0
        readings.append((ts, 0, sign * (500.0 + ev)))
        readings.append((ts, 1, ev))
        if m <= 10:
            readings.append((ts, 2, 1000.0 + (11 - m) * 7000 / 60))
            readings.append((ts, 3, 40.0 + (11 - m)))
    start_ms = minute_ms(10)
    events: list[tuple[int, int, dict[str, Any]]] = [
        (start_ms, 5, {"connector_id": 1, "status": "Charging"}),
        (
            start_ms,
            6,
            {
                "charger_id": cp,
                "transaction_id": "tx-1",
                "connector_id": 1,
                "started_at": datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                "meter_start_wh": 1000.0,
            },
        ),
    ]
    if boot:
        events.append((minute_ms(15), 4, {"vendor": "Sim", "model": "X"}))
    await w.feeder.feed(gw, streams, readings, events)


async def prices(w: World, gw: str, price: float, carbon: float) -> None:
    await w.conn.execute(
        "INSERT INTO tariffs (id) VALUES ($1) ON CONFLICT DO NOTHING", f"tariff-{gw}"
    )
    slot = minute_ms(120)
    slot -= slot % 1_800_000
    for i in range(8):
        await w.conn.execute(
            "INSERT INTO tariff_slots VALUES ($1, $2, $3, $4)",
            f"tariff-{gw}",
            datetime.fromtimestamp((slot + i * 1_800_000) / 1000, UTC),
            price,
            carbon,
        )


# ----------------------------------------------------------------- installer


async def test_claim_wrong_code_then_rate_limited(world: World) -> None:
    for _ in range(3):
        r = await world.req("inst_a", "POST", "/v1/claims", json={"claim_code": "NOPE"})
        assert r.status_code == 404 and "code" in r.json()["detail"]
    r = await world.req("inst_a", "POST", "/v1/claims", json={"claim_code": CODE_A})
    assert r.status_code == 429 and "Retry-After" in r.headers
    # an owner cannot claim at all
    r = await world.req("owner_a", "POST", "/v1/claims", json={"claim_code": CODE_B})
    assert r.status_code == 403


async def test_a_claimed_gateway_cannot_be_claimed_again(installed: World) -> None:
    r = await installed.req("inst_b", "POST", "/v1/claims", json={"claim_code": CODE_A})
    assert r.status_code == 404
    owner = await installed.conn.fetchval(
        "SELECT u.email FROM sites s JOIN users u ON u.id = s.owner_id"
        " WHERE s.gateway_id = 'gw-a'"
    )
    assert owner == "owner_a@example.com"


async def test_site_for_any_email_is_201(world: World) -> None:
    # no account oracle (issue 10): unknown, installer and owner e-mails alike;
    # tests/component/test_installer_access.py has the whole story
    await world.req("inst_a", "POST", "/v1/claims", json={"claim_code": CODE_A})
    for email in ("x@y.z", "inst_b@example.com", "owner_b@example.com"):
        r = await world.req(
            "inst_a",
            "POST",
            "/v1/sites",
            json={"gateway_id": "gw-a", "owner_email": email, "main_fuse_a": 60},
        )
        assert r.status_code == 201 and r.json()["owner_email"] == email, r.text


async def test_config_bundle_is_a_valid_edge_config(installed: World) -> None:
    r = await installed.req("inst_a", "GET", "/v1/gateways/gw-a/config_bundle")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/toml")
    import tomllib

    cfg = parse_config(tomllib.loads(r.text))
    assert cfg.gateway_id == "gw-a"
    assert cfg.cloud.mqtt_url == "mqtts://broker.example:8883"
    assert cfg.cloud.username and cfg.cloud.password is None
    assert "broker_credentials" in r.text
    assert cfg.site.main_fuse_a == 60 and cfg.site.meter == "m-a"
    assert [m.id for m in cfg.meters] == ["m-a"]  # the manual one is not the edge's
    [cp] = cfg.chargers
    assert cp.id == "CP-A" and cp.max_current_a == pytest.approx(32.2)
    # the owner does not get it
    r = await installed.req("owner_a", "GET", "/v1/gateways/gw-a/config_bundle")
    assert r.status_code == 403


async def test_broker_credentials_from_the_broker_module(
    installed: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def issue(gateway_id: str) -> tuple[str, str]:
        calls.append(gateway_id)
        return f"gw-{gateway_id}", "p" * 32

    import cloud.broker_auth

    monkeypatch.setattr(cloud.broker_auth, "issue_gateway_credentials", issue)
    r = await installed.req("inst_a", "POST", "/v1/gateways/gw-a/broker_credentials")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert (body["username"], body["password"]) == ("gw-gw-a", "p" * 32)
    import tomllib

    cfg = parse_config(tomllib.loads(body["config_bundle"]))
    assert cfg.cloud.username == "gw-gw-a"
    assert cfg.cloud.password == "p" * 32
    assert calls == ["gw-a"]
    r = await installed.req("inst_a", "POST", "/v1/gateways/gw-b/broker_credentials")
    assert r.status_code == 404 and calls == ["gw-a"]


async def test_broker_credentials_without_the_module_is_501(
    installed: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cloud.broker_auth", None)
    r = await installed.req("inst_a", "POST", "/v1/gateways/gw-a/broker_credentials")
    assert r.status_code == 501 and "broker_auth" in r.json()["detail"]


async def test_broker_failure_is_503(
    installed: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def issue(gateway_id: str) -> tuple[str, str]:
        raise RuntimeError("broker unreachable at mqtt://x:1883")

    import cloud.broker_auth

    monkeypatch.setattr(cloud.broker_auth, "issue_gateway_credentials", issue)
    r = await installed.req("inst_a", "POST", "/v1/gateways/gw-a/broker_credentials")
    assert r.status_code == 503 and "unreachable" in r.json()["detail"]


async def test_commissioning_fails_then_passes(installed: World) -> None:
    w = installed
    r = await w.req("inst_a", "GET", "/v1/gateways/gw-a/commissioning")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["passed"] is False
    status = {(c["check"], c.get("charger_id")): c["status"] for c in report["checks"]}
    assert status[("fuse_limit_set", None)] == "pass"
    assert status[("charger_connected", "CP-A")] == "fail"
    assert status[("meter_sign_sane", None)] == "fail"
    await charge(w, "gw-a", "CP-A", "m-a")
    await w.conn.execute(
        "INSERT INTO schedule_status (gateway_id, charger_id, lease_version, state,"
        " limit_w, at) VALUES ('gw-a', 'CP-A', 1, 'applied', 7000, now())"
    )
    report = (await w.req("inst_a", "GET", "/v1/gateways/gw-a/commissioning")).json()
    assert report["passed"] is True, report
    sign = next(c for c in report["checks"] if c["check"] == "meter_sign_sane")
    assert sign["rise_w"] == pytest.approx(7000) and sign["ev_w"] == pytest.approx(7000)


async def test_commissioning_catches_a_reversed_meter(installed: World) -> None:
    await charge(installed, "gw-b", "CP-B", "m-b", sign=-1.0, boot=False)
    report = (
        await installed.req("inst_b", "GET", "/v1/gateways/gw-b/commissioning")
    ).json()
    assert report["passed"] is False
    by = {c["check"]: c for c in report["checks"]}
    assert by["meter_sign_sane"]["status"] == "fail"
    assert "reversed" in by["meter_sign_sane"]["detail"]
    assert by["charger_connected"]["status"] == "pass"  # status, no boot: seen
    assert by["meter_data_fresh"]["status"] == "pass"
    assert by["charger_accepted_profile"]["status"] == "fail"


# --------------------------------------------------------------------- owner


async def test_owner_sees_only_their_site(installed: World) -> None:
    r = await installed.req("owner_a", "GET", "/v1/sites")
    assert r.status_code == 200
    [site] = r.json()
    assert site["gateway_id"] == "gw-a" and site["site"]["main_fuse_a"] == 60
    assert [c["charger_id"] for c in site["chargers"]] == ["CP-A"]
    assert [m["meter_id"] for m in site["meters"]] == ["m-a", "m-a-manual"]
    assert site["gateway"]["online"] is True and site["gateway"]["software"] == "1.2.3"
    r = await installed.req("owner_a", "GET", "/v1/gateways")
    assert [g["id"] for g in r.json()] == ["gw-a"]
    me = (await installed.req("owner_a", "GET", "/v1/me")).json()
    assert me["gateway_ids"] == ["gw-a"]
    r = await installed.req("inst_b", "GET", "/v1/sites")
    assert [s["gateway_id"] for s in r.json()] == ["gw-b"]


async def test_live_state_sessions_cost_and_carbon(installed: World) -> None:
    w = installed
    await charge(w, "gw-a", "CP-A", "m-a")
    await prices(w, "gw-a", price=20.0, carbon=100.0)
    r = await w.req("owner_a", "GET", "/v1/gateways/gw-a/live")
    assert r.status_code == 200, r.text
    [cp] = r.json()["chargers"]
    assert cp["charger_id"] == "CP-A" and cp["status"] == "Charging"
    assert cp["power_w"] == 7000
    assert cp["session"]["transaction_id"] == "tx-1"
    assert cp["session"]["energy_wh"] == pytest.approx(10 * 7000 / 60)
    assert cp["soc_pct"] == 50
    r = await w.req("owner_a", "GET", "/v1/gateways/gw-a/sessions")
    assert r.status_code == 200, r.text
    [s] = r.json()["sessions"]
    energy = 10 * 7000 / 60
    assert s["energy_wh"] == pytest.approx(energy)
    assert s["cost_p"] == pytest.approx(energy / 1000 * 20, rel=1e-3)
    assert s["carbon_g"] == pytest.approx(energy / 1000 * 100, rel=1e-3)
    assert s["priced_energy_wh"] == pytest.approx(energy, rel=1e-3)


async def test_owner_changes_preferences_and_boosts(installed: World) -> None:
    w = installed
    path = "/v1/gateways/gw-a/chargers/CP-A"
    body = {"ready_by": "06:45", "target_energy_kwh": 20}
    r = await w.req("owner_a", "PUT", f"{path}/preferences", json=body)
    assert r.status_code == 200, r.text
    r = await w.req("owner_a", "GET", f"{path}/preferences")
    assert r.json()["ready_by"] == "06:45"
    r = await w.req("owner_a", "POST", f"{path}/boost", json={"duration_min": 30})
    assert r.status_code == 202
    cmd = r.json()["id"]
    r = await w.req("owner_a", "GET", f"/v1/gateways/gw-a/commands/{cmd}")
    assert r.status_code == 200
    # but the site and the devices are the installer's
    r = await w.req("owner_a", "PUT", "/v1/gateways/gw-a/site", json={"main_fuse_a": 1})
    assert r.status_code == 403
    r = await w.req("owner_a", "PUT", path, json={"max_power_w": 22000})
    assert r.status_code == 403


async def test_owner_plan_has_planned_power_per_slot(installed: World) -> None:
    w = installed
    start = minute_ms(0) - minute_ms(0) % 1_800_000
    lease = {
        "slots_start_ms": start,
        "price_p_per_kwh": [10.0, 30.0],
        "carbon_g_per_kwh": [50.0, 60.0],
        "chargers": [
            {
                "charger_id": "CP-A",
                "periods": [
                    {"start_ms": start, "end_ms": start + 1_800_000, "limit_w": 7000}
                ],
            }
        ],
    }
    now = datetime.now(UTC)
    await w.conn.execute(
        "INSERT INTO plans (gateway_id, version, issued_at, valid_until, inputs_at,"
        " reason, lease) VALUES ('gw-a', 1, $1, $2, now(), 'plug_in', $3::jsonb)",
        now,
        now + timedelta(hours=1),
        json.dumps(lease),
    )
    r = await w.req("owner_a", "GET", "/v1/gateways/gw-a/plan")
    assert r.status_code == 200
    slots = r.json()["slots"]
    assert [s["planned_w"] for s in slots] == [{"CP-A": 7000}, {}]
    assert (await w.req("owner_b", "GET", "/v1/gateways/gw-a/plan")).status_code == 404


async def test_readings_csv_for_the_owner(installed: World) -> None:
    await charge(installed, "gw-a", "CP-A", "m-a")
    since = datetime.fromtimestamp(minute_ms(30) / 1000, UTC).isoformat()
    r = await installed.req(
        "owner_a",
        "GET",
        "/v1/gateways/gw-a/readings.csv",
        params={"since": since, "device_id": "m-a"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert len(lines) == 21 and lines[1].endswith(",m-a,power_w,500.0")
    r = await installed.req(
        "owner_b", "GET", "/v1/gateways/gw-a/readings.csv", params={"since": since}
    )
    assert r.status_code == 404


# ---------------------------------------------------------- manual readings


def reading(minutes_ago: float, kwh: float, key: str | None = None) -> dict[str, Any]:
    ts = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    body: dict[str, Any] = {"ts": ts.isoformat(), "register_kwh": kwh}
    if key:
        body["idempotency_key"] = key
    return body


async def submit(w: World, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a manual reading (202, or 200 once decided) and wait until the
    intake's consumer has decided it; the decided submission."""
    r = await w.req("owner_a", "POST", url, json=body)
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        assert r.json()["state"] == "accepted"
        assert r.headers["location"] == r.json()["location"]
    location = r.json()["location"]

    async def decided() -> dict[str, Any] | None:
        got = await w.req("owner_a", "GET", location)
        assert got.status_code == 200, got.text
        out: dict[str, Any] = got.json()
        return out if out["state"] != "accepted" else None

    return await eventually(
        decided, timeout_s=timeout(10), message=f"{location} decided"
    )


async def test_manual_reading_validation(installed: World) -> None:
    w = installed
    url = "/v1/gateways/gw-a/meters/m-a-manual/readings"
    first = await submit(w, url, reading(600, 1000.0, "k1"))
    assert first["state"] == "stored" and first["register_kwh"] == 1000.0
    # the same submission again (a retry): the same id, not a second row
    again = reading(600, 1000.0, "k1")
    again["ts"] = first["ts"]
    r2 = await w.req("owner_a", "POST", url, json=again)
    assert r2.status_code == 200 and r2.json()["id"] == first["id"]
    assert r2.json()["reading_id"] == first["reading_id"]
    assert r2.json()["state"] == "stored"
    r2 = await w.req("owner_a", "POST", url, json={**again, "id": None})
    assert r2.status_code == 422  # unknown fields are refused
    # same key, other reading: conflict
    r3 = await w.req("owner_a", "POST", url, json={**again, "register_kwh": 1001})
    assert r3.status_code == 409
    # below the last reading
    out = await submit(w, url, reading(60, 999.5))
    assert out["state"] == "refused" and out["reading_id"] is None
    assert out["reason"].startswith("register_kwh:") and "below" in out["reason"]
    # 9 h at 25 kW is 225 kWh: 300 kWh more is a typo
    out = await submit(w, url, reading(60, 1300.0))
    assert out["state"] == "refused" and "implausible" in out["reason"]
    assert (await submit(w, url, reading(60, 1030.0, "k2")))["state"] == "stored"
    # between two readings it must fit between them
    out = await submit(w, url, reading(300, 1100.0))
    assert out["state"] == "refused" and "later reading" in out["reason"]
    r = await w.req("owner_a", "POST", url, json=reading(-60, 1100.0))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "ts"
    rows = await w.conn.fetchval("SELECT count(*) FROM manual_readings")
    assert rows == 2
    listed = (await w.req("owner_a", "GET", url)).json()
    assert [x["register_kwh"] for x in listed] == [1030.0, 1000.0]
    # a submission id nobody made is 404; another tenant's is 404 too
    r = await w.req("owner_a", "GET", f"/v1/gateways/gw-a/submissions/{uuid.uuid4()}")
    assert r.status_code == 404
    r = await w.req("owner_b", "GET", first["location"])
    assert r.status_code == 404


async def test_manual_reading_checks_against_the_smart_meter(installed: World) -> None:
    w = installed
    await w.feeder.feed(
        "gw-a", [("m-a", "import_energy_wh")], [(minute_ms(5), 0, 5_000_000.0)]
    )
    url = "/v1/gateways/gw-a/meters/m-a/readings"
    out = await submit(w, url, reading(0, 4000.0))
    assert out["state"] == "refused" and "5000 kWh" in out["reason"]
    assert (await submit(w, url, reading(0, 5000.5)))["state"] == "stored"
    r = await w.req(
        "owner_a", "POST", "/v1/gateways/gw-a/meters/nope/readings", json=reading(0, 1)
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"register_kwh": 1}, "ts"),
        ({"ts": "2026-01-01T00:00:00", "register_kwh": 1}, "ts"),
        ({"ts": "2026-01-01T00:00:00Z"}, "register_kwh"),
        ({"ts": "2026-01-01T00:00:00Z", "register_kwh": -1}, "register_kwh"),
        ({"ts": "2026-01-01T00:00:00Z", "register_kwh": "lots"}, "register_kwh"),
        (
            {"ts": "2026-01-01T00:00:00Z", "register_kwh": 1, "idempotency_key": "a b"},
            "idempotency_key",
        ),
    ],
)
async def test_manual_reading_422_names_the_field(
    installed: World, body: dict[str, Any], field: str
) -> None:
    r = await installed.req(
        "owner_a", "POST", "/v1/gateways/gw-a/meters/m-a-manual/readings", json=body
    )
    assert r.status_code == 422, r.text
    assert field in {str(d["loc"][-1]) for d in r.json()["detail"]}


# ------------------------------------------------------------------ operator


async def test_operator_fleet_and_read_only(installed: World) -> None:
    w = installed
    r = await w.req("op", "GET", "/v1/fleet")
    assert r.status_code == 200, r.text
    fleet = r.json()
    assert fleet["gateways_total"] == 3
    assert (fleet["online"], fleet["offline"]) == (2, 1)
    assert fleet["backlog_records_total"] == 42
    assert fleet["software_versions"] == {"1.2.3": 2, "unknown": 1}
    by = {g["gateway_id"]: g for g in fleet["gateways"]}
    assert by["gw-a"]["claimed"] and by["gw-a"]["has_site"]
    assert not by["gw-c"]["claimed"] and by["gw-c"]["online"] is False
    assert len((await w.req("op", "GET", "/v1/sites")).json()) == 3
    for path in ("/v1/gateways/gw-b/site", "/v1/gateways/gw-b/live"):
        assert (await w.req("op", "GET", path)).status_code == 200, path
    r = await w.req(
        "op",
        "PUT",
        "/v1/gateways/gw-a/chargers/CP-A/preferences",
        json={"target_energy_kwh": 5},
    )
    assert r.status_code == 403
    r = await w.req("op", "POST", "/v1/gateways/gw-a/chargers/CP-A/boost")
    assert r.status_code == 403
    for who in ("owner_a", "inst_a"):
        assert (await w.req(who, "GET", "/v1/fleet")).status_code == 403


# --------------------------------------------------------- tenant isolation


def crossing(gw: str, cp: str, meter: str) -> list[tuple[str, str, Any]]:
    g = f"/v1/gateways/{gw}"
    return [
        ("GET", f"/v1/sites/{gw}", None),
        ("GET", f"{g}/site", None),
        ("PUT", f"{g}/site", {"main_fuse_a": 100}),
        ("GET", f"{g}/live", None),
        ("GET", f"{g}/sessions", None),
        ("GET", f"{g}/plan", None),
        ("GET", f"{g}/readings", None),
        ("GET", f"{g}/readings.csv?since=2026-01-01T00:00:00Z", None),
        ("GET", f"{g}/chargers/{cp}", None),
        ("PUT", f"{g}/chargers/{cp}", {"max_power_w": 22000}),
        ("DELETE", f"{g}/chargers/{cp}", None),
        ("GET", f"{g}/chargers/{cp}/preferences", None),
        ("PUT", f"{g}/chargers/{cp}/preferences", {"target_energy_kwh": 80}),
        ("POST", f"{g}/chargers/{cp}/boost", {"duration_min": 600}),
        ("POST", f"{g}/chargers/{cp}/cancel_boost", None),
        ("GET", f"{g}/commands/x", None),
        ("GET", f"{g}/meters", None),
        ("PUT", f"{g}/meters/{meter}", {"type": "manual"}),
        ("DELETE", f"{g}/meters/{meter}", None),
        ("GET", f"{g}/meters/{meter}-manual/readings", None),
        ("POST", f"{g}/meters/{meter}-manual/readings", reading(0, 1.0)),
        ("GET", f"{g}/submissions/{uuid.uuid4()}", None),
        ("GET", f"{g}/config_bundle", None),
        ("POST", f"{g}/broker_credentials", None),
        ("GET", f"{g}/commissioning", None),
        (
            "POST",
            "/v1/sites",
            {"gateway_id": gw, "owner_email": "owner_a@example.com", "main_fuse_a": 1},
        ),
    ]


@pytest.mark.parametrize("who", ["owner_a", "inst_a"])
async def test_tenant_a_cannot_reach_b(installed: World, who: str) -> None:
    w = installed
    before = await w.conn.fetchval(
        "SELECT (SELECT count(*) FROM commands) + (SELECT count(*) FROM"
        " charging_preferences) + (SELECT count(*) FROM manual_readings)"
    )
    for method, path, body in crossing("gw-b", "CP-B", "m-b"):
        r = await w.req(who, method, path, json=body)
        assert r.status_code == 404, (who, method, path, r.status_code, r.text)
        # the same answer as for a gateway that does not exist
        if path.startswith("/v1/gateways/gw-b/") and "commands" not in path:
            assert "gw-b" in r.json()["detail"]
    after = await w.conn.fetchval(
        "SELECT (SELECT count(*) FROM commands) + (SELECT count(*) FROM"
        " charging_preferences) + (SELECT count(*) FROM manual_readings)"
    )
    assert after == before
    site_b = await w.conn.fetchrow("SELECT * FROM sites WHERE gateway_id = 'gw-b'")
    assert site_b["main_fuse_a"] == 60
    assert await w.conn.fetchval("SELECT count(*) FROM site_chargers") == 2
    # unclaimed gateway C is invisible too
    r = await w.req(who, "GET", "/v1/gateways/gw-c/site")
    assert r.status_code == 404


async def test_every_endpoint_needs_a_token(installed: World) -> None:
    open_paths = {"/healthz", "/v1/auth/login", "/openapi.json"}
    spec = installed.app.openapi()
    checked = 0
    for path, methods in spec["paths"].items():
        if path in open_paths:
            continue
        concrete = (
            path.replace("{gateway_id}", "gw-a")
            .replace("{charger_id}", "CP-A")
            .replace("{meter_id}", "m-a")
            .replace("{tariff_id}", "t")
            .replace("{command_id}", "x")
        )
        for method in methods:
            r = await installed.req(None, method.upper(), concrete)
            assert r.status_code == 401, (method, path, r.status_code)
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/claims", {}, "claim_code"),
        ("POST", "/v1/claims", {"claim_code": "ab"}, "claim_code"),
        ("POST", "/v1/claims", {"claim_code": "ABCD-1234<script>"}, "claim_code"),
        ("POST", "/v1/sites", {"gateway_id": "gw-a", "main_fuse_a": 60}, "owner_email"),
        (
            "POST",
            "/v1/sites",
            {"gateway_id": "gw a", "owner_email": "a@b.c", "main_fuse_a": 60},
            "gateway_id",
        ),
        (
            "POST",
            "/v1/sites",
            {"gateway_id": "gw-a", "owner_email": "a@b.c", "main_fuse_a": -1},
            "main_fuse_a",
        ),
        (
            "POST",
            "/v1/sites",
            {"gateway_id": "gw-a", "owner_email": "a@b.c", "main_fuse_a": True},
            "main_fuse_a",
        ),
        # PostgreSQL text cannot hold NUL: refused before it gets there
        (
            "POST",
            "/v1/auth/login",
            {"email": "a\x00@b.example", "password": "x"},
            "email",
        ),
        ("PUT", "/v1/gateways/gw-a/meters/m-x", {}, "type"),
        ("PUT", "/v1/gateways/gw-a/meters/m-x", {"type": "glow"}, "topic"),
        (
            "PUT",
            "/v1/gateways/gw-a/meters/m-x",
            {"type": "glow", "topic": "glow/#"},
            "topic",
        ),
        (
            "PUT",
            "/v1/gateways/gw-a/meters/m-x",
            {"type": "glow", "topic": "t", "timezone": "Europe/London"},
            "timezone",
        ),
        ("PUT", "/v1/gateways/gw-a/meters/bad%20id", {"type": "manual"}, "meter_id"),
        ("GET", "/v1/gateways/gw-a/sessions?limit=0", None, "limit"),
        ("GET", "/v1/gateways/gw-a/sessions?since=soon", None, "since"),
        ("GET", "/v1/gateways/gw-a/commissioning?recent_min=0", None, "recent_min"),
        ("GET", "/v1/gateways/gw-a/readings.csv?since=x", None, "since"),
        (
            "GET",
            "/v1/gateways/gw-a/readings.csv?since=2026-01-02T00:00:00Z"
            "&until=2026-01-01T00:00:00Z",
            None,
            "until",
        ),
        ("GET", "/v1/gateways/gw-a/readings?quantity=volts", None, "quantity"),
        (
            "GET",
            "/v1/gateways/gw-a/readings.csv?since=2026-01-01T00:00:00Z&quantity=x",
            None,
            "quantity",
        ),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    installed: World, method: str, path: str, body: Any, field: str
) -> None:
    r = await installed.req("inst_a", method, path, json=body)
    assert r.status_code == 422, r.text
    # the published shape (HTTPValidationError), also for the handlers' own 422s;
    # the field is the error's location, or named in its message when a rule
    # spans fields (a glow meter needs a topic)
    detail = r.json()["detail"]
    assert isinstance(detail, list), detail
    assert any(e["loc"][-1] == field or field in e["msg"] for e in detail), detail


async def test_meter_rules(installed: World) -> None:
    w = installed
    # a second site meter is a conflict, not a crash
    r = await w.req(
        "inst_a",
        "PUT",
        "/v1/gateways/gw-a/meters/m-2",
        json={"type": "shelly", "topic": "shellypro3em-1", "role": "site"},
    )
    assert r.status_code == 409
    r = await w.req(
        "inst_a",
        "PUT",
        "/v1/gateways/gw-a/meters/m-2",
        json={"type": "tasmota", "topic": "tele/x", "timezone": "Europe/Berlin"},
    )
    assert r.status_code == 409  # role defaults to site
    r = await w.req(
        "inst_a",
        "PUT",
        "/v1/gateways/gw-a/meters/m-2",
        json={"type": "tasmota", "topic": "tele/x", "role": "other"},
    )
    assert r.status_code == 200
    assert (
        await w.req("inst_a", "DELETE", "/v1/gateways/gw-a/meters/m-2")
    ).status_code == 204
    assert (
        await w.req("inst_a", "DELETE", "/v1/gateways/gw-a/meters/m-2")
    ).status_code == 404


async def test_odd_input_is_never_5xx(installed: World) -> None:
    w = installed
    odd = [
        ("GET", "/v1/gateways/%00/live", None),
        ("GET", "/v1/gateways/" + "a" * 300 + "/live", None),
        ("GET", "/v1/gateways/gw-a/readings?since=9999-12-31T23:59:59Z", None),
        ("GET", "/v1/gateways/gw-a/readings.csv?since=0001-01-01T00:00:00Z", None),
        ("GET", "/v1/gateways/gw-a/sessions?charger_id=%27%3B--", None),
        ("GET", "/v1/gateways/gw-a/sessions?since=0001-01-01T00:00:00%2B14:00", None),
        ("GET", "/v1/gateways/gw-a/sessions?since=9999-12-31T23:59:59-14:00", None),
        (
            "GET",
            "/v1/gateways/gw-a/readings.csv?since=0001-01-01T00:00:00%2B14:00",
            None,
        ),
        ("GET", "/v1/tariffs/t/prices?since=0001-01-01T00:00:00%2B14:00", None),
        ("GET", "/v1/gateways/gw-a/readings?since=0001-01-01T00:00:00%2B14:00", None),
        (
            "POST",
            "/v1/gateways/gw-a/chargers/CP-A/boost",
            {"until": "0001-01-01T00:00:00+14:00"},
        ),
        (
            "POST",
            "/v1/gateways/gw-a/chargers/CP-A/boost",
            {"until": "9999-12-31T23:59:59-14:00"},
        ),
        (
            "PUT",
            "/v1/gateways/gw-a/chargers/CP-A/preferences",
            {"target_energy_kwh": 1e308},
        ),
        ("GET", "/v1/gateways/gw-a/meters/m-a/readings?limit=99999999999999", None),
        ("GET", "/v1/gateways/gw-a/commands/" + "x" * 500, None),
        ("POST", "/v1/claims", {"claim_code": "\u0000\u0000\u0000\u0000"}),
        ("POST", "/v1/claims", {"claim_code": 12345678}),
        ("POST", "/v1/auth/login", {"email": "a\u0000@b.c", "password": "x"}),
        ("GET", "/v1/gateways/gw-a/readings?device_id=%00", None),
        (
            "GET",
            "/v1/gateways/gw-a/readings.csv?since=2026-01-01T00:00:00Z&device_id=%00",
            None,
        ),
        ("POST", "/v1/claims", ["ABCD-1234"]),
        (
            "POST",
            "/v1/gateways/gw-a/meters/m-a-manual/readings",
            {"ts": "9999-12-31T23:59:59Z", "register_kwh": 1e308},
        ),
        (
            "POST",
            "/v1/gateways/gw-a/meters/m-a-manual/readings",
            {"ts": "0001-01-01T00:00:00+14:00", "register_kwh": 0},
        ),
        (
            "POST",
            "/v1/sites",
            {
                "gateway_id": "gw-a",
                "owner_email": "a" * 64 + "@" + "b" * 189,
                "main_fuse_a": 1e-300,
            },
        ),
        ("PUT", "/v1/gateways/gw-a/meters/m-z", {"type": "glow", "topic": "x" * 201}),
        ("PUT", "/v1/gateways/gw-a/meters/m-z", {"type": "glow", "topic": "$SYS/x"}),
    ]
    for method, path, body in odd:
        for who in ("inst_a", "owner_a", "op"):
            r = await w.req(who, method, path, json=body)
            assert r.status_code < 500, (who, method, path, r.status_code, r.text)
