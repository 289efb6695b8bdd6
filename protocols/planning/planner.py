"""The smart-charging planner: joint ready-by plans for every EV of a site.

Pure: ``now``, the curves and the requests go in, a :class:`Plan` comes out.

The problem. Time is cut into half-hour slots from ``floor_slot(now)`` (the first slot
only has the part after ``now``, split at any ready-by or arrival inside it: see
:mod:`~protocols.planning.problem`). EV ``i`` may charge from its arrival until its
ready-by (rounded to slot starts after the first slot), at most ``max_power_w``; it
needs ``E_i`` Wh. The site may draw at most ``fuse A x voltage`` per phase minus the
base-load forecast on that phase in every slot. Each slot has one objective value per
kWh, the same for every EV of the site: the price (``cost``), the carbon intensity
(``carbon``), or a weighted mix of both, each normalised by its mean over the horizon
(``mix``).

Priority: the most energy by each ready-by, then the cheapest. A request that cannot
be met even alone on the empty site (its ready-by has passed, or it is too close) has
priority 1: it gets as much as it can by its ready-by, but never energy a request
of priority 0 needs. An EV still short at its ready-by then catches up as early as
the room the plan leaves allows (full power, within the site's room), and is
flagged infeasible with its shortfall at the ready-by. Only requests that cannot be
met are flagged: the plan delivers by the ready-bys all the energy any plan could.

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
counters, so a 1,000-EV site takes about half a second. Priority 1 is a second pass
of the same greedy that only adds energy (an augmenting path never takes energy from
an EV), then the pool is solved once more for exactly the amounts found, so the plan
is the cheapest that delivers them. The result is an exact optimum of the continuous
problem. Every loop is bounded and every step makes progress (``Plan.work`` counts
them; see :mod:`~protocols.planning.pool`).

Ties: slots of equal objective are filled by raising a common water level over their
base load in steps (valley filling), so equal-cost load is spread, not stacked on the
first slot.

Minimum power: while charging, an EV draws at least ``min_power_w``, but it may stop
mid-slot: a piece below the minimum's worth of a slot runs at the minimum for part of
the slot (a partial slot), taking the minimum's worth of the site's room while it
runs. Pieces of the continuous optimum that do not fit that way are repaired: moved
into the EV's other charging slots, swapped with another EV's energy, or run in a slot
of their own; when that leaves energy undelivered (a site loaded to its limit), the
unfit (EV, slot) pairs are banned and the pool re-solved, keeping whatever delivers
the most, then costs the least (:mod:`~protocols.planning.min_power`).

Phases: on a three-phase site, three-phase chargers draw a third of their power on each
phase; single-phase chargers draw on their ``phase``. A single-phase site, or a
three-phase site whose chargers are all single-phase (each phase on its own) or all
three-phase (one pool on the tightest phase), is planned exactly. A mixed site is a
heuristic: on its most loaded phase three candidates are planned (that phase's
single-phase EVs and every three-phase EV as a balanced third jointly; three-phase
first; single-phase first), the other phases' single-phase EVs go in the room left,
and the candidate delivering the most, then costing the least, wins.

Exact stage: where a heuristic was used (a piece of the continuous optimum broke the
minimum power, or the site is mixed) and the site has at most
:data:`~protocols.planning.exact.EXACT_MAX_CELLS` (EV, segment) pairs (10 EVs over
a day is 480), the whole site is solved again as a MILP by HiGHS
(:mod:`~protocols.planning.exact`): the most energy per priority, then the least
objective to within 0.5 %. Its plan replaces the heuristic's only when it delivers
more or costs less, so ties keep the heuristic's levelled plan; before it, the
pools' dives get a small budget (:data:`EXACT_SITE_SOLVES`). Larger sites keep the
heuristic (measured against the MILP by ``fusebox bench planner``).

Bad input: :class:`PlanInputError` (a :class:`PlanningError`) names the field and the
charger. A bad request raises it, or with ``bad_requests="refuse"`` only that EV is
refused (its :class:`ChargerPlan` has ``refused`` set, no periods, and is not
feasible) and the others are planned; a bad site or call always raises.

Where each part lives: :mod:`~protocols.planning.problem` (the requests, their checks
and the prepared problem record), :mod:`~protocols.planning.pool` (the greedy),
:mod:`~protocols.planning.min_power` (one pool under the minimum power),
:mod:`~protocols.planning.phases` (room per phase, the mixed-phase heuristic),
:mod:`~protocols.planning.exact` (the MILP); this module runs the steps and builds
the :class:`Plan`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from protocols.planning.exact import exact_allocations, exact_fits
from protocols.planning.min_power import (
    Allocation,
    PoolMember,
    lacks_of,
    objective_of,
    solve_pool,
)
from protocols.planning.phases import PhaseRoom, plan_mixed_site, tightest_room
from protocols.planning.pool import Work
from protocols.planning.problem import (
    DEFAULT_VOLTAGE_V,
    EPS_WH,
    MET_TOLERANCE_WH,
    MIN_CURRENT_A,
    BaseLoad,
    EvRequest,
    Objective,
    PhaseBaseLoad,
    PlanInputError,
    PlanningError,
    PreparedEv,
    Problem,
    SiteLimit,
    Slots,
    check_call,
    prepare_problem,
    request_error,
)
from protocols.planning.tariffs import SLOT, SlotCurve

BadRequests = Literal["raise", "refuse"]

# pool solves the heuristic's dives may spend on a site the exact stage takes
EXACT_SITE_SOLVES = 40
# a shortfall below this is the solvers' rounding (a mWh), shown as none
SHORT_NOISE_WH = 1e-3


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

    ``slot_energy_wh`` holds the planned energy per horizon slot (Wh). ``refused``:
    why the request was refused (``bad_requests="refuse"``), else None.
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
    refused: str | None = None


@dataclass(frozen=True)
class Plan:
    """A joint plan for the EVs of one site.

    ``ev_load_w`` is the planned total EV power per slot (W, averaged over the part of
    the slot after ``now``); ``limit_w`` the site's room per slot for EVs (W, all
    phases). ``work`` counts what the plan took to compute.
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
    work: Work = field(default_factory=Work, compare=False)

    def for_charger(self, charger_id: str) -> ChargerPlan:
        """The plan of one charger; KeyError if it was not in the request."""
        for c in self.chargers:
            if c.charger_id == charger_id:
                return c
        raise KeyError(charger_id)


