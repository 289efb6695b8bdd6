"""Charging profiles: exact payloads for 1.6 and 2.0.1, checked against the
official schemas shipped with the ``ocpp`` package, rounding, rules, round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    ProfileError,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    RecurrencyKind,
    SchedulePeriod,
    amps_to_watts,
    floor_tenth,
    format_utc,
    from_ocpp16,
    from_ocpp201,
    parse_set_charging_profile_16,
    parse_set_charging_profile_201,
    set_charging_profile_16,
    set_charging_profile_201,
    to_ocpp16,
    to_ocpp201,
    watts_to_amps,
)

_SCHEMAS = Path(ocpp.__file__).parent
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _load_schema(path: Path) -> Any:
    # The ocpp library parses 1.6 smart-charging schemas and payloads with Decimal
    # so that ``multipleOf: 0.1`` is exact; do the same here.
    return json.loads(path.read_text(encoding="utf-8-sig"), parse_float=Decimal)


_V16 = jsonschema.Draft4Validator(
    _load_schema(_SCHEMAS / "v16/schemas/SetChargingProfile.json")
)
_V201 = jsonschema.Draft6Validator(
    _load_schema(_SCHEMAS / "v201/schemas/SetChargingProfileRequest.json")
)


def _assert_valid(validator: jsonschema.protocols.Validator, payload: Any) -> None:
    wire = json.loads(json.dumps(payload), parse_float=Decimal)
    errors = [e.message for e in validator.iter_errors(wire)]
    assert errors == []


def _daily_tx_default() -> ChargingProfile:
    """The 1.6 spec example (§3.13.7): 11 kW, 6 kW from 08:00, 11 kW from 20:00."""
    return ChargingProfile(
        id=100,
        stack_level=0,
        purpose=ProfilePurpose.TX_DEFAULT,
        kind=ProfileKind.RECURRING,
        recurrency=RecurrencyKind.DAILY,
        schedules=(
            ChargingSchedule(
                rate_unit=RateUnit.W,
                duration_s=86400,
                start_schedule=datetime(2013, 1, 1, tzinfo=UTC),
                periods=(
                    SchedulePeriod(0, 11000, number_phases=3),
                    SchedulePeriod(28800, 6000, number_phases=3),
                    SchedulePeriod(72000, 11000, number_phases=3),
                ),
            ),
        ),
    )


def _tx_profile(transaction_id: int | str | None = 42) -> ChargingProfile:
    return ChargingProfile(
        id=7,
        stack_level=2,
        purpose=ProfilePurpose.TX,
        kind=ProfileKind.ABSOLUTE,
        transaction_id=transaction_id,
        valid_from=T0,
        valid_to=T0 + timedelta(days=1),
        schedules=(
            ChargingSchedule(
                rate_unit=RateUnit.A,
                start_schedule=T0 + timedelta(hours=1, microseconds=500_000),
                duration_s=7200,
                min_charging_rate=6.05,
                periods=(
                    SchedulePeriod(0, 16.29),
                    SchedulePeriod(1800, 10, number_phases=1),
                ),
            ),
        ),
    )


# ------------------------------------------------------------------ exact payloads


def test_spec_example_16_exact_payload() -> None:
    payload = set_charging_profile_16(0, _daily_tx_default())
    assert payload == {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": 100,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Recurring",
            "recurrencyKind": "Daily",
            "chargingSchedule": {
                "duration": 86400,
                "startSchedule": "2013-01-01T00:00:00Z",
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 11000.0, "numberPhases": 3},
                    {"startPeriod": 28800, "limit": 6000.0, "numberPhases": 3},
                    {"startPeriod": 72000, "limit": 11000.0, "numberPhases": 3},
                ],
            },
        },
    }
    _assert_valid(_V16, payload)


def test_tx_profile_16_exact_payload_rounds_down() -> None:
    payload = set_charging_profile_16(1, _tx_profile())
    assert payload == {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 7,
            "transactionId": 42,
            "stackLevel": 2,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "validFrom": "2024-01-01T00:00:00Z",
            "validTo": "2024-01-02T00:00:00Z",
            "chargingSchedule": {
                "duration": 7200,
                "startSchedule": "2024-01-01T01:00:00.500Z",
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 16.2},
                    {"startPeriod": 1800, "limit": 10.0, "numberPhases": 1},
                ],
                "minChargingRate": 6.0,
            },
        },
    }
    _assert_valid(_V16, payload)


def test_tx_profile_201_exact_payload() -> None:
    payload = set_charging_profile_201(2, _tx_profile("tx-abc"))
    assert payload == {
        "evseId": 2,
        "chargingProfile": {
            "id": 7,
            "stackLevel": 2,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute",
            "validFrom": "2024-01-01T00:00:00Z",
            "validTo": "2024-01-02T00:00:00Z",
            "transactionId": "tx-abc",
            "chargingSchedule": [
                {
                    "id": 1,
                    "startSchedule": "2024-01-01T01:00:00.500Z",
                    "duration": 7200,
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [
                        {"startPeriod": 0, "limit": 16.2},
                        {"startPeriod": 1800, "limit": 10.0, "numberPhases": 1},
                    ],
                    "minChargingRate": 6.0,
                }
            ],
        },
    }
    _assert_valid(_V201, payload)


def test_201_station_max_external_phase_to_use_and_three_schedules() -> None:
    def sched(i: int) -> ChargingSchedule:
        return ChargingSchedule(
            rate_unit=RateUnit.W,
            start_schedule=T0,
            schedule_id=10 + i,
            periods=(SchedulePeriod(0, 7400, number_phases=1, phase_to_use=2),),
        )

    external = ChargingProfile(
        id=3,
        stack_level=1,
        purpose=ProfilePurpose.EXTERNAL_CONSTRAINTS,
        kind=ProfileKind.ABSOLUTE,
        schedules=(sched(0), sched(1), sched(2)),
    )
    payload = set_charging_profile_201(1, external)
    body = payload["chargingProfile"]
    assert body["chargingProfilePurpose"] == "ChargingStationExternalConstraints"
    assert [s["id"] for s in body["chargingSchedule"]] == [10, 11, 12]
    assert body["chargingSchedule"][0]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 7400.0, "numberPhases": 1, "phaseToUse": 2}
    ]
    _assert_valid(_V201, payload)

    station = ChargingProfile(
        id=1,
        stack_level=0,
        purpose=ProfilePurpose.STATION_MAX,
        kind=ProfileKind.ABSOLUTE,
        schedules=(sched(0),),
    )
    payload = set_charging_profile_201(0, station)
    assert payload["chargingProfile"]["chargingProfilePurpose"] == (
        "ChargingStationMaxProfile"
    )
    _assert_valid(_V201, payload)
    payload16 = set_charging_profile_16(0, _daily_tx_default())
    assert payload16["csChargingProfiles"]["chargingProfilePurpose"] == (
        "TxDefaultProfile"
    )


def test_16_station_max_purpose_name_and_relative_allowed() -> None:
    profile = ChargingProfile(
        id=1,
        stack_level=0,
        purpose=ProfilePurpose.STATION_MAX,
        kind=ProfileKind.RELATIVE,
        schedules=(ChargingSchedule(RateUnit.A, (SchedulePeriod(0, 32),)),),
    )
    payload = set_charging_profile_16(0, profile)
    assert payload["csChargingProfiles"]["chargingProfilePurpose"] == (
        "ChargePointMaxProfile"
    )
    _assert_valid(_V16, payload)
    with pytest.raises(ProfileError, match="cannot be Relative"):
        to_ocpp201(profile)


def test_unrounded_limit_would_fail_the_16_schema() -> None:
    """Proves the validator really checks multipleOf: 16.25 is refused."""
    payload = set_charging_profile_16(0, _daily_tx_default())
    payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0][
        "limit"
    ] = 16.25
    wire = json.loads(json.dumps(payload), parse_float=Decimal)
    assert not _V16.is_valid(wire)


# ------------------------------------------------------------------------ rounding


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        (16.25, 16.2),
        (16.29, 16.2),
        (16.1, 16.1),
        (0.3, 0.3),
        (16, 16.0),
        (7399.99, 7399.9),
        (Decimal("32.19"), 32.1),
        (0, 0.0),
    ],
)
def test_limits_round_down_to_one_decimal(given_value: Any, expected: float) -> None:
    assert SchedulePeriod(0, given_value).limit == expected
    assert floor_tenth(given_value) == expected


def test_unit_conversion() -> None:
    assert amps_to_watts(16, 3) == 11040
    assert amps_to_watts(16, 1) == 3680
    assert amps_to_watts(16) == 11040  # numberPhases absent: 3
    assert amps_to_watts(10, 1, voltage_v=120) == 1200
    assert watts_to_amps(11040, 3) == pytest.approx(16)
    assert watts_to_amps(7360, 1) == pytest.approx(32)
    assert watts_to_amps(11040) == pytest.approx(16)
    with pytest.raises(ProfileError):
        amps_to_watts(16, 4)


# -------------------------------------------------------------------------- rules


def _sched(*periods: SchedulePeriod, **kw: Any) -> ChargingSchedule:
    return ChargingSchedule(RateUnit.A, periods, **kw)


def _absolute(purpose: ProfilePurpose, **kw: Any) -> ChargingProfile:
    return ChargingProfile(
        id=1,
        stack_level=0,
        purpose=purpose,
        kind=ProfileKind.ABSOLUTE,
        schedules=(_sched(SchedulePeriod(0, 16), start_schedule=T0),),
        **kw,
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _sched(SchedulePeriod(10, 16)), "first period"),
        (lambda: _sched(), "at least one period"),
        (
            lambda: _sched(SchedulePeriod(0, 16), SchedulePeriod(0, 10)),
            "strictly increase",
        ),
        (
            lambda: _sched(
                SchedulePeriod(0, 16), SchedulePeriod(60, 10), SchedulePeriod(30, 8)
            ),
            "strictly increase",
        ),
        (lambda: SchedulePeriod(0, -1), "between 0 and"),
        (lambda: SchedulePeriod(0, float("nan")), "finite"),
        (lambda: SchedulePeriod(0, 16, number_phases=4), "number_phases"),
        (
            lambda: SchedulePeriod(0, 16, number_phases=3, phase_to_use=1),
            "phase_to_use",
        ),
        (lambda: SchedulePeriod(-1, 16), "start_period_s"),
        (lambda: _sched(SchedulePeriod(0, 16), duration_s=0), "duration_s"),
        (
            lambda: _sched(SchedulePeriod(0, 16), start_schedule=datetime(2024, 1, 1)),
            "timezone-aware",
        ),
        (
            lambda: ChargingProfile(
                1,
                0,
                ProfilePurpose.TX_DEFAULT,
                ProfileKind.RECURRING,
                (_sched(SchedulePeriod(0, 16), start_schedule=T0),),
            ),
            "recurrency",
        ),
        (
            lambda: ChargingProfile(
                1,
                0,
                ProfilePurpose.TX_DEFAULT,
                ProfileKind.ABSOLUTE,
                (_sched(SchedulePeriod(0, 16)),),
            ),
            "needs a start_schedule",
        ),
        (
            lambda: ChargingProfile(
                1,
                0,
                ProfilePurpose.TX_DEFAULT,
                ProfileKind.RELATIVE,
                (_sched(SchedulePeriod(0, 16), start_schedule=T0),),
            ),
            "must not have a start_schedule",
        ),
        (
            lambda: _absolute(ProfilePurpose.TX_DEFAULT, transaction_id=5),
            "only allowed on a TxProfile",
        ),
        (
            lambda: _absolute(ProfilePurpose.TX, transaction_id="x" * 37),
            "1 to 36",
        ),
        (
            lambda: _absolute(ProfilePurpose.TX, valid_from=T0, valid_to=T0),
            "valid_from must be before",
        ),
        (
            lambda: ChargingProfile(
                1,
                -1,
                ProfilePurpose.TX_DEFAULT,
                ProfileKind.RELATIVE,
                (_sched(SchedulePeriod(0, 16)),),
            ),
            "stack_level",
        ),
        (
            lambda: ChargingProfile(
                1,
                0,
                "Bogus",  # type: ignore[arg-type]
                ProfileKind.RELATIVE,
                (_sched(SchedulePeriod(0, 16)),),
            ),
            "purpose must be one of",
        ),
    ],
)
def test_model_rules(build: Any, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        build()


def test_four_schedules_refused() -> None:
    s = _sched(SchedulePeriod(0, 16))
    with pytest.raises(ProfileError, match="1 to 3 schedules"):
        ChargingProfile(1, 0, ProfilePurpose.TX_DEFAULT, ProfileKind.RELATIVE, (s,) * 4)


@pytest.mark.parametrize(
    ("target", "profile", "message"),
    [
        (1, _absolute(ProfilePurpose.STATION_MAX), "only allowed on connector 0"),
        (0, _absolute(ProfilePurpose.TX, transaction_id=9), "connector > 0"),
        (1, _absolute(ProfilePurpose.TX), "needs a transaction_id"),
        (-1, _absolute(ProfilePurpose.TX_DEFAULT), "connectorId"),
        (
            0,
            _absolute(ProfilePurpose.EXTERNAL_CONSTRAINTS),
            "does not exist in OCPP 1.6",
        ),
        (1, _absolute(ProfilePurpose.TX, transaction_id="abc"), "integer"),
    ],
)
def test_16_target_rules(target: int, profile: ChargingProfile, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        set_charging_profile_16(target, profile)


@pytest.mark.parametrize(
    ("target", "profile", "message"),
    [
        (1, _absolute(ProfilePurpose.STATION_MAX), "only allowed on evseId 0"),
        (0, _absolute(ProfilePurpose.TX, transaction_id="t"), "evseId > 0"),
        (1, _absolute(ProfilePurpose.TX), "needs a transaction_id"),
        (1, _absolute(ProfilePurpose.TX, transaction_id=5), "string"),
    ],
)
def test_201_target_rules(target: int, profile: ChargingProfile, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        set_charging_profile_201(target, profile)


def test_16_cannot_carry_201_only_features() -> None:
    s = ChargingSchedule(
        RateUnit.A,
        (SchedulePeriod(0, 16, number_phases=1, phase_to_use=1),),
    )
    profile = ChargingProfile(
        1, 0, ProfilePurpose.TX_DEFAULT, ProfileKind.RELATIVE, (s,)
    )
    with pytest.raises(ProfileError, match="phaseToUse"):
        to_ocpp16(profile)
    plain = _sched(SchedulePeriod(0, 16))
    two = ChargingProfile(
        1, 0, ProfilePurpose.TX_DEFAULT, ProfileKind.RELATIVE, (plain, plain)
    )
    with pytest.raises(ProfileError, match="exactly one schedule"):
        to_ocpp16(two)


def test_tx_profile_without_transaction_id_for_remote_start() -> None:
    """RemoteStartTransaction's profile must NOT carry transactionId (errata 3.41)."""
    body = to_ocpp16(_absolute(ProfilePurpose.TX))
    assert "transactionId" not in body


