"""One pool solved under the minimum-power rule: each slot 0 or at least the minimum.

:func:`solve_pool` starts from the continuous optimum (:class:`~.pool.FlowPool`) and
repairs its below-minimum pieces, in the order that keeps the most of the optimum:

1. the continuous optimum; if no piece is below its EV's minimum, done;
2. the local repair (:func:`repair_min_power`), near-optimal unless the pool is so
   tight that repairing loses energy;
3. otherwise ban every below-minimum (EV, slot) pair and solve again;
4. on pools of at most :data:`DIVE_MAX_EVS` EVs, a dive: piece by piece (nearest its
   minimum first) force it to the minimum, else ban it, solving again each time and
   keeping only steps that lose no energy;
5. whatever is still below the minimum is repaired locally, and the better of that
   and step 2 (delivering the most, then costing the least) is kept.

The dive's bans and floors are an immutable :class:`_Limits` value: a step that loses
energy is simply not kept, nothing is put back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from protocols.planning.pool import FlowPool, PoolEv
from protocols.planning.problem import EPS_WH, Slots

# the dive re-solves the pool up to 80 times: only small pools can afford it
DIVE_MAX_EVS = 60
DIVE_ROUNDS = 40


@dataclass(frozen=True)
class PoolMember:
    """One EV as a pool sees it, in the pool's unit.

    A three-phase EV planned as a balanced third has a third of its power, need and
    minimum here; ``index`` is its position in the request list.
    """

    index: int
    power_w: float
    need_wh: float
    min_power_w: float
    deadline: int

    def third(self) -> PoolMember:
        """This three-phase EV as the balanced third it draws on one phase."""
        return replace(
            self,
            power_w=self.power_w / 3.0,
            need_wh=self.need_wh / 3.0,
            min_power_w=self.min_power_w / 3.0,
        )


@dataclass(frozen=True)
class Allocation:
    """What a pool solve gave one EV: Wh per slot it charges in, and what is left.

    ``slot_wh`` keeps the solver's slot order (totals are summed in that order, so
    the same plan always costs the same to the last bit). ``left_wh`` is the need
    not placed (about 0, possibly a hair below, when met).
    """

    index: int
    power_w: float
    deadline: int
    banned: frozenset[int]
    slot_wh: Mapping[int, float]
    left_wh: float

    def scaled(self, factor: float) -> Allocation:
        """The allocation with every energy times ``factor`` (a third made whole)."""
        return replace(
            self,
            slot_wh={t: factor * v for t, v in self.slot_wh.items()},
            left_wh=self.left_wh * factor,
        )


def undelivered_wh(allocations: Iterable[Allocation]) -> float:
    """Energy the allocations leave undelivered, Wh."""
    return sum(max(0.0, a.left_wh) for a in allocations)


def objective_of(allocations: Iterable[Allocation], costs: Sequence[float]) -> float:
    """The objective of the allocations (cost per kWh x Wh, summed)."""
    return sum(costs[t] * v for a in allocations for t, v in a.slot_wh.items())


def solve_pool(
    members: Sequence[PoolMember],
    room_w: Sequence[float],
    spread: float,
    slots: Slots,
) -> tuple[Allocation, ...]:
    """Plan one pool: the cheapest plan delivering the most with every slot 0 or at
    least the EV's minimum.

    ``room_w`` is the room per phase and slot; ``spread`` the phases each member's
    power spreads over (3 for a pool of balanced three-phase EVs, else 1).
    """
    pp = _PoolProblem.of(members, room_w, spread, slots)
    first = pp.solve(_Limits())
    target = _lack(first) + 1.0
    pieces = pp.below_minimum(first)
    if not pieces:
        return _frozen(first)
    local = pp.repaired(first)
    if _lack(local) <= target:
        return _frozen(local)
    limits = _Limits()
    for _, i, t in pieces:
        limits = limits.banning(i, t)
    cur = pp.solve(limits)
    if _lack(cur) > target:
        limits, cur = _Limits(), first
    if len(members) <= DIVE_MAX_EVS:
        cur = _dive(pp, cur, limits, target)
    if not pp.below_minimum(cur):
        return _frozen(cur)
    fixed = pp.repaired(cur)
    return _frozen(min((local, fixed), key=lambda evs: _rank(evs, pp.costs)))


@dataclass(frozen=True)
class _Limits:
    """(EV, slot) pairs banned, and energies an EV must take in a slot (its floor)."""

    banned: Mapping[int, frozenset[int]] = field(default_factory=dict)
    floors_wh: Mapping[int, Mapping[int, float]] = field(default_factory=dict)

    def banning(self, i: int, t: int) -> _Limits:
        """These limits with EV ``i`` kept out of slot ``t``."""
        banned = {**self.banned, i: self.banned.get(i, frozenset()) | {t}}
        return replace(self, banned=banned)

    def flooring(self, i: int, t: int, energy_wh: float) -> _Limits:
        """These limits with EV ``i`` taking at least ``energy_wh`` in slot ``t``."""
        floors = {**self.floors_wh, i: {**self.floors_wh.get(i, {}), t: energy_wh}}
        return replace(self, floors_wh=floors)


@dataclass(frozen=True)
class _PoolProblem:
    """One pool's fixed inputs: members, room per slot (Wh), costs, base load."""

    members: tuple[PoolMember, ...]
    caps_wh: tuple[float, ...]
    hours: tuple[float, ...]
    costs: tuple[float, ...]
    base_w: tuple[float, ...]
    mins_w: Mapping[int, float]

    @classmethod
    def of(
        cls,
        members: Sequence[PoolMember],
        room_w: Sequence[float],
        spread: float,
        slots: Slots,
    ) -> _PoolProblem:
        """The pool's inputs in its unit (``spread`` phases' worth of room)."""
        hours = slots.hours
        return cls(
            members=tuple(members),
            caps_wh=tuple(room_w[t] * spread * hours[t] for t in range(len(hours))),
            hours=hours,
            costs=slots.costs,
            base_w=tuple(b * spread for b in slots.base_phase_w),
            mins_w={m.index: m.min_power_w for m in members},
        )

    def solve(self, limits: _Limits) -> list[PoolEv]:
        """The continuous optimum under ``limits`` (floors included in the result)."""
        room = list(self.caps_wh)
        pevs = []
        for m in self.members:
            floor = limits.floors_wh.get(m.index, {})
            for t, v in floor.items():
                room[t] -= v
            pevs.append(
                PoolEv(
                    m.index,
                    m.power_w,
                    m.deadline,
                    m.need_wh - sum(floor.values()),
                    banned=set(limits.banned.get(m.index, ())),
                    floor_wh=dict(floor),
                )
            )
        pool = FlowPool(pevs, [max(0.0, r) for r in room], self.hours, self.costs)
        pool.solve(self.base_w)
        for e in pevs:
            for t, v in e.floor_wh.items():
                e.slot_wh[t] = e.slot_wh.get(t, 0.0) + v
            e.floor_wh = {}
        return pevs

    def below_minimum(self, pevs: list[PoolEv]) -> list[tuple[float, int, int]]:
        """Below-minimum pieces as (fraction of the minimum, EV, slot), smallest
        first."""
        mins = self.mins_w
        hours = self.hours
        return sorted(
            (v / (mins[e.index] * hours[t]), e.index, t)
            for e in pevs
            for t, v in e.slot_wh.items()
            if v < mins[e.index] * hours[t] - EPS_WH
        )

    def repaired(self, pevs: list[PoolEv]) -> list[PoolEv]:
        """A copy of ``pevs`` with the local minimum-power repair applied."""
        out = _clone(pevs)
        pool = FlowPool(out, self.caps_wh, self.hours, self.costs, fresh=False)
        repair_min_power(pool, self.mins_w, self.costs)
        return out

    def member(self, index: int) -> PoolMember:
        """The member with request index ``index``."""
        return next(m for m in self.members if m.index == index)