@dataclass(frozen=True)
class _Delivery:
    """One EV's planned energy per segment (Wh) and what it still lacks."""

    seg_wh: tuple[float, ...]
    shortfall_wh: float


def plan_charging(
    now: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    prices: SlotCurve,
    *,
    carbon: SlotCurve | None = None,
    base_load_w: BaseLoad = None,
    base_load_phase_w: PhaseBaseLoad = None,
    objective: Objective = "cost",
    carbon_weight: float = 0.5,
    bad_requests: BadRequests = "raise",
) -> Plan:
    """Plan every EV of a site jointly under the site limit.

    ``prices`` (p/kWh) and ``carbon`` (gCO2/kWh) must cover the slots from
    ``floor_slot(now)`` to the latest ready-by (an EV short at its ready-by catches
    up within them); ``base_load_w`` is the site's other load (W, a curve over the
    same slots, or one figure), split evenly over the phases; ``base_load_phase_w``
    (one W figure or curve per site phase) is other load on each phase on top of
    that (a single-phase oven). ``carbon_weight`` is the weight of carbon in ``mix``
    (0 = cost only, 1 = carbon only). ``bad_requests``: ``"raise"`` a
    :class:`PlanInputError` for the first bad request, or ``"refuse"`` it alone and
    plan the others. See the module docstring for the method.
    """
    check_call(now, evs, site, objective, carbon_weight, base_load_phase_w)
    accepted: list[EvRequest] = []
    refused: dict[int, PlanInputError] = {}
    for i, r in enumerate(evs):
        error = request_error(r, now)
        if error is None:
            accepted.append(r)
        elif bad_requests == "raise":
            raise error
        else:
            refused[i] = error
    problem = prepare_problem(
        now,
        accepted,
        site,
        prices,
        carbon,
        base_load_w,
        objective,
        carbon_weight,
        base_load_phase_w,
    )
    work = Work()
    room = [list(r) for r in problem.phase_room_w]
    pooled = _plan_pools(problem, room, work)
    deliveries = _catch_up_short(problem, pooled, room)
    return _build_plan(problem, evs, deliveries, refused, work)