# ------------------------------------------------------------------------- reading


def test_read_what_a_charger_sends_with_decimals_and_offsets() -> None:
    received = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 5,
            "transactionId": 99,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "validTo": "2024-01-01T02:00:00+01:00",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": Decimal("13.37")},
                    {"startPeriod": 60, "limit": 6},
                ],
            },
        },
    }
    connector, profile = parse_set_charging_profile_16(received)
    assert connector == 1
    assert profile.valid_to == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert [p.limit for p in profile.schedule.periods] == [13.3, 6.0]
    assert profile.transaction_id == 99


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("stackLevel"), "lacks stackLevel"),
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.update(chargingProfilePurpose="Max"), "chargingProfilePurpose"),
        (lambda d: d.update(validFrom="2024-01-01T00:00:00"), "no UTC offset"),
        (lambda d: d.update(validFrom="yesterday"), "not an ISO 8601"),
        (lambda d: d.update(stackLevel=True), "integer"),
        (
            lambda d: d["chargingSchedule"].update(chargingRateUnit="kW"),
            "chargingRateUnit",
        ),
        (
            lambda d: d["chargingSchedule"]["chargingSchedulePeriod"][0].update(
                limit="16"
            ),
            "number",
        ),
        (
            lambda d: d["chargingSchedule"]["chargingSchedulePeriod"][0].update(
                startPeriod=5
            ),
            "first period",
        ),
    ],
)
def test_from_ocpp16_refuses_bad_payloads(mutate: Any, message: str) -> None:
    body = to_ocpp16(_tx_profile())
    mutate(body)
    with pytest.raises(ProfileError, match=message):
        from_ocpp16(body)


