"""The edge's OCPP server with real websockets clients over loopback.

Well-behaved chargers are the ``ocpp`` library's own client-side ``ChargePoint``
(through ``edge.ocpp.lib``); misbehaving ones are raw websockets clients. Events
land in a real outbox in ``tmp_path``. TLS certificates come from the ``openssl``
CLI (the ``cryptography`` package is not installed); without it the TLS test skips.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import SecretStr, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from edge import ConfigError
from edge.config import parse_config
from edge.ocpp import lib
from edge.ocpp.auth import check_basic_auth, identity_from_path
from edge.ocpp.config import ChargerConfig, OcppServerConfig
from edge.ocpp.server import OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Event, Outbox
from tests.harness.timing import eventually, timeout

PASSWORD = "correct-horse-battery"  # 21 characters, not hex
HEX_KEY = "00112233445566778899aabbccddeeff3a3a0001"  # 20-byte AuthorizationKey
CHARGERS = [
    ChargerConfig(id="CP1", password=SecretStr(PASSWORD)),
    ChargerConfig(id="CP2", password=SecretStr(PASSWORD)),
    ChargerConfig(id="KEY", password=SecretStr(HEX_KEY)),
    ChargerConfig(id="PIN16", password=SecretStr(PASSWORD), ocpp_version="1.6"),
    ChargerConfig(id="PIN201", password=SecretStr(PASSWORD), ocpp_version="2.0.1"),
    ChargerConfig(id="LENIENT", password=SecretStr(PASSWORD), lenient=True),
]
V16 = [Subprotocol("ocpp1.6")]
V201 = [Subprotocol("ocpp2.0.1")]
SERIAL_26 = "S" * 26  # one over the schema's 25 (Schneider EVlink style)


def basic(identity: str, password: str | bytes) -> str:
    secret = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(identity.encode() + b":" + secret).decode()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    yield box
    await box.close()


@asynccontextmanager
async def running(
    sink: Any, chargers: Sequence[ChargerConfig] = CHARGERS, **settings: Any
) -> AsyncIterator[OcppServer]:
    # a fake sink keeps transaction state in memory
    path = store_path_beside(sink.store.path) if isinstance(sink, Outbox) else None
    server = OcppServer(
        OcppServerConfig(port=0, **settings), chargers, sink, transactions_path=path
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def charger(
    server: OcppServer,
    identity: str,
    subprotocols: Sequence[str] | None = V16,
    password: str | bytes | None = PASSWORD,
    **kwargs: Any,
) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": basic(identity, password)} if password else {}
    uri = f"{server.scheme}://127.0.0.1:{server.port}/ocpp/{identity}"
    async with connect(
        uri,
        subprotocols=[Subprotocol(p) for p in subprotocols] if subprotocols else None,
        additional_headers=headers,
        open_timeout=timeout(5),
        **kwargs,
    ) as ws:
        yield ws


async def exchange(ws: ClientConnection, frame: str | list[Any]) -> list[Any]:
    """Send ``frame`` and return the server's answer, skipping the CALLs the server
    itself may send meanwhile (the capability discovery after a boot): left
    unanswered, they just time out on the server's side."""
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        assert isinstance(answer, list)
        if answer and answer[0] != 2:
            return answer


async def heartbeat_ok(ws: ClientConnection, message_id: str = "hb") -> None:
    answer = await exchange(ws, [2, message_id, "Heartbeat", {}])
    assert answer[:2] == [3, message_id] and "currentTime" in answer[2], answer


@asynccontextmanager
async def library_client(ws: ClientConnection, version: str) -> AsyncIterator[Any]:
    """The library's charge-point side, reading in the background."""
    cls = lib.ChargePoint16 if version == "1.6" else lib.ChargePoint201
    cp = cls("client", ws, response_timeout=timeout(5))
    reader = asyncio.create_task(cp.start())
    try:
        yield cp
    finally:
        reader.cancel()
        with suppress(asyncio.CancelledError, ConnectionClosed):
            await reader


async def events(outbox: Outbox) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for row in await outbox.read(1, None, 1000):
        source, kind = await outbox.call(outbox.store.stream_name, row.stream)
        out.append((source, kind, msgpack.unpackb(row.data or b"")))
    return out


