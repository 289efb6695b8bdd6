"""The smart-charging planner: joint ready-by plans for every EV of a site.

Pure: ``now``, the curves and the requests go in, a :class:`Plan` comes out.

The problem. Time is cut into half-hour slots from ``floor_slot(now)`` (the first slot
only has the part after ``now``). EV ``i`` may charge in the slots before its ready-by
(rounded down to a slot start), at most ``max_power_w`` in each; it needs ``E_i`` Wh.
The site may draw at most ``fuse A x voltage x phases`` minus the base-load forecast in
every slot (per phase). Each slot has one objective value per kWh, the same for every
EV of the site: the price (``cost``), the carbon intensity (``carbon``), or a weighted
mix of both, each normalised by its mean over the horizon (``mix``).

That is a transportation problem (EVs -> slots, per-EV per-slot capacity, per-slot site
capacity). Because the objective is per slot, not per EV, the set of per-slot site
loads that can be served is a polymatroid, and the cheapest full plan is found by the
polymatroid greedy: take the slots from cheapest to dearest and push as much energy
into each as the flow network allows, keeping what earlier (cheaper) slots already
hold. "As much as allowed" is a max-flow augmentation: first straight from an EV that
still needs energy (earliest ready-by first), then along augmenting paths that move an
EV with a later ready-by out of an earlier slot into this one so an EV with an earlier
ready-by can take its place. Paths are found by BFS on the small slot graph (one node
per slot, an edge s->r while some EV holds energy in s and has room in r), kept as
counters, so a 1,000-EV site takes about half a second. The result is an exact optimum
of the continuous problem; when the requests cannot all be met it is the cheapest plan
among those delivering the most energy (each short EV is flagged with its shortfall).

Ties: slots of equal objective are filled by raising a common water level over their
base load in steps (valley filling), so equal-cost load is spread, not stacked on the
first slot.

Minimum power: a slot is either 0 or at least ``min_power_w``. Below-minimum pieces of
the continuous optimum are first repaired locally: moved into the EV's other charging
slots (cheapest first, within its maximum and the site limit), swapped with another
EV's energy in a slot where both charge, or run at the minimum in their slot (or the
cheapest free one) with the excess taken off the EV's dearest slot, another EV giving
up room there if the site is full. When that leaves energy undelivered (a site loaded
to its limit), the below-minimum (EV, slot) pairs are banned and the pool re-solved
(all at once, then one at a time), keeping whatever delivers the most, then costs the
least. On the benchmark the minimum power costs under 0.1 %.

Phases: on a three-phase site, three-phase chargers draw a third of their power on each
phase; single-phase chargers draw on their ``phase``. A single-phase site, or a
three-phase site whose chargers are all single-phase (each phase on its own) or all
three-phase (one pool on the tightest phase), is planned exactly. A mixed site is a
heuristic: on its most loaded phase three candidates are planned (that phase's
single-phase EVs and every three-phase EV as a balanced third jointly; three-phase
first; single-phase first), the other phases' single-phase EVs go in the room left,
and the candidate delivering the most, then costing the least, wins. It is within
about 0.1-1 % of the LP optimum on the benchmark's mixed sites and 1,000-EV site.

Ready-by already passed, or too close to deliver the energy even alone: the EV charges
at full power from ``now`` (within the site's room) until done, before the others are
planned, and is flagged infeasible with its shortfall at the ready-by.

Where each part lives: :mod:`~protocols.planning.problem` (the requests, their checks
and the prepared problem record), :mod:`~protocols.planning.pool` (the greedy),
:mod:`~protocols.planning.min_power` (one pool under the minimum power),
:mod:`~protocols.planning.phases` (room per phase, the mixed-phase heuristic); this
module runs the steps and builds the :class:`Plan`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from protocols.planning.min_power import Allocation, PoolMember, solve_pool
from protocols.planning.phases import PhaseRoom, plan_mixed_site, tightest_room
from protocols.planning.problem import (
    DEFAULT_VOLTAGE_V,
    EPS_WH,
    MIN_CURRENT_A,
    EvRequest,
    Objective,
    PlanningError,
    PreparedEv,
    Problem,
    SiteLimit,
    prepare_problem,
    validate_requests,
)
from protocols.planning.tariffs import SLOT, SlotCurve

# a request is met when it is short by no more than this (rounding of the plan)
MET_TOLERANCE_WH = 1.0


@dataclass(frozen=True)
class SchedulePeriod:
    """Charge at ``limit_w`` (= ``limit_a_per_phase`` per phase) in ``[start, end)``."""

    start: datetime
    end: datetime
    limit_w: float
    limit_a_per_phase: float


@dataclass(frozen=True)
class ChargerPlan:
    """The plan of one charger. Outside its periods the limit is 0 W.

    ``slot_energy_wh`` holds the planned energy per horizon slot (Wh).
    """

    charger_id: str
    periods: tuple[SchedulePeriod, ...]
    energy_needed_kwh: float
    energy_planned_kwh: float
    feasible: bool
    shortfall_kwh: float
    cost_p: float
    carbon_g: float
    slot_energy_wh: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    """A joint plan for the EVs of one site.

    ``ev_load_w`` is the planned total EV power per slot (W, averaged over the part of
    the slot after ``now``); ``limit_w`` the site's room per slot for EVs (W).
    """

    now: datetime
    horizon_start: datetime
    objective: Objective
    chargers: tuple[ChargerPlan, ...]
    ev_load_w: tuple[float, ...]
    limit_w: tuple[float, ...]
    feasible: bool
    total_cost_p: float
    total_carbon_g: float

    def for_charger(self, charger_id: str) -> ChargerPlan:
        """The plan of one charger; KeyError if it was not in the request."""
        for c in self.chargers:
            if c.charger_id == charger_id:
                return c
        raise KeyError(charger_id)


@dataclass(frozen=True)
class _Delivery:
    """One EV's planned energy per horizon slot (Wh) and what it still lacks."""

    slot_wh: tuple[float, ...]
    shortfall_wh: float


