"""The exact stage: the minimum-power rule as a mixed-integer programme (HiGHS).

The pools' heuristics (:mod:`~protocols.planning.min_power`,
:mod:`~protocols.planning.phases`) are exact when every piece of the continuous
optimum fits as a partial slot and the site is not mixed. Otherwise, on sites small
enough (:data:`EXACT_MAX_CELLS` (EV, segment) pairs), :func:`exact_allocations`
states the whole site as one MILP and solves it with scipy's HiGHS:

* ``x[i, k]`` Wh EV ``i`` takes in segment ``k`` of its window (not ``closed``), at
  most its power for the segment;
* for an EV with a minimum, ``on[i, k]`` (0 or 1) and its footprint ``f[i, k]``: it
  may charge only when on (``x <= P h on``), and while on it takes at least the
  minimum's worth of the segment's room (``f >= x``, ``f >= m h on``), which is the
  partial-slot rule: it may stop mid-segment but draws the minimum while it runs;
* per site phase and segment: the footprints (a three-phase EV's third on each of
  its phases) stay within the room the base load leaves;
* per EV: at most its need.

Lexicographic, like the planner's priority: the most energy for priority 0, then for
priority 1 (each kept in the next solve, to HiGHS's tolerance), then the least
objective. A solve whose bound is already reached by the heuristic is skipped, so a
site whose requests are all met needs one solve. The search is bounded by node
counts (:data:`NODE_LIMIT`), not by a clock, so the same inputs give the same plan
on every machine; a solve that stops at the limit returns its best plan so far and
the caller keeps whichever of it and the heuristic ranks better (so the result is
never worse than the heuristic). With the relative gap :data:`MIP_REL_GAP`, a plan
proven optimal here is within 0.1 % of the optimum's objective.

Pure: no clock, no I/O; scipy is imported when first needed, and without it the
heuristic stands (:func:`exact_allocations` returns None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocols.planning.min_power import Allocation
from protocols.planning.problem import EPS_WH, PreparedEv, Problem

# (EV, segment) pairs the MILP takes on (10 EVs over a 24 h window is 480)
EXACT_MAX_CELLS = 720
# branch-and-bound nodes per solve: bounds the work, not the clock
NODE_LIMIT = 100
MIP_REL_GAP = 5e-3
ENERGY_REL_GAP = 1e-4
# an energy solve stops this close to its bound (a Wh in 10 kWh, or half a Wh)
ENERGY_ABS_GAP_WH = 0.5
# pieces smaller than this are solver noise, not energy
NOISE_WH = 1e-6

PhaseRoom = Sequence[Sequence[float]]


@dataclass(frozen=True)
class _Cell:
    """One (EV, segment) pair: its columns in the programme."""

    ev: int  # position in the members list
    k: int
    x: int
    on: int | None  # None: the EV has no minimum
    foot: int | None  # None: the footprint is x, or on x fixed_wh
    fixed_wh: float  # > 0: an EV at its minimum or off takes this whenever on

    def room_term(self, share: int) -> tuple[int, float]:
        """The column and coefficient of its footprint in a phase's room row."""
        if self.foot is not None:
            return self.foot, 1.0 / share
        if self.on is not None and self.fixed_wh > 0.0:
            return self.on, self.fixed_wh / share
        return self.x, 1.0 / share


@dataclass
class _Programme:
    """The MILP's rows and columns, built once, solved up to three times."""

    members: tuple[PreparedEv, ...]
    cells: tuple[_Cell, ...]
    n_cols: int
    rows: list[tuple[dict[int, float], float, float]]
    upper: list[float]
    integral: list[int]

    def add_row(self, coefs: dict[int, float], lo: float, hi: float) -> None:
        """One constraint ``lo <= sum(coef x) <= hi``."""
        self.rows.append((coefs, lo, hi))


def load_solver() -> bool:
    """Import HiGHS now rather than in the first plan that needs it; a
    long-running planner calls it at start. False without highspy."""
    try:
        import highspy  # noqa: F401
    except ImportError:  # pragma: no cover - highspy is a dependency
        return False
    return True


