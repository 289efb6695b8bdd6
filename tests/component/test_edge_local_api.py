"""The installer's local page and API on a real ``EdgeAgent``, over real HTTP.

The agent runs in the test's event loop with its OCPP server and the local API on
free ports; the cloud and the site broker are unreachable (port 1), which the
local API must not need. Chargers are raw websockets clients (the helpers of
``test_ocpp_server``); a restart is a new agent on the same outbox directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edge import ConfigError
from edge.agent import EdgeAgent
from edge.claim import claim_path_beside, read_code
from edge.config import EdgeConfig, parse_config
from edge.local_api import create_app, overrides_path_beside
from edge.metrics import parse_lines
from fusebox import cli
from tests.component.test_ocpp_server import V16, V201, charger, exchange
from tests.harness.timing import eventually, timeout

API_PASSWORD = "installer-secret"
CHARGER_PASSWORD = "charger-password-16"
NEW_PASSWORD = "a-new-charger-pass"  # 18 characters
AUTH = ("installer", API_PASSWORD)


def config_data(tmp_path: Path, **local_api: Any) -> dict[str, Any]:
    return {
        "gateway_id": "gw-local",
        "cloud": {"mqtt_url": "mqtt://127.0.0.1:1"},
        "local": {"mqtt_url": "mqtt://127.0.0.1:1"},
        "outbox": {"path": str(tmp_path / "edge" / "outbox.db")},
        "meters": [{"type": "glow", "id": "site", "topic": "glow/SITE"}],
        "ocpp": {"port": 0, "allow_discovery": True},
        "chargers": [{"id": "CP1", "password": CHARGER_PASSWORD}],
        "site": {"main_fuse_a": 60, "meter": "site"},
        "local_api": {"listen": "127.0.0.1:0", "password": API_PASSWORD, **local_api},
    }


def edge_config(tmp_path: Path, **local_api: Any) -> EdgeConfig:
    return parse_config(config_data(tmp_path, **local_api))


@asynccontextmanager
async def running(config: EdgeConfig) -> AsyncIterator[tuple[EdgeAgent, str]]:
    agent = EdgeAgent(config)
    task = asyncio.create_task(agent.run())
    try:
        api = agent.local_api
        assert api is not None and agent.ocpp is not None
        await eventually(
            lambda: api.started and agent.ocpp is not None and agent.ocpp.port,
            timeout_s=timeout(10),
            message="the agent's local API and OCPP server did not start",
        )
        yield agent, f"http://127.0.0.1:{api.port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[EdgeAgent, httpx.AsyncClient]]:
    async with (
        running(edge_config(tmp_path)) as (agent, url),
        httpx.AsyncClient(base_url=url, auth=AUTH, timeout=timeout(5)) as client,
    ):
        yield agent, client


def field_errors(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [str(e["loc"][-1]) for e in response.json()["detail"]]


# -- access -------------------------------------------------------------------


async def test_health_is_open_everything_else_needs_the_password(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    _, client = edge
    base = str(client.base_url)
    async with httpx.AsyncClient(base_url=base, timeout=timeout(5)) as anon:
        health = await anon.get("/api/health")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "gateway_id": "gw-local"}
        for method, path in [
            ("GET", "/api/status"),
            ("GET", "/"),
            ("POST", "/api/site"),
            ("POST", "/api/chargers/CP1/boost"),
            ("POST", "/api/chargers/CP1/approve"),
            ("POST", "/ui/site"),
        ]:
            refused = await anon.request(method, path)
            assert refused.status_code == 401, (method, path)
            assert refused.headers["www-authenticate"].startswith("Basic")
            assert "claim" not in refused.text.lower()
        for auth in [("installer", "wrong-password"), ("admin", API_PASSWORD)]:
            wrong = await anon.get("/api/status", auth=auth)
            assert wrong.status_code == 401
    ok = await client.get("/api/status")
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"


async def test_without_a_password_only_this_machine_is_answered(
    tmp_path: Path,
) -> None:
    config = edge_config(tmp_path, password=None)
    async with running(config) as (agent, url):
        async with httpx.AsyncClient(base_url=url, timeout=timeout(5)) as local:
            s = await local.get("/api/status")
            assert s.status_code == 200 and s.json()["claim_code"] == agent.claim.code
            rebound = await local.get("/api/status", headers={"Host": "evil.example"})
            assert rebound.status_code == 401
        # a client from elsewhere (only possible behind a proxy): refused
        assert agent.local_api is not None
        app = create_app(agent.local_api.site)
        transport = httpx.ASGITransport(app, client=("192.168.1.50", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=url) as remote:
            assert (await remote.get("/api/status")).status_code == 401
            assert (await remote.get("/")).status_code == 401
            assert (await remote.get("/api/health")).status_code == 200


async def test_changes_from_another_origin_are_refused(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    evil = await client.post(
        "/ui/site",
        content="main_fuse_a=1",
        headers={
            "Origin": "http://evil.example",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert evil.status_code == 403
    assert agent.controller is not None
    assert agent.controller.site.main_fuse_a == 60


# -- what the installer sees --------------------------------------------------


async def test_status_and_page_show_claim_code_health_chargers_and_meters(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    claim = read_code(claim_path_beside(agent.config.outbox.path))
    assert agent.ocpp is not None
    async with charger(agent.ocpp, "CP1", V16, password=CHARGER_PASSWORD) as ws:
        boot = {"chargePointVendor": "Acme", "chargePointModel": "Wallbox 7"}
        answer = await exchange(ws, [2, "b1", "BootNotification", boot])
        assert answer[2]["status"] == "Accepted"
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        await exchange(ws, [2, "s1", "StatusNotification", status])

        s = (await client.get("/api/status")).json()
        assert s["gateway_id"] == "gw-local"
        assert s["claim_code"] == claim.code
        assert s["claim_sha256"] == claim.sha256 == agent.claim.sha256
        h = s["health"]
        assert h["uplink_connected"] is False  # the cloud is not needed
        assert h["meters_connected"] is False and h["meters_configured"] == 1
        assert h["ocpp_listening"] is True and h["chargers_connected"] == 1
        assert h["backlog_records"] >= 1  # the boot event waits for the cloud
        assert h["outbox_cap_bytes"] > 0
        # no [local] broker_config: the page says it cannot tell what a crash loses
        sb = h["site_broker"]
        assert sb["durability"].startswith("unknown") and sb["sessions_lost"] == 0
        assert sb["saves_every_reading"] is None
        assert s["site"]["main_fuse_a"] == 60 and s["site"]["controller_running"]
        (cp1,) = s["chargers"]
        assert cp1["id"] == "CP1" and cp1["connected"] is True
        assert cp1["ocpp_version"] == "1.6" and cp1["status"] == "Available"
        assert cp1["vendor"] == "Acme" and cp1["model"] == "Wallbox 7"
        assert cp1["control"] is not None and cp1["control"]["boost"] is False
        (meter,) = s["meters"]
        assert meter["id"] == "site" and meter["site_meter"] is True
        assert meter["topic"] == "glow/SITE" and meter["last_values"] == {}
        assert s["pending"] == [] and s["unmatched_messages"] == 0

        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        text = page.text
        assert claim.code in text and "CP1" in text and "Acme" in text
        assert "Available" in text and "glow/SITE" in text
        assert 'name="viewport"' in text or "name=viewport" in text
        assert 'action="/ui/site"' in text
        assert "Meter broker keeps" in text

    # the code never leaves the site: only its hash is in the gateway status
    status_msg = msgpack.unpackb(await agent.uplink.status_payload())
    text = json.dumps(status_msg, default=str)
    assert status_msg["claim_sha256"] == claim.sha256
    assert claim.code not in text and claim.code.replace("-", "") not in text


# -- approving a discovered charger -------------------------------------------


async def test_a_pending_charger_is_approved_and_accepted_after_reconnecting(
    tmp_path: Path,
) -> None:
    config = edge_config(tmp_path)
    async with (
        running(config) as (agent, url),
        httpx.AsyncClient(base_url=url, auth=AUTH, timeout=timeout(5)) as client,
    ):
        ocpp = agent.ocpp
        assert ocpp is not None
        async with charger(ocpp, "NEW-1", V201, password=None) as ws:
            boot = {
                "chargingStation": {"model": "M2", "vendorName": "Vend"},
                "reason": "PowerUp",
            }
            answer = await exchange(ws, [2, "b1", "BootNotification", boot])
            assert answer[2]["status"] == "Pending"
            s = (await client.get("/api/status")).json()
            (pending,) = s["pending"]
            assert pending["id"] == "NEW-1" and pending["vendor"] == "Vend"
            assert pending["connected"] is True and pending["ocpp_version"] == "2.0.1"
            assert [c["id"] for c in s["chargers"]] == ["CP1"]
            page = (await client.get("/")).text
            assert "NEW-1" in page and 'action="/ui/chargers/NEW-1/approve"' in page

            # bad input names the field; an unknown charger is 404
            short = await client.post(
                "/api/chargers/NEW-1/approve", json={"password": "short"}
            )
            assert field_errors(short) == ["password"]
            bad = await client.post(
                "/api/chargers/NEW-1/approve",
                json={"password": NEW_PASSWORD, "phases": 2},
            )
            assert field_errors(bad) == ["phases"]
            missing = await client.post("/api/chargers/NEW-1/approve", json={})
            assert field_errors(missing) == ["password"]
            unknown = await client.post(
                "/api/chargers/NOPE/approve", json={"password": NEW_PASSWORD}
            )
            assert unknown.status_code == 404
            assert "NEW-1" in ocpp.pending

            approving = asyncio.create_task(
                client.post(
                    "/api/chargers/NEW-1/approve",
                    json={"password": NEW_PASSWORD, "max_current_a": 16, "phases": 3},
                )
            )
            # the edge sets the new password on the charger while it is pending
            call = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
            assert call[0] == 2 and call[2] == "SetVariables", call
            (data,) = call[3]["setVariableData"]
            assert data["component"] == {"name": "SecurityCtrlr"}
            assert data["variable"] == {"name": "BasicAuthPassword"}
            assert data["attributeValue"] == NEW_PASSWORD
            result = {k: data[k] for k in ("component", "variable")}
            await ws.send(
                json.dumps(
                    [
                        3,
                        call[1],
                        {
                            "setVariableResult": [
                                {**result, "attributeStatus": "Accepted"}
                            ]
                        },
                    ]
                )
            )
            approved = await approving
            assert approved.status_code == 200, approved.text
            body = approved.json()
            assert body["approved"] and body["reconnecting"]
            assert body["password_set"] == "Accepted"
            assert body["note"].startswith("password set on the charger")
            # under the controller's care at once, not after a restart
            assert body["controlled"] is True and "restart" not in body["note"]
            assert agent.controller is not None
            assert agent.controller.chargers["NEW-1"].max_current_a == 16
            # the pending connection is closed so that the charger comes back
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), timeout(5))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert "NEW-1" not in ocpp.pending and "NEW-1" in ocpp.known
        again = await client.post(
            "/api/chargers/NEW-1/approve", json={"password": NEW_PASSWORD}
        )
        assert again.status_code == 409

        # from now on it needs its password, and is accepted with it
        with pytest.raises(InvalidStatus) as refused:
            async with charger(ocpp, "NEW-1", V201, password=None):
                pass
        assert refused.value.response.status_code == 401
        async with charger(ocpp, "NEW-1", V201, password=NEW_PASSWORD) as ws:
            answer = await exchange(ws, [2, "b2", "BootNotification", boot])
            assert answer[2]["status"] == "Accepted"
            s = (await client.get("/api/status")).json()
            assert s["pending"] == []
            new = next(c for c in s["chargers"] if c["id"] == "NEW-1")
            assert new["connected"] and new["configured"]

    # kept in the overrides file (0600), and applied at the next start
    path = overrides_path_beside(config.outbox.path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    (entry,) = saved["chargers"]
    assert entry["id"] == "NEW-1" and entry["password"] == NEW_PASSWORD
    assert entry["max_current_a"] == 16 and entry["phases"] == 3
    async with running(edge_config(tmp_path)) as (agent, _):
        assert agent.ocpp is not None and agent.controller is not None
        assert agent.ocpp.known["NEW-1"].max_current_a == 16
        assert "NEW-1" in agent.controller.chargers
        async with charger(agent.ocpp, "NEW-1", V201, password=NEW_PASSWORD) as ws:
            answer = await exchange(ws, [2, "b3", "BootNotification", boot])
            assert answer[2]["status"] == "Accepted"


async def test_the_page_form_approves_a_pending_charger(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    assert agent.ocpp is not None
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with charger(agent.ocpp, "NEW-2", V16, password=None) as ws:
        boot = {"chargePointVendor": "V", "chargePointModel": "M"}
        await exchange(ws, [2, "b1", "BootNotification", boot])
        short = await client.post(
            "/ui/chargers/NEW-2/approve", content="password=short", headers=form
        )
        assert short.status_code == 422 and "password" in short.text
        assert "NEW-2" in agent.ocpp.pending
        approving = asyncio.create_task(
            client.post(
                "/ui/chargers/NEW-2/approve",
                content=(
                    f"password={NEW_PASSWORD}&max_current_a=16&phases=3&ocpp_version="
                ),
                headers=form,
            )
        )
        # 1.6: the AuthorizationKey is the hex of the password's bytes; this
        # charger refuses it, and the page tells the installer what to do
        call = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        assert call[2:] == [
            "ChangeConfiguration",
            {"key": "AuthorizationKey", "value": NEW_PASSWORD.encode().hex()},
        ]
        await ws.send(json.dumps([3, call[1], {"status": "Rejected"}]))
        done = await approving
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/?done=approved_password_refused"
        shown = (await client.get(done.headers["location"])).text
        assert "set the password on the charger itself" in shown
    known = agent.ocpp.known["NEW-2"]
    assert known.phases == 3 and known.max_current_a == 16
    assert known.ocpp_version is None
    gone = await client.post(
        "/ui/chargers/NOPE/approve", content=f"password={NEW_PASSWORD}", headers=form
    )
    assert gone.status_code == 404 and "NOPE" in gone.text


ROGUE = ("127.0.0.2", 0)  # another device: another address on loopback
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_the_page_shows_whom_a_pending_charger_is_bound_to_and_forgets_it(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    ocpp = agent.ocpp
    assert ocpp is not None
    boot = {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}
    async with charger(ocpp, "NEW-5", V201, password=None) as genuine:
        await exchange(genuine, [2, "b1", "BootNotification", boot])
        with pytest.raises(InvalidStatus) as refused:
            async with charger(ocpp, "NEW-5", V201, password=None, local_addr=ROGUE):
                pass
        assert refused.value.response.status_code == 409
        s = (await client.get("/api/status")).json()
        (pending,) = s["pending"]
        assert pending["bound_to"] == "address 127.0.0.1"
        assert pending["bound_address"] == "127.0.0.1"
        assert pending["bound_certificate_sha256"] is None
        (conflict,) = pending["conflicts"]
        assert conflict["address"] == "127.0.0.2" and conflict["attempts"] == 1
        assert s["health"]["ocpp_refused"] == {"conflict": 1}
        page = (await client.get("/")).text
        assert "Bound to its first connection's address 127.0.0.1" in page
        assert "another device tried this id from 127.0.0.2" in page
        assert 'action="/ui/chargers/NEW-5/forget"' in page
        metrics = parse_lines(await agent.render_metrics())
        assert metrics['fusebox_ocpp_handshakes_refused_total{reason="conflict"}'] == 1
        assert metrics["fusebox_ocpp_pending_chargers"] == 1
        assert metrics["fusebox_ocpp_pending_conflicts"] == 1

        forgot = await client.post("/api/chargers/NEW-5/forget")
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["forgotten"] == "pending"
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(timeout(5)):
                await genuine.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    gone = await client.post("/api/chargers/NEW-5/forget")
    assert gone.status_code == 404 and "NEW-5" in gone.text
    # the next device to connect is bound now; the page's button forgets it
    async with charger(ocpp, "NEW-5", V201, password=None, local_addr=ROGUE):
        (pending,) = (await client.get("/api/status")).json()["pending"]
        assert pending["bound_address"] == "127.0.0.2" and pending["conflicts"] == []
        done = await client.post("/ui/chargers/NEW-5/forget", headers=FORM)
        assert (
            done.status_code == 303 and done.headers["location"] == "/?done=forgotten"
        )
    assert (await client.get("/api/status")).json()["pending"] == []
    nope = await client.post("/ui/chargers/NOPE/forget", headers=FORM)
    assert nope.status_code == 404 and "NOPE" in nope.text


async def test_approving_an_offline_charger_holds_its_password_for_its_device(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    ocpp = agent.ocpp
    assert ocpp is not None
    boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    for cid in ("NEW-6", "NEW-7"):
        async with charger(ocpp, cid, V16, password=None) as ws:
            await exchange(ws, [2, "b1", "BootNotification", boot])
    await eventually(
        lambda: not any(b.live for b in ocpp.discovery.registry.bindings.values()),
        timeout_s=timeout(5),
        message="both pending chargers went offline",
    )
    done = await client.post(
        "/ui/chargers/NEW-6/approve", content=f"password={NEW_PASSWORD}", headers=FORM
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/?done=approved_password_waits"
    shown = (await client.get(done.headers["location"])).text
    assert "sent to it when it reconnects" in shown
    assert "New password waits for its address 127.0.0.1" in shown
    approved = await client.post(
        "/api/chargers/NEW-7/approve", json={"password": NEW_PASSWORD}
    )
    body = approved.json()
    assert body["password_held_for"] == "address 127.0.0.1"
    assert body["reconnecting"] is False and body["password_set"] is None
    assert "offline" in body["note"] and "127.0.0.1" in body["note"]
    s = (await client.get("/api/status")).json()
    new7 = next(c for c in s["chargers"] if c["id"] == "NEW-7")
    delivery = new7["password_delivery"]
    assert delivery["waiting"] is True and delivery["bound_address"] == "127.0.0.1"
    # the installer may drop the wait (and set the password by hand instead)
    forgot = await client.post("/api/chargers/NEW-7/forget")
    assert forgot.json()["forgotten"] == "delivery"
    assert "NEW-7" in ocpp.known and "NEW-7" not in ocpp.discovery.registry.deliveries


# -- the fuse limit -----------------------------------------------------------


async def test_fuse_change_is_applied_live_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    config = edge_config(tmp_path)
    async with (
        running(config) as (agent, url),
        httpx.AsyncClient(base_url=url, auth=AUTH, timeout=timeout(5)) as client,
    ):
        controller = agent.controller
        assert controller is not None and controller.site.main_fuse_a == 60
        bad_bodies: list[dict[str, Any]] = [
            {"main_fuse_a": 0},
            {"main_fuse_a": "big"},
            {"main_fuse_a": 7.5},  # not over the 2 A margin plus one EV's 6 A
            {"main_fuse_a": True},  # JSON true is not a number
            {},
            {"fuse": 40},
        ]
        for bad in bad_bodies:
            errors = field_errors(await client.post("/api/site", json=bad))
            assert "main_fuse_a" in errors or "fuse" in errors, (bad, errors)
        garbage = await client.post(
            "/api/site",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert garbage.status_code == 422
        assert controller.site.main_fuse_a == 60

        ok = await client.post("/api/site", json={"main_fuse_a": 40})
        assert ok.status_code == 200 and ok.json()["applied"] is True
        assert controller.site.main_fuse_a == 40
        s = (await client.get("/api/status")).json()
        assert s["site"]["main_fuse_a"] == 40
        assert s["site"]["main_fuse_a_in_config_file"] is False

        # the page's form does the same, and shows a bad value
        form = await client.post(
            "/ui/site",
            content="main_fuse_a=45",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 303 and form.headers["location"] == "/?done=fuse"
        assert controller.site.main_fuse_a == 45
        page = await client.get("/?done=fuse")
        assert "Fuse limit saved" in page.text
        bad_form = await client.post(
            "/ui/site",
            content="main_fuse_a=-3",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert bad_form.status_code == 422 and "main_fuse_a" in bad_form.text
        assert controller.site.main_fuse_a == 45

    saved = json.loads(overrides_path_beside(config.outbox.path).read_text())
    assert saved["main_fuse_a"] == 45
    async with running(edge_config(tmp_path)) as (agent, _):
        assert agent.controller is not None
        assert agent.controller.site.main_fuse_a == 45
        assert agent.config.site.main_fuse_a == 45


# -- boost ----------------------------------------------------------------------


async def test_boost_and_cancel_reach_the_controller(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    controller = agent.controller
    assert controller is not None
    on = await client.post("/api/chargers/CP1/boost")
    assert on.status_code == 200 and on.json() == {
        "id": "CP1",
        "boost": True,
        "until": None,
    }
    assert controller.boosts == {"CP1": None}
    s = (await client.get("/api/status")).json()
    assert s["chargers"][0]["control"]["boost"] is True

    timed = await client.post("/api/chargers/CP1/boost", json={"duration_min": 30})
    assert timed.status_code == 200 and timed.json()["until"] is not None
    until = controller.boosts["CP1"]
    assert until is not None
    left_s = (until - controller.clock.now()).total_seconds()
    assert 29 * 60 < left_s <= 30 * 60

    assert field_errors(
        await client.post("/api/chargers/CP1/boost", json={"duration_min": -1})
    ) == ["duration_min"]
    assert (await client.post("/api/chargers/NOPE/boost")).status_code == 404
    assert (await client.post("/api/chargers/NOPE/cancel_boost")).status_code == 404

    off = await client.post("/api/chargers/CP1/cancel_boost")
    assert off.status_code == 200 and off.json()["boost"] is False
    assert controller.boosts == {}


# -- config ---------------------------------------------------------------------


def test_config_refuses_a_network_listen_without_password(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["local_api"] = {"listen": "0.0.0.0:8088"}
    with pytest.raises(ConfigError, match=r"local_api.*password"):
        parse_config(data)
    data["local_api"] = {"listen": "192.168.1.20:8088", "password": "short"}
    with pytest.raises(ConfigError, match=r"local_api\.password"):
        parse_config(data)
    data["local_api"] = {"listen": "not-a-listen-address"}
    with pytest.raises(ConfigError, match=r"local_api\.listen"):
        parse_config(data)
    for ok in [
        {"listen": "0.0.0.0:8088", "password": API_PASSWORD},
        {"listen": "[::1]:8088"},
        {"listen": "localhost:8088"},
        {"listen": "0.0.0.0:8088", "enabled": False},
        {},
    ]:
        data["local_api"] = ok
        parse_config(data)


def test_local_api_is_on_by_default_only_with_devices(tmp_path: Path) -> None:
    bare = {
        "gateway_id": "gw-x",
        "cloud": {"mqtt_url": "mqtt://127.0.0.1:1"},
        "outbox": {"path": str(tmp_path / "outbox.db")},
    }
    cfg = parse_config(dict(bare))
    assert cfg.local_api.listen == "127.0.0.1:8088" and not cfg.local_api_on
    assert parse_config({**bare, "ocpp": {"allow_discovery": True}}).local_api_on
    assert edge_config(tmp_path).local_api_on
    assert not parse_config({**bare, "local_api": {"enabled": False}}).local_api_on


def test_a_damaged_overrides_file_stops_the_edge(tmp_path: Path) -> None:
    config = edge_config(tmp_path)
    path = overrides_path_beside(config.outbox.path)
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "main_fuse_a": -5}')
    with pytest.raises(ConfigError, match=r"main_fuse_a.*delete it"):
        EdgeAgent(config)


# -- the CLI ----------------------------------------------------------------------


async def test_cli_talks_to_the_running_edge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "edge.toml"

    def write(listen: str) -> None:
        data = config_data(tmp_path)
        data["local_api"]["listen"] = listen
        toml.write_text(_toml(data))

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["edge", *argv, "--config", str(toml)])
        out, err = capsys.readouterr()
        return code, out, err

    write("127.0.0.1:1")  # nothing listens there
    code, _, err = await asyncio.to_thread(run, "status")
    assert code == 1
    assert "fusebox edge run --config" in err and "127.0.0.1:1" in err
    code, _, err = await asyncio.to_thread(run, "claim-code")
    assert code == 1 and "no claim code yet" in err

    async with running(edge_config(tmp_path)) as (agent, url):
        write(url.removeprefix("http://"))
        code, out, _ = await asyncio.to_thread(run, "claim-code")
        assert code == 0 and out.strip() == agent.claim.code
        code, out, _ = await asyncio.to_thread(run, "status")
        assert code == 0
        assert agent.claim.code in out and "CP1" in out and "site (glow)" in out
        code, out, _ = await asyncio.to_thread(run, "fuse", "32")
        assert code == 0 and "32 A" in out
        assert agent.controller is not None
        assert agent.controller.site.main_fuse_a == 32
        code, _, err = await asyncio.to_thread(run, "fuse", "0")
        assert code == 2
        code, _, err = await asyncio.to_thread(run, "boost", "CP1")
        assert code == 0 and agent.controller.boosts == {"CP1": None}
        code, _, err = await asyncio.to_thread(run, "boost", "CP1", "--cancel")
        assert code == 0 and agent.controller.boosts == {}
        code, _, err = await asyncio.to_thread(
            run, "approve", "GHOST", "--password", NEW_PASSWORD
        )
        assert code == 1 and "404" in err and "GHOST" in err
        code, _, err = await asyncio.to_thread(
            run, "approve", "GHOST", "--password", "short"
        )
        assert code == 2 and "password" in err


def _toml(data: dict[str, Any]) -> str:
    """Just enough TOML for ``config_data`` (tables of scalars, arrays of them)."""

    def value(v: Any) -> str:
        return json.dumps(v)

    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif isinstance(v, list):
            arrays.append((k, v))
        else:
            lines.append(f"{k} = {value(v)}")
    for name, table in tables:
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
    for name, items in arrays:
        for item in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def test_a_damaged_overrides_file_stops_the_edge_with_exit_2(tmp_path: Path) -> None:
    """Running on the TOML's fuse when the installer set a lower one would be
    unsafe: the edge refuses to start, says why, exits 2 (no traceback)."""
    import subprocess
    import sys

    config = tmp_path / "edge.toml"
    config.write_text(
        'gateway_id = "gw-bad"\\n[cloud]\\nmqtt_url = "mqtt://127.0.0.1:1"\\n'
        f'[outbox]\\npath = "{tmp_path / "outbox.db"}"\\n'
    )
    (tmp_path / "outbox-overrides.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "fusebox", "edge", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "overrides" in result.stderr
    assert "Traceback" not in result.stderr


# -- bad input (issue 10) -----------------------------------------------------
# Every operation with every kind of bad body: tests/component/test_api_bad_input.py


async def test_a_fuse_that_is_not_a_number_is_refused_naming_the_field(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    """``{"main_fuse_a": NaN}`` used to be a 500 and a dropped connection (the
    422 echoed a NaN it could not encode); ``nan`` in the page's form likewise
    says "not a number"; nothing changes, and the answers are small."""
    agent, client = edge
    assert agent.controller is not None
    json_type = {"content-type": "application/json"}
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"\\ud800"'):
        r = await client.post(
            "/api/site", content=b'{"main_fuse_a": ' + literal + b"}", headers=json_type
        )
        assert field_errors(r) == ["main_fuse_a"], (literal, r.text)
        assert len(r.content) < 300 and r.headers["x-content-type-options"] == "nosniff"
    for text in ("nan", "inf", "1e999"):
        r = await client.post("/api/site", json={"main_fuse_a": text})
        assert field_errors(r) == ["main_fuse_a"] and "not a number" in r.text
        form = await client.post(
            "/ui/site",
            content=f"main_fuse_a={text}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 422 and "main_fuse_a: not a number" in form.text
    assert agent.controller.site.main_fuse_a == 60


async def test_a_body_over_the_cap_is_refused_unread(
    edge: tuple[EdgeAgent, httpx.AsyncClient],
) -> None:
    agent, client = edge
    assert agent.controller is not None
    big = b"main_fuse_a=45&pad=" + b"x" * 70_000
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await client.post("/ui/site", content=big, headers=form)
    assert r.status_code == 413 and "65536 bytes" in r.json()["detail"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert agent.controller.site.main_fuse_a == 60
    # the connection and the API carry on
    ok = await client.post("/api/site", json={"main_fuse_a": 45})
    assert ok.status_code == 200 and agent.controller.site.main_fuse_a == 45
