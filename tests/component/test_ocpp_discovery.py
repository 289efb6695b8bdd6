"""Discovery under attack, with real websockets clients over loopback.

A pending charger id is bound to the device of its first connection
(``edge.ocpp.pending``); these tests try to take it over from another address
(the client binds 127.0.0.2, the genuine charger 127.0.0.1), to exhaust the
pending list from one client, to sneak bad ids past the handshake, and check
that the password goes to the genuine charger only, that the bounds hold with a
small log, that stale ids expire, and that a bad id leaves no state at all.
The pure registry's units are in ``tests/unit/test_ocpp_pending.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edge.ocpp.config import ChargerConfig, OcppServerConfig
from edge.ocpp.server import ApproveOutcome, OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Outbox
from tests.component.test_ocpp_server import (
    BOOT16,
    BOOT201,
    PASSWORD,
    V16,
    V201,
    _openssl,
    charger,
    events,
    exchange,
    heartbeat_ok,
    outbox,
)
from tests.harness.timing import eventually, timeout

__all__ = ["outbox"]  # the fixture, shared with test_ocpp_server

NEW_PASSWORD = "a-new-charger-pass"  # 18 bytes: a valid 1.6 AuthorizationKey
ROGUE = ("127.0.0.2", 0)  # another address on loopback
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CP1 = ChargerConfig(id="CP1", password=SecretStr(PASSWORD))


class Clock:
    """The server's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def running(
    sink: Outbox,
    chargers: Sequence[ChargerConfig] = (CP1,),
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[OcppServer]:
    extra = {"clock": clock} if clock is not None else {}
    server = OcppServer(
        OcppServerConfig(port=0, allow_discovery=True, **settings),
        chargers,
        sink,
        transactions_path=store_path_beside(sink.store.path),
        **extra,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _version(offered: Sequence[str]) -> tuple[str, dict[str, Any]]:
    return ("1.6", BOOT16) if offered == V16 else ("2.0.1", BOOT201)


async def refused(server: OcppServer, identity: str, **kwargs: Any) -> InvalidStatus:
    """Connect and expect an HTTP refusal; the refusal."""
    kwargs.setdefault("password", None)
    with pytest.raises(InvalidStatus) as err:
        async with charger(server, identity, **kwargs):
            pass
    return err.value


async def expect_password(ws: ClientConnection, version: str, answer: str) -> None:
    """Read the edge's CALL that sets the new password, check it, answer it."""
    async with asyncio.timeout(timeout(5)):
        call = json.loads(await ws.recv())
    if version == "1.6":
        assert call[2:] == [
            "ChangeConfiguration",
            {"key": "AuthorizationKey", "value": NEW_PASSWORD.encode().hex()},
        ]
        result: dict[str, Any] = {"status": answer}
    else:
        assert call[2] == "SetVariables", call
        (data,) = call[3]["setVariableData"]
        assert data["variable"] == {"name": "BasicAuthPassword"}
        assert data["attributeValue"] == NEW_PASSWORD
        keys = {k: data[k] for k in ("component", "variable")}
        result = {"setVariableResult": [{**keys, "attributeStatus": answer}]}
    await ws.send(json.dumps([3, call[1], result]))


async def expect_closed(ws: ClientConnection, code: int) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout(5)):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


# -- the hijack ---------------------------------------------------------------