def plan_charging(
    now: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    prices: SlotCurve,
    *,
    carbon: SlotCurve | None = None,
    base_load_w: SlotCurve | float | None = None,
    objective: Objective = "cost",
    carbon_weight: float = 0.5,
) -> Plan:
    """Plan every EV of a site jointly under the site limit.

    ``prices`` (p/kWh) and ``carbon`` (gCO2/kWh) must cover the slots from
    ``floor_slot(now)`` to the latest ready-by; ``base_load_w`` is the site's other
    load (W, a curve over the same slots, or one figure), split evenly over the
    phases. ``carbon_weight`` is the weight of carbon in ``mix`` (0 = cost only,
    1 = carbon only). See the module docstring for the method.
    """
    validate_requests(evs, site, objective)
    problem = prepare_problem(
        now, evs, site, prices, carbon, base_load_w, objective, carbon_weight
    )
    overdue, room = _charge_overdue(problem)
    pooled = _plan_pools(problem, room)
    return _build_plan(problem, {**overdue, **pooled})


# ---------------------------------------------------------------- overdue EVs


def _charge_overdue(problem: Problem) -> tuple[dict[int, _Delivery], PhaseRoom]:
    """Charge every EV that cannot make its ready-by even alone as much as it can,
    as early as it can (full power from now, within the site's room), in request
    order; returns their deliveries and the room they leave per phase and slot."""
    room = [list(problem.phase_room_w) for _ in range(problem.site.phases)]
    deliveries: dict[int, _Delivery] = {}
    for ev in problem.evs:
        if ev.overdue and ev.need_wh > 0:
            deliveries[ev.index] = _catch_up(ev, room, problem.slots.hours)
    return deliveries, tuple(tuple(r) for r in room)


