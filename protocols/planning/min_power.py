"""One pool solved under the minimum-power rule: while charging, at least the minimum.

A charger runs at 0 or at least its EV's minimum, but it may stop mid-slot: an EV
that needs less than the minimum's worth of a slot runs at the minimum for part of
it (a *partial slot*). It then draws the minimum while it runs, so it takes the
minimum's worth of the slot's room (its *footprint*), though it delivers only its
piece. A below-minimum piece is therefore fine wherever its slot has that room; it
*does not fit* only where the footprints would overrun the slot.

:func:`solve_pool` starts from the continuous optimum (:class:`~.pool.FlowPool`) and
repairs the pieces that do not fit, in the order that keeps the most of the optimum:

1. the continuous optimum; if every piece fits as a partial slot, done (and exact:
   the optimum of the continuous problem is a lower bound);
2. the local repair (:func:`repair_min_power`), near-optimal unless the pool is so
   tight that repairing loses energy;
3. otherwise ban every unfit (EV, slot) pair and solve again;
4. on pools of at most :data:`DIVE_MAX_EVS` EVs, a dive: piece by piece (nearest its
   minimum first) solve with it floored (its minimum's room reserved) and with it
   banned, and go on from the better (see :func:`_dive`); if that loses energy
   against the continuous optimum, a second dive (smallest pieces first) and, on
   pools of at most :data:`SEARCH_MAX_EVS` EVs, a bounded branch and bound over
   the same choices (:func:`_search`);
5. whatever still does not fit is repaired locally, and the better of that and step
   2 (delivering the most to priority 0, then to priority 1, then costing the
   least) is kept.

The dive's bans and floors are an immutable :class:`_Limits` value: a step that loses
energy is simply not kept, nothing is put back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from protocols.planning.pool import FlowPool, PoolEv, Work
from protocols.planning.problem import EPS_WH, Slots

# the dive re-solves the pool up to 80 times: only small pools can afford it
DIVE_MAX_EVS = 60
DIVE_ROUNDS = 40
# the search: pools this small, at most this many solves per pool and per plan
SEARCH_MAX_EVS = 12
SEARCH_NODES = 48
PLAN_SEARCH_NODES = 160
# pool solves one plan may spend on dives and searches (a site of 10 EVs needs a
# few dozen; the hardest random ones, tight 6 A sites, a few hundred), each pool
# at most half of what is left (at least 20); once spent, the local repair
# finishes the pool
PLAN_SOLVES = 240


@dataclass(frozen=True)
class PoolMember:
    """One EV as a pool sees it, in the pool's unit.

    A three-phase EV planned as a balanced third has a third of its power, need and
    minimum here; ``index`` is its position in the request list. It may charge in
    slots ``first .. deadline - 1`` but those ``closed`` (where it could not draw
    its minimum even alone); ``priority`` 1 marks a request that cannot be met even
    alone: it only gets what the priority-0 EVs leave.
    """

    index: int
    power_w: float
    need_wh: float
    min_power_w: float
    deadline: int
    first: int = 0
    priority: int = 0
    closed: frozenset[int] = frozenset()

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
    min_power_w: float = 0.0
    priority: int = 0

    def scaled(self, factor: float) -> Allocation:
        """The allocation with every energy times ``factor`` (a third made whole)."""
        return replace(
            self,
            power_w=self.power_w * factor,
            min_power_w=self.min_power_w * factor,
            slot_wh={t: factor * v for t, v in self.slot_wh.items()},
            left_wh=self.left_wh * factor,
        )

    def footprint_w(self, t: int, hours: Sequence[float]) -> float:
        """The most it draws at once in slot ``t``: its average, or its minimum when
        it runs a partial slot (see the module docstring), W."""
        v = self.slot_wh.get(t, 0.0)
        if v <= 0.0:
            return 0.0
        return max(v / hours[t], self.min_power_w)


def undelivered_wh(allocations: Iterable[Allocation]) -> float:
    """Energy the allocations leave undelivered, Wh."""
    return sum(max(0.0, a.left_wh) for a in allocations)


def undelivered_rank(allocations: Iterable[Allocation]) -> tuple[float, float]:
    """Undelivered Wh of priority 0, then of priority 1, rounded to a Wh."""
    lack = [0.0, 0.0]
    for a in allocations:
        lack[min(1, a.priority)] += max(0.0, a.left_wh)
    return (round(lack[0], 0), round(lack[1], 0))


def objective_of(allocations: Iterable[Allocation], costs: Sequence[float]) -> float:
    """The objective of the allocations (cost per kWh x Wh, summed)."""
    return sum(costs[t] * v for a in allocations for t, v in a.slot_wh.items())


def solve_pool(
    members: Sequence[PoolMember],
    room_w: Sequence[float],
    spread: float,
    slots: Slots,
    work: Work | None = None,
) -> tuple[Allocation, ...]:
    """Plan one pool: the cheapest plan delivering the most with every EV at 0 or at
    least its minimum while it charges (partial slots allowed).

    ``room_w`` is the room per phase and slot; ``spread`` the phases each member's
    power spreads over (3 for a pool of balanced three-phase EVs, else 1).
    """
    work = work or Work()
    # half of what the plan has left (at least 20): later pools get some too
    budget = PLAN_SOLVES if work.solve_budget is None else work.solve_budget
    left = max(0, budget - work.solves)
    pp = _PoolProblem.of(members, room_w, spread, slots, work)
    pp = replace(pp, solve_limit=work.solves + max(20, left // 2))
    first = pp.solve(_Limits())
    target = _Target.of(first)
    pieces = pp.below_minimum(first)
    if not pieces:
        return pp.frozen(first)
    work.repairs += 1
    local = pp.repaired(first)
    if target.kept(local):
        return pp.frozen(local)
    limits = _Limits()
    for _, i, t in pieces:
        limits = limits.banning(i, t)
    cur = pp.solve(limits)
    if not target.kept(cur):
        limits, cur = _Limits(), first
    tries = [(cur, limits)]
    if len(members) <= DIVE_MAX_EVS:
        # nearest its minimum first (keeps pieces), then smallest first (drops
        # them) if that did not keep what the continuous optimum delivers
        tries = [_dive(pp, cur, limits, target, nearest=True)]
        if not target.kept(tries[0][0]):
            tries.append(_dive(pp, cur, limits, target, nearest=False))
    finished = []
    for c, lim in tries:
        if not pp.below_minimum(c, lim):
            finished.append(c)
        else:
            finished.append(min((local, pp.repaired(c)), key=pp.rank))
    incumbent = min(finished, key=pp.rank)
    if not target.kept(incumbent) and len(members) <= SEARCH_MAX_EVS:
        incumbent = _search(pp, incumbent)
    best = pp.frozen(incumbent)
    if lacks_of(best)[0] > target.lack0 and sum(m.priority for m in members) > 0:
        # priority 1 may have crowded the repair: plan priority 0 alone, then
        # priority 1 in the room it leaves, and keep the better
        alt = _priority_first(members, room_w, spread, slots, work)
        best = min((best, alt), key=lambda a: pp.rank_allocations(a))
    return best


def _priority_first(
    members: Sequence[PoolMember],
    room_w: Sequence[float],
    spread: float,
    slots: Slots,
    work: Work,
) -> tuple[Allocation, ...]:
    """Priority 0 planned alone, then priority 1 in the room it leaves."""
    first = solve_pool(
        [m for m in members if m.priority == 0], room_w, spread, slots, work
    )
    hours = slots.hours
    left = [
        max(0.0, room_w[t] - sum(a.footprint_w(t, hours) for a in first) / spread)
        for t in range(len(room_w))
    ]
    rest = solve_pool(
        [m for m in members if m.priority != 0], left, spread, slots, work
    )
    return first + rest


def lacks_of(allocations: Iterable[Allocation]) -> tuple[float, float]:
    """Undelivered Wh of priority 0 and of priority 1 (not rounded)."""
    return _lack_by_priority((a.priority, a.left_wh) for a in allocations)


def _lack_by_priority(items: Iterable[tuple[int, float]]) -> tuple[float, float]:
    """Sum what is left (Wh, ignoring overshoot) per priority 0 and 1."""
    lack = [0.0, 0.0]
    for priority, left_wh in items:
        lack[min(1, priority)] += max(0.0, left_wh)
    return (lack[0], lack[1])


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
    work: Work
    solve_limit: int = 0  # dives and searches stop at this many plan solves

    @classmethod
    def of(
        cls,
        members: Sequence[PoolMember],
        room_w: Sequence[float],
        spread: float,
        slots: Slots,
        work: Work,
    ) -> _PoolProblem:
        """The pool's inputs in its unit (``spread`` phases' worth of room)."""
        hours = slots.hours
        n = len(room_w)
        return cls(
            members=tuple(members),
            caps_wh=tuple(room_w[t] * spread * hours[t] for t in range(n)),
            hours=hours[:n],
            costs=slots.costs[:n],
            # the water level of equal-cost slots rises over what is used already
            base_w=tuple(-room_w[t] * spread for t in range(n)),
            mins_w={m.index: m.min_power_w for m in members},
            work=work,
        )

    def solve(self, limits: _Limits) -> list[PoolEv]:
        """The continuous optimum under ``limits`` (floors included in the result).

        With priority-1 members, the priority passes fix how much each EV gets;
        a second solve with exactly those amounts makes the plan the cheapest that
        delivers them.
        """
        pevs = self._solve(limits, None)
        got = {e.index: sum(e.slot_wh.values()) for e in pevs}
        mixed = {m.priority for m in self.members if got[m.index] > EPS_WH}
        if len(mixed) > 1:  # both priorities got energy: make it the cheapest
            pevs = self._solve(limits, got)
        return pevs

    def _solve(
        self, limits: _Limits, totals: Mapping[int, float] | None
    ) -> list[PoolEv]:
        room = list(self.caps_wh)
        pevs = []
        for m in self.members:
            floor = limits.floors_wh.get(m.index, {})
            for t, v in floor.items():
                room[t] -= self.floor_room_wh(m.index, v, t)
            need = m.need_wh if totals is None else min(m.need_wh, totals[m.index])
            pevs.append(
                PoolEv(
                    m.index,
                    m.power_w,
                    m.deadline,
                    need - sum(floor.values()),
                    banned=set(limits.banned.get(m.index, ()))
                    | set(range(m.first))
                    | m.closed,
                    floor_wh=dict(floor),
                    priority=m.priority if totals is None else 0,
                    min_power_w=m.min_power_w,
                )
            )
        pool = FlowPool(
            pevs,
            [max(0.0, r) for r in room],
            self.hours,
            self.costs,
            work=self.work,
        )
        pool.solve(self.base_w)
        for m, e in zip(self.members, pevs, strict=True):
            for t, v in e.floor_wh.items():
                e.slot_wh[t] = e.slot_wh.get(t, 0.0) + v
            e.floor_wh = {}
            e.priority = m.priority
            if totals is not None:
                e.need_wh += m.need_wh - min(m.need_wh, totals[m.index])
        return pevs

    def floor_room_wh(self, i: int, energy_wh: float, t: int) -> float:
        """Room a floor of ``energy_wh`` for EV ``i`` in slot ``t`` reserves: at
        least its minimum's worth (it may be a partial slot)."""
        return max(energy_wh, self.mins_w[i] * self.hours[t])

    def below_minimum(
        self, pevs: list[PoolEv], limits: _Limits | None = None
    ) -> list[tuple[float, int, int]]:
        """Below-minimum pieces that do not fit as partial slots, as (fraction of
        the minimum, EV, slot), smallest first: in a slot whose footprints overrun
        it, the floored pieces (their room is reserved) fit first, then the
        smallest footprints."""
        hours = self.hours
        floors = limits.floors_wh if limits is not None else {}
        per_slot: dict[int, list[tuple[bool, float, int, float]]] = {}
        load = [0.0] * len(self.caps_wh)
        for e in pevs:
            m = self.mins_w[e.index]
            for t, v in e.slot_wh.items():
                load[t] += v
                if v < m * hours[t] - EPS_WH:
                    floored = t in floors.get(e.index, {})
                    pad = m * hours[t] - v
                    per_slot.setdefault(t, []).append((not floored, pad, e.index, v))
        out: list[tuple[float, int, int]] = []
        for t, pads in per_slot.items():
            free = self.caps_wh[t] - load[t] + 1e-6
            for _, pad, i, v in sorted(pads):
                if pad <= free:
                    free -= pad
                else:
                    out.append((v / (self.mins_w[i] * hours[t]), i, t))
        return sorted(out)

    def repaired(self, pevs: list[PoolEv]) -> list[PoolEv]:
        """A copy of ``pevs`` with the local minimum-power repair applied."""
        out = _clone(pevs)
        pool = FlowPool(
            out, self.caps_wh, self.hours, self.costs, fresh=False, work=self.work
        )
        repair_min_power(pool, self.mins_w, self.costs)
        return out

    def rank(self, evs: list[PoolEv]) -> tuple[float, float, float]:
        """(undelivered Wh of priority 0, of priority 1, objective): smaller is
        better."""
        lack = [0.0, 0.0]
        for e in evs:
            lack[min(1, e.priority)] += max(0.0, e.need_wh)
        objective = sum(self.costs[t] * v for e in evs for t, v in e.slot_wh.items())
        return (round(lack[0], 0), round(lack[1], 0), objective)

    def rank_allocations(
        self, allocations: Sequence[Allocation]
    ) -> tuple[float, float, float]:
        """:meth:`rank` of frozen allocations."""
        return (*undelivered_rank(allocations), objective_of(allocations, self.costs))

    def frozen(self, pevs: list[PoolEv]) -> tuple[Allocation, ...]:
        """The result as allocations (``banned``: the slots the EV can never use,
        before it arrives or closed; not the repair's choices)."""
        fixed = {m.index: frozenset(range(m.first)) | m.closed for m in self.members}
        return tuple(
            Allocation(
                index=e.index,
                power_w=e.power_w,
                deadline=e.deadline,
                banned=fixed[e.index],
                slot_wh=dict(e.slot_wh),
                left_wh=e.need_wh,
                min_power_w=self.mins_w[e.index],
                priority=e.priority,
            )
            for e in pevs
        )

    def member(self, index: int) -> PoolMember:
        """The member with request index ``index``."""
        return next(m for m in self.members if m.index == index)