@pytest.mark.parametrize("offered", [V16, V201], ids=["1.6", "2.0.1"])
async def test_a_rogue_device_under_a_pending_id_is_refused_and_never_gets_the_password(
    outbox: Outbox, caplog: pytest.LogCaptureFixture, offered: list[str]
) -> None:
    caplog.set_level(logging.INFO)
    # the library's frame lines (DEBUG) carry the password frame: redacted there too
    caplog.set_level(logging.DEBUG, logger="fusebox.edge.ocpp.lib")
    version, boot = _version(offered)
    async with running(outbox) as server:
        async with charger(server, "NEW-1", offered, password=None) as genuine:
            answer = await exchange(genuine, [2, "b1", "BootNotification", boot])
            assert answer[2]["status"] == "Pending"
            for _ in range(5):  # the rogue retries: refused before any OCPP
                refusal = await refused(
                    server, "NEW-1", subprotocols=offered, local_addr=ROGUE
                )
                assert refusal.response.status_code == 409
                assert b"another device" in (refusal.response.body or b"")
            binding = server.discovery.registry.bindings["NEW-1"]
            assert binding.peer.address == "127.0.0.1" and binding.live
            (conflict,) = binding.conflicts
            assert conflict.peer.address == "127.0.0.2" and conflict.attempts == 5
            # the installer approves: the password goes to the genuine charger
            approving = asyncio.create_task(
                server.approve(
                    ChargerConfig(id="NEW-1", password=SecretStr(NEW_PASSWORD))
                )
            )
            await expect_password(genuine, version, "Accepted")
            assert await approving == ApproveOutcome(True, "Accepted")
            await expect_closed(genuine, 1012)
        # the id is known now: the rogue needs the password it never got
        refusal = await refused(server, "NEW-1", subprotocols=offered, local_addr=ROGUE)
        assert refusal.response.status_code == 401
        async with charger(server, "NEW-1", offered, password=NEW_PASSWORD) as ws:
            answer = await exchange(ws, [2, "b2", "BootNotification", boot])
            assert answer[2]["status"] == "Accepted"
    assert server.discovery.registry.refused["conflict"] == 5
    # six refusals of the rogue, two lines: the conflict, then the 401
    assert len(warnings_about(caplog, "127.0.0.2")) == 2
    # every frame is logged, but never the password (nor its 1.6 hex key)
    assert NEW_PASSWORD not in caplog.text
    assert NEW_PASSWORD.encode().hex() not in caplog.text
    assert "<redacted>" in caplog.text


@pytest.mark.parametrize("offered", [V16, V201], ids=["1.6", "2.0.1"])
async def test_approval_waits_for_the_bound_device_when_it_is_offline(
    outbox: Outbox, offered: list[str]
) -> None:
    version, boot = _version(offered)
    async with running(outbox) as server:
        registry = server.discovery.registry
        async with charger(server, "NEW-2", offered, password=None) as ws:
            await exchange(ws, [2, "b1", "BootNotification", boot])
        await eventually(
            lambda: not registry.bindings["NEW-2"].live,
            timeout_s=timeout(5),
            message="the pending charger went offline",
        )
        outcome = await server.approve(
            ChargerConfig(id="NEW-2", password=SecretStr(NEW_PASSWORD))
        )
        assert outcome == ApproveOutcome(False, None, held_for="address 127.0.0.1")
        assert "NEW-2" in server.known and "NEW-2" not in server.pending
        # another device cannot collect the waiting password
        for password in (None, "wrong-password-1234"):
            refusal = await refused(
                server,
                "NEW-2",
                subprotocols=offered,
                password=password,
                local_addr=ROGUE,
            )
            assert refusal.response.status_code == 401
        (conflict,) = registry.deliveries["NEW-2"].conflicts
        assert conflict.peer.address == "127.0.0.2" and conflict.attempts == 2
        # the genuine charger comes back without credentials: let in pending,
        # given the password after its boot, and closed to reconnect with it
        async with charger(server, "NEW-2", offered, password=None) as ws:
            answer = await exchange(ws, [2, "b2", "BootNotification", boot])
            assert answer[2]["status"] == "Pending"
            assert server.chargers["NEW-2"].registration == "pending"
            await expect_password(ws, version, "Accepted")
            await expect_closed(ws, 1012)
        assert registry.deliveries == {}
        assert registry.delivery_results == {"NEW-2": "Accepted"}
        async with charger(server, "NEW-2", offered, password=NEW_PASSWORD) as ws:
            answer = await exchange(ws, [2, "b3", "BootNotification", boot])
            assert answer[2]["status"] == "Accepted"
        # and from now on, without it, nobody gets in
        refusal = await refused(server, "NEW-2", subprotocols=offered)
        assert refusal.response.status_code == 401


