"""Issue 15: the planner held to its claims, one reproducing test per finding.

Each test here failed before its fix (the figure it failed with is in its docstring).
Work is counted, not timed: ``Plan.work`` says how many augmenting steps, path
searches and pool solves a plan took, and ``stalls`` how many loops stopped because
a step made no progress (always 0 unless the planner has a bug).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from protocols.planning import EvRequest, Plan, SiteLimit, SlotCurve, plan_charging

T0 = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def curve(values: list[float], start: datetime = T0, unit: str = "p/kWh") -> SlotCurve:
    return SlotCurve(start, tuple(float(v) for v in values), unit)


def peak_w(plan: Plan, evs: list[EvRequest], t: int) -> float:
    """The most the EVs draw at once in slot ``t`` (a partial slot runs at its
    period's power, not at the slot's average)."""
    start = plan.horizon_start + timedelta(minutes=30 * t)
    end = start + timedelta(minutes=30)
    total = 0.0
    for r, c in zip(evs, plan.chargers, strict=True):
        total += max(
            (p.limit_w for p in c.periods if p.start < end and p.end > start),
            default=0.0,
        )
        assert r.charger_id == c.charger_id
    return total


def assert_physical(plan: Plan, evs: list[EvRequest], site_w: float) -> None:
    """Every period 0 or at least the minimum; no slot over the site's room."""
    for r, c in zip(evs, plan.chargers, strict=True):
        for p in c.periods:
            assert p.limit_w == 0 or p.limit_w >= r.effective_min_power_w() - 1e-6
            assert p.limit_w <= r.max_power_w + 1e-6
    for t in range(len(plan.ev_load_w)):
        assert peak_w(plan, evs, t) <= site_w + 1e-6


# ------------------------------------------------- 1. chargers whose maximum is 6 A


@pytest.mark.parametrize("seed", range(4))
def test_a_6a_max_charger_does_not_stall_or_fall_short(seed: int) -> None:
    """Issue 15 item 1, its smallest case: 60 A single-phase site, one EV on a 6 A
    charger (5 kWh by +10 h) and one on 32 A. Before: 6.1 s (here 14-33 s) and the
    6 A EV flagged 0.17 kWh short, though 5 kWh is 7 h 15 min at 6 A."""
    import random

    rng = random.Random(seed)
    prices = curve([round(rng.uniform(-5, 40), 2) for _ in range(24)])
    evs = [
        EvRequest("six", T0 + 10 * HOUR, 6 * 230.0, energy_needed_kwh=5.0),
        EvRequest("big", T0 + 10 * HOUR, 32 * 230.0, energy_needed_kwh=20.0),
    ]
    plan = plan_charging(T0, evs, SiteLimit(60.0), prices)
    six = plan.for_charger("six")
    assert six.feasible and six.shortfall_kwh == 0.0
    assert six.energy_planned_kwh == pytest.approx(5.0)
    assert plan.feasible
    assert_physical(plan, evs, 60 * 230.0)
    assert plan.work.stalls == 0
    assert plan.work.augments < 2_000, plan.work


def test_a_6a_charger_stops_mid_slot_instead_of_falling_short() -> None:
    """The last piece of a 6 A-max charger runs at 6 A for part of a slot (the
    period ends mid-slot) and the site keeps 6 A of room for it while it runs."""
    prices = curve([10.0] * 4 + [1.0] * 8 + [10.0] * 8)
    ev = EvRequest("six", T0 + 10 * HOUR, 6 * 230.0, energy_needed_kwh=5.0)
    plan = plan_charging(T0, [ev], SiteLimit(60.0), prices)
    c = plan.for_charger("six")
    assert c.feasible and c.energy_planned_kwh == pytest.approx(5.0)
    assert {p.limit_w for p in c.periods} <= {0.0, 1380.0}
    on = [p for p in c.periods if p.limit_w > 0]
    run_h = sum((p.end - p.start).total_seconds() for p in on) / 3600.0
    assert run_h * 1.38 == pytest.approx(5.0, abs=1e-3)  # 3 h 37 min 24 s at 6 A
    assert any(p.end.minute not in (0, 30) for p in on)  # stops mid-slot
    # the 8 cheapest slots first: 4 h at 6 A would be 5.52 kWh, so all of it there
    assert sum(c.slot_energy_wh[4:12]) == pytest.approx(5000.0)