def exact_allocations(
    problem: Problem, room_w: PhaseRoom, heuristic: Sequence[Allocation]
) -> tuple[Allocation, ...] | None:
    """The site's pools solved as one MILP (module docstring), or None when the
    site is too large, highspy is missing, or HiGHS finds no plan. ``room_w`` is
    the room per site phase and pool segment (W); ``heuristic`` the pools' plan:
    an energy solve that cannot beat it is skipped, and it keeps its energy."""
    if not load_solver():
        return None
    members = _members(problem)
    prog = _build(problem, members, room_w)
    if prog is None:
        return None
    solver = _Solver(prog)
    planned = {a.index: sum(a.slot_wh.values()) for a in heuristic}
    for priority in (0, 1):
        cols = [c.x for c in prog.cells if members[c.ev].priority == priority]
        if not cols:
            continue
        need = sum(ev.need_wh for ev in members if ev.priority == priority)
        have = sum(
            planned.get(ev.index, 0.0) for ev in members if ev.priority == priority
        )
        if have < need - ENERGY_ABS_GAP_WH:
            x = solver.minimise(
                {c: -1.0 for c in cols}, ENERGY_REL_GAP, ENERGY_ABS_GAP_WH
            )
            if x is None:
                return None
            have = sum(x[c] for c in cols)
        prog.add_row({c: 1.0 for c in cols}, have, float("inf"))
    costs = problem.slots.costs
    x = solver.minimise(
        {c.x: costs[c.k] / 1000.0 for c in prog.cells}, MIP_REL_GAP, 1e-6
    )
    if x is None:
        return None
    return _allocations(prog, x)


def _members(problem: Problem) -> tuple[PreparedEv, ...]:
    """The EVs the pools plan (some need, some room before the ready-by)."""
    return tuple(
        ev for ev in problem.evs if ev.need_wh > EPS_WH and ev.alone_wh > EPS_WH
    )


def _windows(problem: Problem, members: Sequence[PreparedEv]) -> list[list[int]]:
    """The segments each member may charge in before its ready-by."""
    n = problem.pool_segments
    hours = problem.slots.hours
    return [
        [
            k
            for k in range(ev.first, min(ev.deadline, n))
            if k not in ev.closed and hours[k] > 0.0
        ]
        for ev in members
    ]


def exact_fits(problem: Problem) -> bool:
    """Whether the site is small enough for the exact stage (and highspy is
    there): then the pools need only their cheap repair before it."""
    members = _members(problem)
    cells = sum(len(w) for w in _windows(problem, members))
    return 0 < cells <= EXACT_MAX_CELLS and load_solver()


def _build(
    problem: Problem, members: tuple[PreparedEv, ...], room_w: PhaseRoom
) -> _Programme | None:
    """The programme's columns and rows; None when it has too many cells."""
    hours = problem.slots.hours
    windows = _windows(problem, members)
    if not members or sum(len(w) for w in windows) > EXACT_MAX_CELLS:
        return None
    prog = _Programme(members, (), 0, [], [], [])
    cells: list[_Cell] = []
    for e, (ev, window) in enumerate(zip(members, windows, strict=True)):
        for k in window:
            cells.append(_add_cell(prog, e, ev, k, hours[k]))
        prog.add_row({c.x: 1.0 for c in cells if c.ev == e}, 0.0, ev.need_wh)
    prog.cells = tuple(cells)
    by_segment: dict[int, list[_Cell]] = {}
    for c in cells:
        by_segment.setdefault(c.k, []).append(c)
    # per phase and segment; phases whose rows have the same terms (three-phase
    # EVs only) keep the tightest
    room_rows: dict[tuple[tuple[int, float], ...], float] = {}
    for p in range(len(room_w)):
        for k, here in sorted(by_segment.items()):
            terms = tuple(
                sorted(
                    c.room_term(len(members[c.ev].phase_indices))
                    for c in here
                    if p in members[c.ev].phase_indices
                )
            )
            if terms:
                wh = max(0.0, room_w[p][k]) * hours[k]
                room_rows[terms] = min(wh, room_rows.get(terms, wh))
    for terms, wh in room_rows.items():
        prog.add_row(dict(terms), float("-inf"), wh)
    return prog


def _add_cell(prog: _Programme, e: int, ev: PreparedEv, k: int, h: float) -> _Cell:
    """The columns (and linking rows) of one (EV, segment) pair."""
    top_wh = ev.power_w * h
    x = prog.n_cols
    prog.upper.append(top_wh)
    prog.integral.append(0)
    if ev.min_power_w <= 0.0:
        prog.n_cols += 1
        return _Cell(e, k, x, None, None, 0.0)
    on = x + 1
    if ev.power_w <= ev.min_power_w:
        # at its minimum or off: the footprint is the minimum's worth whenever on
        prog.upper.append(1.0)
        prog.integral.append(1)
        prog.n_cols += 2
        prog.add_row({x: 1.0, on: -top_wh}, float("-inf"), 0.0)
        return _Cell(e, k, x, on, None, ev.min_power_w * h)
    foot = x + 2
    prog.upper += [1.0, max(top_wh, ev.min_power_w * h)]
    prog.integral += [1, 0]
    prog.n_cols += 3
    prog.add_row({x: 1.0, on: -top_wh}, float("-inf"), 0.0)
    prog.add_row({x: 1.0, foot: -1.0}, float("-inf"), 0.0)
    prog.add_row({on: ev.min_power_w * h, foot: -1.0}, float("-inf"), 0.0)
    return _Cell(e, k, x, on, foot, 0.0)