def _dive(
    pp: _PoolProblem, cur: list[PoolEv], limits: _Limits, target: float
) -> list[PoolEv]:
    """Step 4: piece by piece, floor it at the minimum or ban it, if no energy is
    lost by doing so; a piece neither can fix is left for the final repair."""
    stuck: set[tuple[int, int]] = set()
    for _round in range(DIVE_ROUNDS):
        todo = [(f, i, t) for f, i, t in pp.below_minimum(cur) if (i, t) not in stuck]
        if not todo:
            break
        _, i, t = todo[-1]  # nearest its minimum
        step = _dive_step(pp, limits, i, t, target)
        if step is None:
            stuck.add((i, t))
        else:
            cur, limits = step
    return cur


def _dive_step(
    pp: _PoolProblem, limits: _Limits, i: int, t: int, target: float
) -> tuple[list[PoolEv], _Limits] | None:
    """Solve with EV ``i`` at its minimum in slot ``t``, else kept out of it; the
    first that keeps the energy delivered within ``target``, or None."""
    member = pp.member(i)
    m_wh = member.min_power_w * pp.hours[t]
    floored = sum(fl.get(t, 0.0) for fl in limits.floors_wh.values())
    placed_i = sum(limits.floors_wh.get(i, {}).values())
    if (
        m_wh <= member.power_w * pp.hours[t] + EPS_WH
        and floored + m_wh <= pp.caps_wh[t] + EPS_WH
        and placed_i + m_wh <= member.need_wh + EPS_WH
    ):
        trial = limits.flooring(i, t, m_wh)
        sol = pp.solve(trial)
        if _lack(sol) <= target:
            return sol, trial
    trial = limits.banning(i, t)
    sol = pp.solve(trial)
    if _lack(sol) <= target:
        return sol, trial
    return None


