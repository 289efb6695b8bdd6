"""The charge-point simulator against a minimal CSMS built here with the ``ocpp``
library (1.6 and 2.0.1): a session's messages and energy, a charging profile that
lowers the power, a dropped connection whose queued transaction messages arrive
later in order and exactly once, profiles that survive a restart, and a
transaction left open by a restart (clean or killed) ended with Reboot/PowerLoss.

The simulator runs in-process (``charger.run`` with a stop event) against a
websockets server on a free loopback port. Waits are multiples of ``UNIT_S``
(``FUSEBOX_TEST_TIME_UNIT``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as Cp16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as Cp201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulators import charger

UNIT_S = float(os.environ.get("FUSEBOX_TEST_TIME_UNIT", "1"))
PASSWORD = "sim-secret-123456"
VERSIONS = ["1.6", "2.0.1"]
TX_ACTIONS = {"StartTransaction", "StopTransaction", "MeterValues", "TransactionEvent"}


def timeout(n: float) -> float:
    return n * UNIT_S


def _now_text(offset_s: float = 0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset_s)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- the test CSMS --------------------------------------------------------------------


@dataclass
class Received:
    action: str
    payload: dict[str, Any]
    message_id: str
    at: float = field(default_factory=lambda: asyncio.get_running_loop().time())


class FakeCsms:
    """Records every CALL a charger sends, answers like a permissive CSMS, and can
    drop a connection right after answering a meter value and refuse reconnects."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.cps: dict[str, Any] = {}
        self.sockets: dict[str, ServerConnection] = {}
        self.accepting = True
        self.drop_after_meter = False
        self.dropped = asyncio.Event()
        self.tx_ids = itertools.count(100)
        self.server: Server | None = None
        self.connects = 0

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    def record(self, action: str, message_id: str, payload: dict[str, Any]) -> None:
        self.received.append(Received(action, payload, message_id))

    def actions(self) -> list[str]:
        return [r.action for r in self.received]

    def tx_messages(self) -> list[Received]:
        """Transaction messages: not StatusNotification, not triggered MeterValues."""
        return [
            r for r in self.received if r.action in TX_ACTIONS and not is_triggered(r)
        ]

    async def after_meter(self, cp_id: str) -> None:
        if self.drop_after_meter:
            self.drop_after_meter = False
            self.accepting = False
            await self.sockets[cp_id].close()
            self.dropped.set()

    def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if not self.accepting:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "not now\n")
        cp_id = request.path.rstrip("/").rsplit("/", 1)[-1]
        expected = base64.b64encode(f"{cp_id}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "who are you?\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp_id = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        cls = Csms16 if ws.subprotocol == "ocpp1.6" else Csms201
        cp = cls(cp_id, ws, self)
        self.cps[cp_id] = cp
        self.sockets[cp_id] = ws
        self.connects += 1
        with contextlib.suppress(ConnectionClosed):
            await cp.start()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FakeCsms]:
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6", "ocpp2.0.1"],  # type: ignore[list-item]
            process_request=self._process_request,
        ) as server:
            self.server = server
            yield self

    async def call(self, cp_id: str, request: Any) -> Any:
        return await self.cps[cp_id].call(request, suppress=False)


