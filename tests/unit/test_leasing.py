"""``protocols.planning.leasing``: the energy-still-needed rule, the curve extension
and the lease, and that the cloud's plan and the edge's local replan agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from protocols.lease import Lease
from protocols.planning import SLOT, SiteLimit
from protocols.planning.leasing import (
    ChargerInputs,
    LocalCharger,
    OwnerTarget,
    SiteInputs,
    SiteRow,
    compose_lease,
    extend_curve,
    fill_curve,
    from_ms,
    horizon_slots,
    limits_at,
    ms,
    owner_ask,
    replan_expired,
    still_needed_kwh,
)

T0 = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)  # plug-in; London is on UTC
READY_BY = datetime(2026, 1, 16, 7, 0, tzinfo=UTC)
CHEAP = (
    datetime(2026, 1, 16, 2, 0, tzinfo=UTC),
    datetime(2026, 1, 16, 5, 0, tzinfo=UTC),
)


def tariff(start: datetime, n: int) -> dict[datetime, float]:
    """30 p/kWh except 5 p from 02:00 to 05:00, as a tariff table would hold it."""
    out = {}
    for i in range(n):
        t = start + SLOT * i
        out[t] = 5.0 if CHEAP[0].time() <= t.time() < CHEAP[1].time() else 30.0
    return out


# ------------------------------------------------------------ energy still needed


def test_still_needed_is_the_ask_less_what_the_register_counted_since() -> None:
    # asked 10 kWh at 1,000 Wh; the register reads 4,000 Wh: 3 kWh are in
    assert still_needed_kwh(10.0, 1000.0, 4000.0) == pytest.approx(7.0)
    # a register of 0 Wh at the ask is a reading, not a missing one
    assert still_needed_kwh(7.36, 0.0, 2000.0) == pytest.approx(5.36)
    # either reading unknown: nothing counted
    assert still_needed_kwh(10.0, None, 4000.0) == 10.0
    assert still_needed_kwh(10.0, 1000.0, None) == 10.0
    # a register that went back (a replaced meter) counts nothing
    assert still_needed_kwh(10.0, 5000.0, 4000.0) == 10.0
    # more in than asked: nothing more, never negative
    assert still_needed_kwh(2.0, 0.0, 5000.0) == 0.0


def test_the_owner_ask_of_each_kind() -> None:
    common = {"default_kwh": 20.0, "assumed_soc_pct": 20.0, "session_start_wh": 1000.0}
    # a target energy is asked at the session's start: 10 - (7,000 - 1,000) Wh
    energy = OwnerTarget(target_energy_kwh=10.0)
    assert owner_ask(energy, soc_pct=None, register_wh=7000.0, **common) == 4.0
    # no preference: the default 20 kWh, also from the session's start
    assert owner_ask(None, soc_pct=None, register_wh=6000.0, **common) == 15.0
    # a measured SoC is the news: 80 % - 50 % of 60 kWh, whatever the register
    soc = OwnerTarget(target_soc_pct=80.0, battery_kwh=60.0)
    assert owner_ask(soc, soc_pct=50.0, register_wh=9000.0, **common) == 18.0
    # an assumed SoC (20 %) is the SoC at plug-in: 36 kWh less the 6 kWh given
    assert owner_ask(soc, soc_pct=None, register_wh=7000.0, **common) == 30.0
    # no register reading yet: nothing counted
    assert owner_ask(soc, soc_pct=None, register_wh=None, **common) == 36.0


# ----------------------------------------------------------------- curve extension


def test_fill_takes_the_same_slot_a_day_earlier() -> None:
    start = T0
    known = {start - SLOT * 48: 7.0, start + SLOT: 9.0}
    values, filled = fill_curve(known, start, 50)
    assert values[0] == 7.0  # from the day before start
    assert values[1] == 9.0 and values[2] is None
    assert values[48] == 7.0  # slot 0 filled, filled again a day later
    assert values[49] == 9.0
    assert filled == 3


def test_extend_a_lease_curve_as_the_cloud_fills_one() -> None:
    # a day of lease curve, extended by half a day: each new slot is the one a
    # day earlier, exactly what the cloud's fill gives for the same known slots
    day = tariff(T0, 48)
    lease_values = [day[T0 + SLOT * i] for i in range(48)]
    until = T0 + timedelta(hours=36)
    extended = extend_curve(lease_values, T0, until)
    cloud, _ = fill_curve(day, T0, 72)
    assert list(extended) == cloud
    assert extended[48:] == tuple(lease_values[:24])


def test_extend_without_a_day_earlier_takes_the_mean() -> None:
    # two hours known (30, 30, 5, 5): the slots after have nothing a day earlier
    extended = extend_curve([30.0, 30.0, 5.0, 5.0], T0, T0 + timedelta(hours=3))
    assert extended == (30.0, 30.0, 5.0, 5.0, 17.5, 17.5)
    assert extend_curve([30.0], T0, T0 + SLOT * 2, fallback=99.0) == (30.0, 99.0)
    # a curve long enough is never cut; an empty one stays empty
    assert len(extend_curve([1.0] * 10, T0, T0 + SLOT)) == 10
    assert extend_curve([], T0, T0 + SLOT * 4) == ()


def test_horizon_reaches_the_latest_ready_by_within_two_days() -> None:
    day = timedelta(hours=24)
    assert horizon_slots(T0, [T0 + timedelta(hours=13)], at_least=day) == 48
    assert horizon_slots(T0, [T0 + timedelta(hours=30)], at_least=day) == 60
    assert horizon_slots(T0, [T0 + timedelta(hours=80)], at_least=day) == 96
    assert horizon_slots(T0, [], at_least=timedelta(hours=2)) == 4


# --------------------------------------------------------- the two sides agree


SITE = SiteRow(60.0, 1, 230.0, "default", "Europe/London", "cost", 0.5, 0.0)


def cloud_inputs(now: datetime, need_kwh: float, register_wh: float) -> SiteInputs:
    """What the scheduler gathers at ``now`` for one EV (7.4 kW) and the tariff."""
    start = now.replace(minute=now.minute // 30 * 30, second=0, microsecond=0)
    n = horizon_slots(start, [READY_BY], at_least=timedelta(hours=24))
    known = tariff(T0 - timedelta(days=1), 4 * 48)
    prices, _ = fill_curve(known, start, n)
    charger = ChargerInputs(
        charger_id="CP1",
        connector_id=1,
        max_power_w=7400.0,
        min_power_w=None,
        phases=1,
        phase=1,
        mode="smart",
        ready_by=READY_BY,
        energy_needed_kwh=need_kwh,
        register_wh=register_wh,
        max_price_p_per_kwh=None,
    )
    return SiteInputs(
        gateway_id="gw",
        inputs_at=now,
        site=SITE,
        chargers=(charger,),
        slots_start=start,
        prices=tuple(p for p in prices if p is not None),
        carbon=(),
        base_load_w=0.0,
        price_note="",
    )


@pytest.mark.parametrize(
    "target",
    [
        OwnerTarget(target_energy_kwh=10.0),
        None,  # no preference: the default energy
        OwnerTarget(target_soc_pct=80.0, battery_kwh=60.0),  # SoC assumed 20 %
    ],
    ids=["target-energy", "default", "assumed-soc"],
)
def test_the_edges_replan_is_the_plan_the_cloud_would_make(
    target: OwnerTarget | None,
) -> None:
    # the session started at 1,000 Wh; the cloud plans at 18:00 (4,000 Wh) with a
    # one-hour lease; at 20:00 the cloud is gone and the register reads 6,500 Wh
    def ask(register_wh: float) -> float:
        return owner_ask(
            target,
            default_kwh=20.0,
            assumed_soc_pct=20.0,
            soc_pct=None,
            session_start_wh=1000.0,
            register_wh=register_wh,
        )

    later = T0 + timedelta(hours=2)
    lease = compose_lease(
        cloud_inputs(T0, ask(4000.0), 4000.0),
        now=T0,
        version=1,
        validity=timedelta(hours=1),
    ).lease
    request = lease.chargers[0].request
    assert request is not None and request.register_wh_at_request == 4000.0
    edge_plan = replan_expired(
        lease, later, [LocalCharger("CP1", 6500.0, 7400.0)], SiteLimit(60.0, 230.0)
    )
    cloud_now = compose_lease(
        cloud_inputs(later, ask(6500.0), 6500.0),
        now=later,
        version=2,
        validity=timedelta(hours=1),
    ).lease
    assert edge_plan is not None
    [edge] = edge_plan.chargers
    # the same energy still needed: what the cloud would ask at 6,500 Wh
    assert edge.energy_needed_kwh == pytest.approx(ask(6500.0))
    assert cloud_now.chargers[0].request is not None
    assert cloud_now.chargers[0].request.energy_needed_kwh == pytest.approx(
        edge.energy_needed_kwh
    )
    # and the same periods, filling the cheap hours first (3 h x 7.4 kW)
    assert [(ms(p.start), ms(p.end), p.limit_w) for p in edge.periods] == [
        (p.start_ms, p.end_ms, p.limit_w) for p in cloud_now.chargers[0].periods
    ]
    cheap_kwh = sum(
        p.limit_w * (p.end - p.start) / timedelta(hours=1) / 1000
        for p in edge.periods
        if CHEAP[0] <= p.start and p.end <= CHEAP[1]
    )
    assert cheap_kwh == pytest.approx(min(ask(6500.0), 3 * 7.4))


def test_target_energy_asks_at_session_start_so_the_numbers_match() -> None:
    # the module docstring's worked example: 10 kWh from 1,000 Wh; leased at
    # 4,000 Wh as 7 kWh; at 6,500 Wh both sides say 4.5 kWh
    target = OwnerTarget(target_energy_kwh=10.0)
    kw = {"default_kwh": 20.0, "assumed_soc_pct": 20.0}
    leased = owner_ask(
        target, soc_pct=None, session_start_wh=1000.0, register_wh=4000.0, **kw
    )
    assert leased == 7.0
    edge = still_needed_kwh(leased, 4000.0, 6500.0)
    cloud = owner_ask(
        target, soc_pct=None, session_start_wh=1000.0, register_wh=6500.0, **kw
    )
    assert edge == cloud == 4.5


def test_replan_without_requests_is_none_and_limits_are_read_at_now() -> None:
    lease = compose_lease(
        cloud_inputs(T0, 7.4, 0.0), now=T0, version=1, validity=timedelta(hours=1)
    ).lease
    limit = SiteLimit(60.0, 230.0)
    assert replan_expired(lease, T0, [LocalCharger("CP9", None, 7400.0)], limit) is None
    plan = replan_expired(lease, T0, [LocalCharger("CP1", None, 7400.0)], limit)
    assert plan is not None
    # 7.4 kWh at 7.4 kW: one hour in the 5p window, nothing now
    assert limits_at(plan, T0) == {"CP1": 0.0}
    charging = [p for p in plan.chargers[0].periods if p.limit_w > 0]
    assert sum(
        p.limit_w * (p.end - p.start) / timedelta(hours=1) for p in charging
    ) == (pytest.approx(7400.0))
    assert limits_at(plan, charging[0].start) == {"CP1": charging[0].limit_w}


def test_the_lease_carries_the_curve_and_each_request() -> None:
    composed = compose_lease(
        cloud_inputs(T0, 10.0, 4000.0), now=T0, version=3, validity=timedelta(hours=1)
    )
    lease: Lease = composed.lease
    assert (lease.version, lease.valid_until_ms - lease.issued_ms) == (3, 3_600_000)
    assert from_ms(lease.slots_start_ms) == T0 and len(lease.price_p_per_kwh) == 48
    [cp] = lease.chargers
    assert cp.request is not None
    assert (cp.request.energy_needed_kwh, cp.request.ready_by_ms) == (
        10.0,
        ms(READY_BY),
    )
    assert composed.feasible and composed.cost_p == pytest.approx(50.0)  # 10 kWh x 5p
