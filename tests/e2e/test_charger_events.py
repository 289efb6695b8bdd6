"""A charger's boot and status reach the cloud through the real edge process:
charger --OCPP-J 1.6 / 2.0.1--> edge --outbox, uplink--> ingest --> PostgreSQL."""

from __future__ import annotations

import base64
import json

import asyncpg
import pytest
import websockets

from tests.e2e.stack import GATEWAY, Stack
from tests.harness.procs import free_port
from tests.harness.timing import eventually, timeout

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery"


def _auth(cp: str) -> dict[str, str]:
    token = base64.b64encode(f"{cp}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _call(
    ws: websockets.ClientConnection, uid: str, action: str, payload: dict
) -> list:
    """Send a CALL, return its answer; CALLs from the edge meanwhile (it reads the
    charger's configuration after its boot) are left unanswered."""
    await ws.send(json.dumps([2, uid, action, payload]))
    while True:
        frame = json.loads(await ws.recv())
        if frame[0] != 2:
            return list(frame)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_charger_boot_and_status_reach_the_cloud(
    stack: Stack, version: str
) -> None:
    port = free_port()
    stack.write_edge_config()
    ocpp = (
        f'[ocpp]\nport = {port}\n\n[[chargers]]\nid = "CP1"\npassword = "{PASSWORD}"\n'
    )
    stack.edge_config.write_text(stack.edge_config.read_text() + "\n" + ocpp)
    stack.ingest()
    stack.edge()
    url = f"ws://127.0.0.1:{port}/ocpp/CP1"

    async def connect() -> websockets.ClientConnection:
        return await websockets.connect(
            url, subprotocols=[f"ocpp{version}"], additional_headers=_auth("CP1")
        )

    ws = None

    async def up() -> bool:
        nonlocal ws
        ws = await connect()
        return True

    await eventually(up, timeout_s=timeout(30), message="edge OCPP server up")
    assert ws is not None
    async with ws:
        if version == "1.6":
            boot = await _call(
                ws,
                "1",
                "BootNotification",
                {"chargePointVendor": "Acme", "chargePointModel": "W1"},
            )
            status = await _call(
                ws,
                "2",
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Available"},
            )
        else:
            boot = await _call(
                ws,
                "1",
                "BootNotification",
                {
                    "chargingStation": {"vendorName": "Acme", "model": "W1"},
                    "reason": "PowerUp",
                },
            )
            status = await _call(
                ws,
                "2",
                "StatusNotification",
                {
                    "timestamp": "2026-01-01T00:00:00Z",
                    "evseId": 1,
                    "connectorId": 1,
                    "connectorStatus": "Available",
                },
            )
        assert boot[0] == 3 and boot[2]["status"] == "Accepted"
        assert status[0] == 3

    async def in_cloud() -> bool:
        conn = await asyncpg.connect(stack.dsn)
        try:
            rows = await conn.fetch(
                "SELECT s.device_id, s.name, e.data FROM events e JOIN streams s "
                "ON s.id = e.stream_id WHERE e.gateway_id = $1 ORDER BY e.seq",
                GATEWAY,
            )
        finally:
            await conn.close()
        kinds = [(r["device_id"], r["name"]) for r in rows]
        return kinds == [("CP1", "boot"), ("CP1", "status")]

    await eventually(in_cloud, timeout_s=timeout(30), message="boot and status stored")


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_simulated_charger_boots_on_the_real_edge(
    stack: Stack, version: str
) -> None:
    port = free_port()
    stack.write_edge_config()
    ocpp = (
        f'[ocpp]\nport = {port}\n\n[[chargers]]\nid = "SIM1"\npassword = "{PASSWORD}"\n'
    )
    stack.edge_config.write_text(stack.edge_config.read_text() + "\n" + ocpp)
    stack.ingest()
    stack.edge()  # the simulator retries with backoff until the edge listens
    sim = stack.procs.start(
        [
            "fusebox",
            "sim",
            "charger",
            "--url",
            f"ws://127.0.0.1:{port}/ocpp",
            "--id",
            "SIM1",
            "--password",
            PASSWORD,
            "--ocpp",
            version,
        ],
        name="charger",
    )

    async def booted() -> bool:
        conn = await asyncpg.connect(stack.dsn)
        try:
            rows = await conn.fetch(
                "SELECT s.name, e.data FROM events e JOIN streams s "
                "ON s.id = e.stream_id WHERE s.device_id = 'SIM1'"
            )
        finally:
            await conn.close()
        kinds = {r["name"] for r in rows}
        versions = {json.loads(r["data"])["ocpp_version"] for r in rows}
        # boot, status, and the smart-charging capabilities read after the boot
        return kinds == {"boot", "status", "capabilities"} and versions == {version}

    await eventually(booted, timeout_s=timeout(30), message="simulated charger booted")
    assert sim.is_running