def test_eight_6a_chargers_on_a_tight_site_are_bounded_work() -> None:
    """Issue 15 item 1's worst case had 8 EVs (110 million zero-progress steps,
    125 s): six 6 A-max chargers and two 32 A ones sharing a tight fuse."""
    import random

    rng = random.Random(8)
    prices = curve([round(rng.uniform(-5, 40), 2) for _ in range(30)])
    evs = [
        EvRequest(
            f"c{i}",
            T0 + timedelta(minutes=30 * rng.randint(10, 28)),
            6 * 230.0 if i < 6 else 32 * 230.0,
            energy_needed_kwh=round(rng.uniform(1, 12), 2),
        )
        for i in range(8)
    ]
    plan = plan_charging(T0, evs, SiteLimit(40.0), prices)
    assert plan.work.stalls == 0
    assert plan.work.augments + plan.work.path_searches < 200_000, plan.work
    assert_physical(plan, evs, 40 * 230.0)


# ------------------------------ 2. a request that cannot be met takes nobody's room


def _four_feasible() -> list[EvRequest]:
    # 4 x 7 kWh by +4 h on 32 A (7.36 kW): 28 of the 29.44 kWh the site can carry
    return [
        EvRequest(f"ok{i}", T0 + 4 * HOUR, 3700.0, energy_needed_kwh=7.0)
        for i in range(4)
    ]


def test_a_departed_ev_does_not_take_the_room_of_feasible_ones() -> None:
    """Issue 15 item 2: an EV whose departure is already past (flagged infeasible)
    was then charged at full power from now before the others were planned,
    leaving four feasible EVs short. Before: all four flagged, 14.9 kWh short
    in the issue's instance (here 13.97 kWh)."""
    prices = curve([20.0] * 8 + [5.0] * 8)
    gone = EvRequest("gone", T0 - HOUR, 7400.0, energy_needed_kwh=15.0)
    evs = [gone, *_four_feasible()]
    plan = plan_charging(T0, evs, SiteLimit(32.0), prices)
    for i in range(4):
        c = plan.for_charger(f"ok{i}")
        assert c.feasible and c.shortfall_kwh == 0.0
        assert sum(c.slot_energy_wh[:8]) == pytest.approx(7000.0)
    late = plan.for_charger("gone")
    assert not late.feasible and late.shortfall_kwh == pytest.approx(15.0)
    # it still catches up in what the others leave: until +4 h that is 1.44 kWh
    # spread thin (equal prices are levelled), under its 6 A minimum in every
    # slot, so it starts at +4 h at full power (7.36 kW on this fuse)
    assert sum(late.slot_energy_wh[:8]) == 0.0
    assert late.slot_energy_wh[8:13] == pytest.approx((3680.0,) * 4 + (280.0,))
    assert_physical(plan, evs, 32 * 230.0)


def test_departure_before_arrival_is_refused_naming_the_field() -> None:
    from protocols.planning import PlanInputError

    prices = curve([10.0] * 16)
    bad = EvRequest(
        "bad", T0 + HOUR, 7400.0, energy_needed_kwh=5.0, arrival=T0 + 2 * HOUR
    )
    with pytest.raises(PlanInputError, match=r"ready_by .* not after arrival") as err:
        plan_charging(T0, [bad, *_four_feasible()], SiteLimit(32.0), prices)
    assert err.value.field == "ready_by" and err.value.charger_id == "bad"
    # refused alone: the others get exactly the plan they get without it
    plan = plan_charging(
        T0, [bad, *_four_feasible()], SiteLimit(32.0), prices, bad_requests="refuse"
    )
    without = plan_charging(T0, _four_feasible(), SiteLimit(32.0), prices)
    refused = plan.for_charger("bad")
    assert refused.refused is not None and "arrival" in refused.refused
    assert not refused.feasible and refused.periods == ()
    assert not plan.feasible  # the site's plan says one request was not met
    assert plan.chargers[1:] == without.chargers


# ------------------------------------------ 3. an overdue EV starves nobody