def _dive(
    pp: _PoolProblem,
    cur: list[PoolEv],
    limits: _Limits,
    target: _Target,
    nearest: bool = True,
) -> tuple[list[PoolEv], _Limits]:
    """Step 4: piece by piece (priority 0 first, then nearest its minimum, or
    with ``nearest`` False the smallest first) solve with it floored
    (its minimum's room reserved in its slot) and with it banned from the slot, and
    go on from the better of the two (delivering the most to priority 0, then to
    priority 1, then costing the least); stop once every piece fits, or after
    :data:`DIVE_ROUNDS` pieces (or once the pool has spent its share of
    :data:`PLAN_SOLVES`). ``target`` is what the continuous optimum delivers:
    a step that keeps it is taken at once."""
    for _round in range(DIVE_ROUNDS):
        todo = pp.below_minimum(cur, limits)
        if not todo or pp.work.solves >= pp.solve_limit:
            break
        # priority 0 first (its energy comes first), nearest its minimum first
        prio = {e.index: e.priority for e in cur}
        sign = 1.0 if nearest else -1.0
        _, _, i, t = max((prio[i] == 0, sign * f, i, t) for f, i, t in todo)
        options: list[tuple[list[PoolEv], _Limits]] = []
        floor = _floor_trial(pp, limits, i, t)
        if floor is not None:
            options.append((pp.solve(floor), floor))
        if not (options and target.kept(options[0][0])):
            ban = limits.banning(i, t)
            options.append((pp.solve(ban), ban))
        cur, limits = min(options, key=lambda o: pp.rank(o[0]))
    return cur, limits