def _lack(pevs: list[PoolEv]) -> float:
    return sum(max(0.0, e.need_wh) for e in pevs)


def _rank(evs: list[PoolEv], costs: Sequence[float]) -> tuple[float, float]:
    """(undelivered Wh rounded, objective): smaller is better."""
    lack = sum(max(0.0, e.need_wh) for e in evs)
    objective = sum(costs[t] * v for e in evs for t, v in e.slot_wh.items())
    return (round(lack, 0), objective)


def _clone(evs: list[PoolEv]) -> list[PoolEv]:
    return [
        PoolEv(
            e.index, e.power_w, e.deadline, e.need_wh, set(e.banned), dict(e.slot_wh)
        )
        for e in evs
    ]


def _frozen(pevs: list[PoolEv]) -> tuple[Allocation, ...]:
    return tuple(
        Allocation(
            index=e.index,
            power_w=e.power_w,
            deadline=e.deadline,
            banned=frozenset(e.banned),
            slot_wh=dict(e.slot_wh),
            left_wh=e.need_wh,
        )
        for e in pevs
    )


# ------------------------------------------------------------- the local repair


def repair_min_power(
    pool: FlowPool, mins_w: Mapping[int, float], costs: Sequence[float]
) -> None:
    """Make every EV's slot energy 0 or >= its minimum (Wh at min power).

    Each below-minimum piece, dearest slot first, is taken out and put back where it
    costs least: into the EV's other charging slots, by a swap with another EV, or
    run at the minimum in a slot of its own; failing all, it stays undelivered.
    """
    for e in pool.evs:
        mw = mins_w[e.index]
        if mw <= 0.0:
            continue
        for _ in range(4 * max(1, e.deadline)):
            small = [t for t, v in e.slot_wh.items() if v < mw * pool.hours[t] - EPS_WH]
            if not small:
                break
            t = max(small, key=lambda s: (costs[s], -e.slot_wh[s]))
            piece = e.slot_wh[t]
            pool.set_energy(e, t, 0.0)
            piece = _into_own_slots(pool, e, piece, mw, costs)
            if piece <= EPS_WH:
                continue
            piece = _swap_with_others(pool, e, t, piece, mins_w, costs)
            if piece <= EPS_WH:
                continue
            if not _place_at_minimum(pool, e, t, piece, mins_w, costs):
                e.need_wh += piece  # cannot be delivered at or above the minimum


def _into_own_slots(
    pool: FlowPool, e: PoolEv, piece: float, mw: float, costs: Sequence[float]
) -> float:
    """Put ``piece`` into the EV's other charging slots, cheapest first (within its
    maximum and the pool's room); returns what is left."""
    for s in sorted(e.slot_wh, key=lambda s: costs[s]):
        if piece <= EPS_WH:
            break
        room = min(pool.usable_wh(e, s) - e.slot_wh[s], pool.free_wh(s), piece)
        if room > EPS_WH and e.slot_wh[s] >= mw * pool.hours[s] - EPS_WH:
            pool.set_energy(e, s, e.slot_wh[s] + room)
            piece -= room
    return piece


def _swap_with_others(
    pool: FlowPool,
    e: PoolEv,
    t: int,
    piece: float,
    mins_w: Mapping[int, float],
    costs: Sequence[float],
) -> float:
    """The EV takes more in a slot s where it charges and another EV j gives that up
    and takes it back in t (the pool's loads unchanged); returns what is left."""
    for s in sorted(e.slot_wh, key=lambda s: costs[s]):
        if piece <= EPS_WH:
            break
        for jdx in list(pool.holders[t]):
            if piece <= EPS_WH:
                break
            j = pool.by_index[jdx]
            if j is e or s >= j.deadline or s in j.banned:
                continue
            d = min(
                piece,
                pool.usable_wh(e, s) - e.slot_wh[s],
                j.slot_wh.get(s, 0.0) - mins_w[jdx] * pool.hours[s],
                pool.usable_wh(j, t) - j.slot_wh[t],
            )
            if d > EPS_WH:
                pool.set_energy(e, s, e.slot_wh[s] + d)
                pool.set_energy(j, s, j.slot_wh[s] - d)
                pool.set_energy(j, t, j.slot_wh[t] + d)
                piece -= d
    return piece