# -- subprotocol negotiation -------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
        (["ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),  # the charger's preference wins
        (["ocpp2.1", "ocpp1.6"], "ocpp1.6"),
    ],
)
async def test_the_chargers_preferred_version_is_chosen(
    outbox: Outbox, offered: list[str], expected: str
) -> None:
    async with running(outbox) as server, charger(server, "CP1", offered) as ws:
        assert ws.subprotocol == expected
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # no deflate
        await heartbeat_ok(ws)
        assert server.chargers["CP1"].ocpp_version == expected.removeprefix("ocpp")


async def test_a_charger_offering_no_subprotocol_talks_1_6(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server, "CP1", None) as ws:
        assert ws.subprotocol is None
        boot = {"chargePointVendor": "Grizzl-E", "chargePointModel": "Smart"}
        answer = await exchange(ws, [2, "b1", "BootNotification", boot])
        assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"
        assert server.chargers["CP1"].ocpp_version == "1.6"


@pytest.mark.parametrize(
    ("identity", "offered"),
    [
        ("CP1", ["ocpp2.1"]),  # nothing in common
        ("PIN201", ["ocpp1.6"]),  # pinned to a version the charger does not offer
        ("PIN201", None),  # no header means 1.6, which the pin excludes
    ],
)
async def test_no_common_version_completes_the_handshake_then_closes(
    outbox: Outbox, identity: str, offered: list[str] | None
) -> None:
    async with running(outbox) as server, charger(server, identity, offered) as ws:
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout(5))
        assert ws.close_code == 1002
        assert identity not in server.chargers