def _search(pp: _PoolProblem, incumbent: list[PoolEv]) -> list[PoolEv]:
    """Step 4b, on small pools: a depth-first branch and bound over the same two
    branches as the dive (floored, banned), the continuous solve of each node
    bounding what its branch can deliver (it only drops a branch that cannot beat
    the incumbent); at most :data:`SEARCH_NODES` solves, and
    :data:`PLAN_SEARCH_NODES` in all for one plan. Returns the best plan in
    which every piece fits (``incumbent`` if none beats it)."""
    best, best_rank = incumbent, pp.rank(incumbent)
    stack = [_Limits()]
    for _node in range(SEARCH_NODES):
        if (
            not stack
            or pp.work.search_nodes >= PLAN_SEARCH_NODES
            or pp.work.solves >= pp.solve_limit
        ):
            break
        pp.work.search_nodes += 1
        limits = stack.pop()
        sol = pp.solve(limits)
        rank = pp.rank(sol)
        if rank >= best_rank:
            continue  # this branch cannot do better
        todo = pp.below_minimum(sol, limits)
        if not todo:
            best, best_rank = sol, rank
            continue
        prio = {e.index: e.priority for e in sol}
        _, _, i, t = max((prio[i] == 0, f, i, t) for f, i, t in todo)
        stack.append(limits.banning(i, t))
        floor = _floor_trial(pp, limits, i, t)
        if floor is not None:
            stack.append(floor)  # explored first
    return best