def test_an_impossible_request_does_not_starve_a_feasible_one() -> None:
    """Issue 15 item 3, the worked numbers: 32 A single-phase (7.36 kW). A needs
    30 kWh by +2 h (at most 4 x 3.68 = 14.72 kWh), B 10 kWh by +5 h. Before: A's
    catch-up ran until +4.5 h, B was flagged short and 21.5 kWh were delivered by
    the ready-bys (here B 3.33 kWh short, 21.39 kWh). Now B is met, A gets 14.72
    kWh by its ready-by and is short by exactly 15.28 kWh: 24.72 kWh by the
    ready-bys, the most possible."""
    prices = curve([30, 30, 30, 30, 12, 18, 9, 25, 14, 11] + [20] * 12)
    a = EvRequest("A", T0 + 2 * HOUR, 7400.0, energy_needed_kwh=30.0)
    b = EvRequest("B", T0 + 5 * HOUR, 7400.0, energy_needed_kwh=10.0)
    plan = plan_charging(T0, [a, b], SiteLimit(32.0), prices)
    pa, pb = plan.for_charger("A"), plan.for_charger("B")
    assert pb.feasible and pb.shortfall_kwh == 0.0
    assert sum(pb.slot_energy_wh[:10]) == pytest.approx(10_000.0)
    assert not pa.feasible
    assert sum(pa.slot_energy_wh[:4]) == pytest.approx(14_720.0)
    assert pa.shortfall_kwh == pytest.approx(15.28, abs=1e-6)
    # B takes the cheapest 10 kWh of its window after A's: 9 and 11 p, 2.64 at 12 p
    assert pb.cost_p == pytest.approx(3.68 * (9 + 11) + (10 - 2 * 3.68) * 12)
    # A catches up in the room B leaves, as early as it can
    assert sum(pa.slot_energy_wh) == pytest.approx(30_000.0)
    # B is in slots 6 and 9 and has 2.64 kWh of slot 4: A gets the rest from +2 h
    want = (1040.0, 3680.0, 0.0, 3680.0, 3680.0, 0.0, 3200.0)
    assert pa.slot_energy_wh[4:11] == pytest.approx(want)
    assert_physical(plan, [a, b], 32 * 230.0)


def test_of_two_short_requests_the_impossible_one_gives_way() -> None:
    """Same window, not enough room for both: the one that could be met alone is
    met, the one that could never be met takes what is left."""
    prices = curve([10.0] * 8)
    hopeless = EvRequest("h", T0 + 2 * HOUR, 7400.0, energy_needed_kwh=40.0)
    fine = EvRequest("f", T0 + 2 * HOUR, 7400.0, energy_needed_kwh=10.0)
    plan = plan_charging(T0, [hopeless, fine], SiteLimit(32.0), prices)
    assert plan.for_charger("f").feasible
    h = plan.for_charger("h")
    assert sum(h.slot_energy_wh[:4]) == pytest.approx(14_720.0 - 10_000.0)
    assert h.shortfall_kwh == pytest.approx(40.0 - 4.72)


# --------------------------------------------------------- 5. bad input refused


def _ok(**kw: object) -> EvRequest:
    args: dict[str, object] = {
        "charger_id": "x",
        "ready_by": T0 + 4 * HOUR,
        "max_power_w": 7400.0,
        "energy_needed_kwh": 5.0,
    }
    args.update(kw)
    return EvRequest(**args)  # type: ignore[arg-type]


NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"energy_needed_kwh": NAN}, "energy_needed_kwh"),
        ({"energy_needed_kwh": INF}, "energy_needed_kwh"),
        ({"energy_needed_kwh": -1.0}, "energy_needed_kwh"),
        ({"max_power_w": NAN}, "max_power_w"),
        ({"max_power_w": INF}, "max_power_w"),
        ({"max_power_w": 0.0}, "max_power_w"),
        ({"max_power_w": 1000.0}, "max_power_w"),  # below 6 A: could never charge
        ({"min_power_w": NAN}, "min_power_w"),
        ({"min_power_w": -5.0}, "min_power_w"),
        ({"voltage_v": 0.0}, "voltage_v"),
        ({"voltage_v": -230.0}, "voltage_v"),
        ({"voltage_v": NAN}, "voltage_v"),
        ({"arrival": T0 + 5 * HOUR}, "ready_by"),
        ({"energy_needed_kwh": 70.0, "battery_kwh": 60.0}, "energy_needed_kwh"),
        (
            {"energy_needed_kwh": 40.0, "battery_kwh": 60.0, "current_soc_pct": 50.0},
            "energy_needed_kwh",
        ),
        ({"energy_needed_kwh": None, "target_soc_pct": 80.0}, "energy_needed_kwh"),
        (
            {
                "energy_needed_kwh": None,
                "target_soc_pct": NAN,
                "current_soc_pct": 20.0,
                "battery_kwh": 60.0,
            },
            "target_soc_pct",
        ),
        (
            {
                "energy_needed_kwh": None,
                "target_soc_pct": 80.0,
                "current_soc_pct": 20.0,
                "battery_kwh": 0.0,
            },
            "battery_kwh",
        ),
        ({"ready_by": datetime(2025, 1, 6, 22, 0)}, "ready_by"),  # naive
    ],
)
def test_a_bad_request_is_refused_naming_its_field(
    kw: dict[str, object], field: str
) -> None:
    """Issue 15 item 5. Before: NaN energy became 0 kWh marked feasible, NaN or
    infinite power was planned, infinite energy raised OverflowError, voltage 0
    ZeroDivisionError."""
    from protocols.planning import PlanInputError

    prices = curve([10.0] * 16)
    good = EvRequest("good", T0 + 4 * HOUR, 7400.0, energy_needed_kwh=5.0)
    with pytest.raises(PlanInputError) as err:
        plan_charging(T0, [good, _ok(**kw)], SiteLimit(32.0), prices)
    assert err.value.field == field and err.value.charger_id == "x"
    assert field in str(err.value) and "charger x" in str(err.value)
    plan = plan_charging(
        T0, [good, _ok(**kw)], SiteLimit(32.0), prices, bad_requests="refuse"
    )
    assert plan.for_charger("good").feasible
    x = plan.for_charger("x")
    assert x.refused and not x.feasible and x.periods == ()
    for v in (x.energy_needed_kwh, x.shortfall_kwh, plan.total_cost_p):
        assert v == v and abs(v) != INF  # finite figures, whatever came in


