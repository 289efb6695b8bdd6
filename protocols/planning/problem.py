"""What the planner is asked: the requests, the site, and the prepared problem record.

:func:`check_call` refuses a call that cannot be planned at all (the site, the
objective, a charger twice, the per-phase base load); :func:`request_error` says
what is wrong with one request, naming its field (the planner raises it, or refuses
that one EV and plans the others). :func:`prepare_problem` turns the checked inputs
into one frozen :class:`Problem` (segments, objective per segment, room per phase,
and each EV's energy, window, powers, priority and pool), built once so every later
step reads the same figures instead of a dozen parallel lists.

Segments. The horizon is cut into half-hour slots from ``floor_slot(now)``; the
first slot starts at ``now`` and is split at every ready-by and arrival inside it,
so an EV due before the first slot ends can charge until exactly its ready-by (a
later ready-by is rounded down to a slot start, a later arrival up). Every other
slot is one segment. The pools plan segments; the plan reports slots.

Pure: ``now`` is a parameter; nothing here reads a clock or a file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from protocols.planning.tariffs import SLOT, SLOT_HOURS, SlotCurve, floor_slot

Objective = Literal["cost", "carbon", "mix"]

DEFAULT_VOLTAGE_V = 230.0
MIN_CURRENT_A = 6.0
# energies closer than this are equal: float noise, far below anything metered
EPS_WH = 1e-6
# a request is met when it is short by no more than this (rounding of the plan)
MET_TOLERANCE_WH = 1.0
# an EV short at its ready-by catches up for at most this many slots past the
# slots it would need at full power (a day), within the curves
CATCH_UP_SLACK_SLOTS = 48


class PlanningError(ValueError):
    """The inputs cannot be planned (a bad request, curves too short for it)."""


class PlanInputError(PlanningError):
    """One input is unusable; ``field`` names it, ``charger_id`` the request it is
    in (None for the site or the call)."""

    def __init__(self, message: str, *, field: str, charger_id: str | None = None):
        super().__init__(message)
        self.field = field
        self.charger_id = charger_id


@dataclass(frozen=True)
class EvRequest:
    """One EV's charge request on one charger.

    Give either ``energy_needed_kwh``, or ``target_soc_pct`` with ``battery_kwh`` and
    ``current_soc_pct``. ``ready_by`` is rounded down to a slot start (unless it is
    inside the first slot). Powers in W; ``min_power_w`` defaults to 6 A x voltage x
    phases. ``phase`` (1-3) is the site phase a single-phase charger is wired to.
    ``arrival``: when the EV plugs in, if later than ``now`` (rounded up to a slot
    start unless inside the first slot); None: plugged in already.
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
    arrival: datetime | None = None

    def needed_kwh(self) -> float:
        """Energy to deliver in kWh (>= 0)."""
        if self.energy_needed_kwh is not None:
            return max(0.0, self.energy_needed_kwh)
        if (
            self.target_soc_pct is None
            or self.current_soc_pct is None
            or self.battery_kwh is None
        ):
            raise PlanInputError(
                f"charger {self.charger_id}: give energy_needed_kwh, or target_soc_pct"
                " with current_soc_pct and battery_kwh",
                field="energy_needed_kwh",
                charger_id=self.charger_id,
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
    """The horizon as the pool solver sees it, one entry per segment.

    ``hours`` is the length of each segment (the first starts at ``now``);
    ``costs`` the objective per kWh.
    """

    hours: tuple[float, ...]
    costs: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.hours)


@dataclass(frozen=True)
class PreparedEv:
    """One request made plannable: energies in Wh, windows in segments, site powers.

    ``power_w`` and ``min_power_w`` are what the charger can draw on this site (a
    three-phase charger on a single-phase supply has a third). The EV may charge in
    segments ``first .. deadline - 1`` before its ready-by; short at its ready-by,
    it catches up from ``deadline`` on in the room the plan leaves. ``priority`` 1:
    it cannot be met even alone (``alone_wh`` is the most it could get before its
    ready-by on the empty site), so it only takes what the others leave.
    ``closed``: segments of its window where even alone it could not draw its
    minimum (the site's room is smaller): no plan can use them.
    """

    index: int
    request: EvRequest
    need_wh: float
    first: int
    deadline: int
    power_w: float
    min_power_w: float
    alone_wh: float
    priority: int
    closed: frozenset[int]
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
    slots: Slots  # segments, catch-up included
    seg_starts: tuple[datetime, ...]
    seg_ends: tuple[datetime, ...]
    slot_of: tuple[int, ...]  # the horizon slot of each segment
    pool_segments: int  # segments up to the latest ready-by: what the pools plan
    prices: tuple[float, ...]  # p/kWh per segment
    carbon: tuple[float, ...] | None  # gCO2/kWh per segment, if a curve was given
    phase_room_w: tuple[tuple[float, ...], ...]  # room per phase, per segment