def test_from_ocpp201_accepts_custom_data_and_refuses_connector_rules() -> None:
    payload = set_charging_profile_201(1, _tx_profile("t-1"))
    payload["customData"] = {"vendorId": "x"}
    payload["chargingProfile"]["customData"] = {"vendorId": "x"}
    evse, profile = parse_set_charging_profile_201(payload)
    assert evse == 1
    # the schedule id the builder filled in (its position) is now explicit
    assert profile.schedule.schedule_id == 1
    assert to_ocpp201(profile) == to_ocpp201(_tx_profile("t-1"))
    payload["evseId"] = 0
    with pytest.raises(ProfileError, match="evseId > 0"):
        parse_set_charging_profile_201(payload)
    bad = to_ocpp201(_tx_profile("t-1"))
    bad["chargingSchedule"] = {}
    with pytest.raises(ProfileError, match="non-empty list"):
        from_ocpp201(bad)


# ---------------------------------------------------------------------- round trips

# OCPP-J 2.0.1 allows at most three decimals: times round-trip to the millisecond
_times = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]),
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


def test_format_utc_writes_at_most_three_decimals() -> None:
    at = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
    assert format_utc(at) == "2026-03-01T08:00:00Z"
    assert format_utc(at.replace(microsecond=250_000)) == "2026-03-01T08:00:00.250Z"
    # sub-millisecond digits are cut, never a sixth decimal
    assert format_utc(at.replace(microsecond=123_456)) == "2026-03-01T08:00:00.123Z"
    assert format_utc(at.replace(microsecond=999)) == "2026-03-01T08:00:00Z"