def _catch_up(
    ev: PreparedEv, room: list[list[float]], hours: Sequence[float]
) -> _Delivery:
    """One overdue EV at full power from slot 0 until done; takes its power out of
    ``room`` (the caller's working copy, W per phase and slot)."""
    slot_wh = [0.0] * len(hours)
    ph = ev.phase_indices
    left_wh = ev.need_wh
    for t in range(ev.deadline):
        if left_wh <= EPS_WH:
            break
        w = min(ev.power_w, min(room[p][t] for p in ph) * len(ph))
        if w < ev.min_power_w - 1e-9 or w <= 0:
            continue
        e_wh = min(left_wh, w * hours[t])
        floor_wh = ev.min_power_w * hours[t]
        if e_wh < floor_wh - EPS_WH:
            # the last piece is below the minimum: run it at the minimum and take
            # the difference off the slots before; if they cannot spare it, leave
            # the piece undelivered
            spared = _spare_for_minimum(
                ev, slot_wh, t, floor_wh - e_wh, left_wh, room, hours
            )
            if spared is None:
                continue
            left_wh = spared
            e_wh = floor_wh
        slot_wh[t] = e_wh
        left_wh -= e_wh
        for p in ph:
            room[p][t] -= e_wh / hours[t] / len(ph)
    return _Delivery(tuple(slot_wh), max(0.0, left_wh))


def _spare_for_minimum(
    ev: PreparedEv,
    slot_wh: list[float],
    t: int,
    gap_wh: float,
    left_wh: float,
    room: list[list[float]],
    hours: Sequence[float],
) -> float | None:
    """Take ``gap_wh`` off the EV's slots before ``t`` (latest first, each kept at
    its minimum) so slot ``t`` can run at the minimum; returns the energy still to
    deliver after, or None (nothing changed) if those slots cannot spare it."""
    spare = {
        q: slot_wh[q] - ev.min_power_w * hours[q] for q in range(t) if slot_wh[q] > 0
    }
    if sum(max(0.0, v) for v in spare.values()) < gap_wh - EPS_WH:
        return None
    ph = ev.phase_indices
    for q in sorted(spare, reverse=True):
        cut = min(max(0.0, spare[q]), gap_wh)
        slot_wh[q] -= cut
        for p in ph:
            room[p][q] += cut / hours[q] / len(ph)
        left_wh += cut
        gap_wh -= cut
        if gap_wh <= EPS_WH:
            break
    return left_wh


# ---------------------------------------------------------------------- pools


def _plan_pools(problem: Problem, room: PhaseRoom) -> dict[int, _Delivery]:
    """Plan the EVs that are not overdue in the room the overdue ones leave."""
    n = len(problem.slots)
    return {
        a.index: _Delivery(
            tuple(a.slot_wh.get(t, 0.0) for t in range(n)), max(0.0, a.left_wh)
        )
        for a in _allocate(problem, room)
    }


def _allocate(problem: Problem, room: PhaseRoom) -> list[Allocation]:
    """Pool by pool (see the module docstring): exact for one pool or independent
    phases, the heuristic for a mixed three-phase site."""
    pools: dict[int, list[PoolMember]] = {}
    for ev in problem.evs:
        if not ev.overdue:
            member = PoolMember(
                ev.index, ev.power_w, ev.need_wh, ev.min_power_w, ev.deadline
            )
            pools.setdefault(ev.pool_key, []).append(member)
    slots = problem.slots
    if problem.site.phases == 1 or 0 not in pools:
        # one phase, or single-phase chargers only: each phase on its own
        return [
            a
            for key, members in pools.items()
            for a in solve_pool(members, room[key - 1], 1.0, slots)
        ]
    if len(pools) == 1:  # three-phase chargers only: one pool on the tightest phase
        return list(solve_pool(pools[0], tightest_room(room), 3.0, slots))
    mixed = plan_mixed_site(pools, room, slots)
    return [a for allocations in mixed.values() for a in allocations]


# ---------------------------------------------------------------- the plan