def _floor_trial(pp: _PoolProblem, limits: _Limits, i: int, t: int) -> _Limits | None:
    """``limits`` with EV ``i`` charging in slot ``t`` (at most its minimum's worth
    placed, what it still needs if less: a partial slot), or None if the slot has
    no room left for its minimum."""
    member = pp.member(i)
    m_wh = member.min_power_w * pp.hours[t]
    reserved = sum(
        pp.floor_room_wh(j, fl[t], t) for j, fl in limits.floors_wh.items() if t in fl
    )
    placed = sum(limits.floors_wh.get(i, {}).values())
    energy = min(m_wh, member.need_wh - placed, member.power_w * pp.hours[t])
    if energy <= EPS_WH or reserved + m_wh > pp.caps_wh[t] + EPS_WH:
        return None
    if t in limits.floors_wh.get(i, {}):
        return None
    return limits.flooring(i, t, energy)


def _lacks(pevs: list[PoolEv]) -> tuple[float, float]:
    """Undelivered Wh of priority 0 and of priority 1."""
    return _lack_by_priority((e.priority, e.need_wh) for e in pevs)


@dataclass(frozen=True)
class _Target:
    """The energy the continuous optimum delivers, per priority: a plan that keeps
    it (to a Wh each) loses nothing to the minimum power. Priority by priority, so
    a priority-0 EV never pays for a priority-1 one."""

    lack0: float
    lack1: float

    @classmethod
    def of(cls, pevs: list[PoolEv]) -> _Target:
        lack0, lack1 = _lacks(pevs)
        return cls(lack0 + 1.0, lack1 + 1.0)

    def kept(self, pevs: list[PoolEv]) -> bool:
        lack0, lack1 = _lacks(pevs)
        return lack0 <= self.lack0 and lack1 <= self.lack1


