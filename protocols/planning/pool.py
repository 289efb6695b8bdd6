"""The continuous core: EVs sharing one resource per slot, filled by the polymatroid
greedy (see :mod:`protocols.planning.planner` for the method and why it is exact).

A :class:`FlowPool` holds the working state of one solve: each EV's energy per slot
and, kept as counters so a path search never rescans the EVs, which slots can pass
energy to which (``moves[s][r]``: EVs holding energy in ``s`` with room in ``r``)
and which still draw new energy (``takers[s]``). :meth:`FlowPool.solve` takes the
slots cheapest first and pushes into each as much as the network allows; EVs of
priority 0 first, then (a second pass that never takes energy back from them) those
of priority 1. The minimum-power repair (:mod:`protocols.planning.min_power`) edits a
solved pool through :meth:`FlowPool.set_energy` so those counters stay right; it
first turns on *padding*: an EV charging less than its minimum in a slot runs at the
minimum for part of the slot, so it takes the minimum's worth of the slot's room.

Termination: every augmenting step moves more than ``EPS_WH`` or ends its loop (the
counters promise a path only where one can move energy; a step that moves nothing is
a bug, counted in :attr:`Work.stalls` and never retried), and each pass is bounded
by :data:`MAX_STEPS_PER_SLOT` steps per slot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from protocols.planning.problem import EPS_WH

# augmenting steps allowed per slot fill: a safety net far above what a solve needs
# (each step saturates an EV, a slot or a mover); reaching it is counted as a stall
MAX_STEPS_PER_SLOT = 100_000


@dataclass
class Work:
    """What a plan cost to compute, counted (not timed) so tests can bound it.

    ``stalls`` counts loops left because a step made no progress or the step bound
    was reached: 0 unless the planner has a bug.
    """

    solves: int = 0
    path_searches: int = 0
    augments: int = 0
    stalls: int = 0
    search_nodes: int = 0  # branch-and-bound solves (bounded per plan)
    repairs: int = 0  # pools whose continuous optimum broke the minimum power
    exact: int = 0  # plans the MILP (protocols.planning.exact) improved
    # pool solves the plan's dives and searches may spend (None: min_power's
    # PLAN_SOLVES); fewer when the exact stage follows
    solve_budget: int | None = None


@dataclass
class PoolEv:
    """Working state of one EV in a pool (energies in Wh per slot).

    Mutable on purpose: the greedy and the repair move energy between slots many
    thousand times per plan. Callers get frozen results from
    :mod:`protocols.planning.min_power`.
    """

    index: int
    power_w: float  # in this pool's unit (a balanced third for a three-phase EV)
    deadline: int  # slots 0..deadline-1 are allowed
    need_wh: float  # still to place
    banned: set[int] = field(default_factory=set)  # slots it may not use
    slot_wh: dict[int, float] = field(default_factory=dict)
    floor_wh: dict[int, float] = field(default_factory=dict)  # pre-placed per slot
    priority: int = 0  # 0 first; 1 (a request that cannot be met) only after
    min_power_w: float = 0.0  # its minimum while charging (padding, see module doc)


class FlowPool:
    """EVs sharing one resource per slot (a phase, or the balanced three phases)."""

    def __init__(
        self,
        evs: list[PoolEv],
        caps_wh: Sequence[float],
        hours: Sequence[float],
        costs: Sequence[float],
        fresh: bool = True,
        work: Work | None = None,
    ) -> None:
        """``fresh``: plan from nothing; else adopt the EVs' energies (a repair)."""
        self.work = work if work is not None else Work()
        self.padded = False
        self.evs = evs
        self.caps_wh = caps_wh  # room per slot
        self.hours = hours  # hours of each slot after now
        self.costs = costs
        n_slots = len(caps_wh)
        self.load_wh = [0.0] * n_slots
        self.cap_eff_wh = [0.0] * n_slots
        self.opened = [False] * n_slots
        self.open_list: list[int] = []
        # holders[t]: EV index -> its Wh in slot t
        self.holders: list[dict[int, float]] = [{} for _ in range(n_slots)]
        self.moves = [[0] * n_slots for _ in range(n_slots)]
        self.takers = [0] * n_slots
        self.by_deadline = sorted(evs, key=lambda e: (e.deadline, e.index))
        self.by_index = {e.index: e for e in evs}
        self.active: dict[int, PoolEv] = {}
        if fresh:
            self._activate(0)
        else:
            for e in evs:
                for t, v in e.slot_wh.items():
                    self.load_wh[t] += v
                    self.holders[t][e.index] = v

    def _activate(self, priority: int) -> None:
        """Let the EVs of ``priority`` that still need energy take it."""
        for e in self.by_deadline:
            if e.priority == priority and e.need_wh > EPS_WH:
                self.active[e.index] = e
                for s in range(e.deadline):
                    # only where it has room: a slot it is floored full in (usable
                    # 0) must not count, or a path search finds a taker that cannot
                    # take anything and loops (issue 15 item 1)
                    if self._has_room(e, s):
                        self.takers[s] += 1

    # -- bookkeeping ------------------------------------------------------------
    def usable_wh(self, e: PoolEv, t: int) -> float:
        """Most ``e`` may hold in slot ``t`` beyond its pre-placed floor."""
        if t in e.banned:
            return 0.0
        return e.power_w * self.hours[t] - e.floor_wh.get(t, 0.0)

    def free_wh(self, t: int) -> float:
        """Room left in slot ``t`` of the pool's resource."""
        return self.caps_wh[t] - self.load_wh[t]

    def footprint_wh(self, e: PoolEv, t: int, value: float) -> float:
        """Room ``value`` Wh of ``e`` takes in slot ``t``: the energy itself, or once
        padded, the minimum's worth when it runs at the minimum for part of it."""
        if value <= 0.0:
            return 0.0
        if not self.padded:
            return value
        return max(value, e.min_power_w * self.hours[t])

    def pad(self) -> None:
        """Count below-minimum pieces at their minimum's worth of room from now on
        (they run at the minimum for part of the slot)."""
        self.padded = True
        self.load_wh = [0.0] * len(self.caps_wh)
        for e in self.evs:
            for t, v in e.slot_wh.items():
                self.load_wh[t] += self.footprint_wh(e, t, v)

    def _has_room(self, e: PoolEv, t: int) -> bool:
        return t < e.deadline and e.slot_wh.get(t, 0.0) < self.usable_wh(e, t) - EPS_WH

    def set_energy(self, e: PoolEv, t: int, value: float) -> None:
        """Set e's energy in slot t, keeping the counters, holders and load right."""
        old = e.slot_wh.get(t, 0.0)
        if value < EPS_WH:
            value = 0.0
        u = self.usable_wh(e, t)
        if value > u - EPS_WH:
            value = min(value, u)
        had_room = old < u - EPS_WH
        has_room = value < u - EPS_WH
        held_before = old > 0.0
        held_after = value > 0.0
        self.load_wh[t] += self.footprint_wh(e, t, value) - self.footprint_wh(e, t, old)
        if value > 0.0:
            e.slot_wh[t] = value
            self.holders[t][e.index] = value
        else:
            e.slot_wh.pop(t, None)
            self.holders[t].pop(e.index, None)
        moves = self.moves
        if held_before != held_after:
            row = moves[t]
            step = 1 if held_after else -1
            # _has_room(e, r) for every r, inlined: the hottest loop of a solve
            have = e.slot_wh
            banned = e.banned
            floor = e.floor_wh
            power = e.power_w
            hours = self.hours
            for r in range(e.deadline):
                if r == t or r in banned:
                    continue
                room = power * hours[r] - (floor.get(r, 0.0) if floor else 0.0)
                if have.get(r, 0.0) < room - EPS_WH:
                    row[r] += step
        if had_room != has_room:
            step = 1 if has_room else -1
            for s in e.slot_wh:
                if s != t:
                    moves[s][t] += step
            if e.index in self.active:
                self.takers[t] += step

    def _take(self, e: PoolEv, amount: float) -> None:
        e.need_wh -= amount
        if e.need_wh <= EPS_WH and e.index in self.active:
            del self.active[e.index]
            for s in range(e.deadline):
                if self._has_room(e, s):
                    self.takers[s] -= 1

    # -- the greedy -------------------------------------------------------------
    def _open(self, t: int, cap: float) -> None:
        if not self.opened[t]:
            self.opened[t] = True
            self.open_list.append(t)
        self.cap_eff_wh[t] = max(self.cap_eff_wh[t], min(cap, self.caps_wh[t]))

    def _fill(self, t: int) -> None:
        """Push as much energy into open slot t as the network allows."""
        rem = self.cap_eff_wh[t] - self.load_wh[t]
        if rem <= EPS_WH or not self.active:
            return
        # straight from EVs that still need energy, earliest ready-by first
        for e in self.by_deadline:
            if e.deadline <= t or e.index not in self.active:
                continue
            have = e.slot_wh.get(t, 0.0)
            add = min(e.need_wh, self.usable_wh(e, t) - have, rem)
            if add <= EPS_WH:
                continue
            self.set_energy(e, t, have + add)
            self._take(e, add)
            rem -= add
            if rem <= EPS_WH or not self.active:
                return
        # augmenting paths: move later-ready-by EVs into t to free earlier slots
        work = self.work
        steps = 0
        while rem > EPS_WH and self.active:
            work.path_searches += 1
            path = self._find_path(t)
            if path is None:
                return
            progress = False
            while rem > EPS_WH and self.active:
                moved = self._augment(path, rem)
                work.augments += 1
                steps += 1
                if moved <= EPS_WH:
                    break
                progress = True
                rem -= moved
            if not progress or steps >= MAX_STEPS_PER_SLOT:
                # a fresh path that moves nothing means the counters promised what
                # is not there: stop instead of finding the same path forever
                work.stalls += 1
                return

    def _find_path(self, t: int) -> list[int] | None:
        """Slots [s0, s1, ..., t]: an active EV has room in s0, each hop has a mover."""
        prev: dict[int, int] = {t: -1}
        queue = deque([t])
        moves = self.moves
        takers = self.takers
        while queue:
            r = queue.popleft()
            for s in self.open_list:
                if s in prev or moves[s][r] <= 0:
                    continue
                prev[s] = r
                if takers[s] > 0:
                    path = [s]
                    while path[-1] != t:
                        path.append(prev[path[-1]])
                    return path
                queue.append(s)
        return None

    def _best_starter(self, s0: int) -> tuple[PoolEv | None, float]:
        """The active EV that can take the most new energy in ``s0``, and how much."""
        starter: PoolEv | None = None
        best = 0.0
        for e in self.active.values():
            if self._has_room(e, s0):
                room = min(e.need_wh, self.usable_wh(e, s0) - e.slot_wh.get(s0, 0.0))
                if room > best:
                    best, starter = room, e
        return starter, best

    def _best_mover(self, a: int, b: int, delta: float) -> tuple[PoolEv | None, float]:
        """The EV that can move the most from slot ``a`` to ``b`` (enough: stop)."""
        mover: PoolEv | None = None
        mbest = 0.0
        for index, amount in self.holders[a].items():
            e = self.by_index[index]
            if self._has_room(e, b):
                cap = min(amount, self.usable_wh(e, b) - e.slot_wh.get(b, 0.0))
                if cap > mbest:
                    mbest, mover = cap, e
                    if cap >= delta:
                        break
        return mover, mbest

    def _augment(self, path: list[int], limit: float) -> float:
        """Move energy along ``path``; returns the Wh added to its last slot."""
        s0 = path[0]
        starter, best = self._best_starter(s0)
        if starter is None:
            return 0.0
        delta = min(best, limit)
        movers: list[PoolEv] = []
        for a, b in pairwise(path):
            mover, mbest = self._best_mover(a, b, delta)
            if mover is None:
                return 0.0
            movers.append(mover)
            delta = min(delta, mbest)
        if delta <= EPS_WH:
            return 0.0
        self.set_energy(starter, s0, starter.slot_wh.get(s0, 0.0) + delta)
        for (a, b), m in zip(pairwise(path), movers, strict=True):
            self.set_energy(m, a, m.slot_wh.get(a, 0.0) - delta)
            self.set_energy(m, b, m.slot_wh.get(b, 0.0) + delta)
        self._take(starter, delta)
        return delta

    def solve(self, base_w: Sequence[float], levels: int = 12) -> None:
        """Fill the slots cheapest first, priority 0 then priority 1 (equal-cost
        slots by rising water level)."""
        self.work.solves += 1
        self._pass(base_w, levels)
        if any(e.priority == 1 for e in self.evs):
            self._activate(1)
            self._pass(base_w, levels)

    def _pass(self, base_w: Sequence[float], levels: int) -> None:
        order = sorted(range(len(self.caps_wh)), key=lambda t: (self.costs[t], t))
        k = 0
        while k < len(order) and self.active:
            group = self._equal_cost_run(order, k)
            k += len(group)
            group = [t for t in group if self.caps_wh[t] > EPS_WH]
            if len(group) > 1:
                self._valley_fill(group, base_w, levels)
            for t in group:
                self._open(t, self.caps_wh[t])
                self._fill(t)

    def _equal_cost_run(self, order: list[int], k: int) -> list[int]:
        """The slots from ``order[k]`` on whose cost equals its cost."""
        group = [order[k]]
        c0 = self.costs[order[k]]
        tol = 1e-9 * max(1.0, abs(c0))
        while k + len(group) < len(order) and (
            abs(self.costs[order[k + len(group)]] - c0) <= tol
        ):
            group.append(order[k + len(group)])
        return group

    def _valley_fill(
        self, group: list[int], base_w: Sequence[float], levels: int
    ) -> None:
        """Fill equal-cost slots to the lowest common water level over their base
        load that takes as much as the slots could take at full room.

        What they take at full room is measured on a copy; then the level starts
        where the room below it could hold that, and while energy is still
        missing it rises just enough to give the missing energy to the slots it
        holds back that can still take some (at most ``levels`` rises; the slots
        are opened in full after, so nothing is ever lost)."""
        probe = self.copy()
        for t in group:
            probe._open(t, self.caps_wh[t])
            probe._fill(t)
        want = sum(probe.load_wh[t] for t in group)
        if want <= sum(self.load_wh[t] for t in group) + EPS_WH:
            return
        level = _level_for(group, base_w, self.caps_wh, self.hours, want)
        for _rise in range(levels):
            for t in group:
                self._open(t, _cap_at(level, base_w[t], self.caps_wh[t], self.hours[t]))
                self._fill(t)
            short = want - sum(self.load_wh[t] for t in group)
            if short <= EPS_WH * len(group) or not self.active:
                return
            held = [
                t
                for t in group
                if self.load_wh[t] >= self.cap_eff_wh[t] - EPS_WH
                and self.cap_eff_wh[t] < self.caps_wh[t] - EPS_WH
                and (self.takers[t] > 0 or self._find_path(t) is not None)
            ]
            if not held:
                return
            used = sum(
                _cap_at(level, base_w[t], self.caps_wh[t], self.hours[t]) for t in held
            )
            level = _level_for(held, base_w, self.caps_wh, self.hours, used + short)

    def copy(self) -> FlowPool:
        """An independent copy of the working state (a probe to try a fill on)."""
        evs = [
            PoolEv(
                e.index,
                e.power_w,
                e.deadline,
                e.need_wh,
                e.banned,  # never changed during a solve
                dict(e.slot_wh),
                e.floor_wh,
                e.priority,
                e.min_power_w,
            )
            for e in self.evs
        ]
        other = FlowPool.__new__(FlowPool)
        other.__dict__.update(self.__dict__)
        other.evs = evs
        other.load_wh = list(self.load_wh)
        other.cap_eff_wh = list(self.cap_eff_wh)
        other.opened = list(self.opened)
        other.open_list = list(self.open_list)
        other.holders = [dict(h) for h in self.holders]
        other.moves = [list(row) for row in self.moves]
        other.takers = list(self.takers)
        other.by_index = {e.index: e for e in evs}
        other.by_deadline = sorted(evs, key=lambda e: (e.deadline, e.index))
        other.active = {i: other.by_index[i] for i in self.active}
        return other


def _cap_at(level: float, base_w: float, cap_wh: float, hours: float) -> float:
    """Room a slot has below the water ``level`` (W) over its base, Wh."""
    return min(cap_wh, max(0.0, level - base_w) * hours)


def _level_for(
    slots: Sequence[int],
    base_w: Sequence[float],
    caps_wh: Sequence[float],
    hours: Sequence[float],
    energy_wh: float,
) -> float:
    """The lowest water level (W) at which ``slots`` hold ``energy_wh`` below it
    (each within its room): the level is piecewise linear in the energy, so walk
    its breakpoints."""
    points = sorted(
        {base_w[t] for t in slots} | {base_w[t] + caps_wh[t] / hours[t] for t in slots}
    )
    lo = points[0]
    for hi in points[1:]:
        held = sum(_cap_at(hi, base_w[t], caps_wh[t], hours[t]) for t in slots)
        if held >= energy_wh - EPS_WH:
            at_lo = sum(_cap_at(lo, base_w[t], caps_wh[t], hours[t]) for t in slots)
            if held <= at_lo:
                return hi
            return lo + (hi - lo) * (energy_wh - at_lo) / (held - at_lo)
        lo = hi
    return points[-1]


__all__ = ["FlowPool", "PoolEv"]