@pytest.mark.parametrize(
    ("site", "field"),
    [
        (SiteLimit(0.0), "site.main_fuse_a"),
        (SiteLimit(NAN), "site.main_fuse_a"),
        (SiteLimit(-32.0), "site.main_fuse_a"),
        (SiteLimit(32.0, voltage_v=0.0), "site.voltage_v"),
        (SiteLimit(32.0, voltage_v=INF), "site.voltage_v"),
        (SiteLimit(32.0, phases=2), "site.phases"),
    ],
)
def test_a_bad_site_is_refused_naming_its_field(site: SiteLimit, field: str) -> None:
    from protocols.planning import PlanInputError

    prices = curve([10.0] * 16)
    good = EvRequest("good", T0 + 4 * HOUR, 7400.0, energy_needed_kwh=5.0)
    for mode in ("raise", "refuse"):
        with pytest.raises(PlanInputError) as err:
            plan_charging(T0, [good], site, prices, bad_requests=mode)  # type: ignore[arg-type]
        assert err.value.field == field


def test_a_ready_by_inside_the_first_slot_is_planned_to_the_minute() -> None:
    """Issue 15 item 5: a ready-by inside the first slot was flagged infeasible in
    36 of 44 physically feasible cases (the slot was rounded away). 18 minutes at
    7.4 kW is 2.22 kWh: 2 kWh is feasible, planned from now until the ready-by,
    and the other EV shares the slot without the site going over."""
    now = T0 + timedelta(minutes=7)
    ready = T0 + timedelta(minutes=25)
    prices = curve([30.0, 5.0, 5.0, 5.0, 5.0])
    soon = EvRequest("soon", ready, 7400.0, energy_needed_kwh=2.0)
    later = EvRequest("later", T0 + 2 * HOUR, 7400.0, energy_needed_kwh=3.0)
    plan = plan_charging(now, [soon, later], SiteLimit(40.0), prices)
    c = plan.for_charger("soon")
    assert c.feasible and c.shortfall_kwh == 0.0
    assert c.slot_energy_wh[0] == pytest.approx(2000.0)
    assert c.periods[0].start == now and c.periods[-1].end <= ready
    energy = sum(
        p.limit_w * (p.end - p.start).total_seconds() / 3.6e6 for p in c.periods
    )
    assert energy == pytest.approx(2.0, abs=1e-6)
    assert plan.for_charger("later").feasible
    assert_physical(plan, [soon, later], 40 * 230.0)
    # 2.3 kWh cannot be done in 18 minutes: flagged, short by 0.08 kWh at the ready-by
    more = EvRequest("soon", ready, 7400.0, energy_needed_kwh=2.3)
    c2 = plan_charging(now, [more], SiteLimit(40.0), prices).for_charger("soon")
    assert not c2.feasible and c2.shortfall_kwh == pytest.approx(2.3 - 7.4 * 0.3)


