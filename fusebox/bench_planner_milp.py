"""The planner's reference optimum: one ``plan_charging`` call as a (mixed-integer)
linear programme solved by scipy's HiGHS, and random instances to compare on.

Independent of the planner's code on purpose: it reads the same inputs and applies
the rules the planner documents, written again here (``protocols.planning.planner``
and ``.problem`` module docstrings):

* time: segments from ``now``; the first half-hour slot is split at every ready-by
  and arrival inside it; a later ready-by is rounded down to a slot start, a later
  arrival up; an EV may charge in the segments of ``[arrival, ready-by)``;
* room: per phase and segment, ``fuse x voltage`` minus the base load (the site's
  split evenly over the phases plus the phase's own); a three-phase charger draws a
  third of its power on each phase of a three-phase site, and a third of its power
  in all on a single-phase one;
* the minimum power (``with_minimum``): an EV charging in a segment draws at least
  its minimum, but may stop mid-segment, so energy ``x`` in a segment of ``h``
  hours takes ``max(x, min x h)`` of its room (binary ``on`` per EV and segment);
* priority: a request that could not be met alone on the empty site is priority 1.

The optimum is lexicographic, as the planner's: the most energy by the ready-bys for
priority 0, then for priority 1, then the least objective (cost per kWh x kWh) for
the energy delivered by the ready-bys. Three solves, each keeping the one before.
Catch-up after a ready-by is not part of it (it counts for nothing by the ready-by).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from protocols.planning import SLOT, EvRequest, Plan, SiteLimit, SlotCurve, floor_slot

# a request is met when short by no more than this (the planner's tolerance), Wh
MET_WH = 1.0


@dataclass(frozen=True)
class Reference:
    """The reference optimum: energy by each ready-by (Wh, per request in order),
    the totals per priority, the objective of the on-time energy (p), which
    requests are priority 1, and whether the solver proved it optimal."""

    on_time_wh: tuple[float, ...]
    priority: tuple[int, ...]
    energy_p0_wh: float
    energy_p1_wh: float
    cost_p: float
    optimal: bool

    def met(self, i: int, need_wh: float) -> bool:
        """Whether request ``i`` (needing ``need_wh``) is met by the reference."""
        return self.on_time_wh[i] >= need_wh - MET_WH


@dataclass(frozen=True)
class _Segments:
    starts: list[datetime]
    ends: list[datetime]
    slot: list[int]

    def hours(self, k: int) -> float:
        return (self.ends[k] - self.starts[k]).total_seconds() / 3600.0


def ready_time(r: EvRequest, now: datetime) -> datetime:
    """Until when ``r`` charges towards its ready-by (the documented rounding)."""
    first_end = floor_slot(now) + SLOT
    if r.ready_by <= now:
        return now
    return r.ready_by if r.ready_by < first_end else floor_slot(r.ready_by)


def arrival_time(r: EvRequest, now: datetime) -> datetime:
    """From when ``r`` may charge (the documented rounding)."""
    first_end = floor_slot(now) + SLOT
    if r.arrival is None or r.arrival <= now:
        return now
    if r.arrival < first_end:
        return r.arrival
    down = floor_slot(r.arrival)
    return down if down == r.arrival else down + SLOT


def _segments(now: datetime, evs: Sequence[EvRequest]) -> _Segments:
    start = floor_slot(now)
    latest = max((ready_time(r, now) for r in evs), default=now)
    cuts = sorted(
        {
            t
            for r in evs
            for t in (r.ready_by, r.arrival)
            if t is not None and now < t < start + SLOT
        }
    )
    bounds = [now, *cuts, start + SLOT]
    seg = _Segments([], [], [])
    for a, b in itertools.pairwise(bounds):
        seg.starts.append(a)
        seg.ends.append(b)
        seg.slot.append(0)
    t = start + SLOT
    while t < latest:
        seg.starts.append(t)
        seg.ends.append(t + SLOT)
        seg.slot.append((t - start) // SLOT)
        t += SLOT
    if latest <= now:
        return _Segments([], [], [])
    return seg


def _value(curve: SlotCurve | float | None, t: datetime) -> float:
    if curve is None:
        return 0.0
    if isinstance(curve, SlotCurve):
        return curve.at(t)
    return float(curve)


def _room_w(
    site: SiteLimit,
    seg: _Segments,
    base_load_w: SlotCurve | float | None,
    base_load_phase_w: Sequence[SlotCurve | float] | None,
) -> list[list[float]]:
    room = []
    for p in range(site.phases):
        row = []
        for s in seg.starts:
            slot_start = floor_slot(s)
            base = _value(base_load_w, slot_start) / site.phases
            if base_load_phase_w is not None:
                base += _value(base_load_phase_w[p], slot_start)
            row.append(max(0.0, site.phase_limit_w - base))
        room.append(row)
    return room


def reference(
    now: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    prices: SlotCurve,
    *,
    base_load_w: SlotCurve | float | None = None,
    base_load_phase_w: Sequence[SlotCurve | float] | None = None,
    with_minimum: bool = True,
    time_limit_s: float = 20.0,
) -> Reference:
    """The lexicographic optimum of one ``plan_charging`` call (module docstring);
    objective ``cost`` only."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    seg = _segments(now, evs)
    n = len(seg.starts)
    room = _room_w(site, seg, base_load_w, base_load_phase_w)
    model = _Model(site, seg, room, evs, now, with_minimum)
    if not model.cols:
        return Reference((0.0,) * len(evs), model.priority, 0.0, 0.0, 0.0, True)
    a, lb, ub = model.constraints()
    nv = model.nv
    price = [prices.at(floor_slot(seg.starts[k])) for k in range(n)]
    energy = [np.zeros(nv), np.zeros(nv)]
    cost = np.zeros(nv)
    for (i, k, kind), j in model.cols.items():
        if kind == "x":
            energy[model.priority[i]][j] = 1.0
            cost[j] = price[k] / 1000.0
    rows, lows, highs = [a], [lb], [ub]
    solution: Any = None
    optimal = True
    for objective, keep in ((-energy[0], True), (-energy[1], True), (cost, False)):
        res = milp(
            objective,
            integrality=model.integrality,
            bounds=Bounds(np.zeros(nv), model.upper),
            constraints=LinearConstraint(
                np.vstack(rows), np.concatenate(lows), np.concatenate(highs)
            ),
            options={"time_limit": time_limit_s, "mip_rel_gap": 1e-7},
        )
        if res.x is None:
            raise RuntimeError(f"reference MILP failed: {res.message}")
        optimal = optimal and res.status == 0
        solution = res.x
        if keep:  # later stages keep this energy (to within a mWh)
            best = float(-res.fun)
            rows.append(-objective.reshape(1, -1))
            lows.append(np.array([best - 1e-3]))
            highs.append(np.array([np.inf]))
    on_time = [0.0] * len(evs)
    for (i, _k, kind), j in model.cols.items():
        if kind == "x":
            on_time[i] += float(solution[j])
    return Reference(
        on_time_wh=tuple(on_time),
        priority=model.priority,
        energy_p0_wh=float(energy[0] @ solution),
        energy_p1_wh=float(energy[1] @ solution),
        cost_p=float(cost @ solution),
        optimal=optimal,
    )