_limits = st.integers(min_value=0, max_value=2_000_000).map(lambda n: n / 10)


@st.composite
def _periods(draw: st.DrawFn, *, v201: bool) -> tuple[SchedulePeriod, ...]:
    gaps = draw(st.lists(st.integers(1, 86400), max_size=5))
    starts = [0]
    for gap in gaps:
        starts.append(starts[-1] + gap)
    out = []
    for start in starts:
        phases = draw(st.none() | st.integers(1, 3))
        use = draw(st.none() | st.integers(1, 3)) if v201 and phases == 1 else None
        out.append(SchedulePeriod(start, draw(_limits), phases, use))
    return tuple(out)


@st.composite
def _profiles(draw: st.DrawFn, *, v201: bool) -> ChargingProfile:
    purposes = list(ProfilePurpose) if v201 else list(ProfilePurpose)[:3]
    purpose = draw(st.sampled_from(purposes))
    kind = draw(st.sampled_from(list(ProfileKind)))
    if v201 and purpose is ProfilePurpose.STATION_MAX and kind is ProfileKind.RELATIVE:
        kind = ProfileKind.ABSOLUTE
    count = draw(st.integers(1, 3)) if v201 else 1
    schedules = tuple(
        ChargingSchedule(
            rate_unit=draw(st.sampled_from(list(RateUnit))),
            periods=draw(_periods(v201=v201)),
            start_schedule=None if kind is ProfileKind.RELATIVE else draw(_times),
            duration_s=draw(st.none() | st.integers(1, 10**7)),
            min_charging_rate=draw(st.none() | _limits),
            schedule_id=draw(st.integers(0, 1000)) if v201 else None,
        )
        for _ in range(count)
    )
    valid_from = draw(st.none() | _times)
    valid_to = draw(st.none() | _times)
    if valid_from is not None and valid_to is not None and valid_from >= valid_to:
        valid_to = None
    tid: int | str | None = None
    if purpose is ProfilePurpose.TX:
        if v201:
            tid = draw(st.none() | st.text(min_size=1, max_size=36))
        else:
            tid = draw(st.none() | st.integers(-1, 2**31))
    return ChargingProfile(
        id=draw(st.integers(0, 2**31)),
        stack_level=draw(st.integers(0, 100)),
        purpose=purpose,
        kind=kind,
        recurrency=(
            draw(st.sampled_from(list(RecurrencyKind)))
            if kind is ProfileKind.RECURRING
            else None
        ),
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_id=tid,
        schedules=schedules,
    )


