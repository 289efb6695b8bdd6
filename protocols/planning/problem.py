"""What the planner is asked: the requests, the site, and the prepared problem record.

:func:`validate_requests` refuses what cannot be planned; :func:`prepare_problem`
turns the checked inputs into one frozen :class:`Problem` (slots, objective per slot,
room per phase, and each EV's energy, window, powers and pool), built once so every
later step reads the same figures instead of a dozen parallel lists.

Pure: ``now`` is a parameter; nothing here reads a clock or a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from protocols.planning.tariffs import SLOT, SLOT_HOURS, SlotCurve, floor_slot

Objective = Literal["cost", "carbon", "mix"]

DEFAULT_VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0
# energies closer than this are equal: float noise, far below anything metered
EPS_WH = 1e-6


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
class Slots:
    """The horizon as the pool solver sees it, one entry per slot from the start.

    ``hours`` is the part of each slot after ``now`` (the first is short);
    ``costs`` the objective per kWh; ``base_phase_w`` the other load on each phase.
    """

    hours: tuple[float, ...]
    costs: tuple[float, ...]
    base_phase_w: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.hours)


@dataclass(frozen=True)
class PreparedEv:
    """One request made plannable: energies in Wh, windows in slots, site powers.

    ``power_w`` and ``min_power_w`` are what the charger can draw on this site (a
    three-phase charger on a single-phase supply has a third). The EV may charge in
    slots ``0 .. deadline - 1``; ``ready_slots`` are those before its ready-by.
    ``overdue`` EVs cannot make their ready-by even alone, so they catch up at full
    power from now and ``deadline`` covers that catch-up, not the ready-by.
    """

    index: int
    request: EvRequest
    need_wh: float
    ready_slots: int
    deadline: int
    power_w: float
    min_power_w: float
    overdue: bool
    phase_indices: tuple[int, ...]  # the site phases (0-based) it draws on
    pool_key: int  # 0: balanced three-phase; 1-3: single-phase on that phase


@dataclass(frozen=True)
class Problem:
    """Everything the planning steps read, computed once from the inputs."""

    now: datetime
    start: datetime
    objective: Objective
    site: SiteLimit
    evs: tuple[PreparedEv, ...]
    slots: Slots
    prices: tuple[float, ...]  # p/kWh per slot
    carbon: tuple[float, ...] | None  # gCO2/kWh per slot, if a curve was given
    phase_room_w: tuple[float, ...]  # room for EVs on each phase, per slot


def validate_requests(
    evs: Sequence[EvRequest], site: SiteLimit, objective: Objective
) -> None:
    """Refuse a request set that cannot be planned, naming the first bad field.

    Curve coverage is checked by :func:`prepare_problem`, which knows the horizon.
    """
    if objective not in ("cost", "carbon", "mix"):
        raise PlanningError(f"objective must be cost, carbon or mix, not {objective!r}")
    if site.phases not in (1, 3):
        raise PlanningError(f"site phases must be 1 or 3, not {site.phases}")
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
        r.needed_kwh()  # raises when the request gives no energy


def prepare_problem(
    now: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    prices: SlotCurve,
    carbon: SlotCurve | None,
    base_load_w: SlotCurve | float | None,
    objective: Objective,
    carbon_weight: float,
) -> Problem:
    """Build the :class:`Problem` for validated inputs; PlanningError if a curve is
    too short for the horizon or the objective lacks what it needs."""
    start = floor_slot(now)
    first_hours = ((start + SLOT) - now).total_seconds() / 3600.0
    # slots the price curve covers: an overdue EV's catch-up stops there
    covered = max(0, (prices.end - start) // SLOT)
    prepared = tuple(
        _prepare_ev(i, r, now, start, site, first_hours, covered)
        for i, r in enumerate(evs)
    )
    n = max((e.deadline for e in prepared), default=0)
    hours = (first_hours,) + (SLOT_HOURS,) * max(0, n - 1) if n else ()
    price_v = _curve_values(prices, start, n, "price") or []
    carbon_v = _curve_values(carbon, start, n, "carbon")
    if isinstance(base_load_w, SlotCurve):
        base_v = _curve_values(base_load_w, start, n, "base load") or []
    else:
        base_v = [float(base_load_w or 0.0)] * n
    costs = _slot_costs(objective, price_v, carbon_v, carbon_weight)
    return Problem(
        now=now,
        start=start,
        objective=objective,
        site=site,
        evs=prepared,
        slots=Slots(
            hours=hours,
            costs=tuple(costs),
            base_phase_w=tuple(b / site.phases for b in base_v),
        ),
        prices=tuple(price_v),
        carbon=None if carbon_v is None else tuple(carbon_v),
        phase_room_w=tuple(
            max(0.0, site.phase_limit_w - b / site.phases) for b in base_v
        ),
    )


def _prepare_ev(
    index: int,
    r: EvRequest,
    now: datetime,
    start: datetime,
    site: SiteLimit,
    first_hours: float,
    covered: int,
) -> PreparedEv:
    """One EV's figures; an EV too late even alone gets a catch-up window."""
    need_wh = r.needed_kwh() * 1000.0
    ready_slots = max(0, (floor_slot(r.ready_by) - start) // SLOT)
    if r.ready_by <= now:
        ready_slots = 0
    # a three-phase charger on a single-phase supply has a third of its power
    power_w = r.max_power_w * min(r.phases, site.phases) / r.phases
    window_wh = power_w * (
        first_hours + SLOT_HOURS * max(0, ready_slots - 1) if ready_slots else 0.0
    )
    overdue = need_wh > window_wh + EPS_WH
    deadline = ready_slots
    if overdue and need_wh > 0:
        # as early as possible at full power: enough slots to finish
        extra = need_wh - power_w * first_hours
        catch_up = 1 + max(0, math.ceil(extra / (power_w * SLOT_HOURS)))
        deadline = max(deadline, min(catch_up, covered))
    # pools: 0 for balanced three-phase chargers, 1-3 for single-phase ones
    if site.phases == 1:
        phase_indices: tuple[int, ...] = (0,)
        pool_key = 1
    else:
        phase_indices = (0, 1, 2) if r.phases == 3 else (r.phase - 1,)
        pool_key = 0 if r.phases == 3 else r.phase
    return PreparedEv(
        index=index,
        request=r,
        need_wh=need_wh,
        ready_slots=ready_slots,
        deadline=int(deadline),
        power_w=power_w,
        min_power_w=r.effective_min_power_w() * min(r.phases, site.phases) / r.phases,
        overdue=overdue,
        phase_indices=phase_indices,
        pool_key=pool_key,
    )


def _slot_costs(
    objective: Objective,
    prices: list[float],
    carbon: list[float] | None,
    carbon_weight: float,
) -> list[float]:
    """The objective per kWh in each slot (``mix``: each part over its mean)."""
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
    """The ``n`` values of ``curve`` from ``start``; PlanningError if it falls short."""
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


__all__ = [
    "DEFAULT_VOLTAGE_V",
    "EPS_WH",
    "MIN_CURRENT_A",
    "EvRequest",
    "Objective",
    "PlanningError",
    "PreparedEv",
    "Problem",
    "SiteLimit",
    "Slots",
    "prepare_problem",
    "validate_requests",
]
