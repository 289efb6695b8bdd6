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
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Literal

from protocols.planning.tariffs import SLOT, SLOT_HOURS, SlotCurve, floor_slot

Objective = Literal["cost", "carbon", "mix"]

DEFAULT_VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0
_EPS_WH = 1e-6


class PlanningError(ValueError):
    """The inputs cannot be planned (a bad request, curves too short for it)."""


@dataclass(frozen=True)
class EvRequest:
    """One EV's charge request on one charger.

    Give either ``energy_needed_kwh``, or ``target_soc_pct`` with ``battery_kwh`` and
    ``current_soc_pct``. ``ready_by`` is rounded down to a slot start. Powers in W;
    ``min_power_w`` defaults to 6 A x voltage x phases. ``phase`` (1-3) is the site
    phase a single-phase charger is wired to.
    """

    charger_id: str
    ready_by: datetime
    max_power_w: float
    phases: int = 1
    min_power_w: float | None = None
    energy_needed_kwh: float | None = None
    target_soc_pct: float | None = None
    current_soc_pct: float | None = None
    battery_kwh: float | None = None
    phase: int = 1
    voltage_v: float = DEFAULT_VOLTAGE_V

    def needed_kwh(self) -> float:
        """Energy to deliver in kWh (>= 0)."""
        if self.energy_needed_kwh is not None:
            return max(0.0, self.energy_needed_kwh)
        if (
            self.target_soc_pct is None
            or self.current_soc_pct is None
            or self.battery_kwh is None
        ):
            raise PlanningError(
                f"charger {self.charger_id}: give energy_needed_kwh, or target_soc_pct"
                " with current_soc_pct and battery_kwh"
            )
        gap = (self.target_soc_pct - self.current_soc_pct) / 100.0
        return max(0.0, gap * self.battery_kwh)

    def effective_min_power_w(self) -> float:
        """Minimum charging power in W (6 A x voltage x phases unless given)."""
        if self.min_power_w is not None:
            return self.min_power_w
        return MIN_CURRENT_A * self.voltage_v * self.phases


@dataclass(frozen=True)
class SiteLimit:
    """The site's supply: main fuse in A per phase, nominal voltage, 1 or 3 phases."""

    main_fuse_a: float
    voltage_v: float = DEFAULT_VOLTAGE_V
    phases: int = 1

    @property
    def phase_limit_w(self) -> float:
        """Power one phase may carry, W."""
        return self.main_fuse_a * self.voltage_v

    @property
    def limit_w(self) -> float:
        """Power the whole site may carry (all phases), W."""
        return self.phase_limit_w * self.phases


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


# --------------------------------------------------------------------- the solver


@dataclass
class _Ev:
    """Working state of one EV in a pool (energies in Wh per slot)."""

    idx: int
    power: float  # W in this pool's unit (pool-resource W per charger W = 1)
    deadline: int  # slots 0..deadline-1 are allowed
    need: float  # Wh still to place
    banned: set[int] = field(default_factory=set)  # slots it may not use
    x: dict[int, float] = field(default_factory=dict)
    floor: dict[int, float] = field(default_factory=dict)  # Wh pre-placed per slot