def _target(profile: ChargingProfile) -> int:
    return 0 if profile.purpose is ProfilePurpose.STATION_MAX else 1


@settings(max_examples=200)
@given(_profiles(v201=False))
def test_round_trip_16(profile: ChargingProfile) -> None:
    payload = set_charging_profile_16(_target(profile), _with_tid(profile, 1))
    _assert_valid(_V16, payload)
    # through JSON text, parsed the way the ocpp library parses 1.6 payloads
    wire = json.loads(json.dumps(payload), parse_float=Decimal)
    assert parse_set_charging_profile_16(wire) == (
        _target(profile),
        _with_tid(profile, 1),
    )
    assert from_ocpp16(to_ocpp16(profile)) == profile


@settings(max_examples=200)
@given(_profiles(v201=True))
def test_round_trip_201(profile: ChargingProfile) -> None:
    payload = set_charging_profile_201(_target(profile), _with_tid(profile, "t"))
    _assert_valid(_V201, payload)
    wire = json.loads(json.dumps(payload))
    assert parse_set_charging_profile_201(wire) == (
        _target(profile),
        _with_tid(profile, "t"),
    )
    assert from_ocpp201(to_ocpp201(profile)) == profile


def _with_tid(profile: ChargingProfile, tid: int | str) -> ChargingProfile:
    """SetChargingProfile needs a transaction id on a TxProfile."""
    if profile.purpose is not ProfilePurpose.TX or profile.transaction_id is not None:
        return profile
    return ChargingProfile(
        id=profile.id,
        stack_level=profile.stack_level,
        purpose=profile.purpose,
        kind=profile.kind,
        recurrency=profile.recurrency,
        valid_from=profile.valid_from,
        valid_to=profile.valid_to,
        transaction_id=tid,
        schedules=profile.schedules,
    )


def test_schedule_id_defaults_to_position_in_201() -> None:
    s = _sched(SchedulePeriod(0, 16))
    profile = ChargingProfile(
        1, 0, ProfilePurpose.TX_DEFAULT, ProfileKind.RELATIVE, (s, s)
    )
    body = to_ocpp201(profile)
    assert [x["id"] for x in body["chargingSchedule"]] == [1, 2]
