"""The EV battery model: energy is the integral of power, the taper above 80 %, the
offered limit is obeyed, and one phase draws a third of three."""

from __future__ import annotations

import pytest

from simulators.ev import MIN_CHARGE_CURRENT_A, VOLTAGE_V, EvBattery


def test_energy_is_the_integral_of_power() -> None:
    ev = EvBattery(capacity_kwh=40, soc_pct=10, max_current_a=16, phases=3)
    total_wh = integral_wh = 0.0
    for _ in range(3600):
        power_w, energy_wh = ev.step(10.0, 7_000.0)
        assert energy_wh == pytest.approx(power_w * 10.0 / 3600.0)
        total_wh += energy_wh
        integral_wh += power_w * 10.0 / 3600.0
    assert total_wh == pytest.approx(integral_wh)
    assert ev.full
    # the battery got capacity * (1 - 10 %) and the grid paid for the losses
    assert total_wh * ev.efficiency == pytest.approx(40_000 * 0.9, rel=1e-6)


def test_soc_rises_with_delivered_energy() -> None:
    ev = EvBattery(capacity_kwh=50, soc_pct=20, max_current_a=16, phases=3)
    _, energy_wh = ev.step(3600.0, None)
    assert energy_wh == pytest.approx(16 * VOLTAGE_V * 3)
    assert ev.soc_pct == pytest.approx(20 + energy_wh * 0.9 / 500)


def test_taper_above_80_percent() -> None:
    full_power_w = 16 * VOLTAGE_V * 3
    assert EvBattery(soc_pct=50).max_power_w == pytest.approx(full_power_w)
    assert EvBattery(soc_pct=80).max_power_w == pytest.approx(full_power_w)
    at_90 = EvBattery(soc_pct=90).max_power_w
    assert at_90 == pytest.approx((1 + 15 * 0.5) * VOLTAGE_V * 3)
    at_99 = EvBattery(soc_pct=99).max_power_w
    assert full_power_w > at_90 > at_99 > 0
    assert EvBattery(soc_pct=100).max_power_w == 0
    assert EvBattery(soc_pct=100).step(60, None) == (0.0, 0.0)


def test_power_never_exceeds_the_offered_limit() -> None:
    ev = EvBattery(soc_pct=20, max_current_a=32, phases=3)
    for limit_w in (22_080.0, 11_000.0, 7_000.0, 4_140.0):
        power_w, _ = ev.step(1.0, limit_w)
        assert power_w == pytest.approx(min(limit_w, 32 * VOLTAGE_V * 3))
    assert ev.step(1.0, 50_000.0)[0] == pytest.approx(32 * VOLTAGE_V * 3)


def test_below_six_amps_the_ev_pauses() -> None:
    ev = EvBattery(soc_pct=20, phases=3)
    below_w = (MIN_CHARGE_CURRENT_A - 0.1) * VOLTAGE_V * 3
    assert ev.step(60, below_w) == (0.0, 0.0)
    assert ev.step(60, 0.0) == (0.0, 0.0)
    assert ev.step(60, MIN_CHARGE_CURRENT_A * VOLTAGE_V * 3)[0] > 0


def test_one_phase_against_three() -> None:
    one = EvBattery.from_max_power(
        capacity_kwh=60, soc_pct=20, max_power_kw=7.36, phases=1
    )
    three = EvBattery.from_max_power(
        capacity_kwh=60, soc_pct=20, max_power_kw=22.08, phases=3
    )
    assert one.max_current_a == pytest.approx(32)
    assert three.max_current_a == pytest.approx(32)
    p1, _ = one.step(60, None)
    p3, _ = three.step(60, None)
    assert p3 == pytest.approx(3 * p1)
    assert one.phase_currents_a(p1) == pytest.approx((32.0,))
    assert three.phase_currents_a(p3) == pytest.approx((32.0, 32.0, 32.0))
    # the same 7 kW limit is ~10 A on three phases and ~30 A on one
    assert three.phase_currents_a(7_000) == pytest.approx((7000 / 690,) * 3)
    assert one.phase_currents_a(7_000) == pytest.approx((7000 / 230,))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        EvBattery(capacity_kwh=0)
    with pytest.raises(ValueError):
        EvBattery(soc_pct=101)
    with pytest.raises(ValueError):
        EvBattery(phases=4)