class _Model:
    """The variables (x: Wh; on: 0/1; r: room taken, Wh) and their rows."""

    def __init__(
        self,
        site: SiteLimit,
        seg: _Segments,
        room: list[list[float]],
        evs: Sequence[EvRequest],
        now: datetime,
        with_minimum: bool,
    ) -> None:
        self.site, self.seg, self.room = site, seg, room
        self.cols: dict[tuple[int, int, str], int] = {}
        self.upper: list[float] = []
        self.integrality: list[int] = []
        self.power: list[float] = []
        self.minimum: list[float] = []
        self.weights: list[tuple[float, ...]] = []
        self.need: list[float] = []
        priority = []
        for i, r in enumerate(evs):
            scale = min(r.phases, site.phases) / r.phases
            power = r.max_power_w * scale
            minimum = r.effective_min_power_w() * scale if with_minimum else 0.0
            if site.phases == 1:
                w: tuple[float, ...] = (1.0,)
            elif r.phases == 3:
                w = (1 / 3, 1 / 3, 1 / 3)
            else:
                w = tuple(1.0 if p == r.phase else 0.0 for p in (1, 2, 3))
            self.power.append(power)
            self.minimum.append(minimum)
            self.weights.append(w)
            self.need.append(r.needed_kwh() * 1000.0)
            a, z = arrival_time(r, now), ready_time(r, now)
            alone = 0.0
            for k in range(len(seg.starts)):
                if seg.starts[k] < a or seg.ends[k] > z:
                    continue
                cap_w = min(
                    power, min(room[p][k] / w[p] for p in range(len(w)) if w[p] > 0)
                )
                if cap_w <= 0 or cap_w < minimum - 1e-9:
                    continue  # it could never charge here
                alone += cap_w * seg.hours(k)
                self._add(i, k, "x", power * seg.hours(k), 0)
                if minimum > 0:
                    self._add(i, k, "on", 1.0, 1)
                    self._add(i, k, "r", power * seg.hours(k), 0)
            priority.append(1 if self.need[i] > alone + MET_WH else 0)
        self.priority = tuple(priority)

    def _add(self, i: int, k: int, kind: str, upper: float, integer: int) -> None:
        self.cols[(i, k, kind)] = len(self.upper)
        self.upper.append(upper)
        self.integrality.append(integer)

    @property
    def nv(self) -> int:
        return len(self.upper)

    def constraints(self) -> tuple[Any, Any, Any]:
        import numpy as np

        rows: list[dict[int, float]] = []
        lo: list[float] = []
        hi: list[float] = []
        by_ev: dict[int, list[int]] = {}
        for (i, _k, kind), j in self.cols.items():
            if kind == "x":
                by_ev.setdefault(i, []).append(j)
        for i, js in by_ev.items():  # at most the need by the ready-by
            rows.append(dict.fromkeys(js, 1.0))
            lo.append(-np.inf)
            hi.append(self.need[i])
        for (i, k, kind), j in self.cols.items():
            if kind != "on":
                continue
            x, r = self.cols[(i, k, "x")], self.cols[(i, k, "r")]
            h = self.seg.hours(k)
            rows.append({x: 1.0, j: -self.power[i] * h})  # x only when on
            lo.append(-np.inf)
            hi.append(0.0)
            rows.append({r: 1.0, x: -1.0})  # room taken >= energy
            lo.append(0.0)
            hi.append(np.inf)
            rows.append({r: 1.0, j: -self.minimum[i] * h})  # >= the minimum's worth
            lo.append(0.0)
            hi.append(np.inf)
        for p in range(self.site.phases):
            for k in range(len(self.seg.starts)):
                row: dict[int, float] = {}
                for (i, kk, kind), j in self.cols.items():
                    if kk != k or self.weights[i][p] == 0:
                        continue
                    if kind == "r" or (kind == "x" and (i, k, "r") not in self.cols):
                        row[j] = self.weights[i][p]
                if row:
                    rows.append(row)
                    lo.append(-np.inf)
                    hi.append(self.room[p][k] * self.seg.hours(k))
        a = np.zeros((len(rows), self.nv))
        for m, row in enumerate(rows):
            for j, v in row.items():
                a[m, j] = v
        return a, np.array(lo), np.array(hi)