# ---------------------------------------------------------------------- pools


def _plan_pools(
    problem: Problem, room: list[list[float]], work: Work
) -> dict[int, _Delivery]:
    """Plan every EV's energy before its ready-by; takes what the plan draws (at
    its peak: a partial slot at its minimum) out of ``room``."""
    n = len(problem.slots)
    n_pool = problem.pool_segments
    hours = problem.slots.hours
    pool_room: PhaseRoom = tuple(tuple(r[:n_pool]) for r in room)
    out: dict[int, _Delivery] = {}
    for a in _allocate(problem, pool_room, work):
        ev = problem.evs[a.index]
        seg_wh = tuple(a.slot_wh.get(k, 0.0) for k in range(n))
        out[a.index] = _Delivery(seg_wh, max(0.0, a.left_wh))
        share = len(ev.phase_indices)
        for k in a.slot_wh:
            foot_w = a.footprint_w(k, hours) / share
            for p in ev.phase_indices:
                room[p][k] -= foot_w
    return out


def _allocate(problem: Problem, room: PhaseRoom, work: Work) -> list[Allocation]:
    """The pools' plan, improved by the exact stage where a heuristic was used and
    the site is small enough (:mod:`~protocols.planning.exact`)."""
    repairs = work.repairs
    if exact_fits(problem):  # the heuristic need only be a good start
        work.solve_budget = work.solves + EXACT_SITE_SOLVES
    try:
        pooled, mixed = _allocate_pools(problem, room, work)
    finally:
        work.solve_budget = None
    if not mixed and work.repairs == repairs:
        return pooled  # the continuous optimum fitted: exact already
    exact = exact_allocations(problem, room, pooled)
    if exact is None or not _better(exact, pooled, problem.slots.costs):
        return pooled
    work.exact += 1
    return list(exact)


def _better(
    a: Sequence[Allocation], b: Sequence[Allocation], costs: Sequence[float]
) -> bool:
    """Whether ``a`` delivers more to priority 0, else to priority 1 (by more than
    a Wh per EV, the solver's tolerance), else costs less (by more than a
    millionth)."""
    tol_wh = float(max(1, len(a)))
    for lack_a, lack_b in zip(lacks_of(a), lacks_of(b), strict=True):
        if lack_a < lack_b - tol_wh:
            return True
        if lack_a > lack_b + tol_wh:
            return False
    cost_a, cost_b = objective_of(a, costs), objective_of(b, costs)
    return cost_a < cost_b - 1e-6 * max(1.0, abs(cost_b))


def _allocate_pools(
    problem: Problem, room: PhaseRoom, work: Work
) -> tuple[list[Allocation], bool]:
    """Pool by pool (see the module docstring): exact for one pool or independent
    phases, the heuristic for a mixed three-phase site (then True)."""
    pools: dict[int, list[PoolMember]] = {}
    for ev in problem.evs:
        if ev.need_wh > EPS_WH and ev.alone_wh > EPS_WH:
            member = PoolMember(
                ev.index,
                ev.power_w,
                ev.need_wh,
                ev.min_power_w,
                ev.deadline,
                first=ev.first,
                priority=ev.priority,
                closed=ev.closed,
            )
            pools.setdefault(ev.pool_key, []).append(member)
    n = problem.pool_segments
    slots = Slots(problem.slots.hours[:n], problem.slots.costs[:n])
    if problem.site.phases == 1 or 0 not in pools:
        # one phase, or single-phase chargers only: each phase on its own
        return [
            a
            for key, members in pools.items()
            for a in solve_pool(members, room[key - 1], 1.0, slots, work)
        ], False
    if len(pools) == 1:  # three-phase chargers only: one pool on the tightest phase
        return list(solve_pool(pools[0], tightest_room(room), 3.0, slots, work)), False
    mixed = plan_mixed_site(pools, room, slots, work)
    return [a for allocations in mixed.values() for a in allocations], True


# ------------------------------------------------------------------ catching up