class _Pool:
    """EVs sharing one resource per slot (a phase, or the balanced three phases)."""

    def __init__(
        self,
        evs: list[_Ev],
        caps: list[float],
        hours: list[float],
        costs: list[float],
        fresh: bool = True,
    ) -> None:
        self.evs = evs
        self.caps = caps  # Wh room per slot
        self.hours = hours  # hours of each slot after now
        self.costs = costs
        n_slots = len(caps)
        self.load = [0.0] * n_slots
        self.cap_eff = [0.0] * n_slots
        self.opened = [False] * n_slots
        self.open_list: list[int] = []
        self.inslot: list[dict[int, float]] = [{} for _ in range(n_slots)]
        # cnt[s][r]: EVs holding energy in s with room in r (r in their window)
        self.cnt = [[0] * n_slots for _ in range(n_slots)]
        # act[s]: EVs still needing energy with room in s
        self.act = [0] * n_slots
        self.by_deadline = sorted(evs, key=lambda e: (e.deadline, e.idx))
        self.by_idx = {e.idx: e for e in evs}
        self.active = {e.idx: e for e in self.by_deadline if e.need > _EPS_WH}
        if fresh:
            for e in self.active.values():
                for s in range(e.deadline):
                    if s not in e.banned:
                        self.act[s] += 1
        else:  # adopt the EVs' current energies (for the minimum-power repair)
            for e in evs:
                for t, v in e.x.items():
                    self.load[t] += v
                    self.inslot[t][e.idx] = v

    # -- bookkeeping ------------------------------------------------------------
    def _u(self, e: _Ev, t: int) -> float:
        if t in e.banned:
            return 0.0
        return e.power * self.hours[t] - e.floor.get(t, 0.0)

    def _room(self, e: _Ev, t: int) -> bool:
        return t < e.deadline and e.x.get(t, 0.0) < self._u(e, t) - _EPS_WH

    def _set(self, e: _Ev, t: int, value: float) -> None:
        """Set e's energy in slot t, keeping cnt/act/inslot/load right."""
        old = e.x.get(t, 0.0)
        if value < _EPS_WH:
            value = 0.0
        u = self._u(e, t)
        if value > u - _EPS_WH:
            value = min(value, u)
        had_room = old < u - _EPS_WH
        has_room = value < u - _EPS_WH
        held_before = old > 0.0
        held_after = value > 0.0
        self.load[t] += value - old
        if value > 0.0:
            e.x[t] = value
            self.inslot[t][e.idx] = value
        else:
            e.x.pop(t, None)
            self.inslot[t].pop(e.idx, None)
        cnt = self.cnt
        if held_before != held_after:
            row = cnt[t]
            step = 1 if held_after else -1
            for r in range(e.deadline):
                if r != t and self._room(e, r):
                    row[r] += step
        if had_room != has_room:
            step = 1 if has_room else -1
            for s in e.x:
                if s != t:
                    cnt[s][t] += step
            if e.idx in self.active:
                self.act[t] += step

    def _take(self, e: _Ev, amount: float) -> None:
        e.need -= amount
        if e.need <= _EPS_WH and e.idx in self.active:
            del self.active[e.idx]
            for s in range(e.deadline):
                if self._room(e, s):
                    self.act[s] -= 1

    # -- the greedy -------------------------------------------------------------
    def _open(self, t: int, cap: float) -> None:
        if not self.opened[t]:
            self.opened[t] = True
            self.open_list.append(t)
        self.cap_eff[t] = max(self.cap_eff[t], min(cap, self.caps[t]))

    def _fill(self, t: int) -> None:
        """Push as much energy into open slot t as the network allows."""
        rem = self.cap_eff[t] - self.load[t]
        if rem <= _EPS_WH or not self.active:
            return
        # straight from EVs that still need energy, earliest ready-by first
        for e in self.by_deadline:
            if e.deadline <= t or e.idx not in self.active:
                continue
            have = e.x.get(t, 0.0)
            add = min(e.need, self._u(e, t) - have, rem)
            if add <= _EPS_WH:
                continue
            self._set(e, t, have + add)
            self._take(e, add)
            rem -= add
            if rem <= _EPS_WH or not self.active:
                return
        # augmenting paths: move later-ready-by EVs into t to free earlier slots
        guard = 0
        while rem > _EPS_WH and self.active:
            path = self._find_path(t)
            if path is None:
                return
            while rem > _EPS_WH and self.active:
                moved = self._augment(path, rem)
                if moved <= _EPS_WH:
                    break
                rem -= moved
            guard += 1
            if guard > 100_000:  # pragma: no cover - defensive
                return

    def _find_path(self, t: int) -> list[int] | None:
        """Slots [s0, s1, ..., t]: an active EV has room in s0, each hop has a mover."""
        prev: dict[int, int] = {t: -1}
        queue = deque([t])
        cnt = self.cnt
        act = self.act
        while queue:
            r = queue.popleft()
            for s in self.open_list:
                if s in prev or cnt[s][r] <= 0:
                    continue
                prev[s] = r
                if act[s] > 0:
                    path = [s]
                    while path[-1] != t:
                        path.append(prev[path[-1]])
                    return path
                queue.append(s)
        return None

    def _augment(self, path: list[int], limit: float) -> float:
        """Move energy along ``path``; returns the Wh added to its last slot."""
        s0 = path[0]
        starter: _Ev | None = None
        best = 0.0
        for e in self.active.values():
            if self._room(e, s0):
                room = min(e.need, self._u(e, s0) - e.x.get(s0, 0.0))
                if room > best:
                    best, starter = room, e
        if starter is None:
            return 0.0
        delta = min(best, limit)
        movers: list[_Ev] = []
        for a, b in pairwise(path):
            mover: _Ev | None = None
            mbest = 0.0
            for idx, amount in self.inslot[a].items():
                e = self.by_idx[idx]
                if self._room(e, b):
                    cap = min(amount, self._u(e, b) - e.x.get(b, 0.0))
                    if cap > mbest:
                        mbest, mover = cap, e
                        if cap >= delta:
                            break
            if mover is None:
                return 0.0
            movers.append(mover)
            delta = min(delta, mbest)
        if delta <= _EPS_WH:
            return 0.0
        self._set(starter, s0, starter.x.get(s0, 0.0) + delta)
        for (a, b), m in zip(pairwise(path), movers, strict=True):
            self._set(m, a, m.x.get(a, 0.0) - delta)
            self._set(m, b, m.x.get(b, 0.0) + delta)
        self._take(starter, delta)
        return delta

    def solve(self, base_w: list[float], levels: int = 12) -> None:
        """Fill the slots cheapest first; equal-cost slots by rising water level."""
        n = len(self.caps)
        order = sorted(range(n), key=lambda t: (self.costs[t], t))
        k = 0
        while k < len(order) and self.active:
            t0 = order[k]
            group = [t0]
            c0 = self.costs[t0]
            tol = 1e-9 * max(1.0, abs(c0))
            while k + len(group) < len(order) and (
                abs(self.costs[order[k + len(group)]] - c0) <= tol
            ):
                group.append(order[k + len(group)])
            k += len(group)
            group = [t for t in group if self.caps[t] > _EPS_WH]
            if len(group) > 1:
                lo = min(base_w[t] for t in group)
                hi = max(base_w[t] + self.caps[t] / self.hours[t] for t in group)
                for step in range(1, levels + 1):
                    level = lo + (hi - lo) * step / levels
                    for t in group:
                        cap = max(0.0, level - base_w[t]) * self.hours[t]
                        self._open(t, cap)
                        self._fill(t)
                    if not self.active:
                        break
            for t in group:
                self._open(t, self.caps[t])
                self._fill(t)