def _clone(evs: list[PoolEv]) -> list[PoolEv]:
    return [
        PoolEv(
            e.index,
            e.power_w,
            e.deadline,
            e.need_wh,
            set(e.banned),
            dict(e.slot_wh),
            priority=e.priority,
            min_power_w=e.min_power_w,
        )
        for e in evs
    ]


# ------------------------------------------------------------- the local repair


def repair_min_power(
    pool: FlowPool, mins_w: Mapping[int, float], costs: Sequence[float]
) -> None:
    """Make every EV's slot energy 0, at least its minimum (Wh at min power), or a
    partial slot that fits (see the module docstring).

    The pool is padded first. Each piece that does not fit, dearest slot first, is
    taken out and put back where it costs least: into the EV's other charging
    slots, by a swap with another EV, or as a slot of its own (at the minimum, or a
    partial slot); failing all, it stays undelivered. Every move keeps each slot
    within its room, so a slot that fits keeps fitting.
    """
    pool.pad()
    # priority 1 first: where pieces must go, theirs go before priority 0's
    for e in sorted(pool.evs, key=lambda e: -e.priority):
        mw = mins_w[e.index]
        if mw <= 0.0:
            continue
        for _ in range(4 * max(1, e.deadline)):
            small = [
                t
                for t, v in e.slot_wh.items()
                if v < mw * pool.hours[t] - EPS_WH and pool.free_wh(t) < -1e-6
            ]
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
    _drop_unfit(pool, mins_w)