# ------------------------------------------------------------ reading a plan


def on_time_wh(plan: Plan, evs: Sequence[EvRequest]) -> list[float]:
    """Energy each request's periods deliver before its (rounded) ready-by, Wh."""
    out = []
    for r, c in zip(evs, plan.chargers, strict=True):
        until = ready_time(r, plan.now)
        wh = 0.0
        for p in c.periods:
            end = min(p.end, until)
            if end > p.start:
                wh += p.limit_w * (end - p.start).total_seconds() / 3600.0
        out.append(wh)
    return out


def on_time_cost_p(plan: Plan, evs: Sequence[EvRequest], prices: SlotCurve) -> float:
    """The cost of what the periods deliver before each ready-by, p."""
    total = 0.0
    for r, c in zip(evs, plan.chargers, strict=True):
        until = ready_time(r, plan.now)
        for p in c.periods:
            t = p.start
            while t < min(p.end, until):
                end = min(p.end, until, floor_slot(t) + SLOT)
                kwh = p.limit_w * (end - t).total_seconds() / 3.6e6
                total += kwh * prices.at(t)
                t = end
    return total


# ------------------------------------------------------------ random instances


@dataclass(frozen=True)
class Instance:
    """One random planner call (cost objective)."""

    now: datetime
    evs: tuple[EvRequest, ...]
    site: SiteLimit
    prices: SlotCurve
    base_load_w: float

    def plan(self) -> Plan:
        """Plan it with ``plan_charging``."""
        from protocols.planning import plan_charging

        return plan_charging(
            self.now, self.evs, self.site, self.prices, base_load_w=self.base_load_w
        )


