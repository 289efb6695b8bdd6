"""Remote control and configuration from the edge's OCPP server: remote start/stop,
TxProfile on the running transaction, capability discovery after boot,
configuration read/write, TriggerMessage, ChangeAvailability and Reset, each
against ``fusebox sim charger`` as a process (1.6 and 2.0.1); the charger's
Rejected, CALLERROR and silent answers against a raw websockets charger."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from edge.ocpp.commands import ChargerNotConnected, CommandFailed, Variable
from edge.ocpp.config import ChargerConfig, IdTagConfig, OcppServerConfig
from edge.ocpp.server import ApproveOutcome, OcppServer
from edge.ocpp.transactions import store_path_beside
from edge.outbox import Outbox
from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
)
from tests.harness.procs import Procs
from tests.harness.timing import eventually, timeout

PASSWORD = "s3cret-password-16"
LIMIT_W = 3680.0
TOLERANCE_W = 50.0
# simulators/charger.py advertises these (MAX_STACK_LEVEL, MAX_PERIODS, MAX_PROFILES)
SIM_CAPS = {"max_stack_level": 10, "max_periods": 24, "max_profiles": 20}


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    yield box
    await box.close()


@asynccontextmanager
async def running(outbox: Outbox, **settings: Any) -> AsyncIterator[OcppServer]:
    config = OcppServerConfig(
        host="127.0.0.1",
        port=0,
        security_profile=1,
        id_tags=[IdTagConfig(id="TAG1")],
        **settings,
    )
    chargers = [
        ChargerConfig(id="CP1", password=SecretStr(PASSWORD)),
        ChargerConfig(id="RAW", password=SecretStr(PASSWORD)),
    ]
    server = OcppServer(
        config, chargers, outbox, transactions_path=store_path_beside(outbox.store.path)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def sim_argv(
    server: OcppServer, charger_id: str, version: str, *more: str
) -> list[str]:
    """``fusebox sim charger`` for ``charger_id`` on ``server``."""
    return [
        "fusebox",
        "sim",
        "charger",
        "--url",
        f"ws://127.0.0.1:{server.port}/ocpp",
        "--id",
        charger_id,
        "--ocpp",
        version,
        *more,
    ]


async def start_sim(
    procs: Procs, server: OcppServer, tmp_path: Path, version: str, *extra: str
) -> None:
    """Start the simulated CP1 and wait until it has booted and the edge has read
    its capabilities."""
    procs.start(
        sim_argv(
            server,
            "CP1",
            version,
            "--password",
            PASSWORD,
            "--meter-interval",
            "1",
            "--phases",
            "1",
            "--state",
            str(tmp_path / "cp1.state.json"),
            *extra,
        ),
        name=f"charger-{version}",
    )
    await eventually(
        lambda: connected_with_capabilities(server),
        timeout_s=timeout(10),
        message="CP1 booted and its capabilities read",
    )


async def events(outbox: Outbox, kind: str | None = None) -> list[dict[str, Any]]:
    out = []
    for row in await outbox.read(1, None, 100_000):
        if row.data is None:
            continue
        source, name = await outbox.call(outbox.store.stream_name, row.stream)
        if kind is None or name == kind:
            out.append({"source": source, "kind": name, **msgpack.unpackb(row.data)})
    return out


async def power_after(outbox: Outbox, mark: int) -> list[tuple[int, float]]:
    out = []
    for row in await outbox.read(mark + 1, None, 100_000):
        if row.data is not None or row.value is None:
            continue
        source, name = await outbox.call(outbox.store.stream_name, row.stream)
        if source == "CP1" and name == "power_w":
            out.append((row.seq, row.value))
    return out


async def connected_with_capabilities(server: OcppServer) -> bool:
    state = server.chargers.get("CP1")
    return bool(state and state.connected and state.capabilities is not None)


def tx_profile(limit_w: float, transaction_id: int | str | None) -> ChargingProfile:
    return ChargingProfile(
        id=21,
        stack_level=2,
        purpose=ProfilePurpose.TX,
        kind=ProfileKind.ABSOLUTE,
        transaction_id=transaction_id,
        schedules=(
            ChargingSchedule(
                rate_unit=RateUnit.W,
                periods=(SchedulePeriod(0, limit_w),),
                start_schedule=datetime.now(UTC) - timedelta(minutes=1),
            ),
        ),
    )


def tx_id(version: str, raw: str) -> int | str:
    return int(raw) if version == "1.6" else raw


# -- discovery and configuration ---------------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_capabilities_are_read_after_boot_and_stored(
    outbox: Outbox, procs: Procs, tmp_path: Path, version: str
) -> None:
    async with running(outbox) as server:
        await start_sim(procs, server, tmp_path, version)
        caps = server.chargers["CP1"].capabilities
        assert caps is not None
        assert caps.smart_charging is True
        assert caps.max_stack_level == SIM_CAPS["max_stack_level"]
        assert caps.max_periods == SIM_CAPS["max_periods"]
        assert caps.max_profiles == SIM_CAPS["max_profiles"]
        assert caps.rate_units == {"A", "W"}
        assert caps.connectors == 1
        stored = await events(outbox, "capabilities")
        assert len(stored) == 1
        assert stored[0]["max_stack_level"] == SIM_CAPS["max_stack_level"]
        assert stored[0]["rate_units"] == ["A", "W"]
        # the boot was answered (and stored) before the configuration was read
        kinds = [e["kind"] for e in await events(outbox)]
        assert kinds.index("boot") < kinds.index("capabilities")


async def test_configuration_read_and_write_1_6(
    outbox: Outbox, procs: Procs, tmp_path: Path
) -> None:
    async with running(outbox) as server:
        await start_sim(procs, server, tmp_path, "1.6")
        known, unknown = await server.get_configuration(
            "CP1", ["HeartbeatInterval", "NoSuchKey"]
        )
        assert set(known) == {"HeartbeatInterval"} and unknown == ["NoSuchKey"]
        everything, _ = await server.get_configuration("CP1")
        assert "ChargeProfileMaxStackLevel" in everything
        assert await server.change_configuration("CP1", "HeartbeatInterval", "45") == (
            "Accepted"
        )
        known, _ = await server.get_configuration("CP1", ["HeartbeatInterval"])
        assert known == {"HeartbeatInterval": "45"}
        read_only = await server.change_configuration(
            "CP1", "ChargeProfileMaxStackLevel", "99"
        )
        assert read_only == "Rejected"
        assert await server.change_configuration("CP1", "NoSuchKey", "1") == (
            "NotSupported"
        )
        with pytest.raises(ValueError, match="get_configuration"):
            await server.get_variables("CP1", [Variable("OCPPCommCtrlr", "x")])
        with pytest.raises(ValueError, match="500 characters"):
            await server.change_configuration("CP1", "HeartbeatInterval", "9" * 501)


async def test_variables_read_and_write_2_0_1(
    outbox: Outbox, procs: Procs, tmp_path: Path
) -> None:
    heartbeat = Variable("OCPPCommCtrlr", "HeartbeatInterval")
    async with running(outbox) as server:
        await start_sim(procs, server, tmp_path, "2.0.1")
        got = await server.get_variables(
            "CP1", [heartbeat, Variable("OCPPCommCtrlr", "Nope"), Variable("Nope", "x")]
        )
        assert got["OCPPCommCtrlr.HeartbeatInterval"][0] == "Accepted"
        assert got["OCPPCommCtrlr.Nope"] == ("UnknownVariable", None)
        assert got["Nope.x"] == ("UnknownComponent", None)
        set_ = await server.set_variables(
            "CP1",
            [(heartbeat, "45"), (Variable("SmartChargingCtrlr", "RateUnit"), "W")],
        )
        assert set_["OCPPCommCtrlr.HeartbeatInterval"][0] == "Accepted"
        assert set_["SmartChargingCtrlr.RateUnit"][0] == "Rejected"  # read-only
        got = await server.get_variables("CP1", [heartbeat])
        assert got["OCPPCommCtrlr.HeartbeatInterval"] == ("Accepted", "45")
        with pytest.raises(ValueError, match="set_variables"):
            await server.change_configuration("CP1", "HeartbeatInterval", "1")


# -- remote start / stop and the TxProfile -------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_remote_start_txprofile_and_remote_stop(
    outbox: Outbox, procs: Procs, tmp_path: Path, version: str
) -> None:
    async with running(outbox) as server:
        await start_sim(procs, server, tmp_path, version)
        # no transaction yet: a TxProfile has nothing to bind to
        loose = tx_profile(LIMIT_W, tx_id(version, "1"))
        assert await server.set_charging_profile("CP1", 1, loose) == "Rejected"

        assert await server.remote_start("CP1", "TAG1", connector_or_evse_id=1) == (
            "Accepted"
        )
        started = await eventually(
            lambda: events(outbox, "session_started"),
            timeout_s=timeout(10),
            message="the remote start became a transaction",
        )
        assert started[0]["id_tag"] == "TAG1"
        transaction = tx_id(version, started[0]["transaction_id"])

        async def charging() -> bool:
            return any(
                v > LIMIT_W + TOLERANCE_W for _, v in await power_after(outbox, 0)
            )

        await eventually(charging, timeout_s=timeout(10), message="EV draws power")
        other = tx_profile(LIMIT_W, tx_id(version, "999999"))
        assert await server.set_charging_profile("CP1", 1, other) == "Rejected"
        profile = tx_profile(LIMIT_W, transaction)
        assert await server.set_charging_profile("CP1", 1, profile) == "Accepted"
        mark = (await outbox.read(1, None, 100_000))[-1].seq

        async def limited() -> list[float]:
            after = [v for _, v in await power_after(outbox, mark)]
            return after[1:3] if len(after) >= 3 else []

        values = await eventually(
            limited, timeout_s=timeout(8), message="meter values under the TxProfile"
        )
        assert all(0 < v <= LIMIT_W + TOLERANCE_W for v in values), values

        assert await server.remote_stop("CP1", transaction) == "Accepted"
        stopped = await eventually(
            lambda: events(outbox, "session_stopped"),
            timeout_s=timeout(10),
            message="the remote stop ended the session",
        )
        assert stopped[0]["transaction_id"] == str(transaction)
        assert stopped[0]["reason"] == "Remote"
        # a stop for a transaction that is not running is refused by the charger
        assert await server.remote_stop("CP1", transaction) == "Rejected"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_remote_start_with_a_profile_charges_under_it(
    outbox: Outbox, procs: Procs, tmp_path: Path, version: str
) -> None:
    async with running(outbox) as server:
        await start_sim(procs, server, tmp_path, version)
        profile = tx_profile(LIMIT_W, None)
        status = await server.remote_start(
            "CP1", "TAG1", connector_or_evse_id=1, profile=profile
        )
        assert status == "Accepted"

        async def samples() -> list[float]:
            values = [v for _, v in await power_after(outbox, 0) if v > 0]
            return values if len(values) >= 3 else []

        values = await eventually(
            samples,
            timeout_s=timeout(12),
            message="three meter values of the remote-started session",
        )
        assert all(v <= LIMIT_W + TOLERANCE_W for v in values), values
        composite = await server.get_composite_schedule("CP1", 1, 120, "W")
        assert composite["periods"][0]["limit"] == pytest.approx(LIMIT_W)
        with pytest.raises(ValueError, match="TxProfile"):
            await server.remote_start(
                "CP1",
                "TAG1",
                profile=ChargingProfile(
                    id=3,
                    stack_level=0,
                    purpose=ProfilePurpose.TX_DEFAULT,
                    kind=ProfileKind.ABSOLUTE,
                    schedules=profile.schedules,
                ),
            )


# -- trigger, availability, reset ---------------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_trigger_availability_and_reset(
    outbox: Outbox, procs: Procs, tmp_path: Path, version: str
) -> None:
    async with running(outbox) as server:
        await start_sim(procs, server, tmp_path, version)
        before = len(await events(outbox, "status"))
        assert await server.trigger_message("CP1", "StatusNotification", 1) == (
            "Accepted"
        )

        async def more_status() -> bool:
            return len(await events(outbox, "status")) > before

        await eventually(more_status, timeout_s=timeout(5), message="triggered status")
        assert await server.trigger_message("CP1", "FirmwareStatusNotification") in (
            "NotImplemented",
            "Rejected",
        )

        assert await server.change_availability("CP1", 1, operative=False) == (
            "Accepted"
        )

        async def unavailable() -> bool:
            return any(
                e["status"] == "Unavailable" for e in await events(outbox, "status")
            )

        await eventually(
            unavailable,
            timeout_s=timeout(5),
            message="connector 1 reported Unavailable",
        )
        refused = await server.remote_start("CP1", "TAG1", connector_or_evse_id=1)
        assert refused == "Rejected"
        assert await server.change_availability("CP1", 1, operative=True) == (
            "Accepted"
        )

        first = server.chargers["CP1"]
        assert await server.reset("CP1", "soft") == "Accepted"

        async def rebooted() -> bool:
            state = server.chargers.get("CP1")
            return bool(
                state is not first and state and state.connected and state.booted
            )

        await eventually(
            rebooted, timeout_s=timeout(15), message="CP1 reconnected and booted"
        )
        assert len(await events(outbox, "boot")) == 2
        with pytest.raises(ValueError, match="soft"):
            await server.reset("CP1", "gentle")


# -- answers a charger may give: Rejected, CALLERROR, nothing ---------------------


def _basic() -> str:
    return "Basic " + base64.b64encode(f"RAW:{PASSWORD}".encode()).decode()


@asynccontextmanager
async def raw_charger(
    server: OcppServer, version: str
) -> AsyncIterator[ClientConnection]:
    async with connect(
        f"ws://127.0.0.1:{server.port}/ocpp/RAW",
        subprotocols=[Subprotocol("ocpp1.6" if version == "1.6" else "ocpp2.0.1")],
        additional_headers={"Authorization": _basic()},
        open_timeout=timeout(5),
    ) as ws:
        yield ws


async def next_call(ws: ClientConnection) -> list[Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        if frame[0] == 2:
            return list(frame)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_rejected_callerror_and_silence_reach_the_caller(
    outbox: Outbox, version: str
) -> None:
    async with running(outbox, response_timeout_s=1.0) as server:
        async with raw_charger(server, version) as ws:
            await eventually(
                lambda: "RAW" in server.chargers,
                timeout_s=timeout(5),
                message="RAW connected",
            )
            # Rejected
            command = asyncio.create_task(
                server.change_availability("RAW", 1, operative=False)
            )
            call = await next_call(ws)
            assert call[2] == "ChangeAvailability"
            await ws.send(json.dumps([3, call[1], {"status": "Rejected"}]))
            assert await command == "Rejected"
            # CALLERROR
            command = asyncio.create_task(server.reset("RAW", "hard"))
            call = await next_call(ws)
            assert call[3] == {"type": "Hard" if version == "1.6" else "Immediate"}
            await ws.send(json.dumps([4, call[1], "InternalError", "relay stuck", {}]))
            with pytest.raises(CommandFailed) as failed:
                await command
            assert failed.value.code == "InternalError"
            assert failed.value.description == "relay stuck"
            # no answer at all
            command = asyncio.create_task(server.trigger_message("RAW", "Heartbeat"))
            await next_call(ws)
            with pytest.raises(TimeoutError):
                await command
        await eventually(
            lambda: not server.chargers["RAW"].connected,
            timeout_s=timeout(5),
            message="RAW seen disconnected",
        )
        with pytest.raises(ChargerNotConnected):
            await server.trigger_message("RAW", "Heartbeat")


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_charger_call_is_served_while_a_command_awaits_its_answer(
    outbox: Outbox, version: str
) -> None:
    """A charger that sends Authorize right after receiving RemoteStart, before
    answering it (citrineos#178): the server answers the Authorize at once."""
    async with running(outbox) as server, raw_charger(server, version) as ws:
        await eventually(
            lambda: "RAW" in server.chargers,
            timeout_s=timeout(5),
            message="RAW connected",
        )
        command = asyncio.create_task(server.remote_start("RAW", "TAG1"))
        call = await next_call(ws)
        assert call[2] == (
            "RemoteStartTransaction" if version == "1.6" else "RequestStartTransaction"
        )
        authorize = (
            {"idTag": "TAG1"}
            if version == "1.6"
            else {"idToken": {"idToken": "TAG1", "type": "ISO14443"}}
        )
        await ws.send(json.dumps([2, "auth-1", "Authorize", authorize]))
        answer = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        assert answer[:2] == [3, "auth-1"]
        info = answer[2]["idTagInfo" if version == "1.6" else "idTokenInfo"]
        assert info["status"] == "Accepted"
        assert not command.done()
        await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
        assert await command == "Accepted"


# -- approving a discovered charger sets its password ------------------------------


@pytest.mark.parametrize(
    ("version", "password", "answer"),
    [
        ("1.6", "a-new-charger-pass", "Accepted"),  # 18 bytes: a valid key
        ("2.0.1", "a-new-charger-password-of-30ch", "Accepted"),
        ("1.6", "a-new-charger-password-of-30ch", "Rejected"),  # over 20 bytes
    ],
)
async def test_approving_a_pending_charger_sets_its_password(
    outbox: Outbox,
    procs: Procs,
    tmp_path: Path,
    version: str,
    password: str,
    answer: str,
) -> None:
    state_file = tmp_path / "new.state.json"
    async with running(outbox, allow_discovery=True) as server:
        sim = procs.start(
            sim_argv(
                server,
                "NEW1",
                version,
                "--state",
                str(state_file),
                "--max-backoff",
                "1",
            ),
            name=f"new-charger-{version}",
        )
        await eventually(
            lambda: server.pending.get("NEW1") and server.pending["NEW1"].boot,
            timeout_s=timeout(10),
            message="NEW1 booted and held as pending",
        )
        outcome = await server.approve(
            ChargerConfig(id="NEW1", password=SecretStr(password))
        )
        assert outcome == ApproveOutcome(reconnecting=True, password=answer)
        saved = json.loads(state_file.read_text()) if state_file.exists() else {}
        stored = saved.get("auth_key_hex")

        def accepted() -> bool:
            state = server.chargers.get("NEW1")
            return bool(state and state.connected and state.registration == "accepted")

        if answer == "Accepted":
            assert stored is not None and bytes.fromhex(stored) == password.encode()
            # it reconnects with the new password at once and is accepted
            await eventually(
                accepted, timeout_s=timeout(10), message="NEW1 accepted with it"
            )
        else:
            assert stored is None
            # with no password it is refused (401) until the installer sets one
            await eventually(
                lambda: "401" in sim.log_text(),
                timeout_s=timeout(10),
                message="NEW1 refused without its password",
            )
            assert not accepted()
