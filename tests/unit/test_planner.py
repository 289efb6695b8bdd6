"""The joint smart-charging planner: hand-checkable cases and the LP optimum."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from protocols.planning import (
    SLOT,
    EvRequest,
    PlanningError,
    SiteLimit,
    SlotCurve,
    TimeOfUseTariff,
    plan_charging,
)

T0 = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)


def curve(values: list[float], start: datetime = T0, unit: str = "p/kWh") -> SlotCurve:
    return SlotCurve(start, tuple(float(v) for v in values), unit)


def fuse_for(watts: float, phases: int = 1) -> SiteLimit:
    return SiteLimit(watts / 230.0 / phases, 230.0, phases)


def test_single_ev_takes_the_cheapest_slots() -> None:
    prices = curve([30, 25, 20, 10, 5, 8, 12, 3, 15, 20, 22, 25])
    ev = EvRequest("c1", T0 + SLOT * 12, 7400.0, energy_needed_kwh=7.4)
    plan = plan_charging(T0, [ev], SiteLimit(100), prices)
    c = plan.for_charger("c1")
    assert c.feasible and c.shortfall_kwh == 0
    # 3.7 kWh per slot at 7.4 kW: the 3 p and the 5 p slots, nothing else
    assert c.slot_energy_wh[7] == pytest.approx(3700)
    assert c.slot_energy_wh[4] == pytest.approx(3700)
    assert sum(c.slot_energy_wh) == pytest.approx(7400)
    assert c.cost_p == pytest.approx(3.7 * 3 + 3.7 * 5)
    for p in c.periods:
        assert p.limit_w in (0.0, 7400.0)
        assert p.limit_a_per_phase == pytest.approx(p.limit_w / 230.0)


def test_periods_start_at_now_and_are_contiguous() -> None:
    now = T0 + timedelta(minutes=10)
    prices = curve([1, 30, 30, 2, 30, 30])
    ev = EvRequest("c1", T0 + SLOT * 6, 7400.0, energy_needed_kwh=4.0)
    c = plan_charging(now, [ev], SiteLimit(100), prices).for_charger("c1")
    assert c.periods[0].start == now
    for a, b in zip(c.periods, c.periods[1:], strict=False):
        assert a.end == b.start
    # the first slot only has 20 minutes left: at most 7.4 kW x 1/3 h
    assert c.slot_energy_wh[0] == pytest.approx(7400 / 3)
    assert sum(c.slot_energy_wh) == pytest.approx(4000)


def test_ready_by_is_respected_even_if_cheaper_slots_follow() -> None:
    prices = curve([20, 21, 22, 23, 1, 1, 1, 1])
    ev = EvRequest(
        "c1", T0 + SLOT * 4 + timedelta(minutes=20), 7400, energy_needed_kwh=5
    )
    c = plan_charging(T0, [ev], SiteLimit(100), prices).for_charger("c1")
    assert c.feasible
    assert all(v == 0 for v in c.slot_energy_wh[4:])
    assert c.periods[-1].end <= T0 + SLOT * 4


def test_soc_request_is_converted_to_energy() -> None:
    ev = EvRequest(
        "c1",
        T0 + SLOT * 8,
        7400,
        target_soc_pct=80,
        current_soc_pct=30,
        battery_kwh=60,
    )
    assert ev.needed_kwh() == pytest.approx(30)
    with pytest.raises(PlanningError, match="target_soc_pct"):
        EvRequest("c2", T0, 7400, target_soc_pct=80).needed_kwh()


def test_infeasible_request_reports_shortfall_and_charges_at_once() -> None:
    prices = curve([30, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    ev = EvRequest("c1", T0 + SLOT * 2, 7400, energy_needed_kwh=10)
    plan = plan_charging(T0, [ev], SiteLimit(100), prices)
    c = plan.for_charger("c1")
    assert not c.feasible and not plan.feasible
    assert c.shortfall_kwh == pytest.approx(10 - 7.4)
    # both slots before the ready-by at full power, the dear one included
    assert c.slot_energy_wh[0] == pytest.approx(3700)
    assert c.slot_energy_wh[1] == pytest.approx(3700)
    # then the rest as soon as possible, not in the cheapest later slots
    assert c.slot_energy_wh[2] == pytest.approx(2600)
    assert sum(c.slot_energy_wh) == pytest.approx(10000)


def test_ready_by_in_the_past_charges_now_at_full_power() -> None:
    prices = curve([30, 1, 1, 1, 1, 1])
    ev = EvRequest("c1", T0 - timedelta(hours=1), 7400, energy_needed_kwh=3.7)
    c = plan_charging(T0, [ev], SiteLimit(100), prices).for_charger("c1")
    assert not c.feasible
    assert c.slot_energy_wh[0] == pytest.approx(3700)


def test_site_limit_is_planned_jointly() -> None:
    """One-at-a-time greedy fails here: the fast EV would take all of the cheap slot
    and the slow one could not finish; planned jointly, both finish."""
    prices = curve([5, 20])
    fast = EvRequest("fast", T0 + SLOT * 2, 7400, energy_needed_kwh=3.7)
    slow = EvRequest("slow", T0 + SLOT * 2, 3700, energy_needed_kwh=3.7)
    site = fuse_for(7400)
    plan = plan_charging(T0, [fast, slow], site, prices)
    assert plan.feasible
    for c in plan.chargers:
        assert c.energy_planned_kwh == pytest.approx(3.7)
    for load, limit in zip(plan.ev_load_w, plan.limit_w, strict=True):
        assert load <= limit + 1e-6


def test_site_limit_with_base_load_and_deadlines() -> None:
    prices = curve([10, 1, 1, 10, 10, 2, 2, 30])
    base = curve([3000, 3000, 3000, 500, 500, 500, 500, 500], unit="W")
    evs = [
        EvRequest("early", T0 + SLOT * 3, 7400, energy_needed_kwh=6),
        EvRequest("late", T0 + SLOT * 8, 7400, energy_needed_kwh=8),
    ]
    site = fuse_for(9200)
    plan = plan_charging(T0, evs, site, prices, base_load_w=base)
    assert plan.feasible
    for t, load in enumerate(plan.ev_load_w):
        assert load + base.values[t] <= 9200 + 1e-6
    assert sum(plan.for_charger("early").slot_energy_wh[3:]) == 0


def test_minimum_power_is_respected() -> None:
    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(4, 16)
        prices = curve([rng.uniform(-5, 40) for _ in range(n)])
        evs = [
            EvRequest(
                f"c{k}",
                T0 + SLOT * rng.randint(2, n),
                rng.choice([7400.0, 3700.0]),
                energy_needed_kwh=rng.uniform(0.3, 9.0),
            )
            for k in range(rng.randint(1, 3))
        ]
        plan = plan_charging(T0, evs, fuse_for(9000), prices)
        for r, c in zip(evs, plan.chargers, strict=True):
            for p in c.periods:
                assert p.limit_w == 0 or p.limit_w >= r.effective_min_power_w() - 1e-6
        for load, limit in zip(plan.ev_load_w, plan.limit_w, strict=True):
            assert load <= limit + 1e-6


def test_equal_prices_are_valley_filled_not_stacked() -> None:
    go = TimeOfUseTariff.go_like()  # 7.5 p 23:30-05:30 UTC
    now = datetime(2025, 1, 6, 23, 30, tzinfo=UTC)
    prices = go.curve(now, now + timedelta(hours=8))
    evs = [
        EvRequest(f"c{k}", now + timedelta(hours=8), 7400, energy_needed_kwh=7.4)
        for k in range(4)
    ]
    plan = plan_charging(now, evs, SiteLimit(100), prices)
    assert plan.feasible
    cheap = plan.ev_load_w[:12]
    assert sum(plan.ev_load_w[12:]) == 0
    # 29.6 kWh over 6 h is 4.9 kW on average; stacking would be 29.6 kW
    assert max(cheap) <= 12_000
    assert sum(1 for w in cheap if w > 0) >= 6


def test_carbon_objective_picks_the_greenest_slots() -> None:
    prices = curve([5, 5, 30, 30])
    carbon = curve([300, 300, 50, 60], unit="gCO2/kWh")
    ev = EvRequest("c1", T0 + SLOT * 4, 7400, energy_needed_kwh=7.4)
    by_cost = plan_charging(T0, [ev], SiteLimit(100), prices, carbon=carbon)
    by_carbon = plan_charging(
        T0, [ev], SiteLimit(100), prices, carbon=carbon, objective="carbon"
    )
    assert by_cost.for_charger("c1").slot_energy_wh[:2] == (3700, 3700)
    assert by_carbon.for_charger("c1").slot_energy_wh[2:] == (3700, 3700)
    assert by_carbon.total_carbon_g < by_cost.total_carbon_g
    mixed = plan_charging(
        T0,
        [ev],
        SiteLimit(100),
        prices,
        carbon=carbon,
        objective="mix",
        carbon_weight=0.9,
    )
    assert mixed.total_carbon_g < by_cost.total_carbon_g
    with pytest.raises(PlanningError, match="carbon"):
        plan_charging(T0, [ev], SiteLimit(100), prices, objective="carbon")


def test_three_phase_site_respects_every_phase() -> None:
    rng = random.Random(3)
    prices = curve([rng.uniform(0, 30) for _ in range(20)])
    evs = [
        EvRequest("t1", T0 + SLOT * 20, 11000, phases=3, energy_needed_kwh=30),
        EvRequest("s1", T0 + SLOT * 16, 7400, phase=1, energy_needed_kwh=25),
        EvRequest("s2", T0 + SLOT * 18, 7400, phase=1, energy_needed_kwh=20),
        EvRequest("s3", T0 + SLOT * 20, 7400, phase=2, energy_needed_kwh=20),
    ]
    site = SiteLimit(28, phases=3)
    plan = plan_charging(T0, evs, site, prices, base_load_w=600)
    assert plan.feasible
    for t in range(len(plan.ev_load_w)):
        phase = [200.0, 200.0, 200.0]
        for r, c in zip(evs, plan.chargers, strict=True):
            w = c.slot_energy_wh[t] / 0.5
            if r.phases == 3:
                phase = [v + w / 3 for v in phase]
            else:
                phase[r.phase - 1] += w
        assert max(phase) <= 28 * 230 + 1e-6


def test_bad_requests_are_refused() -> None:
    prices = curve([1, 2])
    with pytest.raises(PlanningError, match="twice"):
        ev = EvRequest("c1", T0 + SLOT, 7400, energy_needed_kwh=1)
        plan_charging(T0, [ev, ev], SiteLimit(60), prices)
    with pytest.raises(PlanningError, match="price curve"):
        ev = EvRequest("c1", T0 + SLOT * 5, 7400, energy_needed_kwh=1)
        plan_charging(T0, [ev], SiteLimit(60), prices)


# ------------------------------------------------------------- against the LP


def _lp(now: datetime, evs: list[EvRequest], site: SiteLimit, prices: SlotCurve,
        base: float) -> float | None:  # fmt: skip
    pytest.importorskip("scipy")  # the LP is the bench's (an optional extra)
    from fusebox.bench_planner import lp_for_plan_inputs

    return lp_for_plan_inputs(now, evs, site, prices, base)


def _random_case(
    rng: random.Random, three_phase: str
) -> tuple[datetime, list[EvRequest], SiteLimit, SlotCurve, float]:
    n = rng.randint(6, 30)
    now = T0 + timedelta(minutes=rng.choice([0, 0, 7, 21]))
    prices = curve([round(rng.uniform(-5, 45), 2) for _ in range(n + 1)])
    k = rng.randint(1, 6)
    evs = []
    for i in range(k):
        three = three_phase == "all" or (three_phase == "none" and False)
        power = 11000.0 if three else rng.choice([7400.0, 3700.0, 7400.0])
        evs.append(
            EvRequest(
                f"c{i}",
                T0 + SLOT * rng.randint(max(2, n // 2), n),
                power,
                phases=3 if three else 1,
                phase=1 + rng.randrange(3),
                min_power_w=0.0,
                energy_needed_kwh=rng.uniform(1, 20),
            )
        )
    phases = 1 if three_phase == "single-site" else 3
    room = rng.uniform(0.4, 1.0) * sum(e.max_power_w for e in evs) / phases / 230.0
    return now, evs, SiteLimit(max(6.0, room), phases=phases), prices, 300.0


@pytest.mark.parametrize("kind", ["single-site", "all", "none"])
def test_matches_the_lp_optimum_on_random_instances(kind: str) -> None:
    rng = random.Random({"single-site": 11, "all": 12, "none": 13}[kind])
    compared = 0
    for _ in range(40):
        now, evs, site, prices, base = _random_case(rng, kind)
        lp = _lp(now, evs, site, prices, base)
        if lp is None:  # jointly infeasible: the planner must say so
            assert not plan_charging(now, evs, site, prices, base_load_w=base).feasible
            continue
        plan = plan_charging(now, evs, site, prices, base_load_w=base)
        assert plan.feasible
        scale = sum(abs(v) for v in prices.values) / len(prices.values)
        energy = sum(e.needed_kwh() for e in evs)
        # within 0.5 % of the cost of the energy at the mean absolute price
        assert plan.total_cost_p <= lp + 0.005 * scale * energy + 1e-6
        compared += 1
    assert compared >= 20


def test_a_large_site_matches_the_lp() -> None:
    rng = random.Random(5)
    now = T0 + timedelta(hours=3)
    prices = curve([round(rng.uniform(-2, 40), 2) for _ in range(30)])
    evs = [
        EvRequest(
            f"c{i}",
            now + timedelta(minutes=rng.randint(570, 690)),
            7400,
            phase=1,
            min_power_w=0.0,
            energy_needed_kwh=rng.uniform(10, 40),
        )
        for i in range(150)
    ]
    total_w = sum(e.needed_kwh() for e in evs) * 1000 / 9
    site = fuse_for(1.3 * total_w)
    plan = plan_charging(now, evs, site, prices)
    lp = _lp(now, evs, site, prices, 0.0)
    assert lp is not None and plan.feasible
    assert plan.total_cost_p == pytest.approx(lp, rel=1e-6, abs=1e-3)
    for load, limit in zip(plan.ev_load_w, plan.limit_w, strict=True):
        assert load <= limit + 1e-6
