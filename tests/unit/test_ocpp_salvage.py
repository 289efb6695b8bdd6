"""``protocols.ocpp.salvage``: worked examples of every quirk in both versions,
with the rules read from the ``ocpp`` library's own schemas
(``edge.ocpp.lib.meter_value_rules``), and the library's validator as the judge
of what comes out."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from edge.ocpp import lib
from protocols.ocpp.salvage import (
    SKIP_REASONS,
    TOLERATED_REASONS,
    Salvage,
    SampleRules,
    salvage,
)

AT = "2026-03-01T12:00:00.000Z"
TS = "2026-03-01T11:59:00Z"
ENERGY16 = {"value": "12500", "measurand": "Energy.Active.Import.Register"}
ENERGY201 = {"value": 12500.0, "measurand": "Energy.Active.Import.Register"}


def mend(version: str, action: str, payload: dict[str, Any]) -> Salvage:
    return salvage(
        version,
        action,
        payload,
        lib.meter_value_rules(version, action),
        received_at=AT,
    )


def meter_values(version: str, *samples: Any) -> dict[str, Any]:
    key = "connectorId" if version == "1.6" else "evseId"
    return {key: 1, "meterValue": [{"timestamp": TS, "sampledValue": list(samples)}]}


def kept(result: Salvage, key: str = "meterValue") -> list[Any]:
    return [s for entry in result.payload[key] for s in entry["sampledValue"]]


async def valid(version: str, action: str, payload: dict[str, Any]) -> bool:
    try:
        await lib.check_request(version, action, payload)
    except lib.OCPPError:
        return False
    return True


# -- each quirk of the issue, both versions -----------------------------------


async def test_a_16_unit_outside_the_list_is_mended_or_skipped() -> None:
    frequency = {"value": "50.01", "measurand": "Frequency", "unit": "Hz"}
    volts = {"value": "0.4", "measurand": "Voltage", "unit": "kV"}
    payload = meter_values("1.6", ENERGY16, frequency, volts)
    assert not await valid("1.6", "MeterValues", payload)  # the refusal
    result = mend("1.6", "MeterValues", payload)
    # Hz is the 1.6 list's Hertz; kV has no 1.6 spelling: skipped, energy kept
    assert kept(result) == [ENERGY16, {**frequency, "unit": "Hertz"}]
    assert [r for r, _ in result.tolerated] == ["unit"]
    assert [r for r, _ in result.skipped] == ["unit"]
    assert "kV" in result.skipped[0][1]
    assert await valid("1.6", "MeterValues", result.payload)


async def test_hertz_missing_from_the_16_stop_list_is_implied_by_frequency() -> None:
    # the 1.6 StopTransaction schema lists no Hertz at all
    data = [
        {
            "timestamp": TS,
            "sampledValue": [
                {"value": "50", "measurand": "Frequency", "unit": "Hertz"},
                {"value": "50", "measurand": "Voltage", "unit": "Hz"},
                ENERGY16,
            ],
        }
    ]
    payload = {
        "transactionId": 7,
        "meterStop": 12500,
        "timestamp": TS,
        "transactionData": data,
    }
    result = mend("1.6", "StopTransaction", payload)
    assert kept(result, "transactionData") == [
        {"value": "50", "measurand": "Frequency"},
        ENERGY16,
    ]
    assert [r for r, _ in result.skipped] == ["unit"]
    assert await valid("1.6", "StopTransaction", result.payload)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_an_unknown_measurand_is_skipped(version: str) -> None:
    energy = ENERGY16 if version == "1.6" else ENERGY201
    # 2.0.1 has no Temperature (1.6 has); neither has Energy.Active.Import.Foo
    unknown = "Temperature" if version == "2.0.1" else "Energy.Active.Import.Foo"
    value: Any = "21" if version == "1.6" else 21
    payload = meter_values(version, {"value": value, "measurand": unknown}, energy)
    assert not await valid(version, "MeterValues", payload)
    result = mend(version, "MeterValues", payload)
    assert kept(result) == [energy]
    assert result.skipped == ((("measurand", f"measurand {unknown} ({unknown})")),)
    assert await valid(version, "MeterValues", result.payload)


async def test_a_201_value_as_text_is_tolerated_as_a_number() -> None:
    payload = meter_values(
        "2.0.1",
        {"value": "12500.5", "measurand": "Energy.Active.Import.Register"},
        {"value": " 7.2 ", "measurand": "Power.Active.Import"},
    )
    assert not await valid("2.0.1", "MeterValues", payload)
    result = mend("2.0.1", "MeterValues", payload)
    assert [s["value"] for s in kept(result)] == [12500.5, 7.2]
    assert [r for r, _ in result.tolerated] == ["value", "value"]
    assert result.skipped == ()
    assert await valid("2.0.1", "MeterValues", result.payload)


async def test_a_16_value_as_a_number_is_tolerated_as_text() -> None:
    payload = meter_values("1.6", {"value": 12500, "measurand": "SoC"}, ENERGY16)
    assert not await valid("1.6", "MeterValues", payload)
    result = mend("1.6", "MeterValues", payload)
    assert kept(result) == [{"value": "12500", "measurand": "SoC"}, ENERGY16]
    assert await valid("1.6", "MeterValues", result.payload)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize("text", ["abc", "12,5", "0x1A", "", "1_000", "12 kWh"])
async def test_a_value_that_is_no_number_is_skipped(version: str, text: str) -> None:
    energy = ENERGY16 if version == "1.6" else ENERGY201
    result = mend(
        version, "MeterValues", meter_values(version, {"value": text}, energy)
    )
    assert kept(result) == [energy]
    assert [r for r, _ in result.skipped] == ["value"]
    assert await valid(version, "MeterValues", result.payload)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize(
    "value", ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "-1e999"]
)
async def test_a_value_that_is_not_finite_is_skipped(version: str, value: str) -> None:
    energy = ENERGY16 if version == "1.6" else ENERGY201
    payload = meter_values(version, {"value": value, "measurand": "Voltage"}, energy)
    result = mend(version, "MeterValues", payload)
    assert kept(result) == [energy]
    assert [r for r, _ in result.skipped] == ["non_finite"]
    assert await valid(version, "MeterValues", result.payload)


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_a_201_json_number_that_is_not_finite_is_skipped(raw: str) -> None:
    # what Python's json reads from a frame with a bare NaN, Infinity or 1e999
    frame = f'{{"evseId": 1, "meterValue": [{{"timestamp": "{TS}", "sampledValue": '
    frame += f'[{{"value": {raw}}}, {{"value": 12500}}]}}]}}'
    payload = json.loads(frame)
    assert not math.isfinite(payload["meterValue"][0]["sampledValue"][0]["value"])
    assert await valid("2.0.1", "MeterValues", payload)  # the schema lets it in
    result = mend("2.0.1", "MeterValues", payload)
    assert kept(result) == [{"value": 12500}]
    assert [r for r, _ in result.skipped] == ["non_finite"]


# -- spellings and fields that carry no reading --------------------------------


async def test_other_spellings_of_list_values_are_mended() -> None:
    sample = {
        "value": "11",
        "measurand": "current.import",
        "phase": "l1",
        "unit": "a",
        "location": "outlet",
        "context": "Sample.periodic",
    }
    result = mend("1.6", "MeterValues", meter_values("1.6", sample))
    assert kept(result) == [
        {
            "value": "11",
            "measurand": "Current.Import",
            "phase": "L1",
            "unit": "A",
            "location": "Outlet",
            "context": "Sample.Periodic",
        }
    ]
    assert sorted(r for r, _ in result.tolerated) == [
        "context",
        "location",
        "measurand",
        "phase",
        "unit",
    ]
    assert await valid("1.6", "MeterValues", result.payload)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_unknown_keys_context_and_location_are_dropped(version: str) -> None:
    value: Any = "230" if version == "1.6" else 230
    sample = {
        "value": value,
        "measurand": "Voltage",
        "context": "Sample.Sometimes",
        "location": "Roof",
        "vendorQuality": "good",
    }
    payload = meter_values(version, sample)
    payload["meterValue"][0]["vendorSeq"] = 9
    result = mend(version, "MeterValues", payload)
    assert kept(result) == [{"value": value, "measurand": "Voltage"}]
    assert sorted(r for r, _ in result.tolerated) == [
        "context",
        "extra_field",
        "extra_field",
        "location",
    ]
    assert result.payload["meterValue"][0].keys() == {"timestamp", "sampledValue"}
    assert await valid(version, "MeterValues", result.payload)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_an_unknown_phase_is_skipped(version: str) -> None:
    value: Any = "3" if version == "1.6" else 3
    sample = {"value": value, "measurand": "Current.Import", "phase": "L4"}
    result = mend(version, "MeterValues", meter_values(version, sample))
    assert [r for r, _ in result.skipped] == ["phase"]


async def test_201_units_the_schema_refuses_are_skipped_by_its_verdict() -> None:
    long_unit = {"value": 1, "unitOfMeasure": {"unit": "U" * 21}}
    text_multiplier = {"value": 1, "unitOfMeasure": {"unit": "kWh", "multiplier": "3"}}
    signed = {"value": 2, "signedMeterValue": {"signedMeterData": "x"}}
    payload = meter_values("2.0.1", long_unit, text_multiplier, signed)
    result = mend("2.0.1", "MeterValues", payload)
    assert [r for r, _ in result.skipped] == ["unit", "unit"]
    # a broken signature carries no reading: dropped, the value kept
    assert kept(result) == [{"value": 2}]
    assert [r for r, _ in result.tolerated] == ["signed_meter_value"]
    assert await valid("2.0.1", "MeterValues", result.payload)


# -- the shape around the sampled values ---------------------------------------


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_broken_meter_values_are_dropped_and_timestamps_filled(
    version: str,
) -> None:
    energy = ENERGY16 if version == "1.6" else ENERGY201
    payload = meter_values(version, "not an object", energy)
    payload["meterValue"] += [
        "nonsense",
        {"timestamp": TS, "sampledValue": "none"},
        {"sampledValue": [energy]},  # no timestamp
    ]
    result = mend(version, "MeterValues", payload)
    assert result.payload["meterValue"] == [
        {"timestamp": TS, "sampledValue": [energy]},
        {"timestamp": AT, "sampledValue": [energy]},
    ]
    assert [r for r, _ in result.skipped] == [
        "sampled_value",
        "meter_value",
        "meter_value",
    ]
    assert [r for r, _ in result.tolerated] == ["timestamp"]
    assert await valid(version, "MeterValues", result.payload)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_meter_values_with_nothing_readable_are_emptied(version: str) -> None:
    result = mend(version, "MeterValues", meter_values(version, {"value": "abc"}))
    assert result.emptied and result.payload["meterValue"] == []
    assert [r for r, _ in result.skipped] == ["value"]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize(
    "payload",
    [
        {"meterValue": "nonsense"},
        {"meterValue": []},
        {"meterValue": {"timestamp": TS}},
    ],
)
async def test_meter_values_without_a_list_are_left_to_the_schema(
    version: str, payload: dict[str, Any]
) -> None:
    key = "connectorId" if version == "1.6" else "evseId"
    result = mend(version, "MeterValues", {key: 1, **payload})
    assert result.payload == {key: 1, **payload}
    assert not result.changed and not result.emptied
    assert not await valid(version, "MeterValues", result.payload)


async def test_optional_lists_are_removed_when_nothing_is_left() -> None:
    event = {
        "eventType": "Updated",
        "timestamp": TS,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 3,
        "transactionInfo": {"transactionId": "tx-1"},
    }
    gone = mend("2.0.1", "TransactionEvent", {**event, "meterValue": "nonsense"})
    assert gone.payload == event and [r for r, _ in gone.skipped] == ["meter_value"]
    bad = [{"timestamp": TS, "sampledValue": [{"value": "abc"}]}]
    gone = mend("2.0.1", "TransactionEvent", {**event, "meterValue": bad})
    assert gone.payload == event and not gone.emptied
    empty = mend("2.0.1", "TransactionEvent", {**event, "meterValue": []})
    assert empty.payload == event and [r for r, _ in empty.tolerated] == ["meter_value"]
    for result in (gone, empty):
        assert await valid("2.0.1", "TransactionEvent", result.payload)


def test_other_actions_and_missing_rules_pass_through() -> None:
    boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    assert mend("1.6", "BootNotification", boot) == Salvage(boot)
    payload = meter_values("1.6", {"value": "abc"})
    assert salvage("1.6", "MeterValues", payload, None, received_at=AT) == Salvage(
        payload
    )


def test_rules_without_schema_checks_still_mend_by_their_lists() -> None:
    rules = SampleRules(
        value_type="number",
        enums={"measurand": frozenset({"Voltage"})},
        sample_keys=frozenset({"value", "measurand"}),
        entry_keys=frozenset({"timestamp", "sampledValue"}),
    )
    payload = meter_values("2.0.1", {"value": "230", "measurand": "VOLTAGE"})
    result = salvage("2.0.1", "MeterValues", payload, rules, received_at=AT)
    assert kept(result) == [{"value": 230.0, "measurand": "Voltage"}]


def test_the_rules_come_from_the_librarys_schemas() -> None:
    meter16 = lib.meter_value_rules("1.6", "MeterValues")
    stop16 = lib.meter_value_rules("1.6", "StopTransaction")
    meter201 = lib.meter_value_rules("2.0.1", "MeterValues")
    assert meter16 is not None and stop16 is not None and meter201 is not None
    assert meter16.value_type == "string" and meter201.value_type == "number"
    assert "Hertz" in meter16.enums["unit"] and "Hertz" not in stop16.enums["unit"]
    assert "unit" not in meter201.enums  # free text in 2.0.1 unitOfMeasure
    assert "Temperature" in meter16.enums["measurand"]
    assert "Temperature" not in meter201.enums["measurand"]
    assert lib.meter_value_rules("1.6", "Heartbeat") is None


# -- whatever the mix, what comes out passes the schema ---------------------------

_QUIRKS16: list[Any] = [
    {"value": "50", "measurand": "Frequency", "unit": "Hz"},
    {"value": "1", "measurand": "Volts"},
    {"value": "abc"},
    {"value": "NaN"},
    {"value": 12},
    {"value": "1", "phase": "l2", "measurand": "voltage"},
    {"value": "1", "context": "?", "extra": 1},
    {"value": None},
    {"measurand": "Voltage"},
    7,
]
_QUIRKS201: list[Any] = [
    {"value": "230.1"},
    {"value": "abc"},
    {"value": "Infinity"},
    {"value": float("nan")},
    {"value": 1, "measurand": "Temperature"},
    {"value": 1, "unitOfMeasure": {"unit": "Hz"}},
    {"value": 1, "unitOfMeasure": "kWh"},
    {"value": 1, "customData": {"x": 1}},
    {"value": True},
    "x",
]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_any_mix_of_quirks_comes_out_valid_with_every_value_accounted(
    version: str,
) -> None:
    rng = random.Random(10)
    quirks = _QUIRKS16 if version == "1.6" else _QUIRKS201
    good = ENERGY16 if version == "1.6" else ENERGY201
    for _ in range(200):
        samples = [rng.choice([*quirks, good]) for _ in range(rng.randint(1, 6))]
        result = mend(version, "MeterValues", meter_values(version, *samples))
        left = kept(result)
        assert len(left) + len(result.skipped) == len(samples), samples
        assert {r for r, _ in result.skipped} <= set(SKIP_REASONS)
        assert {r for r, _ in result.tolerated} <= set(TOLERATED_REASONS)
        assert left.count(good) == samples.count(good)
        if left:
            assert await valid(version, "MeterValues", result.payload), result
        else:
            assert result.emptied