def random_instance(rng: random.Random, t0: datetime, max_evs: int = 10) -> Instance:
    """A random site of 1..``max_evs`` EVs: single-, three- or mixed-phase; 6 A-max,
    16 A and 32 A chargers; tight fuses; overdue, departed, first-slot and later
    ready-bys; later arrivals; random, negative, equal and plateaued prices."""
    now = t0 + timedelta(minutes=rng.choice([0, 0, 7, 21]))
    n = rng.randint(4, 28)
    site_phases = rng.choice([1, 3, 3])
    mix = rng.choice(["single", "three", "mixed"])
    evs = []
    for i in range(rng.randint(1, max_evs)):
        three = mix == "three" or (mix == "mixed" and rng.random() < 0.4)
        amps = rng.choice([6.0, 6.0, 16.0, 32.0])
        phases = 3 if three else 1
        when = rng.random()
        if when < 0.1:
            ready = now - timedelta(minutes=rng.randint(0, 60))
        elif when < 0.2:
            ready = now + timedelta(minutes=rng.randint(1, 25))
        else:
            ready = (
                t0 + SLOT * rng.randint(1, n) + timedelta(minutes=rng.choice([0, 11]))
            )
        arrival = None
        if rng.random() < 0.15 and ready > now + SLOT:
            arrival = now + (ready - now) * rng.uniform(0.0, 0.7)
        evs.append(
            EvRequest(
                f"c{i}",
                ready,
                amps * 230.0 * phases,
                phases=phases,
                phase=1 + rng.randrange(3),
                min_power_w=rng.choice([None, None, 0.0]),
                energy_needed_kwh=round(rng.uniform(0.1, 30.0), 3),
                arrival=arrival,
            )
        )
    demand_w = sum(e.max_power_w for e in evs)
    tight = rng.choice([0.2, 0.4, 0.7, 1.1])
    fuse = max(6.0, round(tight * demand_w / site_phases / 230.0, 1))
    kind = rng.choice(["random", "negative", "equal", "plateaus"])
    if kind == "random":
        values = [round(rng.uniform(-5, 45), 2) for _ in range(n + 2)]
    elif kind == "negative":
        values = [round(rng.uniform(-20, 4), 2) for _ in range(n + 2)]
    elif kind == "equal":
        values = [round(rng.uniform(-3, 30), 2)] * (n + 2)
    else:
        levels = [round(rng.uniform(0, 40), 1) for _ in range(3)]
        values = [levels[(k // rng.randint(2, 6)) % 3] for k in range(n + 2)]
    base = round(rng.uniform(0, 0.3) * fuse * 230.0 * site_phases, 1)
    return Instance(
        now,
        tuple(evs),
        SiteLimit(fuse, 230.0, site_phases),
        SlotCurve(floor_slot(t0), tuple(float(v) for v in values)),
        base,
    )


def gap(planned: float, optimum: float, scale: float) -> float:
    """Relative gap of a planned objective to the optimum: over the optimum's
    absolute value, or ``scale`` (the same energy at the mean absolute price) when
    that is larger (an optimum near 0 p, with negative prices, has no useful
    relative gap)."""
    return (planned - optimum) / max(abs(optimum), scale, 1e-9)


def mean_abs_price(prices: SlotCurve) -> float:
    """Mean absolute price of a curve, p/kWh."""
    return sum(abs(v) for v in prices.values) / max(1, len(prices.values))


def gap_figures(seed: int, n: int, t0: datetime, max_evs: int = 10) -> dict[str, Any]:
    """Plan ``n`` random instances (:func:`random_instance`, up to ``max_evs`` EVs,
    the 6 A rule on) and compare each with its MILP optimum (:func:`reference`).

    ``p99_gap_vs_milp``: the 99th percentile of :func:`gap` of the cost of the
    energy delivered by the ready-bys, over the instances where the planner
    delivers the optimum's energy by the ready-bys (per priority, to a Wh per EV);
    ``energy_below_milp`` and ``priority1_below_milp`` count those where it
    delivers less to priority 0 or to priority 1; ``false_infeasible`` those where
    the optimum meets every request that could be met alone and the planner flags
    one of them; ``milp_failed`` those HiGHS could not solve (skipped);
    ``max_ms_per_plan``: the slowest ``plan_charging`` call."""
    import time

    from protocols.planning.exact import load_solver

    load_solver()  # a planner process imports HiGHS once, at start: not timed
    rng = random.Random(seed)
    gaps: list[float] = []
    slowest = 0.0
    below0 = below1 = false_infeasible = failed = 0
    for _ in range(n):
        inst = random_instance(rng, t0, max_evs)
        started = time.perf_counter()
        plan = inst.plan()
        slowest = max(slowest, time.perf_counter() - started)
        try:
            ref = reference(
                inst.now, inst.evs, inst.site, inst.prices, base_load_w=inst.base_load_w
            )
        except RuntimeError:  # HiGHS gave up (a numerical "solve error"): skip it
            failed += 1
            continue
        needs = [e.needed_kwh() * 1000.0 for e in inst.evs]
        got = [
            min(g, w) for g, w in zip(on_time_wh(plan, inst.evs), needs, strict=True)
        ]
        p0 = [i for i, p in enumerate(ref.priority) if p == 0]
        if all(ref.met(i, needs[i]) for i in p0) and not all(
            plan.chargers[i].feasible for i in p0
        ):
            false_infeasible += 1
        e0 = sum(got[i] for i in p0)
        e1 = sum(got) - e0
        tol = MET_WH * len(inst.evs)
        if e0 < ref.energy_p0_wh - tol:
            below0 += 1
        elif e1 < ref.energy_p1_wh - tol:
            below1 += 1
        else:
            cost = on_time_cost_p(plan, inst.evs, inst.prices)
            energy = (ref.energy_p0_wh + ref.energy_p1_wh) / 1000.0
            gaps.append(gap(cost, ref.cost_p, mean_abs_price(inst.prices) * energy))
    gaps.sort()
    p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] if gaps else 0.0
    return {
        "gap_instances": n,
        "p99_gap_vs_milp": round(max(0.0, p99), 4),
        "max_gap_vs_milp": round(max(gaps, default=0.0), 4),
        "energy_below_milp": below0,
        "priority1_below_milp": below1,
        "false_infeasible": false_infeasible,
        "milp_failed": failed,
        "max_ms_per_plan": round(1000.0 * slowest, 1),
    }


__all__ = [
    "MET_WH",
    "Instance",
    "Reference",
    "arrival_time",
    "gap",
    "gap_figures",
    "mean_abs_price",
    "on_time_cost_p",
    "on_time_wh",
    "random_instance",
    "ready_time",
    "reference",
]