def _build_plan(problem: Problem, deliveries: Mapping[int, _Delivery]) -> Plan:
    """Turn each EV's energies into schedule periods and totals."""
    n = len(problem.slots)
    nothing = _Delivery((0.0,) * n, 0.0)
    chargers: list[ChargerPlan] = []
    ev_load = [0.0] * n
    total_cost = 0.0
    total_carbon = 0.0
    for ev in problem.evs:
        delivery = deliveries.get(ev.index, nothing)
        powers_w = _slot_powers_w(delivery.slot_wh, problem.slots.hours)
        for t, p_w in enumerate(powers_w):
            ev_load[t] += p_w
        charger = _charger_plan(problem, ev, delivery, powers_w)
        total_cost += charger.cost_p
        total_carbon += charger.carbon_g
        chargers.append(charger)
    return Plan(
        now=problem.now,
        horizon_start=problem.start,
        objective=problem.objective,
        chargers=tuple(chargers),
        ev_load_w=tuple(ev_load),
        limit_w=tuple(w * problem.site.phases for w in problem.phase_room_w),
        feasible=all(c.feasible for c in chargers),
        total_cost_p=total_cost,
        total_carbon_g=total_carbon,
    )


def _slot_powers_w(slot_wh: Sequence[float], hours: Sequence[float]) -> list[float]:
    """Power per slot up to the last one it charges in, W, rounded down to a mW so
    the charger never draws more than planned."""
    last = max((t for t in range(len(slot_wh)) if slot_wh[t] > 0.0), default=-1)
    powers_w = []
    for t in range(last + 1):
        p_w = slot_wh[t] / hours[t] if hours[t] > 0 else 0.0
        powers_w.append(math.floor(p_w * 1000.0) / 1000.0)
    return powers_w


def _charger_plan(
    problem: Problem, ev: PreparedEv, delivery: _Delivery, powers_w: list[float]
) -> ChargerPlan:
    """One charger's plan: periods, energies, whether its ready-by is met, totals."""
    xs = delivery.slot_wh
    n = len(xs)
    short_wh = max(0.0, ev.need_wh - sum(xs[: ev.ready_slots]))
    cost = sum(xs[t] / 1000.0 * problem.prices[t] for t in range(n))
    carbon = problem.carbon
    carb = sum(xs[t] / 1000.0 * carbon[t] for t in range(n)) if carbon else 0.0
    return ChargerPlan(
        charger_id=ev.request.charger_id,
        periods=_periods(problem, ev.request, powers_w),
        energy_needed_kwh=ev.need_wh / 1000.0,
        energy_planned_kwh=sum(xs) / 1000.0,
        feasible=short_wh <= MET_TOLERANCE_WH and not ev.overdue,
        shortfall_kwh=max(short_wh, delivery.shortfall_wh) / 1000.0,
        cost_p=cost,
        carbon_g=carb,
        slot_energy_wh=xs,
    )


def _periods(
    problem: Problem, r: EvRequest, powers_w: list[float]
) -> tuple[SchedulePeriod, ...]:
    """Slot powers as periods (the first starts at ``now``), equal neighbours
    merged."""
    phases = min(r.phases, problem.site.phases)
    start = problem.start
    periods: list[SchedulePeriod] = []
    for t, p_w in enumerate(powers_w):
        s = problem.now if t == 0 else start + SLOT * t
        e = start + SLOT * (t + 1)
        amps = p_w / (r.voltage_v * phases)
        if periods and periods[-1].limit_w == p_w and periods[-1].end == s:
            periods[-1] = SchedulePeriod(periods[-1].start, e, p_w, amps)
        else:
            periods.append(SchedulePeriod(s, e, p_w, amps))
    return tuple(periods)


def slot_starts(plan: Plan) -> list[datetime]:
    """Start of each slot of the plan's horizon (the first is ``floor_slot(now)``)."""
    return [plan.horizon_start + SLOT * t for t in range(len(plan.ev_load_w))]


__all__ = [
    "DEFAULT_VOLTAGE_V",
    "MIN_CURRENT_A",
    "ChargerPlan",
    "EvRequest",
    "Objective",
    "Plan",
    "PlanningError",
    "SchedulePeriod",
    "SiteLimit",
    "plan_charging",
    "slot_starts",
]