async def test_a_charger_given_its_password_by_hand_ends_the_wait(
    outbox: Outbox,
) -> None:
    async with running(outbox) as server:
        async with charger(server, "NEW-H", V201, password=None) as ws:
            await exchange(ws, [2, "b1", "BootNotification", BOOT201])
        await eventually(
            lambda: not server.discovery.registry.bindings["NEW-H"].live,
            timeout_s=timeout(5),
            message="the pending charger went offline",
        )
        await server.approve(ChargerConfig(id="NEW-H", password=SecretStr(PASSWORD)))
        assert "NEW-H" in server.discovery.registry.deliveries
        # set on the charger by hand, it connects from elsewhere with it
        async with charger(server, "NEW-H", V201, local_addr=ROGUE) as ws:
            await heartbeat_ok(ws)
            assert server.chargers["NEW-H"].registration == "accepted"
        assert server.discovery.registry.deliveries == {}
        assert server.discovery.registry.delivery_results == {"NEW-H": "set by hand"}


async def test_forgetting_a_pending_id_binds_the_next_connection(
    outbox: Outbox,
) -> None:
    async with running(outbox) as server:
        # the wrong device came first; the genuine one is refused
        async with charger(
            server, "NEW-3", V201, password=None, local_addr=ROGUE
        ) as rogue:
            refusal = await refused(server, "NEW-3", subprotocols=V201)
            assert refusal.response.status_code == 409
            assert server.forget_pending("NEW-3") == "pending"
            await expect_closed(rogue, 1000)
        assert server.forget_pending("NEW-3") is None
        async with charger(server, "NEW-3", V201, password=None) as genuine:
            await exchange(genuine, [2, "b1", "BootNotification", BOOT201])
            refusal = await refused(
                server, "NEW-3", subprotocols=V201, local_addr=ROGUE
            )
            assert refusal.response.status_code == 409
            approving = asyncio.create_task(
                server.approve(
                    ChargerConfig(id="NEW-3", password=SecretStr(NEW_PASSWORD))
                )
            )
            await expect_password(genuine, "2.0.1", "Accepted")
            assert (await approving).password == "Accepted"


# -- bounds and expiry ----------------------------------------------------------


