"""The household load model: energy is the integral of power, the day has the shape of
a real home's, and a seed always gives the same household."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

import pytest

from simulators.household import DEFAULT_APPLIANCES, HouseholdLoad, MeterSample

START = datetime(2024, 1, 8, 0, 0, 0, tzinfo=UTC)  # a Monday in winter: UTC == London


def run(household: HouseholdLoad, *, step_s: int, duration_s: int) -> list[MeterSample]:
    return [
        household.advance_to(START + timedelta(seconds=offset))
        for offset in range(step_s, duration_s + 1, step_s)
    ]


def test_register_is_the_integral_of_power() -> None:
    household = HouseholdLoad(seed=7, start=START + timedelta(hours=17))
    before = household.sample()
    integral_wh = 0.0
    previous = before
    for _ in range(3 * 3600):  # the evening peak, second by second
        integral_wh += previous.power_w / 3600  # power holds for the whole second
        previous = household.advance_to(previous.ts + timedelta(seconds=1))

    assert previous.import_energy_wh - before.import_energy_wh == pytest.approx(
        integral_wh, rel=1e-9
    )
    assert integral_wh > 500  # an evening, not a flat line


def test_step_size_does_not_change_the_household() -> None:
    fine = HouseholdLoad(seed=3, start=START)
    coarse = HouseholdLoad(seed=3, start=START)

    fine_samples = run(fine, step_s=7, duration_s=6 * 3600)
    coarse_end = coarse.advance_to(fine_samples[-1].ts)

    assert coarse_end.ts == fine_samples[-1].ts
    assert coarse_end.power_w == fine_samples[-1].power_w
    assert coarse_end.import_energy_wh == pytest.approx(
        fine_samples[-1].import_energy_wh, rel=1e-12
    )


def test_same_seed_same_household_other_seed_other_household() -> None:
    first = run(HouseholdLoad(seed=11, start=START), step_s=60, duration_s=86400)
    again = run(HouseholdLoad(seed=11, start=START), step_s=60, duration_s=86400)
    other = run(HouseholdLoad(seed=12, start=START), step_s=60, duration_s=86400)

    assert first == again
    assert [s.power_w for s in first] != [s.power_w for s in other]


def test_registers_never_run_backwards_and_power_is_positive() -> None:
    samples = run(
        HouseholdLoad(seed=5, start=START, import_energy_wh=1_234_567.0),
        step_s=10,
        duration_s=2 * 86400,
    )
    registers = [s.import_energy_wh for s in samples]

    assert registers == sorted(registers)
    assert registers[0] > 1_234_567.0
    assert min(s.power_w for s in samples) > 0
    assert {s.export_energy_wh for s in samples} == {0.0}
    assert all(s.ts.microsecond == 0 and s.ts.tzinfo is UTC for s in samples)


@pytest.mark.parametrize("seed", range(8))
def test_daily_consumption_is_that_of_a_home(seed: int) -> None:
    household = HouseholdLoad(seed=seed, start=START)
    previous = household.sample().import_energy_wh
    for day in range(1, 4):
        register = household.advance_to(START + timedelta(days=day)).import_energy_wh
        assert 5_000 <= register - previous <= 15_000, f"day {day}"
        previous = register


def test_evening_peak_is_far_above_the_night() -> None:
    samples = run(
        HouseholdLoad(seed=21, start=START, timezone="Europe/London"),
        step_s=60,
        duration_s=14 * 86400,
    )
    evening = [s.power_w for s in samples if 17 <= s.ts.hour < 21]
    night = [s.power_w for s in samples if 1 <= s.ts.hour < 5]

    assert statistics.mean(evening) > 2.5 * statistics.mean(night)
    # Base load: standby and the fridge, a few hundred watts at most.
    assert 120 <= statistics.median(night) <= 350


def test_appliances_show_up_as_events() -> None:
    household = HouseholdLoad(seed=2, start=START)
    seen: set[str] = set()
    peak_w = 0.0
    for minute in range(1, 14 * 24 * 60):
        sample = household.advance_to(START + timedelta(minutes=minute))
        seen.update(household.running_appliances)
        peak_w = max(peak_w, sample.power_w)

    assert {"kettle", "electric_shower", "washing_machine"} <= seen
    assert seen <= {appliance.name for appliance in DEFAULT_APPLIANCES}
    assert 8_500 <= peak_w <= 20_000


def test_three_phases_add_up() -> None:
    household = HouseholdLoad(
        seed=9, start=START, phases=3, phase_import_energy_wh=(1000.0, 2000.0, 3000.0)
    )
    start = household.sample()
    end = household.advance_to(START + timedelta(hours=20))

    assert len(end.phases) == 3
    assert end.power_w == pytest.approx(sum(p.power_w for p in end.phases))
    phase_delta = sum(p.import_energy_wh for p in end.phases) - 6000.0
    assert end.import_energy_wh - start.import_energy_wh == pytest.approx(phase_delta)
    for phase in end.phases:
        assert 215 <= phase.voltage_v <= 245
        assert phase.current_a == pytest.approx(
            phase.power_w / (phase.voltage_v * phase.power_factor)
        )


def test_time_only_moves_forward() -> None:
    household = HouseholdLoad(seed=1, start=START)
    household.advance_to(START + timedelta(minutes=5))
    with pytest.raises(ValueError, match="back in time"):
        household.advance_to(START)
    with pytest.raises(ValueError, match="timezone-aware"):
        household.advance_to(datetime(2024, 1, 8, 1, 0))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="phases"):
        HouseholdLoad(seed=1, start=START, phases=2)
    with pytest.raises(ValueError, match="negative"):
        HouseholdLoad(seed=1, start=START, import_energy_wh=-1.0)
    with pytest.raises(ValueError, match="3 values"):
        HouseholdLoad(seed=1, start=START, phases=3, phase_import_energy_wh=(1.0,))


def test_an_extra_load_is_metered_and_integrated_without_changing_the_house() -> None:
    plain = HouseholdLoad(seed=5, start=START)
    with_ev = HouseholdLoad(seed=5, start=START)
    plain.advance_to(START + timedelta(minutes=10))
    with_ev.advance_to(START + timedelta(minutes=10))
    with_ev.set_extra_w(7_000.0)
    assert with_ev.extra_w == 7_000.0
    assert with_ev.sample().power_w == pytest.approx(plain.sample().power_w + 7_000)
    a = plain.advance_to(START + timedelta(minutes=40))
    b = with_ev.advance_to(START + timedelta(minutes=40))
    # the house underneath is the same; half an hour of 7 kW is 3.5 kWh more
    assert b.power_w == pytest.approx(a.power_w + 7_000)
    assert b.import_energy_wh - a.import_energy_wh == pytest.approx(3_500, rel=1e-9)
    with_ev.set_extra_w(0.0)
    assert with_ev.sample().power_w == pytest.approx(plain.sample().power_w)


def test_an_extra_load_on_one_phase_of_three() -> None:
    household = HouseholdLoad(seed=5, start=START, phases=3)
    before = household.sample()
    household.set_extra_w(3_000.0, phase=2)
    after = household.sample()
    assert after.phases[1].power_w == pytest.approx(before.phases[1].power_w + 3_000)
    assert after.phases[0].power_w == before.phases[0].power_w
    household.set_extra_w(3_000.0)  # spread evenly
    spread = household.sample()
    for old, new in zip(before.phases, spread.phases, strict=True):
        assert new.power_w == pytest.approx(old.power_w + 1_000)
    with pytest.raises(ValueError):
        household.set_extra_w(-1.0)
    with pytest.raises(ValueError):
        household.set_extra_w(1.0, phase=4)