BaseLoad = SlotCurve | float | None
PhaseBaseLoad = Sequence[SlotCurve | float] | None


# ------------------------------------------------------------------ validation


def _bad(message: str, field: str, charger_id: str | None = None) -> PlanInputError:
    return PlanInputError(message, field=field, charger_id=charger_id)


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def check_call(
    now: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    objective: Objective,
    carbon_weight: float,
    base_load_phase_w: PhaseBaseLoad,
) -> None:
    """Refuse a call that cannot be planned at all, naming the field."""
    if now.tzinfo is None:
        raise _bad(f"now {now.isoformat()} must be timezone-aware", "now")
    if objective not in ("cost", "carbon", "mix"):
        raise _bad(
            f"objective must be cost, carbon or mix, not {objective!r}", "objective"
        )
    if site.phases not in (1, 3):
        raise _bad(f"site phases must be 1 or 3, not {site.phases}", "site.phases")
    if not _finite(site.main_fuse_a) or site.main_fuse_a <= 0:
        raise _bad(
            f"site main_fuse_a is {site.main_fuse_a}: give the fuse in A, above 0",
            "site.main_fuse_a",
        )
    if not _finite(site.voltage_v) or site.voltage_v <= 0:
        raise _bad(
            f"site voltage_v is {site.voltage_v}: give the nominal voltage, above 0",
            "site.voltage_v",
        )
    if not _finite(carbon_weight):
        raise _bad(f"carbon_weight {carbon_weight} is not in [0, 1]", "carbon_weight")
    if base_load_phase_w is not None:
        if len(base_load_phase_w) != site.phases:
            raise _bad(
                f"base_load_phase_w has {len(base_load_phase_w)} entries: give one"
                f" per site phase ({site.phases})",
                "base_load_phase_w",
            )
        for p, b in enumerate(base_load_phase_w):
            if not isinstance(b, SlotCurve) and not _finite(b):
                raise _bad(
                    f"base_load_phase_w[{p}] is {b}: give W or a curve",
                    "base_load_phase_w",
                )
    seen: set[str] = set()
    for r in evs:
        if r.charger_id in seen:
            raise _bad(f"charger {r.charger_id} appears twice", "charger_id")
        seen.add(r.charger_id)


def request_error(r: EvRequest, now: datetime) -> PlanInputError | None:
    """What makes request ``r`` unplannable (the first bad field), or None."""
    cid = r.charger_id

    def bad(message: str, field: str) -> PlanInputError:
        return _bad(f"charger {cid}: {message}", field, cid)

    if r.phases not in (1, 3):
        return bad("phases must be 1 or 3", "phases")
    if not 1 <= r.phase <= 3:
        return bad("phase must be 1, 2 or 3", "phase")
    if not _finite(r.voltage_v) or r.voltage_v <= 0:
        return bad(
            f"voltage_v is {r.voltage_v}: give the voltage, above 0", "voltage_v"
        )
    if not _finite(r.max_power_w):
        return bad(
            f"max_power_w is {r.max_power_w}: give a finite power in W", "max_power_w"
        )
    if r.max_power_w <= 0:
        return bad("max_power_w must be > 0", "max_power_w")
    if r.min_power_w is not None and (not _finite(r.min_power_w) or r.min_power_w < 0):
        return bad(
            f"min_power_w is {r.min_power_w}: give a finite power in W, 0 or more, or"
            " None for 6 A",
            "min_power_w",
        )
    if r.effective_min_power_w() > r.max_power_w * (1 + 1e-9):
        return bad(
            f"max_power_w {r.max_power_w:g} W is below its minimum"
            f" {r.effective_min_power_w():g} W (min_power_w, or 6 A x voltage x"
            " phases): it could never charge; give the charger's real limits",
            "max_power_w",
        )
    for name in ("ready_by", "arrival"):
        t = getattr(r, name)
        if t is not None and t.tzinfo is None:
            return bad(f"{name} {t.isoformat()} must be timezone-aware", name)
    if r.arrival is not None and r.ready_by <= r.arrival:
        return bad(
            f"ready_by {r.ready_by.isoformat()} is not after arrival"
            f" {r.arrival.isoformat()}: give a departure after the arrival",
            "ready_by",
        )
    return _energy_error(r, bad)


