"""Authorize, transactions and meter values on the edge's OCPP server, over real
websockets (raw frames) into a real outbox and transaction store in ``tmp_path``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from edge.ocpp.config import ChargerConfig, OcppServerConfig
from edge.ocpp.server import OcppServer
from edge.ocpp.transactions import meter_readings, store_path_beside
from edge.outbox import Outbox
from protocols.events import SessionStarted, SessionStopped
from tests.harness.timing import timeout

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
# CP2's firmware breaks the closed schemas (``Hz``, ``kV``): lenient
CHARGERS = [ChargerConfig(id="CP1"), ChargerConfig(id="CP2", lenient=True)]
TAGS = [{"id": "TAG1"}, {"id": "STOLEN", "status": "Blocked"}]


def _clock() -> datetime:
    return NOW


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    yield box
    await box.close()


@asynccontextmanager
async def running(
    outbox: Outbox, clock: Callable[[], datetime] = _clock, **settings: Any
) -> AsyncIterator[OcppServer]:
    settings.setdefault("id_tags", TAGS)
    config = OcppServerConfig(
        port=0, security_profile=0, allow_unsecured_lab=True, **settings
    )
    server = OcppServer(
        config,
        CHARGERS,
        outbox,
        clock=clock,
        transactions_path=store_path_beside(outbox.store.path),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def charger(
    server: OcppServer, version: str = "1.6", identity: str = "CP1"
) -> AsyncIterator[ClientConnection]:
    uri = f"ws://127.0.0.1:{server.port}/ocpp/{identity}"
    async with connect(
        uri, subprotocols=[Subprotocol(f"ocpp{version}")], open_timeout=timeout(5)
    ) as ws:
        yield ws


_ids = iter(range(1, 1_000_000))


async def call(ws: ClientConnection, action: str, payload: dict[str, Any]) -> Any:
    uid = f"m{next(_ids)}"
    await ws.send(json.dumps([2, uid, action, payload]))
    answer = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
    assert answer[:2] == [3, uid], answer
    return answer[2]


async def stored(outbox: Outbox) -> tuple[list[tuple[str, str, Any]], list[Any]]:
    """(events as (source, kind, data), readings as (device, quantity, ts, value))."""
    events, readings = [], []
    for row in await outbox.read(1, None, 10_000):
        source, name = await outbox.call(outbox.store.stream_name, row.stream)
        if row.data is not None:
            events.append((source, name, msgpack.unpackb(row.data)))
        else:
            readings.append((source, name, row.ts_ms, row.value))
    return events, readings


def _start(meter: int = 1000, ts: str = "2026-03-01T11:00:00Z") -> dict[str, Any]:
    return {"connectorId": 1, "idTag": "TAG1", "meterStart": meter, "timestamp": ts}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# -- authorisation -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_authorize_answers_from_the_local_list(
    outbox: Outbox, version: str
) -> None:
    async def status(ws: ClientConnection, tag: str) -> str:
        if version == "1.6":
            answer = await call(ws, "Authorize", {"idTag": tag})
            return str(answer["idTagInfo"]["status"])
        answer = await call(
            ws, "Authorize", {"idToken": {"idToken": tag, "type": "ISO14443"}}
        )
        return str(answer["idTokenInfo"]["status"])

    async with running(outbox) as server, charger(server, version) as ws:
        assert await status(ws, "TAG1") == "Accepted"
        assert await status(ws, "tag1") == "Accepted"  # case-insensitive
        assert await status(ws, "STOLEN") == "Blocked"
        assert await status(ws, "NOBODY") == "Invalid"
    async with (
        running(outbox, allow_unknown_id_tags=True) as server,
        charger(server, version) as ws,
    ):
        assert await status(ws, "NOBODY") == "Accepted"
        assert await status(ws, "STOLEN") == "Blocked"  # listed: still refused


async def test_the_authorisation_cache_outlives_the_list_entry(
    outbox: Outbox,
) -> None:
    async with running(outbox) as server, charger(server) as ws:
        assert (await call(ws, "Authorize", {"idTag": "TAG1"}))["idTagInfo"] == {
            "status": "Accepted"
        }
    # the tag left the list: the cache still accepts it, unless the cache is off
    async with running(outbox, id_tags=[]) as server, charger(server) as ws:
        answer = await call(ws, "Authorize", {"idTag": "TAG1"})
        assert answer["idTagInfo"]["status"] == "Accepted"
    async with (
        running(outbox, id_tags=[], id_tag_cache_s=0) as server,
        charger(server) as ws,
    ):
        answer = await call(ws, "Authorize", {"idTag": "TAG1"})
        assert answer["idTagInfo"]["status"] == "Invalid"


def test_id_tags_config_forms() -> None:
    short = OcppServerConfig(id_tags=["A", "B"])  # type: ignore[list-item]
    assert [(t.id, t.status) for t in short.id_tags] == [
        ("A", "Accepted"),
        ("B", "Accepted"),
    ]
    with pytest.raises(ValueError, match="twice"):
        OcppServerConfig(id_tags=["A", "a"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        OcppServerConfig(id_tags=[{"id": "A", "status": "Maybe"}])  # type: ignore[list-item]


# -- 1.6 transactions ------------------------------------------------------------


async def test_1_6_ids_rise_survive_a_restart_and_redelivery_keeps_them(
    outbox: Outbox, tmp_path: Path
) -> None:
    async with running(outbox) as server, charger(server) as ws:
        first = await call(ws, "StartTransaction", _start(1000))
        second = await call(ws, "StartTransaction", _start(2000))
        again = await call(ws, "StartTransaction", _start(1000))  # redelivered
    assert first["idTagInfo"] == {"status": "Accepted"}
    id1, id2 = first["transactionId"], second["transactionId"]
    assert isinstance(id1, int) and 0 < id1 < id2 < 2**31
    assert again["transactionId"] == id1
    assert store_path_beside(tmp_path / "outbox.db").exists()
    # a new server process on the same files: ids keep rising, redelivery holds
    async with running(outbox) as server, charger(server) as ws:
        third = await call(ws, "StartTransaction", _start(3000))
        late = await call(ws, "StartTransaction", _start(2000))
    assert third["transactionId"] > id2
    assert late["transactionId"] == id2
    events, _ = await stored(outbox)
    started = [SessionStarted.model_validate(d) for _, k, d in events]
    assert {(s.transaction_id, s.meter_start_wh) for s in started} == {
        (str(id1), 1000),
        (str(id2), 2000),
        (str(third["transactionId"]), 3000),
    }
    assert started[0].charger_id == "CP1" and started[0].connector_id == 1
    assert started[0].id_tag == "TAG1"
    assert started[0].started_at == datetime(2026, 3, 1, 11, tzinfo=UTC)


async def test_1_6_stops_are_always_acknowledged(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server) as ws:
        start = await call(ws, "StartTransaction", _start(1000))
        tx = start["transactionId"]
        stop = {"meterStop": 5000, "timestamp": "2026-03-01T11:30:00Z"}
        ok = await call(
            ws,
            "StopTransaction",
            {**stop, "transactionId": tx, "idTag": "TAG1", "reason": "Local"},
        )
        dup = await call(ws, "StopTransaction", {**stop, "transactionId": tx})
        unknown = await call(ws, "StopTransaction", {**stop, "transactionId": 424242})
        minus = await call(
            ws, "StopTransaction", {**stop, "transactionId": -1, "idTag": "NOBODY"}
        )
        meter = await call(
            ws,
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": -1,
                "meterValue": [
                    {
                        "timestamp": "2026-03-01T11:10:00Z",
                        "sampledValue": [{"value": "1500"}],
                    }
                ],
            },
        )
    assert ok == {"idTagInfo": {"status": "Accepted"}}
    assert dup == {} and unknown == {} and meter == {}
    assert minus == {"idTagInfo": {"status": "Invalid"}}
    events, readings = await stored(outbox)
    stops = [
        SessionStopped.model_validate(d) for _, k, d in events if k == "session_stopped"
    ]
    assert [(s.transaction_id, s.meter_stop_wh) for s in stops] == [
        (str(tx), 5000),
        (str(tx), 5000),
        ("424242", 5000),
    ]
    assert stops[0].reason == "Local" and stops[0].stopped_at.minute == 30
    unmatched = [d for _, k, d in events if k == "session_stop_unmatched"]
    assert unmatched == [
        {
            "transaction_id": -1,
            "stopped_at": "2026-03-01T11:30:00.000Z",
            "meter_stop_wh": 5000.0,
            "reason": "",
            "id_tag": "NOBODY",
        }
    ]
    assert readings == [
        ("CP1", "import_energy_wh", _ms("2026-03-01T11:10:00+00:00"), 1500.0)
    ]


async def test_1_6_meter_values_become_readings_and_bad_samples_are_skipped(
    outbox: Outbox,
) -> None:
    samples = [
        {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
        {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "10", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
        {"value": "11", "measurand": "Current.Import", "unit": "A", "phase": "L2"},
        {"value": "231", "measurand": "Voltage", "unit": "V", "phase": "L1-N"},
        {"value": "55", "measurand": "SoC", "unit": "Percent"},
        {"value": "31.5", "measurand": "Temperature", "unit": "Celcius"},
        {"value": "50.01", "measurand": "Frequency", "unit": "Hz"},
        {"value": "oops", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": "3", "measurand": "Power.Offered", "unit": "W"},
        {"value": "3", "measurand": "Voltage", "unit": "kV"},
    ]
    async with running(outbox) as server:
        async with charger(server, identity="CP2") as ws:
            answer = await call(
                ws,
                "MeterValues",
                {
                    "connectorId": 2,
                    "transactionId": 99,
                    "meterValue": [
                        {"timestamp": "2026-03-01T11:00:00Z", "sampledValue": samples},
                        # no timestamp: the receive time
                        {"sampledValue": [{"value": "12600"}]},
                    ],
                },
            )
        bad = server.bad_input["CP2"]
    assert answer == {}
    _, readings = await stored(outbox)
    at = _ms("2026-03-01T11:00:00+00:00")
    assert readings == [
        ("CP2-2", "import_energy_wh", at, 12500.0),
        ("CP2-2", "power_w", at, 7200.0),
        ("CP2-2", "current_l1_a", at, 10.0),
        ("CP2-2", "current_l2_a", at, 11.0),
        ("CP2-2", "voltage_l1_v", at, 231.0),
        ("CP2-2", "soc_pct", at, 55.0),
        ("CP2-2", "temperature_c", at, 31.5),
        ("CP2-2", "frequency_hz", at, 50.01),
        ("CP2-2", "import_energy_wh", int(NOW.timestamp() * 1000), 12600.0),
    ]
    # kV has no 1.6 spelling (skipped); Hz is Hertz (tolerated); Power.Offered
    # is a 1.6 measurand the edge does not store
    assert bad.values_skipped == {"value": 1, "measurand": 1, "unit": 1}
    assert bad.values_tolerated == {"unit": 1, "timestamp": 1}


async def test_1_6_stop_transaction_data_becomes_readings(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server) as ws:
        tx = (await call(ws, "StartTransaction", _start(1000)))["transactionId"]
        await call(
            ws,
            "StopTransaction",
            {
                "transactionId": tx,
                "meterStop": 4000,
                "timestamp": "2026-03-01T11:30:00Z",
                "transactionData": [
                    {
                        "timestamp": "2026-03-01T11:30:00Z",
                        "sampledValue": [
                            {"value": "4000", "context": "Transaction.End"}
                        ],
                    }
                ],
            },
        )
    _, readings = await stored(outbox)
    assert readings == [
        ("CP1", "import_energy_wh", _ms("2026-03-01T11:30:00+00:00"), 4000.0)
    ]


# -- 2.0.1 transactions ----------------------------------------------------------


def _event(
    event_type: str, seq_no: int, ts: str, register_wh: float | None, **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": event_type,
        "timestamp": ts,
        "triggerReason": "Authorized",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "tx-abc"},
        "evse": {"id": 1, "connectorId": 1},
        **extra,
    }
    if register_wh is not None:
        payload["meterValue"] = [
            {
                "timestamp": ts,
                "sampledValue": [
                    {
                        "value": register_wh,
                        "measurand": "Energy.Active.Import.Register",
                        "unitOfMeasure": {"unit": "kWh"},
                    },
                    {
                        "value": 11,
                        "unitOfMeasure": {"unit": "kW"},
                        "measurand": ("Power.Active.Import"),
                    },
                ],
            }
        ]
    return payload


async def test_2_0_1_started_updated_ended(outbox: Outbox) -> None:
    token = {"idToken": {"idToken": "TAG1", "type": "ISO14443"}}
    async with running(outbox) as server, charger(server, "2.0.1") as ws:
        started = await call(
            ws,
            "TransactionEvent",
            _event("Started", 0, "2026-03-01T11:00:00Z", 1.0, **token),
        )
        updated = await call(
            ws, "TransactionEvent", _event("Updated", 1, "2026-03-01T11:10:00Z", 2.5)
        )
        again = await call(  # redelivered: nothing stored twice
            ws, "TransactionEvent", _event("Updated", 1, "2026-03-01T11:10:00Z", 2.5)
        )
    # the edge restarts; the Ended event carries no meter value and was queued
    async with running(outbox) as server, charger(server, "2.0.1") as ws:
        ended = await call(
            ws,
            "TransactionEvent",
            _event(
                "Ended",
                2,
                "2026-03-01T11:20:00Z",
                None,
                offline=True,
                transactionInfo={
                    "transactionId": "tx-abc",
                    "stoppedReason": "EVDisconnected",
                },
            ),
        )
    assert started == {"idTokenInfo": {"status": "Accepted"}}
    assert updated == {} and again == {} and ended == {}
    events, readings = await stored(outbox)
    start = SessionStarted.model_validate(events[0][2])
    stop = SessionStopped.model_validate(events[1][2])
    assert [k for _, k, _ in events] == ["session_started", "session_stopped"]
    assert (start.transaction_id, start.connector_id, start.id_tag) == (
        "tx-abc",
        1,
        "TAG1",
    )
    assert start.meter_start_wh == 1000 and start.started_at.hour == 11
    assert stop.meter_stop_wh == 2500  # the last register known for the transaction
    assert stop.reason == "EVDisconnected" and stop.stopped_at.minute == 20
    assert [(q, v) for _, q, _, v in readings] == [
        ("import_energy_wh", 1000.0),
        ("power_w", 11000.0),
        ("import_energy_wh", 2500.0),
        ("power_w", 11000.0),
    ]


async def test_2_0_1_started_without_a_register_starts_at_zero(
    outbox: Outbox,
) -> None:
    async with running(outbox) as server, charger(server, "2.0.1") as ws:
        await call(
            ws, "TransactionEvent", _event("Started", 0, "2026-03-01T11:00:00Z", None)
        )
        await call(
            ws, "TransactionEvent", _event("Ended", 1, "2026-03-01T11:05:00Z", 0.75)
        )
    events, _ = await stored(outbox)
    assert events[0][2]["meter_start_wh"] == 0
    assert events[1][2]["meter_stop_wh"] == 750


def test_meter_conversion_tolerates_garbage() -> None:
    result = meter_readings(
        "CP1",
        1,
        [
            "nonsense",
            {"timestamp": "1970-01-01T00:00:05Z", "sampledValue": None},
            {
                "timestamp": "not a time",
                "sampled_value": [
                    {"value": "nan"},
                    {"value": "-5"},  # a register cannot be negative
                    {"value": "100", "format": "SignedData"},
                    {"value": "1", "measurand": "Current.Import", "phase": "N"},
                    {"value": "'42'", "measurand": "SoC"},
                ],
            },
        ],
        NOW,
        v201=False,
    )
    assert [(r.quantity, r.ts, r.value) for r in result.readings] == [
        ("soc_pct", NOW, 42.0)
    ]
    assert result.skipped[0] == "meter_value:not an object"
    assert "value:Energy.Active.Import.Register" in result.skipped
    assert "format:SignedData" in result.skipped
    assert "phase:Current.Import/N" in result.skipped
    assert any(s.startswith("implausible:") for s in result.skipped)


async def test_a_lenient_chargers_odd_start_still_gets_an_id(outbox: Outbox) -> None:
    async with running(outbox) as server, charger(server, identity="CP2") as ws:
        answer = await call(
            ws,
            "StartTransaction",
            {"connectorId": 1, "idTag": "X" * 30, "meterStart": "n/a", "timestamp": 7},
        )
    assert isinstance(answer["transactionId"], int)
    assert answer["idTagInfo"] == {"status": "Invalid"}
    events, _ = await stored(outbox)
    start = SessionStarted.model_validate(events[0][2])
    assert start.meter_start_wh == 0 and start.started_at == NOW
