"""Composite schedule: stack levels, recurrence, relative, purposes, units, merging."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    CompositeSchedule,
    EffectiveLimit,
    InstalledProfile,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    RecurrencyKind,
    SchedulePeriod,
    composite_schedule,
    limit_at,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = 3600


def _profile(
    purpose: ProfilePurpose,
    periods: Sequence[tuple[Any, ...]],  # (start_s, limit[, number_phases])
    *,
    id: int = 1,
    stack_level: int = 0,
    kind: ProfileKind = ProfileKind.ABSOLUTE,
    start: datetime | None = T0,
    duration_s: int | None = None,
    unit: RateUnit = RateUnit.A,
    recurrency: RecurrencyKind | None = None,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    transaction_id: int | str | None = None,
) -> ChargingProfile:
    return ChargingProfile(
        id=id,
        stack_level=stack_level,
        purpose=purpose,
        kind=kind,
        recurrency=recurrency,
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_id=transaction_id,
        schedules=(
            ChargingSchedule(
                rate_unit=unit,
                start_schedule=None if kind is ProfileKind.RELATIVE else start,
                duration_s=duration_s,
                periods=tuple(SchedulePeriod(*p) for p in periods),
            ),
        ),
    )


def _on(connector_id: int, *profiles: ChargingProfile) -> list[InstalledProfile]:
    return [InstalledProfile(connector_id, p) for p in profiles]


def _shape(schedule: CompositeSchedule) -> list[tuple[float, float | None, int]]:
    return [(p.start_s, p.limit, p.number_phases) for p in schedule.periods]


def _compose(installed: list[InstalledProfile], **kw: Any) -> CompositeSchedule:
    args: dict[str, Any] = {
        "connector_id": 1,
        "transaction_active": False,
        "rate_unit": RateUnit.A,
    }
    args.update(kw)
    return composite_schedule(installed, **args)


TXD = ProfilePurpose.TX_DEFAULT
TX = ProfilePurpose.TX
MAX = ProfilePurpose.STATION_MAX


def test_higher_stack_level_expires_mid_window_and_falls_through() -> None:
    installed = _on(
        1,
        _profile(TXD, [(0, 16)], id=1, stack_level=0),
        _profile(TXD, [(0, 10)], id=2, stack_level=1, duration_s=H),
    )
    result = _compose(installed, now=T0 + timedelta(minutes=30), duration_s=2 * H)
    assert _shape(result) == [(0, 10.0, 3), (1800, 16.0, 3)]
    assert result.periods[-1].end == T0 + timedelta(minutes=150)


def test_valid_to_ends_the_higher_level_too() -> None:
    installed = _on(
        0,
        _profile(TXD, [(0, 16)], id=1, stack_level=0),
        _profile(TXD, [(0, 8)], id=2, stack_level=5, valid_to=T0 + timedelta(hours=1)),
        _profile(
            TXD, [(0, 4)], id=3, stack_level=6, valid_from=T0 + timedelta(hours=2)
        ),
    )
    result = _compose(installed, now=T0, duration_s=3 * H)
    assert _shape(result) == [(0, 8.0, 3), (H, 16.0, 3), (2 * H, 4.0, 3)]


def test_recurring_daily_across_midnight() -> None:
    night = _profile(
        TXD,
        [(0, 6), (2 * H, 8)],  # 22:00-24:00 at 6 A, 00:00-02:00 at 8 A
        id=2,
        stack_level=1,
        kind=ProfileKind.RECURRING,
        recurrency=RecurrencyKind.DAILY,
        start=datetime(2024, 1, 1, 22, tzinfo=UTC),
        duration_s=4 * H,
    )
    base = _profile(TXD, [(0, 32)], id=1, stack_level=0)
    now = datetime(2024, 1, 5, 21, tzinfo=UTC)
    result = _compose(_on(1, base, night), now=now, duration_s=27 * H)
    assert _shape(result) == [
        (0, 32.0, 3),
        (1 * H, 6.0, 3),  # 22:00
        (3 * H, 8.0, 3),  # 00:00 next day
        (5 * H, 32.0, 3),  # 02:00: duration over, falls through
        (25 * H, 6.0, 3),  # 22:00 the following day
    ]
    # at 01:00, inside the run that started the previous evening
    at_one = limit_at(
        _on(1, base, night),
        datetime(2024, 1, 6, 1, tzinfo=UTC),
        connector_id=1,
        transaction_active=False,
        rate_unit=RateUnit.A,
    )
    assert at_one == EffectiveLimit(8.0, 3)


def test_recurring_weekly_and_before_anchor() -> None:
    weekly = _profile(
        TXD,
        [(0, 10)],
        kind=ProfileKind.RECURRING,
        recurrency=RecurrencyKind.WEEKLY,
        start=datetime(2024, 1, 1, 8, tzinfo=UTC),  # a Monday
        duration_s=H,
    )
    # start_schedule anchors the recurrence; it repeats before it as well
    monday_before = datetime(2023, 12, 25, 8, 30, tzinfo=UTC)
    tuesday = datetime(2024, 1, 9, 8, 30, tzinfo=UTC)
    monday = datetime(2024, 1, 8, 8, 30, tzinfo=UTC)
    kw: dict[str, Any] = {
        "connector_id": 1,
        "transaction_active": False,
        "rate_unit": "A",
    }
    assert limit_at(_on(1, weekly), monday, **kw) == EffectiveLimit(10.0, 3)
    assert limit_at(_on(1, weekly), monday_before, **kw) == EffectiveLimit(10.0, 3)
    assert limit_at(_on(1, weekly), tuesday, **kw) is None


def test_relative_profile_runs_from_transaction_start() -> None:
    tx = _profile(
        TX, [(0, 32), (H, 10)], kind=ProfileKind.RELATIVE, start=None, transaction_id=7
    )
    now = T0 + timedelta(hours=5)
    result = _compose(
        _on(1, tx),
        now=now,
        duration_s=2 * H,
        transaction_active=True,
        transaction_start=now - timedelta(minutes=30),
        transaction_id=7,
    )
    assert _shape(result) == [(0, 32.0, 3), (1800, 10.0, 3)]
    # without a known start it runs from `now` ("as if charging started now")
    result = _compose(_on(1, tx), now=now, duration_s=2 * H, transaction_active=True)
    assert _shape(result) == [(0, 32.0, 3), (H, 10.0, 3)]


def test_tx_profile_needs_an_active_transaction_and_matching_id() -> None:
    installed = _on(
        1,
        _profile(TXD, [(0, 16)], id=1),
        _profile(TX, [(0, 8)], id=2, transaction_id=7),
    )
    kw: dict[str, Any] = {"now": T0, "duration_s": H}
    assert _shape(_compose(installed, **kw)) == [(0, 16.0, 3)]
    active = _compose(installed, transaction_active=True, **kw)
    assert _shape(active) == [(0, 8.0, 3)]
    other = _compose(installed, transaction_active=True, transaction_id=8, **kw)
    assert _shape(other) == [(0, 16.0, 3)]
    # a TxProfile on another connector never applies here
    elsewhere = _on(1, _profile(TXD, [(0, 16)])) + _on(
        2, _profile(TX, [(0, 8)], id=2, transaction_id=7)
    )
    assert _shape(_compose(elsewhere, transaction_active=True, **kw)) == [(0, 16.0, 3)]


def test_minimum_across_purposes_and_tx_overrules_tx_default() -> None:
    station = _profile(MAX, [(0, 20)], id=1)
    installed = [
        *_on(0, station),
        *_on(1, _profile(TXD, [(0, 25), (H, 10)], id=2)),
        *_on(1, _profile(TX, [(0, 30)], id=3, start=T0 + timedelta(hours=2))),
    ]
    result = _compose(installed, now=T0, duration_s=3 * H, transaction_active=True)
    # TxDefault 25 capped by station 20; TxDefault 10; TxProfile 30 replaces the
    # TxDefault (it does not combine with it) and the station max caps it at 20.
    assert _shape(result) == [(0, 20.0, 3), (H, 10.0, 3), (2 * H, 20.0, 3)]


def test_connector_specific_tx_default_wins_at_equal_stack_level() -> None:
    installed = _on(0, _profile(TXD, [(0, 16)], id=1)) + _on(
        1, _profile(TXD, [(0, 12)], id=2)
    )
    assert _shape(_compose(installed, now=T0, duration_s=H)) == [(0, 12.0, 3)]
    # on connector 2 only the station-wide default applies
    result = _compose(installed, now=T0, duration_s=H, connector_id=2)
    assert _shape(result) == [(0, 16.0, 3)]


def test_connector_zero_counts_station_wide_purposes_only() -> None:
    installed = _on(0, _profile(MAX, [(0, 40)], id=1), _profile(TXD, [(0, 16)], id=2))
    result = _compose(installed, now=T0, duration_s=H, connector_id=0)
    assert _shape(result) == [(0, 40.0, 3)]


def test_external_constraints_combine_by_minimum() -> None:
    external = ProfilePurpose.EXTERNAL_CONSTRAINTS
    installed = [
        *_on(0, _profile(external, [(0, 24)], id=1)),
        *_on(1, _profile(external, [(0, 18)], id=2, stack_level=0)),
        *_on(1, _profile(TXD, [(0, 32)], id=3)),
    ]
    assert _shape(_compose(installed, now=T0, duration_s=H)) == [(0, 18.0, 3)]


@pytest.mark.parametrize(
    ("limit", "unit", "phases", "requested", "expected"),
    [
        (16, RateUnit.A, 1, RateUnit.W, (3680.0, 1)),
        (16, RateUnit.A, 3, RateUnit.W, (11040.0, 3)),
        (16, RateUnit.A, None, RateUnit.W, (11040.0, 3)),  # absent: 3
        (7400, RateUnit.W, 1, RateUnit.A, (32.1, 1)),  # 32.17 rounded DOWN
        (7400, RateUnit.W, 3, RateUnit.A, (10.7, 3)),  # 10.72
        (11000, RateUnit.W, None, RateUnit.W, (11000.0, 3)),
        (32.1, RateUnit.A, 1, RateUnit.A, (32.1, 1)),
    ],
)
def test_unit_conversion(
    limit: float,
    unit: RateUnit,
    phases: int | None,
    requested: RateUnit,
    expected: tuple[float, int],
) -> None:
    installed = _on(1, _profile(TXD, [(0, limit, phases)], unit=unit))
    result = _compose(installed, now=T0, duration_s=H, rate_unit=requested)
    assert _shape(result) == [(0, *expected)]


def test_mixed_units_and_phases_compare_at_the_smallest_phase_count() -> None:
    installed = [
        *_on(0, _profile(MAX, [(0, 32, 3)], id=1)),  # 32 A per phase
        *_on(1, _profile(TXD, [(0, 7400, 1)], id=2, unit=RateUnit.W)),  # 1 phase
    ]
    amps = _compose(installed, now=T0, duration_s=H, rate_unit="A")
    watts = _compose(installed, now=T0, duration_s=H, rate_unit="W")
    assert _shape(amps) == [(0, 32.0, 1)]  # min(32 A, 7400 W / 230 V = 32.17 A)
    assert _shape(watts) == [(0, 7360.0, 1)]  # min(32 A x 230 V x 1, 7400 W)
    low_voltage = _compose(
        installed, now=T0, duration_s=H, rate_unit="A", voltage_v=120
    )
    assert _shape(low_voltage) == [(0, 32.0, 1)]
    at_110 = _compose(installed, now=T0, duration_s=H, rate_unit="W", voltage_v=110)
    assert _shape(at_110) == [(0, 3520.0, 1)]  # 32 A x 110 V x 1


def test_adjacent_equal_periods_are_merged() -> None:
    installed = _on(
        1,
        _profile(TXD, [(0, 16), (600, 16), (1200, 10), (1800, 10)], id=1),
        _profile(TXD, [(0, 10)], id=2, stack_level=1, start=T0 + timedelta(hours=1)),
    )
    result = _compose(installed, now=T0, duration_s=2 * H)
    assert _shape(result) == [(0, 16.0, 3), (1200, 10.0, 3)]
    assert result.periods[-1].end == T0 + timedelta(hours=2)


def test_unconstrained_and_charger_max() -> None:
    not_yet = _on(1, _profile(TXD, [(0, 16)], start=T0 + timedelta(hours=1)))
    result = _compose(not_yet, now=T0, duration_s=2 * H)
    assert _shape(result) == [(0, None, 3), (H, 16.0, 3)]
    capped = _compose(not_yet, now=T0, duration_s=2 * H, charger_max=13.0)
    assert _shape(capped) == [(0, 13.0, 3)]
    assert (
        limit_at([], T0, connector_id=1, transaction_active=False, rate_unit="A")
        is None
    )


def test_fractional_now_and_period_lookup() -> None:
    now = T0 + timedelta(seconds=10.25)
    installed = _on(1, _profile(TXD, [(0, 16), (60, 8)]))
    result = _compose(installed, now=now, duration_s=120)
    assert _shape(result) == [(0, 16.0, 3), (49.75, 8.0, 3)]
    assert result.period_at(T0 + timedelta(seconds=60)).limit == 8.0
    with pytest.raises(ValueError, match="outside"):
        result.period_at(now + timedelta(seconds=120))


@pytest.mark.parametrize(
    "kw",
    [
        {"now": datetime(2024, 1, 1), "duration_s": 60},
        {"now": T0, "duration_s": 0},
        {"now": T0, "duration_s": 60, "voltage_v": 0},
        {"now": T0, "duration_s": 60, "default_phases": 4},
        {"now": T0, "duration_s": 60, "connector_id": -1},
    ],
)
def test_caller_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _compose([], **kw)


# ------------------------------------------------------------------ property

NOW = datetime(2024, 3, 10, 12, tzinfo=UTC)
_offsets = st.integers(-3 * 86400, 3 * 86400).map(lambda s: timedelta(seconds=s))


@st.composite
def _installed(draw: st.DrawFn) -> InstalledProfile:
    purpose = draw(st.sampled_from(list(ProfilePurpose)))
    kind = draw(st.sampled_from(list(ProfileKind)))
    recurrency = (
        draw(st.sampled_from(list(RecurrencyKind)))
        if kind is ProfileKind.RECURRING
        else None
    )
    starts = sorted(set(draw(st.lists(st.integers(1, 20 * H), max_size=4))))
    periods = [
        (s, draw(st.integers(0, 400)) / 10, draw(st.none() | st.integers(1, 3)))
        for s in [0, *starts]
    ]
    unit = draw(st.sampled_from(list(RateUnit)))
    if unit is RateUnit.W:
        periods = [(s, limit * 230, ph) for s, limit, ph in periods]
    valid_from = draw(st.none() | _offsets.map(lambda d: NOW + d))
    valid_to = draw(st.none() | _offsets.map(lambda d: NOW + d))
    if valid_from and valid_to and valid_from >= valid_to:
        valid_to = None
    profile = _profile(
        purpose,
        periods,
        id=draw(st.integers(0, 5)),
        stack_level=draw(st.integers(0, 3)),
        kind=kind,
        recurrency=recurrency,
        start=NOW
        + draw(_offsets)
        + timedelta(microseconds=draw(st.integers(0, 10**6 - 1))),
        duration_s=draw(st.none() | st.integers(1, 2 * 86400)),
        unit=unit,
        valid_from=valid_from,
        valid_to=valid_to,
        transaction_id=draw(st.none() | st.integers(1, 2)) if purpose is TX else None,
    )
    return InstalledProfile(draw(st.integers(0, 2)), profile)


@settings(max_examples=300, deadline=None)
@given(
    installed=st.lists(_installed(), max_size=6),
    now_offset=st.integers(-86400, 86400),
    duration_s=st.integers(1, 3 * 86400),
    connector_id=st.integers(0, 2),
    transaction_active=st.booleans(),
    transaction_id=st.none() | st.integers(1, 2),
    tx_start_offset=st.none() | st.integers(-86400, 0),
    rate_unit=st.sampled_from(list(RateUnit)),
    charger_max=st.none() | st.integers(0, 30000).map(lambda n: n / 10),
    samples=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=20),
)
def test_composite_agrees_with_limit_at(
    installed: list[InstalledProfile],
    now_offset: int,
    duration_s: int,
    connector_id: int,
    transaction_active: bool,
    transaction_id: int | None,
    tx_start_offset: int | None,
    rate_unit: RateUnit,
    charger_max: float | None,
    samples: list[float],
) -> None:
    now = NOW + timedelta(seconds=now_offset, microseconds=250)
    tx_start = (
        None if tx_start_offset is None else now + timedelta(seconds=tx_start_offset)
    )
    common: dict[str, Any] = {
        "connector_id": connector_id,
        "transaction_active": transaction_active,
        "transaction_id": transaction_id,
        "rate_unit": rate_unit,
        "charger_max": charger_max,
    }
    result = composite_schedule(
        installed, now=now, duration_s=duration_s, transaction_start=tx_start, **common
    )
    # structure: contiguous, covering the window, merged
    assert result.periods[0].start == now
    assert result.periods[-1].end == now + timedelta(seconds=duration_s)
    for a, b in zip(result.periods, result.periods[1:], strict=False):
        assert a.end == b.start
        assert (a.limit, a.number_phases) != (b.limit, b.number_phases)
    # every period boundary and sampled instant agrees with limit_at
    instants = [p.start for p in result.periods]
    instants += [p.end - timedelta(microseconds=1) for p in result.periods]
    instants += [
        now + timedelta(microseconds=int(duration_s * 10**6 * f)) for f in samples
    ]
    for t in instants:
        expected = limit_at(installed, t, transaction_start=tx_start or now, **common)
        period = result.period_at(t)
        if expected is None:
            assert period.limit is None
        else:
            assert (period.limit, period.number_phases) == (
                expected.limit,
                expected.number_phases,
            )