async def test_a_version_pin_overrides_the_chargers_preference(outbox: Outbox) -> None:
    async with running(outbox) as server:
        async with charger(server, "PIN16", ["ocpp2.0.1", "ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp1.6"
            await heartbeat_ok(ws)
        async with charger(server, "PIN201", ["ocpp1.6", "ocpp2.0.1"]) as ws:
            assert ws.subprotocol == "ocpp2.0.1"
            await heartbeat_ok(ws)


# -- Boot / Heartbeat / Status -------------------------------------------------


async def test_boot_heartbeat_status_1_6(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server, "CP1", V16) as ws:
        async with library_client(ws, "1.6") as cp:
            boot = await cp.call(
                lib.call16.BootNotification(
                    charge_point_vendor="Acme",
                    charge_point_model="Wallbox 7",
                    charge_point_serial_number="SN-16",
                    firmware_version="1.2.3",
                ),
                suppress=False,
            )
            assert boot.status == "Accepted" and boot.interval == 300
            assert boot.current_time.endswith("Z")
            beat = await cp.call(lib.call16.Heartbeat(), suppress=False)
            assert beat.current_time.endswith("Z")
            await cp.call(
                lib.call16.StatusNotification(
                    connector_id=1,
                    error_code="NoError",
                    status="Charging",
                    timestamp="2026-01-02T03:04:05Z",
                ),
                suppress=False,
            )
        state = server.chargers["CP1"]
        assert state.connected and state.registration == "accepted"
        assert state.boot is not None and state.boot.serial_number == "SN-16"
        assert state.connectors[(None, 1)].status == "Charging"
    assert not server.chargers["CP1"].connected
    assert await events(outbox) == [
        (
            "CP1",
            "boot",
            {
                "ocpp_version": "1.6",
                "vendor": "Acme",
                "model": "Wallbox 7",
                "serial_number": "SN-16",
                "firmware_version": "1.2.3",
                "reason": None,
            },
        ),
        (
            "CP1",
            "status",
            {
                "ocpp_version": "1.6",
                "evse_id": None,
                "connector_id": 1,
                "status": "Charging",
                "error_code": "NoError",
                "info": None,
                "vendor_error_code": None,
                "charger_ts": "2026-01-02T03:04:05Z",
            },
        ),
    ]


async def test_boot_heartbeat_status_2_0_1(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server, "CP1", V201) as ws:
        async with library_client(ws, "2.0.1") as cp:
            boot = await cp.call(
                lib.call201.BootNotification(
                    charging_station={
                        "model": "Pulsar",
                        "vendor_name": "Acme",
                        "serial_number": "SN-201",
                    },
                    reason="PowerUp",
                ),
                suppress=False,
            )
            assert boot.status == "Accepted" and boot.interval == 300
            beat = await cp.call(lib.call201.Heartbeat(), suppress=False)
            assert beat.current_time.endswith("Z")
            await cp.call(
                lib.call201.StatusNotification(
                    timestamp="2026-01-02T03:04:05Z",
                    connector_status="Occupied",
                    evse_id=2,
                    connector_id=1,
                ),
                suppress=False,
            )
        assert server.chargers["CP1"].connectors[(2, 1)].status == "Occupied"
    assert await events(outbox) == [
        (
            "CP1",
            "boot",
            {
                "ocpp_version": "2.0.1",
                "vendor": "Acme",
                "model": "Pulsar",
                "serial_number": "SN-201",
                "firmware_version": None,
                "reason": "PowerUp",
            },
        ),
        (
            "CP1",
            "status",
            {
                "ocpp_version": "2.0.1",
                "evse_id": 2,
                "connector_id": 1,
                "status": "Occupied",
                "error_code": None,
                "info": None,
                "vendor_error_code": None,
                "charger_ts": "2026-01-02T03:04:05Z",
            },
        ),
    ]


# -- security profile 1 ---------------------------------------------------------


async def test_profile_1_accepts_the_password_raw_and_as_hex_key_bytes(
    outbox: Outbox,
) -> None:
    async with running(outbox) as server:
        async with charger(server, "CP1", password=PASSWORD) as ws:
            await heartbeat_ok(ws)
        async with charger(server, "KEY", password=HEX_KEY) as ws:  # hex string
            await heartbeat_ok(ws)
        raw_key = bytes.fromhex(HEX_KEY)  # includes 0x00 and ':' bytes
        async with charger(server, "KEY", password=raw_key) as ws:
            await heartbeat_ok(ws)


@pytest.mark.parametrize(
    ("identity", "headers", "status"),
    [
        ("CP1", {"Authorization": basic("CP1", "wrong-password-123")}, 401),
        ("CP1", {}, 401),
        ("CP1", {"Authorization": basic("CP2", PASSWORD)}, 401),  # someone else's
        ("CP1", {"Authorization": "Basic not*base64"}, 401),
        ("CP1", {"Authorization": "Bearer " + PASSWORD}, 401),
        ("NOPE", {"Authorization": basic("NOPE", PASSWORD)}, 404),
        ("", {}, 400),
    ],
)
async def test_profile_1_refuses_before_the_upgrade(
    outbox: Outbox, identity: str, headers: dict[str, str], status: int
) -> None:
    async with running(outbox) as server:
        path = f"/ocpp/{identity}" if identity else "/"
        uri = f"ws://127.0.0.1:{server.port}{path}"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(uri, subprotocols=V16, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status
        if status == 401:
            assert "Basic" in refused.value.response.headers["WWW-Authenticate"]
        assert server.chargers == {}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_discovery_holds_unknown_chargers_as_pending(
    outbox: Outbox, version: str
) -> None:
    if version == "1.6":
        boot = {"chargePointModel": "M", "chargePointVendor": "V"}
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    else:
        boot = {
            "chargingStation": {"model": "M", "vendorName": "V"},
            "reason": "PowerUp",
        }
        status = {
            "timestamp": "2026-01-02T03:04:05Z",
            "connectorStatus": "Available",
            "evseId": 1,
            "connectorId": 1,
        }
    async with running(outbox, allow_discovery=True) as server:
        async with charger(
            server, "NEW-1", [Subprotocol(f"ocpp{version}")], None
        ) as ws:
            answer = await exchange(ws, [2, "b1", "BootNotification", boot])
            assert answer[2]["status"] == "Pending" and answer[2]["interval"] == 60
            if version == "1.6":
                # 1.6 only says a pending charger should not send requests: its
                # heartbeat is answered (the connection and its clock stay up)
                await heartbeat_ok(ws)
            else:
                # 2.0.1 B02.FR.09: SecurityError for anything but BootNotification
                answer = await exchange(ws, [2, "hb", "Heartbeat", {}])
                assert answer[:3] == [4, "hb", "SecurityError"]
            answer = await exchange(ws, [2, "s1", "StatusNotification", status])
            assert answer[:3] == [4, "s1", "SecurityError"]
            # the connection carries on: the next boot is answered Pending again
            answer = await exchange(ws, [2, "b2", "BootNotification", boot])
            assert answer[:2] == [3, "b2"] and answer[2]["status"] == "Pending"
            pending = server.pending["NEW-1"]
            assert pending.boot is not None and pending.boot.vendor == "V"
            assert server.chargers["NEW-1"].registration == "pending"
        # configured chargers are unaffected by discovery, heartbeats included
        async with charger(server, "CP1", V16) as ws:
            await heartbeat_ok(ws)
        async with charger(server, "CP2", V201) as ws:
            await heartbeat_ok(ws)
    assert list(server.pending) == ["NEW-1"]
    assert await events(outbox) == []  # unknown devices do not write the record


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def test_ca(tmp_path: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make a test CA")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=Fusebox test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "edge.key",
        "-out", "edge.csr", "-subj", "/CN=localhost",
        cwd=d,
    )  # fmt: skip
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "edge.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "edge.crt", "-extfile", "ext.cnf",
        cwd=d,
    )  # fmt: skip
    return d


async def test_profile_2_serves_wss_with_basic_auth(
    outbox: Outbox, test_ca: Path
) -> None:
    client_tls = ssl.create_default_context(cafile=test_ca / "ca.crt")
    async with running(
        outbox,
        security_profile=2,
        tls_cert=test_ca / "edge.crt",
        tls_key=test_ca / "edge.key",
    ) as server:
        assert server.scheme == "wss"
        async with charger(server, "CP1", V201, ssl=client_tls) as ws:
            await heartbeat_ok(ws)
        with pytest.raises(InvalidStatus) as refused:
            async with charger(
                server, "CP1", V201, "wrong-password-123", ssl=client_tls
            ):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(ssl.SSLError):  # a client that does not trust our CA
            async with charger(server, "CP1", V201, ssl=ssl.create_default_context()):
                pass


# -- bad frames -------------------------------------------------------------------

BOOT16: dict[str, Any] = {"chargePointVendor": "Acme", "chargePointModel": "W7"}
BOOT201: dict[str, Any] = {
    "chargingStation": {"model": "M", "vendorName": "V"},
    "reason": "PowerUp",
}

# (frame, expected [message id, error code] for 1.6, the same for 2.0.1)
BAD_FRAMES: list[tuple[str, Any, tuple[str, str], tuple[str, str]]] = [
    # 2.0.1 section 4.3: not a valid RPC request at all is RpcFrameworkError
    ("not json", "{[2, 'x'", ("-1", "FormationViolation"), ("-1", "RpcFrameworkError")),
    (
        "not an array",
        {"a": 1},
        ("-1", "FormationViolation"),
        ("-1", "RpcFrameworkError"),
    ),
    (
        "unknown message type",
        [7, "m1", "Heartbeat", {}],
        ("m1", "FormationViolation"),
        ("m1", "MessageTypeNotSupported"),
    ),
    (
        "message type not a number",
        ["2", "m2", "Heartbeat", {}],
        ("m2", "FormationViolation"),
        ("m2", "MessageTypeNotSupported"),
    ),
    (
        "unreadable id",
        [2, 17, "Heartbeat", {}],
        ("-1", "FormationViolation"),
        ("-1", "RpcFrameworkError"),
    ),
    (
        "call too short",
        [2, "m3", "Heartbeat"],
        ("m3", "FormationViolation"),
        ("m3", "RpcFrameworkError"),
    ),
    (
        "payload not an object",
        [2, "m4", "Heartbeat", []],
        ("m4", "FormationViolation"),
        ("m4", "FormatViolation"),
    ),
    (
        # OCPP-J 1.6 4.2.3, 2.0.1 4.3: "recognized but not supported"
        "known action the edge does not serve",
        [2, "m5", "Reset", {"type": "Soft"}],
        ("m5", "NotSupported"),
        ("m5", "NotSupported"),
    ),
    (
        # "Requested Action is not known by receiver"
        "action unknown in the version",
        [2, "m6", "FlyToTheMoon", {}],
        ("m6", "NotImplemented"),
        ("m6", "NotImplemented"),
    ),
    (
        "missing required field",
        [2, "m7", "StatusNotification", {"connectorId": 1}],
        ("m7", "ProtocolError"),
        ("m7", "ProtocolError"),
    ),
    (
        "extra field",
        [2, "m8", "Heartbeat", {"vendorGossip": 1}],
        ("m8", "FormationViolation"),
        ("m8", "FormatViolation"),
    ),
    (
        "wrong type",
        [2, "m9", "StatusNotification", {"connectorId": "one"}],
        ("m9", "TypeConstraintViolation"),
        ("m9", "TypeConstraintViolation"),
    ),
]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize(
    ("frame", "expect16", "expect201"),
    [case[1:] for case in BAD_FRAMES],
    ids=[case[0] for case in BAD_FRAMES],
)
async def test_a_bad_frame_gets_its_callerror_and_the_link_lives_on(
    outbox: Outbox,
    version: str,
    frame: Any,
    expect16: tuple[str, str],
    expect201: tuple[str, str],
) -> None:
    offered = V16 if version == "1.6" else V201
    async with (
        running(outbox) as server,
        charger(server, "CP1", offered) as bad,
        charger(server, "CP2", offered) as bystander,
    ):
        answer = await exchange(bad, frame)
        expected_id, expected_code = expect16 if version == "1.6" else expect201
        assert answer[:3] == [4, expected_id, expected_code], answer
        assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        await heartbeat_ok(bad)  # the same connection still works
        await heartbeat_ok(bystander)
        assert server.chargers["CP1"].connected and server.chargers["CP2"].connected


async def test_malformed_responses_are_dropped_unanswered(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server, "CP1", V16) as ws:
        await ws.send(json.dumps([3, "x"]))  # CALLRESULT without a payload
        await ws.send(json.dumps([4, 9, "GenericError", "", {}]))  # unreadable id
        await heartbeat_ok(ws)  # the first answer is the heartbeat's


async def test_a_failing_handler_answers_internal_error_and_keeps_going(
    outbox: Outbox,
) -> None:
    class FlakySink:
        failures = 1

        async def append(self, items: Sequence[Event]) -> object:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("disk on fire")
            return await outbox.append(items)

    status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
    async with (
        running(FlakySink()) as server,
        charger(server, "CP1", V16) as ws,
        charger(server, "CP2", V16) as bystander,
    ):
        answer = await exchange(ws, [2, "s1", "StatusNotification", status])
        assert answer[:3] == [4, "s1", "InternalError"]
        await heartbeat_ok(ws)
        answer = await exchange(ws, [2, "s2", "StatusNotification", status])
        assert answer == [3, "s2", {}]
        await heartbeat_ok(bystander)
    assert [kind for _, kind, _ in await events(outbox)] == ["status"]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_lenient_chargers_skip_schema_validation(
    outbox: Outbox, version: str
) -> None:
    if version == "1.6":
        offered, boot = V16, {**BOOT16, "chargePointSerialNumber": SERIAL_26}
    else:
        station = {**BOOT201["chargingStation"], "serialNumber": SERIAL_26}
        offered, boot = V201, {**BOOT201, "chargingStation": station}
    async with running(outbox) as server:
        async with charger(server, "CP1", offered) as strict:
            answer = await exchange(strict, [2, "b1", "BootNotification", boot])
            assert answer[:3] == [4, "b1", "TypeConstraintViolation"]
        async with charger(server, "LENIENT", offered) as lenient:
            answer = await exchange(lenient, [2, "b2", "BootNotification", boot])
            assert answer[:2] == [3, "b2"] and answer[2]["status"] == "Accepted"
    assert [(s, k, d["serial_number"]) for s, k, d in await events(outbox)] == [
        ("LENIENT", "boot", SERIAL_26)
    ]


async def test_a_reconnect_replaces_the_old_session(outbox: Outbox) -> None:
    async with running(outbox) as server:
        async with charger(server, "CP1", V16) as first:
            status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
            await exchange(first, [2, "s1", "StatusNotification", status])
            async with charger(server, "CP1", V201) as second:
                await heartbeat_ok(second)
                state = server.chargers["CP1"]
                assert state.ocpp_version == "2.0.1"
                assert state.connectors[(None, 1)].status == "Available"  # last known
            await eventually(
                lambda: not server.chargers["CP1"].connected,
                timeout_s=timeout(5),
                message="the closed newer session marks the charger disconnected",
            )
        # the older session closing later must not flip the registry again
        assert server.chargers["CP1"] is state


# -- config and pure helpers ---------------------------------------------------------


def test_existing_edge_configs_still_validate_and_get_safe_defaults() -> None:
    cfg = parse_config({"gateway_id": "g1", "cloud": {"mqtt_url": "mqtt://x:1883"}})
    assert cfg.ocpp.host == "127.0.0.1" and cfg.ocpp.port == 9000
    assert cfg.ocpp.security_profile == 1 and not cfg.ocpp.allow_discovery
    assert cfg.chargers == []


def test_unsafe_or_incomplete_ocpp_config_is_refused() -> None:
    with pytest.raises(ValidationError, match="allow_unsecured_lab"):
        OcppServerConfig(security_profile=0)
    assert OcppServerConfig(security_profile=0, allow_unsecured_lab=True)
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        OcppServerConfig(security_profile=2)
    with pytest.raises(ConfigError, match="used twice"):
        parse_config(
            {
                "gateway_id": "g1",
                "cloud": {"mqtt_url": "mqtt://x:1883"},
                "chargers": [{"id": "CP1"}, {"id": "CP1"}],
            }
        )
    with pytest.raises(ValidationError):
        ChargerConfig(id="CP1", password=SecretStr("short"))
    with pytest.raises(ValidationError):
        ChargerConfig(id="bad/id")
    assert "secret" not in repr(
        ChargerConfig(id="CP1", password=SecretStr("secret" * 3))
    )


async def test_profile_0_needs_no_credentials(outbox: Outbox) -> None:
    async with (
        running(outbox, security_profile=0, allow_unsecured_lab=True) as server,
        charger(server, "CP1", V16, password=None) as ws,
    ):
        await heartbeat_ok(ws)


@pytest.mark.parametrize(
    ("path", "identity"),
    [
        ("/ocpp/CP1", "CP1"),
        ("/ocpp/CP1/", "CP1"),
        ("/CP%201", "CP 1"),
        ("/a/b/CP1?x=1", "CP1"),
        ("/", None),
        ("", None),
    ],
)
def test_identity_is_the_last_path_segment(path: str, identity: str | None) -> None:
    assert identity_from_path(path) == identity


def test_basic_auth_forms() -> None:
    raw = bytes.fromhex(HEX_KEY)
    assert check_basic_auth(basic("KEY", raw), "KEY", HEX_KEY)
    assert check_basic_auth(basic("KEY", HEX_KEY), "KEY", HEX_KEY)
    assert not check_basic_auth(basic("KEY", raw[:-1]), "KEY", HEX_KEY)
    assert not check_basic_auth(basic("KEY", HEX_KEY), "KEY", None)
    assert not check_basic_auth(None, "KEY", HEX_KEY)
    assert check_basic_auth(basic("a:b", PASSWORD), "a:b", PASSWORD)  # ':' in id


# -- notifications and vendor data -------------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_data_transfer_and_firmware_status_are_answered_and_stored(
    outbox: Outbox, version: str
) -> None:
    offered = V16 if version == "1.6" else V201
    firmware = (
        {"status": "Installed"}
        if version == "1.6"
        else {"status": "Installed", "requestId": 7}
    )
    async with running(outbox) as server:
        async with charger(server, "CP1", offered) as ws:
            answer = await exchange(
                ws,
                [2, "d1", "DataTransfer", {"vendorId": "com.acme", "data": "x=1"}],
            )
            assert answer == [3, "d1", {"status": "UnknownVendorId"}]
            answer = await exchange(
                ws, [2, "f1", "FirmwareStatusNotification", firmware]
            )
            assert answer == [3, "f1", {}]
        # DataTransfer.data sent as an object (mobilityhouse#462): the 1.6 schema
        # wants a string, so only a charger with validation off gets through
        async with charger(server, "LENIENT", offered) as ws:
            answer = await exchange(
                ws,
                [2, "d2", "DataTransfer", {"vendorId": "com.acme", "data": {"a": 1}}],
            )
            assert answer == [3, "d2", {"status": "UnknownVendorId"}]
        assert server.chargers["CP1"].firmware_status == "Installed"
    stored = [(s, k, d["payload"]) for s, k, d in await events(outbox)]
    assert stored == [
        (
            "CP1",
            "data_transfer",
            {"vendor_id": "com.acme", "message_id": None, "data": "x=1"},
        ),
        (
            "CP1",
            "firmware_status",
            {"status": "Installed", **({} if version == "1.6" else {"request_id": 7})},
        ),
        (
            "LENIENT",
            "data_transfer",
            {"vendor_id": "com.acme", "message_id": None, "data": '{"a": 1}'},
        ),
    ]


async def test_2_0_1_notifications_and_station_meter_values(outbox: Outbox) -> None:
    report = {
        "requestId": 1,
        "generatedAt": "2026-01-02T03:04:05Z",
        "seqNo": 0,
        "reportData": [
            {
                "component": {"name": "SmartChargingCtrlr"},
                "variable": {"name": f"V{n}"},
                "variableAttribute": [{"value": "x" * 2000}],
            }
            for n in range(6)
        ],
    }
    meter = {
        "evseId": 0,
        "meterValue": [
            {
                "timestamp": "2026-01-02T03:04:05Z",
                "sampledValue": [
                    {"value": 1234.5, "measurand": "Energy.Active.Import.Register"},
                    {"value": 50.01, "measurand": "Frequency"},
                ],
            }
        ],
    }
    async with running(outbox) as server, charger(server, "CP1", V201) as ws:
        for n, (action, payload) in enumerate(
            [
                ("NotifyReport", report),
                (
                    "SecurityEventNotification",
                    {"type": "StartupOfTheDevice", "timestamp": "2026-01-02T03:04:05Z"},
                ),
                ("MeterValues", meter),
            ]
        ):
            answer = await exchange(ws, [2, f"n{n}", action, payload])
            assert answer == [3, f"n{n}", {}], (action, answer)
    rows = await outbox.read(1, None, 100)
    kinds = []
    readings = []
    for row in rows:
        source, name = await outbox.call(outbox.store.stream_name, row.stream)
        if row.data is not None:
            data = msgpack.unpackb(row.data)
            kinds.append(name)
            if name == "notify_report":
                # too big to keep as a structure: kept as text, with its size
                assert data["truncated_from"] > 8192
                assert len(data["payload_text"]) == 8192
        else:
            readings.append((source, name, row.value))
    assert kinds == ["notify_report", "security_event"]
    assert readings == [
        ("CP1", "import_energy_wh", 1234.5),
        ("CP1", "frequency_hz", pytest.approx(50.01)),
    ]


# -- tolerance profiles --------------------------------------------------------------


QUIRKY = [
    ChargerConfig(
        id="CLIP",
        password=SecretStr(PASSWORD),
        tolerance={"validation": "clip_strings"},
    ),
    ChargerConfig(
        id="KWH",
        password=SecretStr(PASSWORD),
        tolerance={"energy_in_kwh": True, "clock": "gateway"},
    ),
    ChargerConfig(id="STRICT", password=SecretStr(PASSWORD)),
]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_clip_strings_cuts_oversize_serials_and_keeps_the_schema(
    outbox: Outbox, version: str
) -> None:
    if version == "1.6":
        offered, boot = V16, {**BOOT16, "chargePointSerialNumber": "S" * 33}
        wrong_type = {**BOOT16, "chargePointModel": 7}
    else:
        station = {**BOOT201["chargingStation"], "serialNumber": "S" * 33}
        offered, boot = V201, {**BOOT201, "chargingStation": station}
        wrong_type = {**BOOT201, "reason": 7}
    async with running(outbox, QUIRKY) as server:
        async with charger(server, "STRICT", offered) as ws:
            answer = await exchange(ws, [2, "b0", "BootNotification", boot])
            assert answer[:3] == [4, "b0", "TypeConstraintViolation"]
        async with charger(server, "CLIP", offered) as ws:
            answer = await exchange(ws, [2, "b1", "BootNotification", boot])
            assert answer[:2] == [3, "b1"] and answer[2]["status"] == "Accepted"
            # clipping is not leniency: other schema violations still get their error
            answer = await exchange(ws, [2, "b2", "BootNotification", wrong_type])
            assert answer[0] == 4 and answer[1] == "b2"
        path = (
            "chargePointSerialNumber"
            if version == "1.6"
            else "chargingStation.serialNumber"
        )
        assert server.skipped[("CLIP", f"clipped:BootNotification.{path}")] == 1
    assert [(s, k, d["serial_number"]) for s, k, d in await events(outbox)] == [
        ("CLIP", "boot", "S" * 25)
    ]


async def test_energy_in_kwh_and_gateway_clock(outbox: Outbox) -> None:
    """A charger that labels kWh as Wh and whose clock is an hour off."""
    async with running(outbox, QUIRKY) as server:
        async with charger(server, "KWH", V16) as ws:
            answer = await exchange(
                ws,
                [
                    2,
                    "m1",
                    "MeterValues",
                    {
                        "connectorId": 1,
                        "meterValue": [
                            {
                                "timestamp": f"2026-01-02T03:04:{second}Z",
                                "sampledValue": [sample],
                            }
                            for second, sample in (
                                ("05", {"value": "12.5", "unit": "Wh"}),
                                ("15", {"value": "13"}),
                                ("25", {"value": "14", "unit": "kWh"}),
                            )
                        ]
                        + [
                            {
                                "timestamp": "2026-01-02T03:04:25Z",
                                "sampledValue": [
                                    {"value": "230", "measurand": "Voltage"}
                                ],
                            }
                        ],
                    },
                ],
            )
            assert answer == [3, "m1", {}]
        received = server.chargers["KWH"].last_seen
    rows = await outbox.read(1, None, 100)
    values = []
    for row in rows:
        _, name = await outbox.call(outbox.store.stream_name, row.stream)
        # stamped on arrival, not with the charger's 2026-01-02 clock, and the
        # values keep their 10 s spacing
        age = round(received.timestamp() - row.ts_ms / 1000)
        values.append((name, row.value, age))
    assert values == [
        ("import_energy_wh", 12500.0, 20),
        ("import_energy_wh", 13000.0, 10),
        ("import_energy_wh", 14000.0, 0),  # an explicit kWh label is read as kWh
        ("voltage_v", 230.0, 0),
    ]


def test_tolerance_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="validation"):
        ChargerConfig(id="X", tolerance={"validation": "loose"})
    with pytest.raises(ValidationError, match="clock"):
        ChargerConfig(id="X", tolerance={"clock": "sundial"})
    assert ChargerConfig(id="X", lenient=True).validation == "off"
    assert ChargerConfig(id="X").validation == "strict"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ('{"not": "ocpp"', "FormationViolation"),  # screened before the library
        ([2, "m", "FlyToTheMoon", {}], "NotImplemented"),  # answered by the library
        ([2, "m", "StatusNotification", {"connectorId": 1}], "ProtocolError"),
    ],
    ids=["not json", "unknown action", "schema"],
)
async def test_a_charger_flooding_one_bad_frame_logs_a_line_not_a_flood(
    outbox: Outbox, frame: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: each bad frame logged an ERROR with ~30 lines of traceback, so a
    charger stuck resending one could fill a gateway's disk. 10,000 of them now
    give one WARNING line, a count by reason, and one line when it is good again;
    every one is still answered."""
    text = frame if isinstance(frame, str) else json.dumps(frame)
    n, chunk = 10_000, 500
    caplog.set_level(logging.INFO, logger="fusebox")
    async with running(outbox) as server, charger(server, "CP1", V16) as ws:
        for _ in range(n // chunk):
            for _ in range(chunk):
                await ws.send(text)
            answered = 0
            while answered < chunk:
                answer = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
                if answer[0] == 4:
                    answered += 1
        await heartbeat_ok(ws)  # a good frame: the charger is fine again
        assert server.bad_input["CP1"].counts[reason] == n
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud[:5]]
    assert reason in loud[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)
    assert any("good frames again" in r.getMessage() for r in caplog.records)
    # nor at INFO: the library's line per frame (both ways) is DEBUG
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(info) < 20, [r.getMessage()[:80] for r in info[:5]]