def _clone(evs: list[_Ev]) -> list[_Ev]:
    return [
        _Ev(e.idx, e.power, e.deadline, e.need, set(e.banned), dict(e.x)) for e in evs
    ]


def _rank(evs: list[_Ev], costs: list[float]) -> tuple[float, float]:
    """(undelivered Wh rounded, objective): smaller is better."""
    lack = sum(max(0.0, e.need) for e in evs)
    return (round(lack, 0), sum(costs[t] * v for e in evs for t, v in e.x.items()))


def _place_at_minimum(
    pool: _Pool,
    e: _Ev,
    t: int,
    piece: float,
    min_e: dict[int, float],
    costs: list[float],
) -> bool:
    """Deliver ``piece`` Wh more to ``e`` as a new slot at (at least) its minimum."""
    mw = min_e[e.idx]
    if not e.x:
        # all the EV needs is less than its minimum for one slot: run one slot at
        # the minimum (the EV stops drawing when it is full)
        for tt in sorted(range(e.deadline), key=lambda s: (costs[s], s)):
            amount = max(mw * pool.hours[tt], piece)
            if tt in e.banned or amount > pool._u(e, tt) + _EPS_WH:
                continue
            if pool.caps[tt] - pool.load[tt] >= amount - _EPS_WH:
                pool._set(e, tt, amount)
                return True
        return False
    free = [s for s in range(e.deadline) if s != t and e.x.get(s, 0.0) <= 0.0]
    for tt in [t, *sorted(free, key=lambda s: (costs[s], s))]:
        if e.x.get(tt, 0.0) > 0.0 or tt in e.banned:
            continue
        amount = max(mw * pool.hours[tt], piece)
        if amount > pool._u(e, tt) + _EPS_WH:
            continue
        excess = amount - piece
        room_tt = pool.caps[tt] - pool.load[tt]
        if excess <= _EPS_WH:
            if room_tt >= amount - _EPS_WH:
                pool._set(e, tt, amount)
                return True
            continue
        gap = max(0.0, amount - room_tt)
        for s in sorted(e.x, key=lambda s: -costs[s]):
            if s == tt or e.x[s] - excess < mw * pool.hours[s] - _EPS_WH:
                continue
            if gap <= _EPS_WH:
                pool._set(e, tt, amount)
                pool._set(e, s, e.x[s] - excess)
                return True
            if gap > pool.caps[s] - pool.load[s] + excess + _EPS_WH:
                continue
            for jdx in list(pool.inslot[tt]):
                j = pool.by_idx[jdx]
                if j is e or s >= j.deadline or s in j.banned:
                    continue
                jm = min_e[jdx]
                jt = j.x[tt]
                rest = jt - gap
                if rest < -_EPS_WH or _EPS_WH < rest < jm * pool.hours[tt] - _EPS_WH:
                    continue
                js = j.x.get(s, 0.0)
                if pool._u(j, s) - js < gap - _EPS_WH:
                    continue
                if js + gap < jm * pool.hours[s] - _EPS_WH:
                    continue
                pool._set(e, s, e.x[s] - excess)
                pool._set(j, tt, jt - gap)
                pool._set(j, s, js + gap)
                pool._set(e, tt, amount)
                return True
    return False