def _drop_unfit(pool: FlowPool, mins_w: Mapping[int, float]) -> None:
    """The safety net: a slot still over its room (a repair bounded out) loses its
    below-minimum pieces, smallest first, until it fits; they stay undelivered."""
    for t in range(len(pool.caps_wh)):
        if pool.free_wh(t) >= -1e-6:
            continue
        pieces = sorted(
            (v, jdx)
            for jdx, v in pool.holders[t].items()
            if v < mins_w[jdx] * pool.hours[t] - EPS_WH
        )
        for v, jdx in pieces:
            j = pool.by_index[jdx]
            pool.set_energy(j, t, 0.0)
            j.need_wh += v
            if pool.free_wh(t) >= -1e-6:
                break


def _into_own_slots(
    pool: FlowPool, e: PoolEv, piece: float, mw: float, costs: Sequence[float]
) -> float:
    """Put ``piece`` into the EV's other charging slots, cheapest first (within its
    maximum and the pool's room; a partial slot grows into its own footprint
    first); returns what is left."""
    for s in sorted(e.slot_wh, key=lambda s: costs[s]):
        if piece <= EPS_WH:
            break
        have = e.slot_wh[s]
        spare = max(0.0, mw * pool.hours[s] - have)  # inside its footprint already
        room = min(pool.usable_wh(e, s) - have, pool.free_wh(s) + spare, piece)
        if room > EPS_WH:
            pool.set_energy(e, s, have + room)
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
    """Deliver ``piece`` Wh more to ``e`` in a slot of its own: at the minimum with
    the excess over the piece taken off the EV's dearest slot (see
    :func:`_trade_for_minimum`) where that is cheaper, else as a partial slot.

    The slot is t, else the cheapest free one.
    """
    mw = mins_w[e.index]
    free = [s for s in range(e.deadline) if s != t and e.slot_wh.get(s, 0.0) <= 0.0]
    for tt in [t, *sorted(free, key=lambda s: (costs[s], s))]:
        if e.slot_wh.get(tt, 0.0) > 0.0 or tt in e.banned:
            continue
        amount = max(mw * pool.hours[tt], piece)
        if amount > pool.usable_wh(e, tt) + EPS_WH:
            continue
        excess = amount - piece
        room_tt = pool.free_wh(tt)
        gap = max(0.0, amount - room_tt)
        dearer = any(costs[s] > costs[tt] for s in e.slot_wh)
        trade = excess > EPS_WH and (gap > EPS_WH or dearer)
        if trade and _trade_for_minimum(
            pool, e, tt, amount, excess, gap, mins_w, costs
        ):
            return True
        if gap <= EPS_WH:  # a partial slot: the piece at the minimum, then stop
            pool.set_energy(e, tt, piece)
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
            if costs[s] <= costs[tt]:
                return False  # a partial slot in tt is no dearer
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
    "lacks_of",
    "objective_of",
    "repair_min_power",
    "solve_pool",
    "undelivered_wh",
]