async def test_300_ids_from_one_client_hold_4_places_and_the_gateway_32(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(outbox) as server:  # the defaults: 4 per address, 32
        registry = server.discovery.registry
        statuses: list[int] = []
        for i in range(300):
            try:
                async with charger(server, f"SCAN-{i}", V16, password=None):
                    statuses.append(101)
            except InvalidStatus as err:
                statuses.append(err.response.status_code)
                assert b"too many charge points" in (err.response.body or b"")
        assert statuses == [101] * 4 + [429] * 296
        assert len(server.pending) == 4
        # seven more addresses fill the gateway; the next one is refused
        for host in range(3, 10):
            for i in range(4):
                addr = (f"127.0.0.{host}", 0)
                async with charger(server, f"H{host}-{i}", V16, None, local_addr=addr):
                    pass
        assert len(server.pending) == 32
        refusal = await refused(server, "ONE-MORE", local_addr=("127.0.0.10", 0))
        assert refusal.response.status_code == 503
        # configured chargers are not held to the bound
        async with charger(server, "CP1", V16) as ws:
            await heartbeat_ok(ws)
        assert registry.refused["address_full"] == 296
        assert registry.refused["gateway_full"] == 1
    # 297 refusals: one line for the scanning address, one for the gateway
    assert len(warnings_about(caplog, "refused")) == 2
    websockets_lines = [r for r in caplog.records if r.name.startswith("websockets")]
    assert len(websockets_lines) <= 3  # listening, closing, closed: no per-attempt
    assert await events(outbox) == []


async def test_pending_ids_with_no_connection_expire_and_free_their_place(
    outbox: Outbox,
) -> None:
    clock = Clock(T0)
    async with (
        running(outbox, clock=clock, max_pending_per_address=2) as server,
        charger(server, "LIVE", V16, None, local_addr=ROGUE) as live,
    ):
        for cid in ("OLD-1", "OLD-2"):
            async with charger(server, cid, V16, password=None):
                pass
        assert (await refused(server, "NEW")).response.status_code == 429
        clock.now = T0 + timedelta(hours=23)
        assert (await refused(server, "NEW")).response.status_code == 429
        clock.now = T0 + timedelta(hours=24, seconds=1)
        async with charger(server, "NEW", V16, password=None):
            pass
        assert sorted(server.pending) == ["LIVE", "NEW"]  # connected: kept
        assert "OLD-1" not in server.chargers  # no state left behind
        await heartbeat_ok(live)


# -- bad charger ids --------------------------------------------------------------


async def raw_upgrade(port: int, path: bytes) -> bytes:
    """Send an upgrade request for ``path`` byte for byte; the raw answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
    )
    try:
        async with asyncio.timeout(timeout(5)):
            return await reader.read()
    finally:
        writer.close()


BAD_PATHS = [
    (b"/ocpp/a%20b", b"character ' '"),  # a space
    (b"/ocpp/" + b"x" * 49, b"longer than 48"),
    (b"/ocpp/caf%C3%A9", b"not ASCII"),
    (b"/ocpp/caf\xc3\xa9", b"not ASCII"),  # raw UTF-8 in the request line
    (b"/ocpp/..", b"dot segment"),
    (b"/ocpp/%2e%2E", b"dot segment"),
    (b"/", b"empty"),
    (b"/ocpp/a%2Fb", b"character '/'"),
    (b"/ocpp/CP%00", b"character"),
]


async def test_bad_charger_ids_are_refused_with_no_state_made(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running(outbox) as server:
        for path, reason in BAD_PATHS:
            answer = await raw_upgrade(server.port, path)
            assert answer.startswith(b"HTTP/1.1 400 "), (path, answer[:80])
            assert reason in answer, (path, answer)
        # a raw space breaks the request line itself: no answer, no traceback
        assert await raw_upgrade(server.port, b"/ocpp/a b") == b""
        assert await raw_upgrade(server.port, b"/ocpp/a b") == b""
        registry = server.discovery.registry
        assert registry.refused["bad_id"] == len(BAD_PATHS)
        await eventually(
            lambda: registry.refused["bad_request"] == 2,
            timeout_s=timeout(5),
            message="both unreadable requests counted",
        )
        assert server.pending == {} and server.chargers == {}
        assert server.bad_input == {} and registry.bindings == {}
        # the server carries on
        async with charger(server, "CP1", V16) as ws:
            await heartbeat_ok(ws)
    assert await events(outbox) == []
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 2, [r.getMessage() for r in loud]  # bad id, bad request
    assert all(r.exc_info is None for r in loud)


# -- a TLS client certificate binds tighter than an address -----------------------


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, the edge's certificate, and client certificates "a" and "b"."""
    import shutil

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
    for name, usage in (
        ("edge", "serverAuth"),
        ("a", "clientAuth"),
        ("b", "clientAuth"),
    ):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
            cwd=d,
        )  # fmt: skip
        (d / f"{name}.cnf").write_text(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
            f"extendedKeyUsage={usage}\n"
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey",
            "ca.key", "-CAcreateserial", "-days", "2", "-out", f"{name}.crt",
            "-extfile", f"{name}.cnf",
            cwd=d,
        )  # fmt: skip
    return d


def _client_tls(pki: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki / "ca.crt")
    if name is not None:
        ctx.load_cert_chain(pki / f"{name}.crt", pki / f"{name}.key")
    return ctx


async def test_a_client_certificate_binds_a_pending_id_to_that_device(
    outbox: Outbox, pki: Path
) -> None:
    der = ssl.PEM_cert_to_DER_cert((pki / "a.crt").read_text())
    async with running(
        outbox,
        security_profile=2,
        tls_cert=pki / "edge.crt",
        tls_key=pki / "edge.key",
        tls_client_ca=pki / "ca.crt",
    ) as server:
        async with charger(server, "NEW-T", V201, None, ssl=_client_tls(pki, "a")):
            binding = server.discovery.registry.bindings["NEW-T"]
            assert binding.peer.fingerprint == hashlib.sha256(der).hexdigest()
            # the same address with another certificate, or none: refused
            for name in ("b", None):
                refusal = await refused(
                    server, "NEW-T", subprotocols=V201, ssl=_client_tls(pki, name)
                )
                assert refusal.response.status_code == 409
        async with charger(
            server, "NEW-T", V201, None, ssl=_client_tls(pki, "a")
        ) as ws:
            await exchange(ws, [2, "b1", "BootNotification", BOOT201])
        # a configured charger needs no certificate (asked for, optional)
        async with charger(server, "CP1", V201, ssl=_client_tls(pki, None)) as ws:
            await heartbeat_ok(ws)
        assert len(server.discovery.registry.bindings["NEW-T"].conflicts) == 2