def _energy_error(
    r: EvRequest, bad: Callable[[str, str], PlanInputError]
) -> PlanInputError | None:
    """The energy fields' problem, or None."""
    if r.energy_needed_kwh is not None and not _finite(r.energy_needed_kwh):
        return bad(
            f"energy_needed_kwh is {r.energy_needed_kwh}: give a finite energy in kWh",
            "energy_needed_kwh",
        )
    if r.energy_needed_kwh is not None and r.energy_needed_kwh < 0:
        return bad(
            f"energy_needed_kwh is {r.energy_needed_kwh}: give 0 or more",
            "energy_needed_kwh",
        )
    for name in ("target_soc_pct", "current_soc_pct"):
        v = getattr(r, name)
        if v is not None and (not _finite(v) or not 0 <= v <= 100):
            return bad(f"{name} is {v}: give a percentage from 0 to 100", name)
    if r.battery_kwh is not None and (not _finite(r.battery_kwh) or r.battery_kwh <= 0):
        return bad(
            f"battery_kwh is {r.battery_kwh}: give the battery's size in kWh, above 0",
            "battery_kwh",
        )
    if r.energy_needed_kwh is None:
        try:
            r.needed_kwh()
        except PlanInputError as exc:
            return exc
    elif r.battery_kwh is not None:
        room = r.battery_kwh * (1 - (r.current_soc_pct or 0.0) / 100.0)
        if r.energy_needed_kwh > room + 1e-9:
            return bad(
                f"energy_needed_kwh {r.energy_needed_kwh:g} is more than the battery"
                f" can take ({room:g} kWh of battery_kwh {r.battery_kwh:g} at"
                f" {r.current_soc_pct or 0.0:g}%): check the request",
                "energy_needed_kwh",
            )
    return None


# -------------------------------------------------------------- the problem