def _repair_min_power(pool: _Pool, min_e: dict[int, float], costs: list[float]) -> None:
    """Make every EV's slot energy 0 or >= its minimum (Wh at min power)."""
    for e in pool.evs:
        mw = min_e[e.idx]
        if mw <= 0.0:
            continue
        for _ in range(4 * max(1, e.deadline)):
            small = [t for t, v in e.x.items() if v < mw * pool.hours[t] - _EPS_WH]
            if not small:
                break
            t = max(small, key=lambda s: (costs[s], -e.x[s]))
            piece = e.x[t]
            pool._set(e, t, 0.0)
            # 1) into the EV's other charging slots, cheapest first
            for s in sorted(e.x, key=lambda s: costs[s]):
                if piece <= _EPS_WH:
                    break
                room = min(pool._u(e, s) - e.x[s], pool.caps[s] - pool.load[s], piece)
                if room > _EPS_WH and e.x[s] >= mw * pool.hours[s] - _EPS_WH:
                    pool._set(e, s, e.x[s] + room)
                    piece -= room
            if piece <= _EPS_WH:
                continue
            # 1b) swap: the EV takes more in a slot s where it charges and another
            #     EV j gives that up and takes it back in t (site loads unchanged)
            for s in sorted(e.x, key=lambda s: costs[s]):
                if piece <= _EPS_WH:
                    break
                for jdx in list(pool.inslot[t]):
                    if piece <= _EPS_WH:
                        break
                    j = pool.by_idx[jdx]
                    if j is e or s >= j.deadline or s in j.banned:
                        continue
                    d = min(
                        piece,
                        pool._u(e, s) - e.x[s],
                        j.x.get(s, 0.0) - min_e[jdx] * pool.hours[s],
                        pool._u(j, t) - j.x[t],
                    )
                    if d > _EPS_WH:
                        pool._set(e, s, e.x[s] + d)
                        pool._set(j, s, j.x[s] - d)
                        pool._set(j, t, j.x[t] + d)
                        piece -= d
            if piece <= _EPS_WH:
                continue
            # 2) run at the minimum in a slot tt (t first, then the cheapest free
            #    ones): the excess over the piece comes off the EV's dearest slot
            #    s; if tt lacks room, another EV j gives it up in tt and takes it
            #    back in s (site loads elsewhere unchanged)
            if not _place_at_minimum(pool, e, t, piece, min_e, costs):
                e.need += piece  # cannot be delivered at or above the minimum


# --------------------------------------------------------------------- the API


def _slot_costs(
    objective: Objective,
    prices: list[float],
    carbon: list[float] | None,
    carbon_weight: float,
) -> list[float]:
    if objective == "cost":
        return prices
    if carbon is None:
        raise PlanningError(f"objective {objective!r} needs a carbon curve")
    if objective == "carbon":
        return carbon
    if not 0.0 <= carbon_weight <= 1.0:
        raise PlanningError(f"carbon_weight {carbon_weight} is not in [0, 1]")
    p_scale = sum(abs(p) for p in prices) / len(prices) or 1.0
    c_scale = sum(abs(c) for c in carbon) / len(carbon) or 1.0
    w = carbon_weight
    return [
        (1.0 - w) * p / p_scale + w * c / c_scale
        for p, c in zip(prices, carbon, strict=True)
    ]


