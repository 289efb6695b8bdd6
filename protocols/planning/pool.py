"""The continuous core: EVs sharing one resource per slot, filled by the polymatroid
greedy (see :mod:`protocols.planning.planner` for the method and why it is exact).

A :class:`FlowPool` holds the working state of one solve: each EV's energy per slot
and, kept as counters so a path search never rescans the EVs, which slots can pass
energy to which (``moves[s][r]``: EVs holding energy in ``s`` with room in ``r``)
and which still draw new energy (``takers[s]``). :meth:`FlowPool.solve` takes the
slots cheapest first and pushes into each as much as the network allows. The
minimum-power repair (:mod:`protocols.planning.min_power`) edits a solved pool
through :meth:`FlowPool.set_energy` so those counters stay right.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from protocols.planning.problem import EPS_WH


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


class FlowPool:
    """EVs sharing one resource per slot (a phase, or the balanced three phases)."""

    def __init__(
        self,
        evs: list[PoolEv],
        caps_wh: Sequence[float],
        hours: Sequence[float],
        costs: Sequence[float],
        fresh: bool = True,
    ) -> None:
        """``fresh``: plan from nothing; else adopt the EVs' energies (a repair)."""
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
        self.active = {e.index: e for e in self.by_deadline if e.need_wh > EPS_WH}
        if fresh:
            for e in self.active.values():
                for s in range(e.deadline):
                    if s not in e.banned:
                        self.takers[s] += 1
        else:
            for e in evs:
                for t, v in e.slot_wh.items():
                    self.load_wh[t] += v
                    self.holders[t][e.index] = v

    # -- bookkeeping ------------------------------------------------------------
    def usable_wh(self, e: PoolEv, t: int) -> float:
        """Most ``e`` may hold in slot ``t`` beyond its pre-placed floor."""
        if t in e.banned:
            return 0.0
        return e.power_w * self.hours[t] - e.floor_wh.get(t, 0.0)

    def free_wh(self, t: int) -> float:
        """Room left in slot ``t`` of the pool's resource."""
        return self.caps_wh[t] - self.load_wh[t]

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
        self.load_wh[t] += value - old
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
            for r in range(e.deadline):
                if r != t and self._has_room(e, r):
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
        guard = 0
        while rem > EPS_WH and self.active:
            path = self._find_path(t)
            if path is None:
                return
            while rem > EPS_WH and self.active:
                moved = self._augment(path, rem)
                if moved <= EPS_WH:
                    break
                rem -= moved
            guard += 1
            if guard > 100_000:  # pragma: no cover - defensive
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
        """Fill the slots cheapest first; equal-cost slots by rising water level."""
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
        """Raise a common water level over equal-cost slots' base load in steps, so
        equal-cost load is spread instead of stacked on the first slot."""
        lo = min(base_w[t] for t in group)
        hi = max(base_w[t] + self.caps_wh[t] / self.hours[t] for t in group)
        for step in range(1, levels + 1):
            level = lo + (hi - lo) * step / levels
            for t in group:
                cap = max(0.0, level - base_w[t]) * self.hours[t]
                self._open(t, cap)
                self._fill(t)
            if not self.active:
                break


__all__ = ["FlowPool", "PoolEv"]