def _place_at_minimum(
    pool: FlowPool,
    e: PoolEv,
    t: int,
    piece: float,
    mins_w: Mapping[int, float],
    costs: Sequence[float],
) -> bool:
    """Deliver ``piece`` Wh more to ``e`` as a new slot at (at least) its minimum.

    The slot is t, else the cheapest free one; the excess over the piece comes off
    the EV's dearest slot (see :func:`_trade_for_minimum`).
    """
    mw = mins_w[e.index]
    if not e.slot_wh:
        return _one_slot_at_minimum(pool, e, piece, mw, costs)
    free = [s for s in range(e.deadline) if s != t and e.slot_wh.get(s, 0.0) <= 0.0]
    for tt in [t, *sorted(free, key=lambda s: (costs[s], s))]:
        if e.slot_wh.get(tt, 0.0) > 0.0 or tt in e.banned:
            continue
        amount = max(mw * pool.hours[tt], piece)
        if amount > pool.usable_wh(e, tt) + EPS_WH:
            continue
        excess = amount - piece
        room_tt = pool.free_wh(tt)
        if excess <= EPS_WH:
            if room_tt >= amount - EPS_WH:
                pool.set_energy(e, tt, amount)
                return True
            continue
        gap = max(0.0, amount - room_tt)
        if _trade_for_minimum(pool, e, tt, amount, excess, gap, mins_w, costs):
            return True
    return False


def _one_slot_at_minimum(
    pool: FlowPool, e: PoolEv, piece: float, mw: float, costs: Sequence[float]
) -> bool:
    """All the EV needs is less than its minimum for one slot: run one slot (the
    cheapest with room) at the minimum; the EV stops drawing when it is full."""
    for tt in sorted(range(e.deadline), key=lambda s: (costs[s], s)):
        amount = max(mw * pool.hours[tt], piece)
        if tt in e.banned or amount > pool.usable_wh(e, tt) + EPS_WH:
            continue
        if pool.free_wh(tt) >= amount - EPS_WH:
            pool.set_energy(e, tt, amount)
            return True
    return False


def _trade_for_minimum(
    pool: FlowPool,
    e: PoolEv,
    tt: int,
    amount: float,
    excess: float,
    gap: float,
    mins_w: Mapping[int, float],
    costs: Sequence[float],
) -> bool:
    """Run ``e`` at ``amount`` in ``tt``, taking ``excess`` off its dearest slot s
    that stays at its minimum; if ``tt`` lacks ``gap`` Wh of room, another EV gives
    that up in ``tt`` and takes it back in s (the pool's loads elsewhere unchanged)."""
    mw = mins_w[e.index]
    for s in sorted(e.slot_wh, key=lambda s: -costs[s]):
        if s == tt or e.slot_wh[s] - excess < mw * pool.hours[s] - EPS_WH:
            continue
        if gap <= EPS_WH:
            pool.set_energy(e, tt, amount)
            pool.set_energy(e, s, e.slot_wh[s] - excess)
            return True
        if gap > pool.free_wh(s) + excess + EPS_WH:
            continue
        j = _giver(pool, e, tt, s, gap, mins_w)
        if j is None:
            continue
        jt = j.slot_wh[tt]
        js = j.slot_wh.get(s, 0.0)
        pool.set_energy(e, s, e.slot_wh[s] - excess)
        pool.set_energy(j, tt, jt - gap)
        pool.set_energy(j, s, js + gap)
        pool.set_energy(e, tt, amount)
        return True
    return False


def _giver(
    pool: FlowPool,
    e: PoolEv,
    tt: int,
    s: int,
    gap: float,
    mins_w: Mapping[int, float],
) -> PoolEv | None:
    """Another EV charging in ``tt`` that can move ``gap`` Wh from there to ``s``
    with both slots left at 0 or at least its minimum."""
    for jdx in list(pool.holders[tt]):
        j = pool.by_index[jdx]
        if j is e or s >= j.deadline or s in j.banned:
            continue
        jm = mins_w[jdx]
        rest = j.slot_wh[tt] - gap
        if rest < -EPS_WH or EPS_WH < rest < jm * pool.hours[tt] - EPS_WH:
            continue
        js = j.slot_wh.get(s, 0.0)
        if pool.usable_wh(j, s) - js < gap - EPS_WH:
            continue
        if js + gap < jm * pool.hours[s] - EPS_WH:
            continue
        return j
    return None


__all__ = [
    "DIVE_MAX_EVS",
    "Allocation",
    "PoolMember",
    "objective_of",
    "repair_min_power",
    "solve_pool",
    "undelivered_wh",
]