def _curve_values(
    curve: SlotCurve | None, start: datetime, n: int, name: str
) -> list[float] | None:
    if curve is None:
        return None
    if curve.start > start or curve.end < start + SLOT * n:
        raise PlanningError(
            f"the {name} curve covers [{curve.start.isoformat()}, "
            f"{curve.end.isoformat()}), the plan needs [{start.isoformat()}, "
            f"{(start + SLOT * n).isoformat()})"
        )
    i = curve.index_of(start)
    return list(curve.values[i : i + n])


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
    if objective not in ("cost", "carbon", "mix"):
        raise PlanningError(f"objective must be cost, carbon or mix, not {objective!r}")
    if site.phases not in (1, 3):
        raise PlanningError(f"site phases must be 1 or 3, not {site.phases}")
    start = floor_slot(now)
    needs: list[float] = []
    deadlines: list[int] = []
    infeasible_alone: list[bool] = []
    first_hours = ((start + SLOT) - now).total_seconds() / 3600.0
    # slots the price curve covers: an overdue EV's catch-up stops there
    covered = max(0, (prices.end - start) // SLOT)
    seen: set[str] = set()
    for r in evs:
        if r.charger_id in seen:
            raise PlanningError(f"charger {r.charger_id} appears twice")
        seen.add(r.charger_id)
        if r.phases not in (1, 3):
            raise PlanningError(f"charger {r.charger_id}: phases must be 1 or 3")
        if not 1 <= r.phase <= 3:
            raise PlanningError(f"charger {r.charger_id}: phase must be 1, 2 or 3")
        if r.max_power_w <= 0:
            raise PlanningError(f"charger {r.charger_id}: max_power_w must be > 0")
        need_wh = r.needed_kwh() * 1000.0
        n_slots = max(0, (floor_slot(r.ready_by) - start) // SLOT)
        if r.ready_by <= now:
            n_slots = 0
        # a three-phase charger on a single-phase supply has a third of its power
        power_w = r.max_power_w * min(r.phases, site.phases) / r.phases
        window_wh = power_w * (
            first_hours + SLOT_HOURS * max(0, n_slots - 1) if n_slots else 0.0
        )
        short = need_wh > window_wh + _EPS_WH
        if short and need_wh > 0:
            # as early as possible at full power: enough slots to finish
            extra = need_wh - power_w * first_hours
            catch_up = 1 + max(0, math.ceil(extra / (power_w * SLOT_HOURS)))
            n_slots = max(n_slots, min(catch_up, covered))
        needs.append(need_wh)
        deadlines.append(int(n_slots))
        infeasible_alone.append(short)
    n = max(deadlines, default=0)
    hours = [first_hours] + [SLOT_HOURS] * max(0, n - 1) if n else []
    price_v = _curve_values(prices, start, n, "price") or []
    carbon_v = _curve_values(carbon, start, n, "carbon")
    if isinstance(base_load_w, SlotCurve):
        base_v = _curve_values(base_load_w, start, n, "base load") or []
    else:
        base_v = [float(base_load_w or 0.0)] * n
    costs = _slot_costs(objective, price_v, carbon_v, carbon_weight)
    phase_room_w = [
        max(0.0, site.phase_limit_w - b / site.phases) for b in base_v
    ]  # per phase

    eff_power = []
    for r in evs:
        phases = min(r.phases, site.phases)
        eff_power.append(r.max_power_w * phases / r.phases)

    base_phase = [b / site.phases for b in base_v]
    min_e = [
        r.effective_min_power_w() * min(r.phases, site.phases) / r.phases for r in evs
    ]
    slot_wh: list[list[float]] = [[0.0] * n for _ in evs]
    shortfalls = [0.0] * len(evs)
    # room per phase (index phase - 1) and slot, W
    room = [list(phase_room_w) for _ in range(site.phases)]

    def phases_of(r: EvRequest) -> list[int]:
        if site.phases == 1:
            return [0]
        return [0, 1, 2] if r.phases == 3 else [r.phase - 1]

    # An EV that cannot make its ready-by even alone charges as much as it can, as
    # early as it can: full power from now (within the site's room) until done.
    for i, r in enumerate(evs):
        if not infeasible_alone[i] or needs[i] <= 0:
            continue
        ph = phases_of(r)
        left_wh = needs[i]
        for t in range(deadlines[i]):
            if left_wh <= _EPS_WH:
                break
            w = min(eff_power[i], min(room[p][t] for p in ph) * len(ph))
            if w < min_e[i] - 1e-9 or w <= 0:
                continue
            e_wh = min(left_wh, w * hours[t])
            floor_wh = min_e[i] * hours[t]
            if e_wh < floor_wh - _EPS_WH:
                # the last piece is below the minimum: run it at the minimum and
                # take the difference off the slots before (latest first); if they
                # cannot spare it, leave the piece undelivered
                gap = floor_wh - e_wh
                spare = {
                    q: slot_wh[i][q] - min_e[i] * hours[q]
                    for q in range(t)
                    if slot_wh[i][q] > 0
                }
                if sum(max(0.0, v) for v in spare.values()) < gap - _EPS_WH:
                    continue
                for q in sorted(spare, reverse=True):
                    cut = min(max(0.0, spare[q]), gap)
                    slot_wh[i][q] -= cut
                    for p in ph:
                        room[p][q] += cut / hours[q] / len(ph)
                    left_wh += cut
                    gap -= cut
                    if gap <= _EPS_WH:
                        break
                e_wh = floor_wh
            slot_wh[i][t] = e_wh
            left_wh -= e_wh
            for p in ph:
                room[p][t] -= e_wh / hours[t] / len(ph)
        shortfalls[i] = max(0.0, left_wh)

    # pools: key 0 for balanced three-phase chargers, 1..3 for single-phase ones
    members: dict[int, list[int]] = {}
    for i, r in enumerate(evs):
        if infeasible_alone[i]:
            continue
        key = (
            0
            if (site.phases == 3 and r.phases == 3)
            else (r.phase if site.phases == 3 else 1)
        )
        members.setdefault(key, []).append(i)

    def room_of(p: int) -> list[float]:
        return room[p - 1] if site.phases == 3 else room[0]

    def min_room(used: dict[int, list[float]] | None = None) -> list[float]:
        used = used or {}
        return [
            max(
                0.0,
                min(
                    room[p - 1][t] - (used[p][t] if p in used else 0.0)
                    for p in (1, 2, 3)
                ),
            )
            for t in range(n)
        ]

    def run_pool(
        spec: list[tuple[int, float, float]], room_w: list[float], mult: float
    ) -> list[_Ev]:
        """Solve one pool; ``spec`` = (ev index, power W, need Wh); ``room_w`` is per
        phase, ``mult`` the phases the pool's EVs spread over (3 or 1)."""
        caps = [room_w[t] * mult * hours[t] for t in range(n)]
        base = [b * mult for b in base_phase]
        mins = {i: min_e[i] for i, _, _ in spec}  # W of the EV, as its power

        def solve(
            banned: dict[int, set[int]], floors: dict[int, dict[int, float]]
        ) -> list[_Ev]:
            """The continuous optimum with (EV, slot) pairs banned or given a floor
            (Wh the EV must take there, so at least its minimum)."""
            room = list(caps)
            pevs = []
            for i, power, need in spec:
                fl = floors.get(i, {})
                for t, v in fl.items():
                    room[t] -= v
                pevs.append(
                    _Ev(
                        i,
                        power,
                        deadlines[i],
                        need - sum(fl.values()),
                        banned=set(banned.get(i, ())),
                        floor=dict(fl),
                    )
                )
            _Pool(pevs, [max(0.0, r) for r in room], hours, costs).solve(base)
            for e in pevs:
                for t, v in e.floor.items():
                    e.x[t] = e.x.get(t, 0.0) + v
                e.floor = {}
            return pevs

        def small(pevs: list[_Ev]) -> list[tuple[float, int, int]]:
            """Below-minimum pieces as (fraction of the minimum, EV, slot)."""
            return sorted(
                (v / (mins[e.idx] * hours[t]), e.idx, t)
                for e in pevs
                for t, v in e.x.items()
                if v < mins[e.idx] * hours[t] - _EPS_WH
            )

        def lack(pevs: list[_Ev]) -> float:
            return sum(max(0.0, e.need) for e in pevs)

        def repaired(pevs: list[_Ev]) -> list[_Ev]:
            out = _clone(pevs)
            _repair_min_power(_Pool(out, caps, hours, costs, fresh=False), mins, costs)
            return out

        # 1) the continuous optimum; 2) its local repair, near-optimal unless the
        # pool is so tight that repairing loses energy; 3) then ban every
        # below-minimum piece and re-solve; 4) on small pools, a dive: piece by
        # piece (nearest the minimum first) force it to the minimum, else ban it,
        # re-solving each time and keeping only steps that lose no energy.
        first = solve({}, {})
        target = lack(first) + 1.0
        pieces = small(first)
        if not pieces:
            return first
        local = repaired(first)
        if lack(local) <= target:
            return local
        banned: dict[int, set[int]] = {i: set() for i, _, _ in spec}
        for _, i, t in pieces:
            banned[i].add(t)
        floors: dict[int, dict[int, float]] = {}
        cur = solve(banned, floors)
        if lack(cur) > target:
            banned = {i: set() for i, _, _ in spec}
            cur = first
        stuck: set[tuple[int, int]] = set()
        if len(spec) <= 60:
            for _round in range(40):
                todo = [(f, i, t) for f, i, t in small(cur) if (i, t) not in stuck]
                if not todo:
                    break
                _, i, t = todo[-1]  # nearest its minimum
                power = next(p for j, p, _ in spec if j == i)
                m_wh = mins[i] * hours[t]
                tried = False
                floored = sum(fl.get(t, 0.0) for fl in floors.values())
                need_i = next(nd for j, _, nd in spec if j == i)
                placed_i = sum(floors.get(i, {}).values())
                if (
                    m_wh <= power * hours[t] + _EPS_WH
                    and floored + m_wh <= caps[t] + _EPS_WH
                    and placed_i + m_wh <= need_i + _EPS_WH
                ):
                    floors.setdefault(i, {})[t] = m_wh
                    sol = solve(banned, floors)
                    if lack(sol) <= target:
                        cur, tried = sol, True
                    else:
                        del floors[i][t]
                if not tried:
                    banned[i].add(t)
                    sol = solve(banned, floors)
                    if lack(sol) <= target:
                        cur, tried = sol, True
                    else:
                        banned[i].discard(t)
                if not tried:
                    stuck.add((i, t))
        if not small(cur):
            return cur
        fixed = repaired(cur)
        return min((local, fixed), key=lambda evs: _rank(evs, costs))

    def collect(pevs: list[_Ev]) -> None:
        for e in pevs:
            slot_wh[e.idx] = [e.x.get(t, 0.0) for t in range(n)]
            shortfalls[e.idx] = max(0.0, e.need)

    def spec_of(key: int) -> list[tuple[int, float, float]]:
        return [(i, eff_power[i], needs[i]) for i in members.get(key, [])]

    if site.phases == 1 or 0 not in members:
        for key in members:
            collect(run_pool(spec_of(key), room_of(key), 1.0))
    elif len(members) == 1:
        collect(run_pool(spec_of(0), min_room(), 3.0))
    else:
        # Mixed three-phase site (heuristic, see the module docstring): on the
        # most loaded phase, try (a) its single-phase EVs and every three-phase EV
        # (as a balanced third) jointly, (b) the three-phase EVs first, (c) the
        # single-phase EVs first; plan the other phases in the room left; keep the
        # candidate that delivers the most, then costs the least.
        demand = {p: sum(needs[i] for i in members.get(p, [])) for p in (1, 2, 3)}
        worst = max((1, 2, 3), key=lambda p: (demand[p], -p))
        three = set(members[0])
        third_spec = [(i, eff_power[i] / 3.0, needs[i] / 3.0) for i in members[0]]
        single_spec = spec_of(worst)

        def scaled(pevs: list[_Ev]) -> list[_Ev]:
            for e in pevs:
                if e.idx in three:
                    e.x = {t: 3.0 * v for t, v in e.x.items()}
                    e.need *= 3.0
            return pevs

        def thirds(room: list[float]) -> list[_Ev]:
            for i in three:
                min_e[i] /= 3.0
            try:
                return scaled(run_pool(third_spec, room, 1.0))
            finally:
                for i in three:
                    min_e[i] *= 3.0

        def usage(pevs: list[_Ev], per_phase: float) -> list[float]:
            return [
                sum(e.x.get(t, 0.0) for e in pevs) * per_phase / hours[t]
                for t in range(n)
            ]

        def left(p: int, used: list[float]) -> list[float]:
            return [max(0.0, room[p - 1][t] - used[t]) for t in range(n)]

        candidates: list[dict[int, list[_Ev]]] = []
        for i in three:
            min_e[i] /= 3.0
        # (the joint pool must also fit the other phases: their room is the same
        # unless an overdue EV took some of it)
        joint = scaled(run_pool(single_spec + third_spec, min_room(), 1.0))
        for i in three:
            min_e[i] *= 3.0
        candidates.append(
            {
                0: [e for e in joint if e.idx in three],
                worst: [e for e in joint if e.idx not in three],
            }
        )
        # three-phase first; while that leaves this phase's single-phase EVs short,
        # reserve them room in the dearest slots of their windows the three-phase
        # EVs use, and plan again
        reserve = [0.0] * n
        for _round in range(8):
            first3 = thirds(min_room({worst: reserve}))
            used3 = usage(first3, 1 / 3)
            singles = run_pool(single_spec, left(worst, used3), 1.0)
            candidates.append({0: first3, worst: singles})
            lack_wh = sum(max(0.0, e.need) for e in singles)
            if lack_wh <= 1.0:
                break
            short_evs = [e for e in singles if e.need > 1.0]
            window = max(e.deadline for e in short_evs)
            for t in sorted(range(window), key=lambda t: (-costs[t], -t)):
                headroom_w = sum(
                    e.power - e.x.get(t, 0.0) / hours[t]
                    for e in short_evs
                    if t < e.deadline and t not in e.banned
                )
                add_w = min(used3[t], headroom_w, lack_wh / hours[t])
                if add_w > 0.0:
                    reserve[t] += add_w
                    lack_wh -= add_w * hours[t]
                if lack_wh <= _EPS_WH:
                    break
        first1 = run_pool(single_spec, room_of(worst), 1.0)
        candidates.append(
            {worst: first1, 0: thirds(min_room({worst: usage(first1, 1.0)}))}
        )
        best_key: tuple[float, float] | None = None
        results: dict[int, list[_Ev]] = {}
        for cand in candidates:
            three_share = usage(cand[0], 1 / 3)
            if any(
                three_share[t] > room[p][t] + 1e-6 for p in range(3) for t in range(n)
            ):
                continue  # pragma: no cover - every candidate fits by construction
            for p in (1, 2, 3):
                if p in members and p != worst:
                    cand[p] = run_pool(spec_of(p), left(p, three_share), 1.0)
            lack = sum(max(0.0, e.need) for pevs in cand.values() for e in pevs)
            cost = sum(
                costs[t] * v
                for pevs in cand.values()
                for e in pevs
                for t, v in e.x.items()
            )
            rank = (round(lack, 0), cost)
            if best_key is None or rank < best_key:
                best_key, results = rank, cand
        for pevs in results.values():
            collect(pevs)

    return _build_plan(
        now, start, evs, site, objective, hours, price_v, carbon_v, phase_room_w,
        slot_wh, needs, deadlines, shortfalls, infeasible_alone,
    )  # fmt: skip


def _build_plan(
    now: datetime,
    start: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    objective: Objective,
    hours: list[float],
    price_v: list[float],
    carbon_v: list[float] | None,
    phase_room_w: list[float],
    slot_wh: list[list[float]],
    needs: list[float],
    deadlines: list[int],
    shortfalls: list[float],
    infeasible_alone: list[bool],
) -> Plan:
    n = len(hours)
    chargers: list[ChargerPlan] = []
    ev_load = [0.0] * n
    total_cost = 0.0
    total_carbon = 0.0
    all_ok = True
    for i, r in enumerate(evs):
        xs = slot_wh[i]
        ready_slots = max(0, (floor_slot(r.ready_by) - start) // SLOT)
        if r.ready_by <= now:
            ready_slots = 0
        by_ready = sum(xs[:ready_slots])
        short_wh = max(0.0, needs[i] - by_ready)
        feasible = short_wh <= 1.0 and not infeasible_alone[i]  # 1 Wh tolerance
        all_ok = all_ok and feasible
        periods: list[SchedulePeriod] = []
        phases = min(r.phases, site.phases)
        last = max((t for t in range(n) if xs[t] > 0.0), default=-1)
        for t in range(last + 1):
            p_w = xs[t] / hours[t] if hours[t] > 0 else 0.0
            p_w = math.floor(p_w * 1000.0) / 1000.0  # never above the plan
            ev_load[t] += p_w
            s = now if t == 0 else start + SLOT * t
            e = start + SLOT * (t + 1)
            amps = p_w / (r.voltage_v * phases)
            if periods and periods[-1].limit_w == p_w and periods[-1].end == s:
                periods[-1] = SchedulePeriod(periods[-1].start, e, p_w, amps)
            else:
                periods.append(SchedulePeriod(s, e, p_w, amps))
        cost = sum(xs[t] / 1000.0 * price_v[t] for t in range(n))
        carb = sum(xs[t] / 1000.0 * carbon_v[t] for t in range(n)) if carbon_v else 0.0
        total_cost += cost
        total_carbon += carb
        chargers.append(
            ChargerPlan(
                charger_id=r.charger_id,
                periods=tuple(periods),
                energy_needed_kwh=needs[i] / 1000.0,
                energy_planned_kwh=sum(xs) / 1000.0,
                feasible=feasible,
                shortfall_kwh=max(short_wh, shortfalls[i]) / 1000.0,
                cost_p=cost,
                carbon_g=carb,
                slot_energy_wh=tuple(xs),
            )
        )
    return Plan(
        now=now,
        horizon_start=start,
        objective=objective,
        chargers=tuple(chargers),
        ev_load_w=tuple(ev_load),
        limit_w=tuple(w * site.phases for w in phase_room_w),
        feasible=all_ok,
        total_cost_p=total_cost,
        total_carbon_g=total_carbon,
    )


def slot_starts(plan: Plan) -> list[datetime]:
    """Start of each slot of the plan's horizon (the first is ``floor_slot(now)``)."""
    return [plan.horizon_start + SLOT * t for t in range(len(plan.ev_load_w))]


__all__ = [
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
