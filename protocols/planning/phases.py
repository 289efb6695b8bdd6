"""Room per phase, and the heuristic for a three-phase site with mixed chargers.

A three-phase charger draws a balanced third of its power on every phase, so it
couples the three phases that single-phase chargers use one at a time. Planning both
kinds jointly is not one pool, so :func:`plan_mixed_site` plans the most loaded phase
three ways and keeps the best:

* (a) its single-phase EVs and every three-phase EV (as a balanced third) jointly;
* (b) the three-phase EVs first, then the single-phase ones of every phase in the
  room left; while that leaves single-phase EVs short, reserve room for one more
  of them (priority 0, earliest ready-by first) on its phase in the dearest slots
  of its window that the three-phase EVs use, and plan again (each try is kept);
* (c) the single-phase EVs first, then the three-phase EVs in the room left.

The other phases' single-phase EVs then go into the room each candidate leaves, and
the candidate delivering the most, then costing the least, wins (ties: the first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from protocols.planning.min_power import (
    Allocation,
    PoolMember,
    objective_of,
    solve_pool,
    undelivered_rank,
)
from protocols.planning.pool import Work
from protocols.planning.problem import EPS_WH, Slots

PhaseRoom = tuple[tuple[float, ...], ...]
"""Room for EVs per site phase (index phase - 1) and slot, W."""

Candidate = dict[int, tuple[Allocation, ...]]
"""Allocations per pool key (0: three-phase EVs, 1-3: single-phase on that phase)."""

RESERVE_ROUNDS = 8


def tightest_room(
    room: PhaseRoom, used_w: Mapping[int, Sequence[float]] | None = None
) -> list[float]:
    """Room per slot on the tightest phase, after ``used_w`` (W per slot, keyed by
    phase 1-3): what a balanced three-phase load may draw on every phase."""
    used = used_w or {}
    return [
        max(
            0.0,
            min(room[p - 1][t] - (used[p][t] if p in used else 0.0) for p in (1, 2, 3)),
        )
        for t in range(len(room[0]))
    ]


def plan_mixed_site(
    pools: Mapping[int, Sequence[PoolMember]],
    room: PhaseRoom,
    slots: Slots,
    work: Work | None = None,
) -> Candidate:
    """Plan a three-phase site with three- and single-phase EVs (module docstring).

    ``pools`` holds the three-phase EVs under key 0 and each phase's single-phase
    EVs under that phase; members are whole EVs (not thirds).
    """
    demand = {p: sum(m.need_wh for m in pools.get(p, ())) for p in (1, 2, 3)}
    worst = max((1, 2, 3), key=lambda p: (demand[p], -p))
    mixed = _MixedPhase(
        thirds=tuple(m.third() for m in pools[0]),
        singles=tuple(pools.get(worst, ())),
        worst=worst,
        room=room,
        slots=slots,
        work=work or Work(),
        pools=pools,
    )
    candidates = [
        mixed.jointly(),
        *mixed.three_phase_first(),
        mixed.single_phase_first(),
    ]
    best_key: tuple[float, float, float] | None = None
    best: Candidate = {}
    for cand in candidates:
        complete = _with_other_phases(cand, pools, worst, room, slots, mixed.work)
        if complete is None:  # pragma: no cover - every candidate fits by construction
            continue
        everything = [a for allocs in complete.values() for a in allocs]
        rank = (*undelivered_rank(everything), objective_of(everything, slots.costs))
        if best_key is None or rank < best_key:
            best_key, best = rank, complete
    return best


class _MixedPhase:
    """The three candidate plans of the most loaded phase ``worst``."""

    def __init__(
        self,
        thirds: tuple[PoolMember, ...],
        singles: tuple[PoolMember, ...],
        worst: int,
        room: PhaseRoom,
        slots: Slots,
        work: Work,
        pools: Mapping[int, Sequence[PoolMember]],
    ) -> None:
        self.pools = pools
        self.thirds = thirds
        self.singles = singles
        self.worst = worst
        self.room = room
        self.slots = slots
        self.work = work
        self.three = frozenset(m.index for m in thirds)

    def jointly(self) -> Candidate:
        """(a) One pool: the phase's single-phase EVs and every three-phase EV's
        third (the pool must also fit the other phases: their room is the same
        unless an overdue EV took some of it)."""
        joint = solve_pool(
            self.singles + self.thirds,
            tightest_room(self.room),
            1.0,
            self.slots,
            self.work,
        )
        joint = tuple(a.scaled(3.0) if a.index in self.three else a for a in joint)
        return {
            0: tuple(a for a in joint if a.index in self.three),
            self.worst: tuple(a for a in joint if a.index not in self.three),
        }

    def three_phase_first(self) -> list[Candidate]:
        """(b) Three-phase EVs first, then every phase's single-phase EVs; while
        that leaves some of them short, reserve room on its phase for one more of
        them (priority 0 and earliest ready-by first) that the three-phase EVs
        used, and plan again (each try is a complete candidate)."""
        n = len(self.slots)
        candidates: list[Candidate] = []
        phases = [p for p in (1, 2, 3) if self.pools.get(p)]
        reserve = {p: (0.0,) * n for p in phases}
        helped: set[int] = set()
        for _round in range(RESERVE_ROUNDS):
            first3 = self._thirds_in(tightest_room(self.room, reserve))
            used3 = usage_w(first3, 1 / 3, self.slots.hours)
            cand: Candidate = {0: first3}
            for p in phases:
                cand[p] = solve_pool(
                    self.pools[p],
                    left_w(self.room, p, used3),
                    1.0,
                    self.slots,
                    self.work,
                )
            candidates.append(cand)
            short = sorted(
                (a.priority, a.deadline, a.index, p)
                for p in phases
                for a in cand[p]
                if a.left_wh > 1.0 and a.index not in helped
            )
            grown = None
            for _, _, index, p in short:
                helped.add(index)
                one = tuple(a for a in cand[p] if a.index == index)
                grown = self._grown_reserve(reserve[p], one, used3)
                if grown != reserve[p]:
                    reserve[p] = grown
                    break
            else:
                break  # nothing short, or no room left to reserve for it
        return candidates

    def single_phase_first(self) -> Candidate:
        """(c) The phase's single-phase EVs first, three-phase EVs in what is left."""
        first1 = solve_pool(
            self.singles, self.room[self.worst - 1], 1.0, self.slots, self.work
        )
        used1 = usage_w(first1, 1.0, self.slots.hours)
        return {
            self.worst: first1,
            0: self._thirds_in(tightest_room(self.room, {self.worst: used1})),
        }

    def _thirds_in(self, room_w: Sequence[float]) -> tuple[Allocation, ...]:
        """The three-phase EVs alone as balanced thirds, returned as whole EVs."""
        allocs = solve_pool(self.thirds, room_w, 1.0, self.slots, self.work)
        return tuple(a.scaled(3.0) for a in allocs)

    def _grown_reserve(
        self,
        reserve: tuple[float, ...],
        singles: tuple[Allocation, ...],
        used3: Sequence[float],
    ) -> tuple[float, ...]:
        """``reserve`` plus room for each short single-phase EV (earliest ready-by
        first), taken from the dearest slots of its own window that the
        three-phase EVs use, at least its minimum where it reserves at all."""
        hours = self.slots.hours
        costs = self.slots.costs
        grown = list(reserve)
        short = [a for a in singles if a.left_wh > 1.0]
        for a in sorted(short, key=lambda a: (a.deadline, a.index)):
            lack_wh = a.left_wh
            for t in sorted(range(a.deadline), key=lambda t: (-costs[t], -t)):
                if t in a.banned:
                    continue
                taken_w = used3[t] - (grown[t] - reserve[t])
                headroom_w = a.power_w - a.slot_wh.get(t, 0.0) / hours[t]
                add_w = min(taken_w, headroom_w, max(lack_wh / hours[t], a.min_power_w))
                if add_w > 0.0:
                    grown[t] += add_w
                    lack_wh -= add_w * hours[t]
                if lack_wh <= EPS_WH:
                    break
        return tuple(grown)