def _catch_up_short(
    problem: Problem, pooled: Mapping[int, _Delivery], room: list[list[float]]
) -> dict[int, _Delivery]:
    """Every EV still short at its ready-by (or with no window before it) charges
    the rest as early as it can after it, in the room the plan leaves; earliest
    ready-by first."""
    n = len(problem.slots)
    out = dict(pooled)
    short = []
    for ev in problem.evs:
        got = pooled.get(ev.index)
        left = ev.need_wh - (sum(got.seg_wh) if got else 0.0)
        if left > MET_TOLERANCE_WH:
            short.append((ev.deadline, ev.index, left))
    for _, index, left in sorted(short):
        ev = problem.evs[index]
        seg_wh = list(out[index].seg_wh) if index in out else [0.0] * n
        undelivered = _catch_up(ev, seg_wh, left, room, problem.slots.hours)
        out[index] = _Delivery(tuple(seg_wh), undelivered)
    return out


def _catch_up(
    ev: PreparedEv,
    seg_wh: list[float],
    left_wh: float,
    room: list[list[float]],
    hours: Sequence[float],
) -> float:
    """Full power (within the room) from the EV's ready-by until done; a last piece
    below the minimum is a partial slot. Adds to ``seg_wh``, takes the power out of
    ``room``; returns what is still undelivered."""
    ph = ev.phase_indices
    for k in range(max(ev.first, ev.deadline), len(hours)):
        if left_wh <= EPS_WH:
            break
        w = min(ev.power_w, min(room[p][k] for p in ph) * len(ph))
        if w <= 0 or w < ev.min_power_w - 1e-9:
            continue
        e_wh = min(left_wh, w * hours[k])
        seg_wh[k] += e_wh
        left_wh -= e_wh
        foot_w = max(e_wh / hours[k], ev.min_power_w)
        for p in ph:
            room[p][k] -= foot_w / len(ph)
    return max(0.0, left_wh)


# ---------------------------------------------------------------- the plan


def _build_plan(
    problem: Problem,
    requests: Sequence[EvRequest],
    deliveries: Mapping[int, _Delivery],
    refused: Mapping[int, PlanInputError],
    work: Work,
) -> Plan:
    """Turn each EV's energies into schedule periods and totals, in request order."""
    n_seg = _segments_shown(problem, deliveries)
    n_slots = problem.slot_of[n_seg - 1] + 1 if n_seg else 0
    slot_hours = [0.0] * n_slots
    for k in range(n_seg):
        slot_hours[problem.slot_of[k]] += problem.slots.hours[k]
    nothing = _Delivery((0.0,) * len(problem.slots), 0.0)
    planned = iter(problem.evs)
    chargers: list[ChargerPlan] = []
    ev_load = [0.0] * n_slots
    for i, r in enumerate(requests):
        if i in refused:
            chargers.append(_refused_plan(r, refused[i], n_slots))
            continue
        ev = next(planned)
        delivery = deliveries.get(ev.index, nothing)
        charger = _charger_plan(problem, ev, delivery, n_seg, slot_hours)
        for t, wh in enumerate(charger.slot_energy_wh):
            if wh > 0.0:
                ev_load[t] += math.floor(wh / slot_hours[t] * 1000.0) / 1000.0
        chargers.append(charger)
    room = problem.phase_room_w
    first_seg = {problem.slot_of[k]: k for k in reversed(range(n_seg))}
    return Plan(
        now=problem.now,
        horizon_start=problem.start,
        objective=problem.objective,
        chargers=tuple(chargers),
        ev_load_w=tuple(ev_load),
        limit_w=tuple(sum(r[first_seg[t]] for r in room) for t in range(n_slots)),
        feasible=all(c.feasible for c in chargers),
        total_cost_p=sum(c.cost_p for c in chargers),
        total_carbon_g=sum(c.carbon_g for c in chargers),
        work=work,
    )


def _segments_shown(problem: Problem, deliveries: Mapping[int, _Delivery]) -> int:
    """Segments the plan shows: to the latest ready-by or the last energy, whole
    slots."""
    last = problem.pool_segments - 1
    for d in deliveries.values():
        used = [k for k, v in enumerate(d.seg_wh) if v > 0.0]
        if used:
            last = max(last, used[-1])
    if last < 0:
        return 0
    slot = problem.slot_of[last]
    return sum(1 for s in problem.slot_of if s <= slot)


