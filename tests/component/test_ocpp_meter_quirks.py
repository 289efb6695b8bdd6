"""No reading is lost to one bad sampled value (issue 10, item 2), over real
websockets with raw frames, into a real outbox: a strict charger (schema
validation on) sends each quirk of the issue in both versions next to its energy
register; the register is stored, the quirk is skipped or tolerated and counted
by reason, the charger gets a CallResult and carries on. Messages with no
salvageable data still get the schema's CallError; a charger resending the same
quirky message thousands of times logs one line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from edge.metrics import ocpp_value_samples, parse_lines, render_lines
from edge.ocpp.server import OcppServer
from edge.outbox import Outbox
from tests.component.test_ocpp_transactions import (
    NOW,
    _start,
    call,
    charger,
    running,
    stored,
)
from tests.harness.timing import timeout

TS = "2026-03-01T11:00:00Z"
AT_MS = int(NOW.replace(hour=11).timestamp() * 1000)
REGISTER = 12500.0

# version -> quirk -> (sampled value as JSON text, outcome, reason, reading kept)
# outcome "skipped": not stored; "tolerated": mended and stored as ``reading``
QUIRKS: dict[str, dict[str, tuple[str, str, str, tuple[str, float] | None]]] = {
    "1.6": {
        "unit_hz": (
            '{"value": "50.01", "measurand": "Frequency", "unit": "Hz"}',
            "tolerated",
            "unit",
            ("frequency_hz", 50.01),
        ),
        "unit_outside_list": (
            '{"value": "0.4", "measurand": "Voltage", "unit": "kV"}',
            "skipped",
            "unit",
            None,
        ),
        "unknown_measurand": (
            '{"value": "3", "measurand": "Energy.Active.Import.Foo"}',
            "skipped",
            "measurand",
            None,
        ),
        "value_as_number": (
            '{"value": 231.5, "measurand": "Voltage", "unit": "V"}',
            "tolerated",
            "value",
            ("voltage_v", 231.5),
        ),
        "value_text": (
            '{"value": "abc", "measurand": "SoC"}',
            "skipped",
            "value",
            None,
        ),
        "value_nan": (
            '{"value": "NaN", "measurand": "SoC"}',
            "skipped",
            "non_finite",
            None,
        ),
        "value_infinity": (
            '{"value": "Infinity", "measurand": "Power.Active.Import"}',
            "skipped",
            "non_finite",
            None,
        ),
        "value_1e999": (
            '{"value": "1e999", "measurand": "Voltage"}',
            "skipped",
            "non_finite",
            None,
        ),
    },
    "2.0.1": {
        "unit_unknown": (
            '{"value": 3, "measurand": "Voltage", "unitOfMeasure": {"unit": "ft"}}',
            "skipped",
            "unit",
            None,
        ),
        "unknown_measurand": (
            '{"value": 21, "measurand": "Temperature"}',
            "skipped",
            "measurand",
            None,
        ),
        "value_as_text": (
            '{"value": "230.1", "measurand": "Voltage"}',
            "tolerated",
            "value",
            ("voltage_v", 230.1),
        ),
        "value_text": (
            '{"value": "abc", "measurand": "SoC"}',
            "skipped",
            "value",
            None,
        ),
        "value_nan_text": (
            '{"value": "NaN", "measurand": "SoC"}',
            "skipped",
            "non_finite",
            None,
        ),
        "value_nan_literal": (
            '{"value": NaN, "measurand": "SoC"}',
            "skipped",
            "non_finite",
            None,
        ),
        "value_1e999_literal": (
            '{"value": 1e999, "measurand": "Voltage"}',
            "skipped",
            "non_finite",
            None,
        ),
        "value_infinity_text": (
            '{"value": "-Infinity", "measurand": "Power.Active.Import"}',
            "skipped",
            "non_finite",
            None,
        ),
    },
}
CASES = [(v, q) for v, quirks in QUIRKS.items() for q in quirks]

_ids = iter(range(1, 1_000_000))


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.db")
    await box.start()
    yield box
    await box.close()


def energy(version: str) -> str:
    value = f'"{int(REGISTER)}"' if version == "1.6" else str(REGISTER)
    return f'{{"value": {value}, "measurand": "Energy.Active.Import.Register"}}'


def meter_values_text(version: str, *samples: str, connector: int = 1) -> str:
    """A MeterValues payload as JSON text (so that bare NaN and 1e999 survive)."""
    key = "connectorId" if version == "1.6" else "evseId"
    return (
        f'{{"{key}": {connector}, "meterValue": [{{"timestamp": "{TS}", '
        f'"sampledValue": [{", ".join(samples)}]}}]}}'
    )


async def call_text(ws: ClientConnection, action: str, payload: str) -> list[Any]:
    """Send a CALL whose payload is raw JSON text; the whole answer frame."""
    uid = f"q{next(_ids)}"
    await ws.send(f'[2, "{uid}", "{action}", {payload}]')
    while True:  # skip the server's own CALLs (capability discovery), unanswered
        answer = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        assert isinstance(answer, list)
        if answer[0] != 2:
            assert answer[1] == uid, answer
            return answer


def counts(server: OcppServer, charger_id: str = "CP1") -> tuple[dict[str, int], ...]:
    bad = server.bad_input.get(charger_id)
    if bad is None:
        return {}, {}
    return dict(bad.values_skipped), dict(bad.values_tolerated)


@pytest.mark.parametrize(("version", "quirk"), CASES)
async def test_one_bad_sampled_value_costs_only_itself(
    outbox: Outbox, version: str, quirk: str
) -> None:
    sample, outcome, reason, reading = QUIRKS[version][quirk]
    async with running(outbox) as server, charger(server, version) as ws:
        answer = await call_text(
            ws, "MeterValues", meter_values_text(version, energy(version), sample)
        )
        assert answer == [3, answer[1], {}]
        await call(ws, "Heartbeat", {})  # the charger carries on
        skipped, tolerated = counts(server)
    _, readings = await stored(outbox)
    expected = [("CP1", "import_energy_wh", AT_MS, REGISTER)]
    if reading is not None:
        expected.append(("CP1", reading[0], AT_MS, reading[1]))
    assert readings == expected
    if outcome == "skipped":
        assert (skipped, tolerated) == ({reason: 1}, {})
    else:
        assert (skipped, tolerated) == ({}, {reason: 1})


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_every_quirk_in_one_transaction_keeps_the_session_and_register(
    outbox: Outbox, version: str
) -> None:
    """All quirks of a version at once, in 1.6 StopTransaction transactionData and
    2.0.1 TransactionEvent meterValue: the session and the register arrive."""
    quirks = QUIRKS[version].values()
    samples = ", ".join([energy(version), *(q[0] for q in quirks)])
    data = f'[{{"timestamp": "{TS}", "sampledValue": [{samples}]}}]'
    async with running(outbox) as server, charger(server, version) as ws:
        if version == "1.6":
            tx = await call(
                ws, "StartTransaction", _start(1000, "2026-03-01T10:00:00Z")
            )
            stop = (
                f'{{"transactionId": {tx["transactionId"]}, "meterStop": '
                f'{int(REGISTER)}, "timestamp": "{TS}", "transactionData": {data}}}'
            )
            answer = await call_text(ws, "StopTransaction", stop)
        else:
            event = (
                '{"eventType": "Ended", "timestamp": "' + TS + '", "triggerReason": '
                '"EVDeparted", "seqNo": 0, "transactionInfo": {"transactionId": '
                '"tx-q"}, "evse": {"id": 1}, "idToken": {"idToken": "TAG1", '
                '"type": "ISO14443"}, "meterValue": ' + data + "}"
            )
            answer = await call_text(ws, "TransactionEvent", event)
        assert answer[0] == 3, answer
        skipped, tolerated = counts(server)
    events, readings = await stored(outbox)
    stops = [e for e in events if e[1] == "session_stopped"]
    assert len(stops) == 1 and stops[0][2]["meter_stop_wh"] == REGISTER
    assert ("CP1", "import_energy_wh", AT_MS, REGISTER) in readings
    kept = {r[1] for r in readings} - {"import_energy_wh"}
    assert kept == {q[3][0] for q in quirks if q[3] is not None}
    expect_skipped: dict[str, int] = {}
    expect_tolerated: dict[str, int] = {}
    for _, outcome, reason, _ in quirks:
        target = expect_skipped if outcome == "skipped" else expect_tolerated
        target[reason] = target.get(reason, 0) + 1
    assert (skipped, tolerated) == (expect_skipped, expect_tolerated)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_a_message_with_no_salvageable_data_is_still_refused(
    outbox: Outbox, version: str
) -> None:
    key = "connectorId" if version == "1.6" else "evseId"
    bad_only = '{"value": "abc"}'
    entry = f'[{{"timestamp": "{TS}", "sampledValue": [{bad_only}]}}]'
    async with running(outbox) as server, charger(server, version) as ws:
        refused = {
            "no connector": f'{{"meterValue": [{{"timestamp": "{TS}", '
            f'"sampledValue": [{energy(version)}]}}]}}',
            "no list": f'{{"{key}": 1}}',
            "not a list": f'{{"{key}": 1, "meterValue": "12500"}}',
            "empty list": f'{{"{key}": 1, "meterValue": []}}',
            "nothing readable, no connector": f'{{"meterValue": {entry}}}',
        }
        for name, payload in refused.items():
            answer = await call_text(ws, "MeterValues", payload)
            assert answer[0] == 4, (name, answer)
        # every value unreadable but the message sound: answered, counted
        answer = await call_text(
            ws, "MeterValues", f'{{"{key}": 1, "meterValue": {entry}}}'
        )
        assert answer == [3, answer[1], {}]
        skipped, _ = counts(server)
    # the value of the refused message is not counted: the charger resends it
    assert skipped == {"value": 1}
    assert (await stored(outbox))[1] == []


async def test_a_lenient_charger_gets_the_same_salvage(outbox: Outbox) -> None:
    samples = [energy("1.6"), *(q[0] for q in QUIRKS["1.6"].values())]
    async with running(outbox) as server, charger(server, identity="CP2") as ws:
        answer = await call_text(ws, "MeterValues", meter_values_text("1.6", *samples))
        assert answer[0] == 3
        skipped, tolerated = counts(server, "CP2")
    assert skipped == {"unit": 1, "measurand": 1, "value": 1, "non_finite": 3}
    assert tolerated == {"unit": 1, "value": 1}


async def test_a_charger_resending_a_quirky_message_logs_one_line(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    quirks = QUIRKS["2.0.1"]
    payload = meter_values_text(
        "2.0.1",
        energy("2.0.1"),
        quirks["value_text"][0],
        quirks["value_as_text"][0],
        quirks["unknown_measurand"][0],
    )
    frames = 3000
    caplog.set_level(logging.DEBUG, logger="fusebox.edge.ocpp")
    async with running(outbox) as server, charger(server, "2.0.1") as ws:
        for _ in range(frames):
            answer = await call_text(ws, "MeterValues", payload)
            assert answer[0] == 3
        skipped, tolerated = counts(server)
        text = render_lines(ocpp_value_samples(server))
    assert skipped == {"value": frames, "measurand": frames}
    assert tolerated == {"value": frames}
    lines = [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO and "sampled" in r.message
    ]
    assert len(lines) == 1, [r.message for r in lines]
    assert lines[0].levelno == logging.WARNING and "CP1" in lines[0].message
    for reason in ("value", "measurand"):
        assert f"skipped {reason}" in lines[0].message
    metrics = parse_lines(text)
    assert (
        metrics['fusebox_ocpp_values_skipped_total{charger="CP1",reason="value"}']
        == frames
    )
    assert (
        metrics['fusebox_ocpp_values_tolerated_total{charger="CP1",reason="value"}']
        == frames
    )
    assert text.count("# TYPE fusebox_ocpp_values_skipped_total counter") == 1


async def test_a_new_kind_of_quirk_is_logged_again_and_kinds_are_bounded(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fusebox.edge.ocpp")
    async with running(outbox) as server, charger(server, "1.6") as ws:
        # a new unknown unit spelling in every message: 40 kinds, 40 values
        for n in range(40):
            sample = f'{{"value": "1", "measurand": "Voltage", "unit": "u{n}"}}'
            answer = await call_text(
                ws, "MeterValues", meter_values_text("1.6", sample)
            )
            assert answer[0] == 3
        skipped, _ = counts(server)
    assert skipped == {"unit": 40}
    lines = [r.message for r in caplog.records if "sampled values" in r.message]
    assert len(lines) == 33  # 32 kinds, then one line that says so
    assert "only counted" in lines[-1]