class Csms16(Cp16):  # type: ignore[misc]
    def __init__(self, cp_id: str, ws: ServerConnection, csms: FakeCsms) -> None:
        super().__init__(cp_id, ws, 30)
        self.csms = csms

    @on("BootNotification")
    def boot(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("BootNotification", call_unique_id, kw)
        return result16.BootNotification(
            current_time=_now_text(), interval=30, status="Accepted"
        )

    @on("Heartbeat")
    def heartbeat(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("Heartbeat", call_unique_id, kw)
        return result16.Heartbeat(current_time=_now_text())

    @on("StatusNotification")
    def status(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("StatusNotification", call_unique_id, kw)
        return result16.StatusNotification()

    @on("Authorize")
    def authorize(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("Authorize", call_unique_id, kw)
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on("StartTransaction")
    def start_tx(self, call_unique_id: str, **kw: Any) -> Any:
        tx_id = next(self.csms.tx_ids)
        self.csms.record("StartTransaction", call_unique_id, {**kw, "tx_id": tx_id})
        return result16.StartTransaction(
            transaction_id=tx_id, id_tag_info={"status": "Accepted"}
        )

    @on("StopTransaction")
    def stop_tx(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("StopTransaction", call_unique_id, kw)
        return result16.StopTransaction()

    @on("MeterValues")
    def meter_values(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("MeterValues", call_unique_id, kw)
        return result16.MeterValues()

    @after("MeterValues")
    async def after_meter_values(self, **_: Any) -> None:
        await self.csms.after_meter(self.id)


class Csms201(Cp201):  # type: ignore[misc]
    def __init__(self, cp_id: str, ws: ServerConnection, csms: FakeCsms) -> None:
        super().__init__(cp_id, ws, 30)
        self.csms = csms

    @on("BootNotification")
    def boot(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("BootNotification", call_unique_id, kw)
        return result201.BootNotification(
            current_time=_now_text(), interval=30, status="Accepted"
        )

    @on("Heartbeat")
    def heartbeat(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("Heartbeat", call_unique_id, kw)
        return result201.Heartbeat(current_time=_now_text())

    @on("StatusNotification")
    def status(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("StatusNotification", call_unique_id, kw)
        return result201.StatusNotification()

    @on("Authorize")
    def authorize(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("Authorize", call_unique_id, kw)
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def transaction_event(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("TransactionEvent", call_unique_id, kw)
        return result201.TransactionEvent()

    @after("TransactionEvent")
    async def after_event(self, event_type: str, **_: Any) -> None:
        if event_type == "Updated":
            await self.csms.after_meter(self.id)

    @on("MeterValues")
    def meter_values(self, call_unique_id: str, **kw: Any) -> Any:
        self.csms.record("MeterValues", call_unique_id, kw)
        return result201.MeterValues()


# --- helpers --------------------------------------------------------------------------


def sim_args(csms: FakeCsms, version: str, tmp_path: Path, *extra: str) -> Any:
    parser = argparse.ArgumentParser()
    charger.add_arguments(parser)
    return parser.parse_args(
        [
            "--url",
            f"ws://127.0.0.1:{csms.port}/ocpp",
            "--id",
            "CP1",
            "--password",
            PASSWORD,
            "--ocpp",
            version,
            "--meter-interval",
            "0.5",
            "--speed",
            "60",
            "--ev-max-kw",
            "11",
            "--phases",
            "3",
            "--max-backoff",
            "0.5",
            "--ledger",
            str(tmp_path / "ledger.jsonl"),
            "--state",
            str(tmp_path / "state.json"),
            *extra,
        ]
    )


def write_scenario(tmp_path: Path, stop_at_s: float) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            [
                {"at": 0.3, "action": "plug"},
                {"at": 0.4, "action": "authorize+start", "id_tag": "TAG1"},
                {"at": stop_at_s, "action": "stop"},
                {"at": stop_at_s + 0.1, "action": "unplug"},
            ]
        )
    )
    return str(path)


def read_ledger(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def eventually(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def is_triggered(received: Received) -> bool:
    if received.action != "MeterValues":
        return False
    samples = received.payload["meter_value"][0]["sampled_value"]
    return bool(samples[0].get("context") == "Trigger")


def energy_of(received: Received) -> float:
    """Energy register (Wh) of a 1.6 MeterValues or a 2.0.1 TransactionEvent."""
    for sample in received.payload["meter_value"][0]["sampled_value"]:
        if sample.get("measurand") == "Energy.Active.Import.Register":
            return float(sample["value"])
    raise AssertionError("no energy register")


def power_of(received: Received) -> float:
    for sample in received.payload["meter_value"][0]["sampled_value"]:
        if sample.get("measurand") == "Power.Active.Import":
            return float(sample["value"])
    raise AssertionError("no power")


def is_meter(received: Received) -> bool:
    if received.action == "MeterValues":
        return True
    return (
        received.action == "TransactionEvent"
        and received.payload["event_type"] == "Updated"
    )


def start_stop(csms: FakeCsms, version: str) -> tuple[Received, Received]:
    tx = csms.tx_messages()
    if version == "1.6":
        (start,) = [r for r in tx if r.action == "StartTransaction"]
        (stop,) = [r for r in tx if r.action == "StopTransaction"]
    else:
        (start,) = [r for r in tx if r.payload["event_type"] == "Started"]
        (stop,) = [r for r in tx if r.payload["event_type"] == "Ended"]
    return start, stop


def meter_start_stop(version: str, start: Received, stop: Received) -> tuple[int, int]:
    if version == "1.6":
        return int(start.payload["meter_start"]), int(stop.payload["meter_stop"])
    return int(energy_of(start)), int(energy_of(stop))


def set_profile_request(version: str, limit_w: float) -> Any:
    start = _now_text(-60)
    if version == "1.6":
        return call16.SetChargingProfile(
            connector_id=1,
            cs_charging_profiles={
                "charging_profile_id": 7,
                "stack_level": 1,
                "charging_profile_purpose": "TxDefaultProfile",
                "charging_profile_kind": "Absolute",
                "charging_schedule": {
                    "start_schedule": start,
                    "charging_rate_unit": "W",
                    "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
                },
            },
        )
    return call201.SetChargingProfile(
        evse_id=1,
        charging_profile={
            "id": 7,
            "stack_level": 1,
            "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": [
                {
                    "id": 1,
                    "start_schedule": start,
                    "charging_rate_unit": "W",
                    "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
                }
            ],
        },
    )


async def composite_limit_w(csms: FakeCsms, version: str) -> float:
    if version == "1.6":
        result = await csms.call(
            "CP1",
            call16.GetCompositeSchedule(
                connector_id=1, duration=600, charging_rate_unit="W"
            ),
        )
        assert result.status == "Accepted"
        periods = result.charging_schedule["charging_schedule_period"]
    else:
        result = await csms.call(
            "CP1",
            call201.GetCompositeSchedule(
                duration=600, evse_id=1, charging_rate_unit="W"
            ),
        )
        assert result.status == "Accepted"
        periods = result.schedule["charging_schedule_period"]
    assert periods[0]["start_period"] == 0
    return float(periods[0]["limit"])


# --- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
async def test_session_messages_and_energy(version: str, tmp_path: Path) -> None:
    csms = FakeCsms()
    async with csms.running():
        args = sim_args(
            csms, version, tmp_path, "--scenario", write_scenario(tmp_path, 3.0)
        )
        code = await asyncio.wait_for(charger.run(args), timeout(15))
    assert code == 0
    actions = csms.actions()
    assert actions[0] == "BootNotification"
    assert "Authorize" in actions and "StatusNotification" in actions
    tx = csms.tx_messages()
    start, stop = start_stop(csms, version)
    assert tx[0] is start and tx[-1] is stop
    assert actions.index("Authorize") < csms.received.index(start)
    meters = [r for r in tx if is_meter(r)]
    assert len(meters) >= 3
    meter_start, meter_stop = meter_start_stop(version, start, stop)
    registers = [energy_of(m) for m in meters]
    assert registers == sorted(registers)
    assert meter_start <= registers[0] and registers[-1] <= meter_stop
    # 11 kW at 60x: ~183 Wh per real second; the register moved ~2.6 s worth
    assert 300 < meter_stop - meter_start < 700
    charging_powers = [power_of(m) for m in meters if power_of(m) > 0]
    assert charging_powers and max(charging_powers) == pytest.approx(11_000, abs=1)
    if version == "1.6":
        tx_id = start.payload["tx_id"]
        assert all(r.payload["transaction_id"] == tx_id for r in tx[1:])
    else:
        assert [r.payload["seq_no"] for r in tx] == list(range(len(tx)))
        ids = {r.payload["transaction_info"]["transaction_id"] for r in tx}
        assert len(ids) == 1
        assert not any(r.payload.get("offline") for r in tx)
    # the ledger is what the CSMS acknowledged, in the same order
    ledger = read_ledger(tmp_path)
    assert [e["message_id"] for e in ledger] == [r.message_id for r in tx]
    assert ledger[0]["kind"] == "start" and ledger[-1]["kind"] == "stop"
    assert ledger[0]["meter_start_wh"] == meter_start
    assert ledger[-1]["meter_stop_wh"] == meter_stop


@pytest.mark.parametrize("version", VERSIONS)
async def test_profile_lowers_the_power(version: str, tmp_path: Path) -> None:
    csms = FakeCsms()
    stop = asyncio.Event()
    async with csms.running():
        args = sim_args(csms, version, tmp_path, "--plug-in-after", "0.2")
        sim = asyncio.create_task(charger.run(args, stop=stop))
        try:
            await eventually(
                lambda: any(
                    is_meter(r) and power_of(r) > 10_000 for r in csms.received
                ),
                timeout(10),
                "meter values at full power",
            )
            result = await csms.call("CP1", set_profile_request(version, 6900.0))
            assert result.status == "Accepted"
            accepted_at = len(csms.received)
            await eventually(
                lambda: sum(1 for r in csms.received[accepted_at:] if is_meter(r)) >= 3,
                timeout(10),
                "meter values after the profile",
            )
            later = [r for r in csms.received[accepted_at:] if is_meter(r)]
            assert all(power_of(r) == pytest.approx(6900, abs=1) for r in later[1:])
            assert await composite_limit_w(csms, version) == pytest.approx(6900)
            # below 6 A per phase the EV cannot charge: SuspendedEVSE, 0 W
            result = await csms.call("CP1", set_profile_request(version, 3000.0))
            assert result.status == "Accepted"
            paused_at = len(csms.received)
            await eventually(
                lambda: sum(1 for r in csms.received[paused_at:] if is_meter(r)) >= 3,
                timeout(10),
                "meter values after the pause",
            )
            paused = [r for r in csms.received[paused_at:] if is_meter(r)]
            assert power_of(paused[-1]) == 0
            if version == "1.6":
                statuses = [
                    r.payload["status"]
                    for r in csms.received[paused_at:]
                    if r.action == "StatusNotification"
                ]
                assert "SuspendedEVSE" in statuses
            else:
                states = [
                    r.payload["transaction_info"]["charging_state"]
                    for r in csms.received[paused_at:]
                    if r.action == "TransactionEvent"
                ]
                assert "SuspendedEVSE" in states
        finally:
            stop.set()
            assert await asyncio.wait_for(sim, timeout(5)) == 0


@pytest.mark.parametrize("version", VERSIONS)
async def test_dropped_connection_delivers_queue_in_order(
    version: str, tmp_path: Path
) -> None:
    csms = FakeCsms()
    async with csms.running():
        args = sim_args(
            csms, version, tmp_path, "--scenario", write_scenario(tmp_path, 4.0)
        )
        sim = asyncio.create_task(charger.run(args))
        await eventually(
            lambda: any(is_meter(r) for r in csms.received),
            timeout(10),
            "a first meter value",
        )
        csms.drop_after_meter = True
        await asyncio.wait_for(csms.dropped.wait(), timeout(5))
        during = len(csms.received)
        await asyncio.sleep(2.0)  # the charger is offline; meter values queue up
        assert len(csms.received) == during
        csms.accepting = True
        assert await asyncio.wait_for(sim, timeout(15)) == 0
    assert csms.connects == 2
    tx = csms.tx_messages()
    message_ids = [r.message_id for r in tx]
    assert len(message_ids) == len(set(message_ids)), "a message arrived twice"
    ledger = read_ledger(tmp_path)
    assert [e["message_id"] for e in ledger] == message_ids  # exactly once, in order
    offline = [e for e in ledger if e["offline"]]
    assert len(offline) >= 3
    start, stop = start_stop(csms, version)
    assert tx[0] is start and tx[-1] is stop
    timestamps = [e["timestamp"] for e in ledger]
    assert timestamps == sorted(timestamps)
    registers = [energy_of(r) for r in tx if is_meter(r)]
    assert registers == sorted(registers)
    if version == "1.6":
        tx_id = start.payload["tx_id"]
        assert all(r.payload["transaction_id"] == tx_id for r in tx[1:])
    else:
        assert [r.payload["seq_no"] for r in tx] == list(range(len(tx)))
        late = [r for r in tx if r.payload.get("offline")]
        assert late and all(r.at >= tx[0].at for r in late)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["queue"] == []


@pytest.mark.parametrize("version", VERSIONS)
async def test_profiles_survive_a_restart(version: str, tmp_path: Path) -> None:
    csms = FakeCsms()
    async with csms.running():
        for run in (1, 2):
            stop = asyncio.Event()
            args = sim_args(csms, version, tmp_path)
            sim = asyncio.create_task(charger.run(args, stop=stop))
            try:
                await eventually(
                    lambda run=run: (
                        csms.connects == run and "StatusNotification" in csms.actions()
                    ),
                    timeout(5),
                    "the charger to connect",
                )
                if run == 1:
                    assert await composite_limit_w(csms, version) == pytest.approx(
                        22_080
                    )
                    result = await csms.call("CP1", set_profile_request(version, 7200))
                    assert result.status == "Accepted"
                assert await composite_limit_w(csms, version) == pytest.approx(7200)
            finally:
                stop.set()
                assert await asyncio.wait_for(sim, timeout(5)) == 0
    state = json.loads((tmp_path / "state.json").read_text())
    assert len(state["profiles"]) == 1


@pytest.mark.parametrize("version", VERSIONS)
async def test_remote_control(version: str, tmp_path: Path) -> None:
    """Configuration, remote start/stop, trigger, clear, availability and reset."""
    csms = FakeCsms()
    v16 = version == "1.6"
    stop = asyncio.Event()
    async with csms.running():
        sim = asyncio.create_task(
            charger.run(sim_args(csms, version, tmp_path), stop=stop)
        )
        try:
            await eventually(
                lambda: "StatusNotification" in csms.actions(),
                timeout(5),
                "the charger to connect",
            )
            if v16:
                conf = await csms.call(
                    "CP1",
                    call16.GetConfiguration(key=["ChargeProfileMaxStackLevel", "Nope"]),
                )
                assert conf.configuration_key == [
                    {
                        "key": "ChargeProfileMaxStackLevel",
                        "readonly": True,
                        "value": "10",
                    }
                ]
                assert conf.unknown_key == ["Nope"]
                everything = await csms.call("CP1", call16.GetConfiguration())
                keys = {k["key"]: k["value"] for k in everything.configuration_key}
                assert keys["ChargingScheduleAllowedChargingRateUnit"] == (
                    "Current,Power"
                )
                assert keys["ChargingScheduleMaxPeriods"] == "24"
                changed = await csms.call(
                    "CP1",
                    call16.ChangeConfiguration(key="HeartbeatInterval", value="1"),
                )
                assert changed.status == "Accepted"
                refused = await csms.call(
                    "CP1",
                    call16.ChangeConfiguration(
                        key="ChargeProfileMaxStackLevel", value="3"
                    ),
                )
                assert refused.status == "Rejected"
            else:
                got = await csms.call(
                    "CP1",
                    call201.GetVariables(
                        get_variable_data=[
                            {
                                "component": {"name": "SmartChargingCtrlr"},
                                "variable": {"name": "ProfileStackLevel"},
                            },
                            {
                                "component": {"name": "Nope"},
                                "variable": {"name": "Nope"},
                            },
                        ]
                    ),
                )
                first, second = got.get_variable_result
                assert first["attribute_status"] == "Accepted"
                assert first["attribute_value"] == "10"
                assert second["attribute_status"] == "UnknownComponent"
                changed = await csms.call(
                    "CP1",
                    call201.SetVariables(
                        set_variable_data=[
                            {
                                "component": {"name": "OCPPCommCtrlr"},
                                "variable": {"name": "HeartbeatInterval"},
                                "attribute_value": "1",
                            }
                        ]
                    ),
                )
                assert changed.set_variable_result[0]["attribute_status"] == "Accepted"
            await eventually(
                lambda: "Heartbeat" in csms.actions(), timeout(4), "a heartbeat"
            )

            if v16:
                started = await csms.call(
                    "CP1",
                    call16.RemoteStartTransaction(id_tag="REMOTE1", connector_id=1),
                )
            else:
                started = await csms.call(
                    "CP1",
                    call201.RequestStartTransaction(
                        id_token={"id_token": "REMOTE1", "type": "ISO14443"},
                        remote_start_id=42,
                        evse_id=1,
                    ),
                )
            assert started.status == "Accepted"
            await eventually(
                lambda: len(csms.tx_messages()) >= 1, timeout(5), "the start"
            )
            start = csms.tx_messages()[0]
            if v16:
                assert start.payload["id_tag"] == "REMOTE1"
                tx_id: Any = start.payload["tx_id"]
            else:
                assert start.payload["trigger_reason"] == "RemoteStart"
                assert start.payload["transaction_info"]["remote_start_id"] == 42
                tx_id = start.payload["transaction_info"]["transaction_id"]

            if v16:
                triggered = await csms.call(
                    "CP1",
                    call16.TriggerMessage(
                        requested_message="MeterValues", connector_id=1
                    ),
                )
            else:
                triggered = await csms.call(
                    "CP1",
                    call201.TriggerMessage(
                        requested_message="MeterValues", evse={"id": 1}
                    ),
                )
            assert triggered.status == "Accepted"

            def trigger_seen() -> bool:
                return any(
                    r.action == "MeterValues"
                    and r.payload["meter_value"][0]["sampled_value"][0]["context"]
                    == "Trigger"
                    for r in csms.received
                )

            await eventually(trigger_seen, timeout(3), "the triggered meter values")

            assert (
                await csms.call("CP1", set_profile_request(version, 8000))
            ).status == "Accepted"
            clear = (
                call16.ClearChargingProfile(id=7)
                if v16
                else call201.ClearChargingProfile(charging_profile_id=7)
            )
            assert (await csms.call("CP1", clear)).status == "Accepted"
            assert (await csms.call("CP1", clear)).status == "Unknown"

            inoperative = (
                call16.ChangeAvailability(connector_id=1, type="Inoperative")
                if v16
                else call201.ChangeAvailability(
                    operational_status="Inoperative", evse={"id": 1}
                )
            )
            assert (await csms.call("CP1", inoperative)).status == "Scheduled"
            operative = (
                call16.ChangeAvailability(connector_id=1, type="Operative")
                if v16
                else call201.ChangeAvailability(
                    operational_status="Operative", evse={"id": 1}
                )
            )
            assert (await csms.call("CP1", operative)).status == "Accepted"

            stopped = await csms.call(
                "CP1",
                call16.RemoteStopTransaction(transaction_id=tx_id)
                if v16
                else call201.RequestStopTransaction(transaction_id=tx_id),
            )
            assert stopped.status == "Accepted"

            def stop_seen() -> bool:
                last = csms.tx_messages()[-1]
                if v16:
                    return (
                        last.action == "StopTransaction"
                        and last.payload["reason"] == "Remote"
                    )
                return (
                    last.payload["event_type"] == "Ended"
                    and last.payload["transaction_info"]["stopped_reason"] == "Remote"
                )

            await eventually(stop_seen, timeout(5), "the remote stop")

            reset = (
                call16.Reset(type="Soft") if v16 else call201.Reset(type="Immediate")
            )
            assert (await csms.call("CP1", reset)).status == "Accepted"
            await eventually(
                lambda: (
                    csms.connects == 2 and csms.actions().count("BootNotification") == 2
                ),
                timeout(5),
                "a reconnect and boot after the reset",
            )
        finally:
            stop.set()
            assert await asyncio.wait_for(sim, timeout(5)) == 0


@pytest.mark.parametrize("how", ["clean", "killed"])
@pytest.mark.parametrize("version", VERSIONS)
async def test_open_transaction_is_ended_after_a_restart(
    version: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A charger that comes back with a transaction still open in its state ends
    it: reason Reboot after a clean shutdown, PowerLoss after a kill (the state
    file as it was when the process died), behind what was queued before."""
    csms = FakeCsms()
    async with csms.running():
        stop = asyncio.Event()
        sim = asyncio.create_task(
            charger.run(
                sim_args(csms, version, tmp_path, "--plug-in-after", "0.2"), stop=stop
            )
        )
        await eventually(
            lambda: sum(1 for r in csms.received if is_meter(r)) >= 2,
            timeout(10),
            "meter values",
        )
        if how == "killed":
            # the link goes down, meter values queue up offline, then the process
            # dies: nothing after this point reaches the disk or the CSMS
            csms.drop_after_meter = True
            await asyncio.wait_for(csms.dropped.wait(), timeout(5))

            def offline_queued() -> bool:
                state = json.loads((tmp_path / "state.json").read_text())
                return sum(1 for e in state["queue"] if e["offline"]) >= 2

            await eventually(offline_queued, timeout(10), "meter values queued")
            monkeypatch.setattr(charger.StateStore, "save", lambda self: None)
        stop.set()
        assert await asyncio.wait_for(sim, timeout(5)) == 0
        monkeypatch.undo()
        before = len(csms.received)
        csms.accepting = True
        # the restart: no scenario, the EV is gone
        stop = asyncio.Event()
        sim = asyncio.create_task(
            charger.run(sim_args(csms, version, tmp_path), stop=stop)
        )
        try:
            await eventually(
                lambda: any(
                    r.action == "StopTransaction"
                    or r.payload.get("event_type") == "Ended"
                    for r in csms.received[before:]
                ),
                timeout(10),
                "the interrupted transaction ended",
            )
        finally:
            stop.set()
            assert await asyncio.wait_for(sim, timeout(5)) == 0
    reason = "Reboot" if how == "clean" else "PowerLoss"
    # a message whose answer the drop lost is sent again with its message id
    seen: set[str] = set()
    tx = []
    for r in csms.tx_messages():
        if r.message_id not in seen:
            seen.add(r.message_id)
            tx.append(r)
    start, stop_msg = start_stop(csms, version)
    assert tx[0] is start and tx[-1] is stop_msg
    assert csms.received.index(stop_msg) >= before
    meters = [r for r in tx if is_meter(r)]
    if how == "killed":
        assert any(csms.received.index(m) >= before for m in meters), "queue lost"
    meter_start, meter_stop = meter_start_stop(version, start, stop_msg)
    assert max(energy_of(m) for m in meters) <= meter_stop
    assert meter_start < meter_stop
    stopped_at = datetime.fromisoformat(stop_msg.payload["timestamp"])
    assert all(
        datetime.fromisoformat(m.payload["meter_value"][0]["timestamp"]) <= stopped_at
        for m in meters
    )
    if version == "1.6":
        assert stop_msg.payload["transaction_id"] == start.payload["tx_id"]
        assert stop_msg.payload["reason"] == reason
    else:
        info = stop_msg.payload["transaction_info"]
        started = start.payload["transaction_info"]["transaction_id"]
        assert info["transaction_id"] == started
        assert info["stopped_reason"] == reason
        assert stop_msg.payload["trigger_reason"] == "AbnormalCondition"
        assert stop_msg.payload["offline"] is True
        assert [r.payload["seq_no"] for r in tx] == list(range(len(tx)))
    ledger = read_ledger(tmp_path)
    assert ledger[-1]["kind"] == "stop" and ledger[-1]["reason"] == reason
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["open_tx"] == {} and state["queue"] == []


# --- the shared simulated clock ------------------------------------------------------

SIM_START = datetime(2025, 1, 15, 17, 55, tzinfo=UTC)
SIM_SPEED = 600.0


def _sim_clock_spec(lead_s: float = 0.5) -> str:
    """Simulated 17:55Z ``lead_s`` real seconds from now, 600 times faster."""
    from protocols.clock import sim_spec

    anchor = datetime.now(UTC).timestamp() + lead_s
    return sim_spec(SIM_START, anchor=anchor, speed=SIM_SPEED)


def _meter_time(received: Received) -> datetime:
    return datetime.fromisoformat(
        received.payload["meter_value"][0]["timestamp"].replace("Z", "+00:00")
    )


@pytest.mark.parametrize("version", VERSIONS)
async def test_on_a_simulated_clock(version: str, tmp_path: Path) -> None:
    """``--clock sim:...``: scenario times are on the clock (ISO), the EV integrates
    simulated seconds (``--speed`` is ignored), meter values come every
    ``--meter-interval`` simulated seconds stamped with the clock, a profile's
    periods are evaluated on the clock, and ``--power-file`` follows the EV."""
    csms = FakeCsms()
    scenario = tmp_path / "night.json"
    scenario.write_text(
        json.dumps(
            [
                {"at": "2025-01-15T18:00:00Z", "action": "plug"},
                {"at": "2025-01-15T18:00:30Z", "action": "start", "id_tag": "T1"},
                {"at": "2025-01-15T18:30:00Z", "action": "stop"},
                {"at": "2025-01-15T18:30:30Z", "action": "unplug"},
            ]
        )
    )
    power_file = tmp_path / "power.json"
    powers: list[float] = []
    async with csms.running():
        args = sim_args(csms, version, tmp_path, "--scenario", str(scenario))
        args.meter_interval = 60.0  # simulated seconds
        args.clock = _sim_clock_spec()
        args.power_file = str(power_file)
        run = asyncio.create_task(charger.run(args))
        # a TxDefaultProfile in simulated time: 11 kW, then 6.9 kW from 18:15Z
        await eventually(
            lambda: "BootNotification" in csms.actions(), timeout(10), "boot"
        )
        profile = {
            "charging_profile_id": 7,
            "stack_level": 0,
            "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute",
        }
        periods = [
            {"start_period": 0, "limit": 11000.0},
            {"start_period": 1200, "limit": 6900.0},
        ]
        if version == "1.6":
            request: Any = call16.SetChargingProfile(
                connector_id=0,
                cs_charging_profiles={
                    **profile,
                    "charging_schedule": {
                        "start_schedule": "2025-01-15T17:55:00Z",
                        "charging_rate_unit": "W",
                        "charging_schedule_period": periods,
                    },
                },
            )
        else:
            request = call201.SetChargingProfile(
                evse_id=0,
                charging_profile={
                    "id": 7,
                    "stack_level": 0,
                    "charging_profile_purpose": "TxDefaultProfile",
                    "charging_profile_kind": "Absolute",
                    "charging_schedule": [
                        {
                            "id": 1,
                            "start_schedule": "2025-01-15T17:55:00Z",
                            "charging_rate_unit": "W",
                            "charging_schedule_period": periods,
                        }
                    ],
                },
            )
        assert (await csms.call("CP1", request)).status == "Accepted"
        while not run.done():
            with contextlib.suppress(FileNotFoundError, ValueError):
                powers.append(json.loads(power_file.read_text())["power_w"])
            await asyncio.sleep(0.02)
        assert await asyncio.wait_for(run, timeout(20)) == 0
    start, stop = start_stop(csms, version)
    meter_start, meter_stop = meter_start_stop(version, start, stop)
    meters = [r for r in csms.tx_messages() if is_meter(r) and r is not start]
    meters = [r for r in meters if r is not stop and power_of(r) > 0]
    times = [_meter_time(r) for r in meters]
    assert times and times == sorted(times)
    assert datetime(2025, 1, 15, 18, 0, 30, tzinfo=UTC) <= times[0]
    assert times[-1] <= datetime(2025, 1, 15, 18, 30, 30, tzinfo=UTC)
    # every simulated minute (the clock runs 10 simulated minutes a real second,
    # so a 0.1 s stall of a busy machine is a simulated minute: the median gap is
    # the interval, none is short, and a stall may stretch one)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert 15 <= len(meters) <= 32, times
    steady = sorted(gap for gap in gaps if gap > 1)
    assert steady and 50 <= steady[len(steady) // 2] <= 70, gaps
    assert steady[0] >= 40 and steady[-1] <= 300, gaps
    early = [power_of(r) for r, t in zip(meters, times, strict=True) if t.minute < 14]
    late = [power_of(r) for r, t in zip(meters, times, strict=True) if t.minute >= 16]
    assert early and all(p == pytest.approx(11_000, abs=1) for p in early)
    assert late and all(p == pytest.approx(6_900, abs=1) for p in late)
    # 14.5 min at 11 kW + 15 min at 6.9 kW = 4.4 kWh (--speed 60 would be 1/10)
    assert meter_stop - meter_start == pytest.approx(4_383, rel=0.06)
    assert max(powers) == pytest.approx(11_000, abs=1)
    assert 6_900 in powers
    assert json.loads(power_file.read_text())["power_w"] == 0.0