def _refused_plan(r: EvRequest, error: PlanInputError, n_slots: int) -> ChargerPlan:
    """A refused request: no periods, not feasible, the reason."""
    need = r.energy_needed_kwh
    finite = need is not None and math.isfinite(need) and need > 0
    return ChargerPlan(
        charger_id=r.charger_id,
        periods=(),
        energy_needed_kwh=need if finite and need is not None else 0.0,
        energy_planned_kwh=0.0,
        feasible=False,
        shortfall_kwh=need if finite and need is not None else 0.0,
        cost_p=0.0,
        carbon_g=0.0,
        slot_energy_wh=(0.0,) * n_slots,
        refused=str(error),
    )


def _charger_plan(
    problem: Problem,
    ev: PreparedEv,
    delivery: _Delivery,
    n_seg: int,
    slot_hours: Sequence[float],
) -> ChargerPlan:
    """One charger's plan: periods, energies, whether its ready-by is met, totals."""
    xs = delivery.seg_wh[:n_seg]
    per_slot = [0.0] * len(slot_hours)
    for k, v in enumerate(xs):
        per_slot[problem.slot_of[k]] += v
    short_wh = ev.need_wh - sum(xs[: ev.deadline])
    short_wh = short_wh if short_wh > SHORT_NOISE_WH else 0.0
    cost = sum(v / 1000.0 * problem.prices[k] for k, v in enumerate(xs))
    carbon = problem.carbon
    carb = sum(v / 1000.0 * carbon[k] for k, v in enumerate(xs)) if carbon else 0.0
    return ChargerPlan(
        charger_id=ev.request.charger_id,
        periods=_periods(problem, ev, xs),
        energy_needed_kwh=ev.need_wh / 1000.0,
        energy_planned_kwh=sum(xs) / 1000.0,
        feasible=short_wh <= MET_TOLERANCE_WH,
        shortfall_kwh=short_wh / 1000.0,
        cost_p=cost,
        carbon_g=carb,
        slot_energy_wh=tuple(per_slot),
    )


def _periods(
    problem: Problem, ev: PreparedEv, xs: Sequence[float]
) -> tuple[SchedulePeriod, ...]:
    """Segment energies as periods up to the last one it charges in (the first
    starts at ``now``), equal neighbours merged. Power is rounded down to a mW so
    the charger never draws more than planned; a piece below the minimum runs at
    the minimum from the segment's start and stops when it is in."""
    r = ev.request
    volts_phases = r.voltage_v * min(r.phases, problem.site.phases)
    last = max((k for k, v in enumerate(xs) if v > 0.0), default=-1)
    periods: list[SchedulePeriod] = []

    def add(s: datetime, e: datetime, p_w: float) -> None:
        if e <= s:
            return
        if periods and periods[-1].limit_w == p_w and periods[-1].end == s:
            periods[-1] = SchedulePeriod(periods[-1].start, e, p_w, p_w / volts_phases)
        else:
            periods.append(SchedulePeriod(s, e, p_w, p_w / volts_phases))

    hours = problem.slots.hours
    for k in range(last + 1):
        s, e = problem.seg_starts[k], problem.seg_ends[k]
        avg_w = xs[k] / hours[k] if hours[k] > 0 else 0.0
        if 0.0 < avg_w < ev.min_power_w - 1e-6:
            run = timedelta(microseconds=math.floor(xs[k] / ev.min_power_w * 3.6e9))
            add(s, s + run, ev.min_power_w)
            add(s + run, e, 0.0)
            continue
        p_w = math.floor(avg_w * 1000.0) / 1000.0
        if avg_w > 0.0 and p_w < ev.min_power_w:
            p_w = ev.min_power_w  # the minimum, not a mW below it
        add(s, e, p_w)
    return tuple(periods)


def slot_starts(plan: Plan) -> list[datetime]:
    """Start of each slot of the plan's horizon (the first is ``floor_slot(now)``)."""
    return [plan.horizon_start + SLOT * t for t in range(len(plan.ev_load_w))]


__all__ = [
    "DEFAULT_VOLTAGE_V",
    "MIN_CURRENT_A",
    "BadRequests",
    "ChargerPlan",
    "EvRequest",
    "Objective",
    "Plan",
    "PlanInputError",
    "PlanningError",
    "SchedulePeriod",
    "SiteLimit",
    "plan_charging",
    "slot_starts",
]