def prepare_problem(
    now: datetime,
    evs: Sequence[EvRequest],
    site: SiteLimit,
    prices: SlotCurve,
    carbon: SlotCurve | None,
    base_load_w: BaseLoad,
    objective: Objective,
    carbon_weight: float,
    base_load_phase_w: PhaseBaseLoad = None,
) -> Problem:
    """Build the :class:`Problem` for checked inputs; PlanningError if a curve is
    too short for the horizon or the objective lacks what it needs."""
    start = floor_slot(now)
    grid = _Grid.of(now, evs)
    pool_slots = grid.pool_slots
    curves: list[SlotCurve | None] = [prices, carbon]
    curves += [base_load_w if isinstance(base_load_w, SlotCurve) else None]
    curves += [b if isinstance(b, SlotCurve) else None for b in base_load_phase_w or ()]
    covered = min((c.end - start) // SLOT for c in curves if c is not None)
    catch_up = max(
        (_slots_to_finish(r, site, now) for r in evs if r.needed_kwh() > 0),
        default=0,
    )
    n_slots = max(pool_slots, min(max(0, covered), catch_up + CATCH_UP_SLACK_SLOTS))
    price_v = _curve_values(prices, start, pool_slots, n_slots, "price") or []
    carbon_v = _curve_values(carbon, start, pool_slots, n_slots, "carbon")
    phase_base = _phase_base(
        site, start, pool_slots, n_slots, base_load_w, base_load_phase_w
    )
    costs = _slot_costs(objective, price_v, carbon_v, carbon_weight, pool_slots)
    seg = grid.segments(n_slots)
    room = tuple(
        tuple(max(0.0, site.phase_limit_w - phase_base[p][k]) for k in seg.slot_of)
        for p in range(site.phases)
    )
    hours = tuple(
        (e - s).total_seconds() / 3600.0
        for s, e in zip(seg.starts, seg.ends, strict=True)
    )
    prepared = tuple(
        _prepare_ev(i, r, now, site, seg, room, hours) for i, r in enumerate(evs)
    )
    return Problem(
        now=now,
        start=start,
        objective=objective,
        site=site,
        evs=prepared,
        slots=Slots(hours=hours, costs=tuple(costs[k] for k in seg.slot_of)),
        seg_starts=seg.starts,
        seg_ends=seg.ends,
        slot_of=seg.slot_of,
        pool_segments=max((e.deadline for e in prepared), default=0),
        prices=tuple(price_v[k] for k in seg.slot_of),
        carbon=None if carbon_v is None else tuple(carbon_v[k] for k in seg.slot_of),
        phase_room_w=room,
    )


@dataclass(frozen=True)
class _Segments:
    starts: tuple[datetime, ...]
    ends: tuple[datetime, ...]
    slot_of: tuple[int, ...]

    def count_before(self, t: datetime) -> int:
        """How many segments end at or before ``t``."""
        return sum(1 for e in self.ends if e <= t)


@dataclass(frozen=True)
class _Grid:
    """The first slot's cuts and each EV's effective arrival and ready-by."""

    now: datetime
    start: datetime
    cuts: tuple[datetime, ...]  # inside the first slot, sorted
    pool_slots: int  # slots up to the latest ready-by

    @classmethod
    def of(cls, now: datetime, evs: Sequence[EvRequest]) -> _Grid:
        start = floor_slot(now)
        cuts = {
            t
            for r in evs
            for t in (r.ready_by, r.arrival)
            if t is not None and now < t < start + SLOT
        }
        ready = [effective_ready(r, now) for r in evs]
        latest = max(ready, default=start)
        pool_slots = -((start - latest) // SLOT) if latest > start else 0
        return cls(now, start, tuple(sorted(cuts)), int(pool_slots))

    def segments(self, n_slots: int) -> _Segments:
        if n_slots <= 0:
            return _Segments((), (), ())
        first = (self.now, *self.cuts)
        first_ends = (*self.cuts, self.start + SLOT)
        rest = [self.start + SLOT * k for k in range(1, n_slots)]
        return _Segments(
            starts=(*first, *rest),
            ends=(*first_ends, *(t + SLOT for t in rest)),
            slot_of=(0,) * len(first) + tuple(range(1, n_slots)),
        )


def effective_ready(r: EvRequest, now: datetime) -> datetime:
    """Until when the EV may charge towards its ready-by: ``now`` if it has passed,
    itself inside the first slot, else rounded down to a slot start."""
    if r.ready_by <= now:
        return now
    if r.ready_by < floor_slot(now) + SLOT:
        return r.ready_by
    return floor_slot(r.ready_by)


def effective_arrival(r: EvRequest, now: datetime) -> datetime:
    """From when the EV may charge: ``now`` if plugged in, the arrival inside the
    first slot, else the arrival rounded up to a slot start."""
    if r.arrival is None or r.arrival <= now:
        return now
    if r.arrival < floor_slot(now) + SLOT:
        return r.arrival
    up = floor_slot(r.arrival)
    return up if up == r.arrival else up + SLOT


def _slots_to_finish(r: EvRequest, site: SiteLimit, now: datetime) -> int:
    """Slots from ``now`` to its ready-by and then to deliver all it needs at full
    power (the catch-up horizon before the slack)."""
    power_w = r.max_power_w * min(r.phases, site.phases) / r.phases
    ready = max(effective_ready(r, now), effective_arrival(r, now))
    before = -((floor_slot(now) - ready) // SLOT)
    return int(before) + math.ceil(r.needed_kwh() * 1000.0 / (power_w * SLOT_HOURS))


def _prepare_ev(
    index: int,
    r: EvRequest,
    now: datetime,
    site: SiteLimit,
    seg: _Segments,
    room: tuple[tuple[float, ...], ...],
    hours: tuple[float, ...],
) -> PreparedEv:
    """One EV's figures, and whether it could be met even alone."""
    need_wh = r.needed_kwh() * 1000.0
    first = seg.count_before(effective_arrival(r, now))
    deadline = max(first, seg.count_before(effective_ready(r, now)))
    # a three-phase charger on a single-phase supply has a third of its power
    scale = min(r.phases, site.phases) / r.phases
    power_w = r.max_power_w * scale
    min_w = r.effective_min_power_w() * scale
    # pools: 0 for balanced three-phase chargers, 1-3 for single-phase ones
    if site.phases == 1:
        phase_indices: tuple[int, ...] = (0,)
        pool_key = 1
    else:
        phase_indices = (0, 1, 2) if r.phases == 3 else (r.phase - 1,)
        pool_key = 0 if r.phases == 3 else r.phase
    alone = 0.0
    closed = set()
    for k in range(first, deadline):
        w = min(power_w, min(room[p][k] for p in phase_indices) * len(phase_indices))
        if w >= min_w - 1e-9 and w > 0:
            alone += w * hours[k]
        else:
            closed.add(k)
    return PreparedEv(
        index=index,
        request=r,
        need_wh=need_wh,
        first=first,
        deadline=deadline,
        power_w=power_w,
        min_power_w=min_w,
        alone_wh=alone,
        priority=1 if need_wh > alone + MET_TOLERANCE_WH else 0,
        closed=frozenset(closed),
        phase_indices=phase_indices,
        pool_key=pool_key,
    )


def _phase_base(
    site: SiteLimit,
    start: datetime,
    need: int,
    n: int,
    base_load_w: BaseLoad,
    base_load_phase_w: PhaseBaseLoad,
) -> list[list[float]]:
    """Other load per phase and slot, W: the site's split evenly, plus each
    phase's own."""
    if isinstance(base_load_w, SlotCurve):
        total = _curve_values(base_load_w, start, need, n, "base load") or []
    else:
        total = [float(base_load_w or 0.0)] * n
    out = [[b / site.phases for b in total] for _ in range(site.phases)]
    for p, b in enumerate(base_load_phase_w or ()):
        if isinstance(b, SlotCurve):
            own = _curve_values(b, start, need, n, f"phase {p + 1} base load") or []
        else:
            own = [float(b)] * n
        out[p] = [x + y for x, y in zip(out[p], own, strict=True)]
    return out


def _slot_costs(
    objective: Objective,
    prices: list[float],
    carbon: list[float] | None,
    carbon_weight: float,
    scale_slots: int,
) -> list[float]:
    """The objective per kWh in each slot (``mix``: each part over its mean over
    the first ``scale_slots`` slots, the ready-by horizon)."""
    if objective == "cost":
        return prices
    if carbon is None:
        raise _bad(f"objective {objective!r} needs a carbon curve", "carbon")
    if objective == "carbon":
        return carbon
    if not 0.0 <= carbon_weight <= 1.0:
        raise _bad(f"carbon_weight {carbon_weight} is not in [0, 1]", "carbon_weight")
    m = scale_slots or len(prices)
    p_scale = sum(abs(p) for p in prices[:m]) / max(1, m) or 1.0
    c_scale = sum(abs(c) for c in carbon[:m]) / max(1, m) or 1.0
    w = carbon_weight
    return [
        (1.0 - w) * p / p_scale + w * c / c_scale
        for p, c in zip(prices, carbon, strict=True)
    ]


def _curve_values(
    curve: SlotCurve | None, start: datetime, need: int, n: int, name: str
) -> list[float] | None:
    """The ``n`` values of ``curve`` from ``start``; PlanningError if it does not
    reach the ``need`` slots the ready-bys need (the rest is catch-up, which the
    caller keeps within every curve)."""
    if curve is None:
        return None
    if curve.start > start or curve.end < start + SLOT * need:
        raise _bad(
            f"the {name} curve covers [{curve.start.isoformat()}, "
            f"{curve.end.isoformat()}), the plan needs [{start.isoformat()}, "
            f"{(start + SLOT * need).isoformat()})",
            name.replace(" ", "_"),
        )
    i = curve.index_of(start) if n else 0
    return list(curve.values[i : i + n])


__all__ = [
    "CATCH_UP_SLACK_SLOTS",
    "DEFAULT_VOLTAGE_V",
    "EPS_WH",
    "MET_TOLERANCE_WH",
    "MIN_CURRENT_A",
    "EvRequest",
    "Objective",
    "PlanInputError",
    "PlanningError",
    "PreparedEv",
    "Problem",
    "SiteLimit",
    "Slots",
    "check_call",
    "effective_arrival",
    "effective_ready",
    "prepare_problem",
    "request_error",
]