def _with_other_phases(
    cand: Candidate,
    pools: Mapping[int, Sequence[PoolMember]],
    worst: int,
    room: PhaseRoom,
    slots: Slots,
    work: Work,
) -> Candidate | None:
    """The candidate with the other phases' single-phase EVs planned in the room its
    three-phase EVs leave; None if those overrun a phase."""
    three_share = usage_w(cand[0], 1 / 3, slots.hours)
    if any(
        three_share[t] > room[p][t] + 1e-6 for p in range(3) for t in range(len(slots))
    ):
        return None
    complete = dict(cand)
    for p in (1, 2, 3):
        if p in pools and p not in complete:
            complete[p] = solve_pool(
                pools[p], left_w(room, p, three_share), 1.0, slots, work
            )
    return complete


def usage_w(
    allocations: Sequence[Allocation], per_phase: float, hours: Sequence[float]
) -> list[float]:
    """Power the allocations draw per slot on one phase at their peak (``per_phase``
    of their total: 1/3 for three-phase EVs, 1 for single-phase ones; a partial slot
    at its minimum), W."""
    return [
        sum(a.footprint_w(t, hours) for a in allocations) * per_phase
        for t in range(len(hours))
    ]


def left_w(room: PhaseRoom, phase: int, used_w: Sequence[float]) -> list[float]:
    """Room per slot left on ``phase`` (1-3) after ``used_w``, W."""
    return [max(0.0, room[phase - 1][t] - used_w[t]) for t in range(len(used_w))]


__all__ = [
    "Candidate",
    "PhaseRoom",
    "left_w",
    "plan_mixed_site",
    "tightest_room",
    "usage_w",
]