class _Solver:
    """One HiGHS model of the programme, re-solved with new objectives and rows.

    No start solution is passed: HiGHS 1.16 maps one into its presolved space with
    a wrong objective and may then stop at it as "optimal"."""

    def __init__(self, prog: _Programme) -> None:
        import numpy as np
        from highspy import _core

        self._np = np
        self._core = _core
        self.prog = prog
        self.h = _core._Highs()
        for option, value in _OPTIONS.items():
            self.h.setOptionValue(option, value)
        n = prog.n_cols
        self.h.addVars(n, np.zeros(n), np.array(prog.upper, dtype=np.float64))
        ints = [i for i, v in enumerate(prog.integral) if v]
        if ints:
            self.h.changeColsIntegrality(
                len(ints),
                np.array(ints, dtype=np.int32),
                np.full(len(ints), _core.HighsVarType.kInteger.value, dtype=np.uint8),
            )
        self._rows_added = 0
        self._add_rows()

    def _add_rows(self) -> None:
        """Pass the rows not yet in the model."""
        np = self._np
        rows = self.prog.rows[self._rows_added :]
        self._rows_added = len(self.prog.rows)
        starts: list[int] = []
        index: list[int] = []
        value: list[float] = []
        for coefs, _, _ in rows:
            starts.append(len(index))
            index += list(coefs)
            value += list(coefs.values())
        self.h.addRows(
            len(rows),
            np.array([r[1] for r in rows], dtype=np.float64),
            np.array([r[2] for r in rows], dtype=np.float64),
            len(index),
            np.array(starts, dtype=np.int32),
            np.array(index, dtype=np.int32),
            np.array(value, dtype=np.float64),
        )

    def minimise(
        self, objective: dict[int, float], rel_gap: float, abs_gap: float
    ) -> list[float] | None:
        """Minimise ``objective`` to within ``rel_gap`` or ``abs_gap``: the best
        point found (optimal, or the best at the node limit), or None."""
        np = self._np
        self.h.setOptionValue("mip_rel_gap", rel_gap)
        self.h.setOptionValue("mip_abs_gap", abs_gap)
        self._add_rows()
        n = self.prog.n_cols
        cost = np.zeros(n)
        for col, v in objective.items():
            cost[col] = v
        self.h.changeColsCost(n, np.arange(n, dtype=np.int32), cost)
        self.h.run()
        if self.h.getInfo().primal_solution_status != _FEASIBLE:
            return None
        return list(self.h.getSolution().col_value)


# deterministic: one thread, a node budget, no clock; silent
_OPTIONS: dict[str, bool | float | str | int] = {
    "output_flag": False,
    "threads": 1,
    "mip_max_nodes": NODE_LIMIT,
    # RINS and RENS sub-MIPs took most of the time on the slowest random sites
    "mip_heuristic_run_rins": False,
    "mip_heuristic_run_rens": False,
}
_FEASIBLE = 2  # HiGHS's kSolutionStatusFeasible


def _allocations(prog: _Programme, x: Any) -> tuple[Allocation, ...]:
    """The solution as one allocation per member, in whole-EV units."""
    slot_wh: list[dict[int, float]] = [{} for _ in prog.members]
    for c in prog.cells:
        v = float(x[c.x])
        if v > NOISE_WH:
            slot_wh[c.ev][c.k] = v
    return tuple(
        Allocation(
            index=ev.index,
            power_w=ev.power_w,
            deadline=ev.deadline,
            banned=frozenset(),
            slot_wh=slot_wh[e],
            left_wh=ev.need_wh - sum(slot_wh[e].values()),
            min_power_w=ev.min_power_w,
            priority=ev.priority,
        )
        for e, ev in enumerate(prog.members)
    )


__all__ = ["EXACT_MAX_CELLS", "exact_allocations", "exact_fits", "load_solver"]