def test_the_cloud_lease_refuses_one_bad_charger_and_plans_the_others() -> None:
    """What the cloud scheduler calls per site: one charger with an unusable figure
    (a 4 A charger: it could never reach 6 A; a NaN ask) is refused by name, the
    others are planned as without it, and the site's lease is still made."""
    from dataclasses import replace

    from protocols.planning.leasing import (
        ChargerInputs,
        compose_lease,
    )

    ready = T0 + 10 * HOUR
    good = ChargerInputs("good", 1, 7400.0, None, 1, 1, "smart", ready, 10.0, 0.0, None)
    inputs = _site_inputs(good)
    alone = compose_lease(inputs, now=T0, version=1, validity=HOUR)
    for bad in (
        replace(good, charger_id="bad", max_power_w=4 * 230.0),
        replace(good, charger_id="bad", energy_needed_kwh=NAN),
    ):
        both = replace(inputs, chargers=(bad, good))
        composed = compose_lease(both, now=T0, version=1, validity=HOUR)
        assert [cid for cid, _ in composed.refused] == ["bad"]
        assert not composed.feasible
        bad_lease, good_lease = composed.lease.chargers
        assert not bad_lease.feasible and bad_lease.periods == []
        assert bad_lease.request is None
        assert good_lease == alone.lease.chargers[0]
        assert composed.cost_p == pytest.approx(alone.cost_p)


# ------------------------------------------------------- 6. equal prices levelled


def _min_peak_w(evs: list[EvRequest], n: int, base_w: list[float]) -> float:
    """The lowest peak of base + EV load over ``n`` equal-price slots that still
    meets every request (the continuous LP, bisected on the peak)."""
    pytest.importorskip("scipy")
    from fusebox.bench_planner_milp import reference

    lo, hi = max(base_w), max(base_w) + sum(e.max_power_w for e in evs)
    for _ in range(40):
        mid = (lo + hi) / 2
        fuse = SiteLimit(mid / 230.0)
        ref = reference(
            T0,
            evs,
            fuse,
            curve([5.0] * n),
            base_load_w=curve(base_w, unit="W"),
            with_minimum=False,
        )
        met = all(ref.met(i, e.needed_kwh() * 1000) for i, e in enumerate(evs))
        lo, hi = (lo, mid) if met else (mid, hi)
    return hi


@pytest.mark.parametrize("seed", range(6))
def test_equal_prices_are_levelled_to_the_lowest_peak(seed: int) -> None:
    """Issue 15 item 6: equal prices were valley-filled in 12 coarse steps, a peak
    a median 1.17x (up to 2.4x) the lowest possible. Now within 1 %."""
    import random

    rng = random.Random(seed)
    n = 16
    base = [round(rng.uniform(200, 3000), 1) for _ in range(n)]
    evs = [
        EvRequest(
            f"c{i}",
            T0 + timedelta(minutes=30 * rng.randint(6, n)),
            rng.choice([3700.0, 7400.0]),
            min_power_w=0.0,
            energy_needed_kwh=round(rng.uniform(2, 12), 2),
        )
        for i in range(rng.randint(1, 4))
    ]
    lowest = _min_peak_w(evs, n, base)
    plan = plan_charging(
        T0, evs, SiteLimit(100.0), curve([5.0] * n), base_load_w=curve(base, unit="W")
    )
    assert plan.feasible
    peak = max(base[t] + w for t, w in enumerate(plan.ev_load_w))
    assert peak <= lowest * 1.01 + 1.0, (peak, lowest)


def test_a_boosting_charger_with_a_nan_ask_does_not_stop_the_site() -> None:
    from dataclasses import replace

    from protocols.planning.leasing import (
        ChargerInputs,
        compose_lease,
    )

    good = ChargerInputs(
        "good", 1, 7400.0, None, 1, 1, "smart", T0 + 10 * HOUR, 10.0, 0.0, None
    )
    boost = replace(good, charger_id="boost", mode="boost", energy_needed_kwh=NAN)
    inputs = _site_inputs(boost, good)
    composed = compose_lease(inputs, now=T0, version=1, validity=HOUR)
    boost_lease, good_lease = composed.lease.chargers
    assert boost_lease.periods == [] and good_lease.feasible


def _site_inputs(*chargers: Any) -> Any:
    """A 60 A single-phase site's lease inputs with these chargers."""
    from protocols.planning.leasing import SiteInputs, SiteRow

    return SiteInputs(
        gateway_id="gw",
        inputs_at=T0,
        site=SiteRow(60.0, 1, 230.0, "default", "Europe/London", "cost", 0.5, 0.0),
        chargers=tuple(chargers),
        slots_start=T0,
        prices=tuple(float(10 + (k % 7)) for k in range(24)),
        carbon=(),
        base_load_w=0.0,
        price_note="",
    )
