"""Leases: what the cloud plans into one, and what the edge replans from one.

Pure: the inputs are already read, ``now`` is a parameter. The cloud scheduler
(``cloud.scheduler``) calls :func:`compose_lease`; the edge's controller calls
:func:`replan_expired` when a lease has run out with the cloud unreachable
(ARCHITECTURE decision 4). Both go through the two rules below, so a plan the edge
makes offline answers the same question the cloud would have answered.

**Energy still needed.** An *ask* is energy (kWh) wanted when the charger's energy
register read some value (Wh). Later, what is still needed is the ask minus what
the register has counted since, never below 0; with either register reading
unknown nothing is counted (:func:`still_needed_kwh`). The cloud's asks
(:func:`owner_ask`): the owner's target energy, and the default energy when no
preference is set, are asked at the session's start (its ``meter_start_wh``); a
target state of charge is asked from the latest measured SoC at the latest
register reading, or from the assumed SoC at the session's start. The lease
carries what is still needed together with the register it was worked out at
(``ChargerRequest.register_wh_at_request``); the edge subtracts what its own
register has counted since. Worked example: a session starts at 1,000 Wh with a
10 kWh target; the cloud plans at 4,000 Wh and leases 7 kWh at 4,000 Wh; at
6,500 Wh the edge needs 7 - 2.5 = 4.5 kWh, what the cloud would say then
(10 - 5.5).

**Curve extension.** A half-hour slot the known curve does not reach takes the
value of the same slot a day (48 slots) earlier, itself possibly filled that way
(:func:`fill_curve`); a slot with nothing a day earlier either takes the
caller's fallback: the cloud's is the tariff's flat price or the configured default
price for prices, the mean of the known values for carbon; the edge, which knows
only the lease's curve, takes the mean of that curve (:func:`extend_curve`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Literal
from zoneinfo import ZoneInfo

from protocols import times
from protocols.lease import (
    ChargerLease,
    ChargerRequest,
    Lease,
    LeasePeriod,
    SiteInfo,
)
from protocols.planning import (
    SLOT,
    EvRequest,
    Objective,
    Plan,
    SchedulePeriod,
    SiteLimit,
    SlotCurve,
    floor_slot,
    plan_charging,
)

__all__ = [
    "DAY_SLOTS",
    "MAX_HORIZON",
    "ChargerInputs",
    "Composed",
    "LocalCharger",
    "OwnerTarget",
    "SiteInputs",
    "SiteRow",
    "cap_periods",
    "compose_lease",
    "extend_curve",
    "fill_curve",
    "from_ms",
    "horizon_slots",
    "limits_at",
    "ms",
    "next_local_time",
    "owner_ask",
    "replan_expired",
    "still_needed_kwh",
]

DAY_SLOTS = 48
MAX_HORIZON = timedelta(hours=48)
Mode = Literal["smart", "boost", "off"]


def ms(t: datetime) -> int:
    """Milliseconds since the Unix epoch, rounded (the lease's time unit)."""
    return round(t.timestamp() * 1000)


# the UTC instant of a lease time
from_ms = times.from_ms


def next_local_time(now: datetime, at: dtime, tz: ZoneInfo) -> datetime:
    """The next occurrence of local wall-clock ``at`` strictly after ``now`` (UTC)."""
    local = now.astimezone(tz)
    for days in (0, 1, 2):
        day = local.date() + timedelta(days=days)
        candidate = datetime.combine(day, at, tzinfo=tz).astimezone(UTC)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a local time recurs within two days")


# ------------------------------------------------------------ energy still needed


def still_needed_kwh(
    asked_kwh: float, asked_at_wh: float | None, register_wh: float | None
) -> float:
    """What is still needed of ``asked_kwh`` (asked when the register read
    ``asked_at_wh``) now that it reads ``register_wh``: the ask minus what the
    register counted since, at least 0. An unknown reading counts nothing; a
    register that went back (a replaced meter) counts nothing either. A reading of
    0 Wh is a reading, not a missing one."""
    delivered_kwh = 0.0
    if register_wh is not None and asked_at_wh is not None:
        delivered_kwh = max(0.0, register_wh - asked_at_wh) / 1000.0
    return max(0.0, asked_kwh - delivered_kwh)


@dataclass(frozen=True)
class OwnerTarget:
    """The owner's preference for a charger: a target energy, or a target state of
    charge with the battery's size."""

    target_energy_kwh: float | None = None
    target_soc_pct: float | None = None
    battery_kwh: float | None = None


def owner_ask(
    target: OwnerTarget | None,
    *,
    default_kwh: float,
    assumed_soc_pct: float,
    soc_pct: float | None,
    session_start_wh: float | None,
    register_wh: float | None,
) -> float:
    """Energy (kWh) still needed by a session whose register reads ``register_wh``
    now (see the module docstring). ``target`` None: ``default_kwh`` asked at the
    session's start; a SoC target: from ``soc_pct`` (measured now) if known, else
    from ``assumed_soc_pct`` at the session's start."""
    if target is None:
        asked, at_wh = default_kwh, session_start_wh
    elif target.target_energy_kwh is not None:
        asked, at_wh = target.target_energy_kwh, session_start_wh
    else:
        soc = assumed_soc_pct if soc_pct is None else soc_pct
        gap = max(0.0, ((target.target_soc_pct or 0.0) - soc) / 100.0)
        asked = gap * (target.battery_kwh or 0.0)
        at_wh = session_start_wh if soc_pct is None else register_wh
    return still_needed_kwh(asked, at_wh, register_wh)


# ----------------------------------------------------------------- curve extension


def fill_curve(
    known: Mapping[datetime, float], start: datetime, n: int
) -> tuple[list[float | None], int]:
    """Values for ``n`` slots from ``start``; a missing slot takes the value of the
    same slot a day earlier (itself possibly filled). Returns the values (None
    where nothing is known) and how many slots were filled that way."""
    values: list[float | None] = []
    filled = 0
    history = [known.get(start - SLOT * (DAY_SLOTS - i)) for i in range(DAY_SLOTS)]
    for i in range(n):
        v = known.get(start + SLOT * i)
        if v is None:
            earlier = values[i - DAY_SLOTS] if i >= DAY_SLOTS else history[i]
            if earlier is not None:
                v = earlier
                filled += 1
        values.append(v)
    return values, filled


def extend_curve(
    values: Sequence[float],
    start: datetime,
    until: datetime,
    *,
    fallback: float | None = None,
) -> tuple[float, ...]:
    """A curve known for ``len(values)`` slots from ``start``, made to reach at least
    ``until`` by :func:`fill_curve`'s rule; a slot with nothing a day earlier takes
    ``fallback`` (default: the mean of ``values``). Empty ``values``: empty."""
    if not values:
        return ()
    needed = math.ceil((until - start) / SLOT)
    n = max(len(values), needed)
    known = {start + SLOT * i: v for i, v in enumerate(values)}
    out, _ = fill_curve(known, start, n)
    default = sum(values) / len(values) if fallback is None else fallback
    return tuple(default if v is None else v for v in out)


def horizon_slots(
    start: datetime,
    ready_bys: Iterable[datetime],
    *,
    at_least: timedelta,
    at_most: timedelta = MAX_HORIZON,
) -> int:
    """How many slots from ``start`` a lease's curve covers: ``at_least``, extended
    slot by slot to the latest ready-by, never more than ``at_most``."""
    end = start + at_least
    latest = max(ready_bys, default=start)
    while end < latest and end - start < at_most:
        end += SLOT
    return min((end - start) // SLOT, at_most // SLOT)


# ------------------------------------------------------------- composing a lease


@dataclass(frozen=True)
class SiteRow:
    """A site's settings as the scheduler plans with them."""

    main_fuse_a: float
    phases: int
    voltage_v: float
    tariff_id: str
    timezone: str
    objective: Objective
    carbon_weight: float
    base_load_w: float | None


@dataclass(frozen=True)
class ChargerInputs:
    """One charger with an open session, with what its owner asked for."""

    charger_id: str
    connector_id: int
    max_power_w: float
    min_power_w: float | None
    phases: int
    phase: int
    mode: Mode
    ready_by: datetime
    energy_needed_kwh: float
    register_wh: float | None
    max_price_p_per_kwh: float | None


@dataclass(frozen=True)
class SiteInputs:
    """Everything a site's plan depends on, read at ``inputs_at``."""

    gateway_id: str
    inputs_at: datetime
    site: SiteRow
    chargers: tuple[ChargerInputs, ...]
    slots_start: datetime
    prices: tuple[float, ...]
    carbon: tuple[float, ...]  # empty when unknown
    base_load_w: float
    price_note: str  # "" or why the prices are a default


@dataclass(frozen=True)
class Composed:
    """A lease with what its plan costs and whether every charger's ask fits.

    ``refused``: (charger id, why) for each charger whose request the planner
    refused (a bad figure: it gets no periods and is not feasible; the site's other
    chargers are planned as if it were not there).
    """

    lease: Lease
    feasible: bool
    cost_p: float
    carbon_g: float
    refused: tuple[tuple[str, str], ...] = ()


def cap_periods(
    periods: Sequence[SchedulePeriod],
    slots_start: datetime,
    prices: Sequence[float],
    cap: float,
) -> tuple[list[SchedulePeriod], float]:
    """Zero every part of ``periods`` lying in a slot priced above ``cap``.

    Returns the new periods (merged where equal) and the energy removed in kWh."""
    pieces: list[SchedulePeriod] = []
    removed_kwh = 0.0
    for p in periods:
        s = p.start
        while s < p.end:
            slot = floor_slot(s)
            e = min(p.end, slot + SLOT)
            k = (slot - slots_start) // SLOT
            price = prices[k] if 0 <= k < len(prices) else math.inf
            limit, amps = p.limit_w, p.limit_a_per_phase
            if price > cap and limit > 0:
                removed_kwh += limit * (e - s).total_seconds() / 3_600_000
                limit, amps = 0.0, 0.0
            if pieces and pieces[-1].end == s and pieces[-1].limit_w == limit:
                last = pieces[-1]
                pieces[-1] = SchedulePeriod(
                    last.start, e, limit, last.limit_a_per_phase
                )
            else:
                pieces.append(SchedulePeriod(s, e, limit, amps))
            s = e
    while pieces and pieces[-1].limit_w == 0:
        pieces.pop()
    return pieces, removed_kwh


def _boosts(
    inputs: SiteInputs, now: datetime
) -> tuple[dict[str, list[SchedulePeriod]], list[float]]:
    """Full power from now for each boosting charger until its energy is in, and
    the base load per slot with those boosts added (the smart plan goes round them).
    """
    site = inputs.site
    start = inputs.slots_start
    n = len(inputs.prices)
    horizon_end = start + SLOT * n
    base = [inputs.base_load_w] * n
    periods: dict[str, list[SchedulePeriod]] = {}
    for c in inputs.chargers:
        if c.mode != "boost" or not c.energy_needed_kwh > 0:
            continue
        if not (math.isfinite(c.energy_needed_kwh) and math.isfinite(c.max_power_w)):
            continue  # unusable figures: no boost rather than no plan for the site
        if c.max_power_w <= 0:
            continue
        hours = c.energy_needed_kwh * 1000.0 / c.max_power_w
        end = min(horizon_end, now + timedelta(hours=hours))
        if end <= now:
            continue
        amps = c.max_power_w / (site.voltage_v * min(c.phases, site.phases))
        periods[c.charger_id] = [SchedulePeriod(now, end, c.max_power_w, amps)]
        for k in range(n):
            s, e = max(now, start + SLOT * k), min(end, start + SLOT * (k + 1))
            if e > s:
                base[k] += c.max_power_w * (e - s) / SLOT
    return periods, base


def _plan_smart(
    inputs: SiteInputs, now: datetime, base: Sequence[float], objective: Objective
) -> Plan | None:
    """The joint plan of the smart chargers that still need energy (None: none)."""
    site = inputs.site
    start = inputs.slots_start
    smart = [
        # not "> 0": a NaN ask is planned, to be refused by name, not skipped
        c
        for c in inputs.chargers
        if c.mode == "smart" and not c.energy_needed_kwh <= 0
    ]
    if not smart:
        return None
    return plan_charging(
        now,
        [
            EvRequest(
                charger_id=c.charger_id,
                ready_by=c.ready_by,
                max_power_w=c.max_power_w,
                phases=c.phases,
                min_power_w=c.min_power_w,
                energy_needed_kwh=c.energy_needed_kwh,
                phase=c.phase,
                voltage_v=site.voltage_v,
            )
            for c in smart
        ],
        SiteLimit(site.main_fuse_a, site.voltage_v, site.phases),
        SlotCurve(start, inputs.prices),
        carbon=SlotCurve(start, inputs.carbon, "gCO2/kWh") if inputs.carbon else None,
        base_load_w=SlotCurve(start, tuple(base), "W"),
        objective=objective,
        carbon_weight=site.carbon_weight,
        bad_requests="refuse",
    )


@dataclass(frozen=True)
class _Part:
    charger: ChargerLease
    cost_p: float = 0.0
    carbon_g: float = 0.0


def _charger_part(
    c: ChargerInputs,
    inputs: SiteInputs,
    plan: Plan | None,
    boosts: Mapping[str, list[SchedulePeriod]],
) -> _Part:
    """One charger's part of the lease: its periods, request and feasibility."""
    periods: list[SchedulePeriod] = []
    feasible = True
    refused = False
    cost = carbon = 0.0
    if c.mode == "boost":
        periods = boosts.get(c.charger_id, [])
    elif plan is not None and c.mode == "smart" and not c.energy_needed_kwh <= 0:
        cp = plan.for_charger(c.charger_id)
        periods = list(cp.periods)
        feasible = cp.feasible
        refused = cp.refused is not None
        cost, carbon = cp.cost_p, cp.carbon_g
        if c.max_price_p_per_kwh is not None:
            periods, removed = cap_periods(
                periods, inputs.slots_start, inputs.prices, c.max_price_p_per_kwh
            )
            planned = cp.energy_planned_kwh
            if removed > 0 and planned - removed < c.energy_needed_kwh - 1e-3:
                feasible = False
    request = None
    if c.mode != "off" and not refused:  # a refused request is not passed on
        request = ChargerRequest(
            energy_needed_kwh=min(1000.0, c.energy_needed_kwh),
            ready_by_ms=ms(c.ready_by),
            max_power_w=c.max_power_w,
            min_power_w=c.min_power_w,
            phases=1 if c.phases == 1 else 3,
            register_wh_at_request=c.register_wh,
        )
    lease_periods = [
        LeasePeriod(start_ms=ms(p.start), end_ms=ms(p.end), limit_w=p.limit_w)
        for p in periods
        if ms(p.end) > ms(p.start)
    ]
    charger = ChargerLease(
        charger_id=c.charger_id,
        connector_id=c.connector_id,
        mode=c.mode,
        periods=lease_periods,
        request=request,
        feasible=feasible,
    )
    return _Part(charger, cost, carbon)


def compose_lease(
    inputs: SiteInputs, *, now: datetime, version: int, validity: timedelta
) -> Composed:
    """Plan the site and build its lease (pure: the inputs are already read).

    Boosting chargers get full power from ``now`` until their energy is in, and
    count as base load for the others; smart chargers are planned jointly under
    the main fuse, then cut where a slot's price is over the owner's cap (which
    makes the charger infeasible if it then falls short); chargers switched off
    get no periods and no request. Without a carbon curve the objective is cost.
    """
    site = inputs.site
    objective: Objective = site.objective
    if objective != "cost" and not inputs.carbon:
        objective = "cost"
    boosts, base = _boosts(inputs, now)
    plan = _plan_smart(inputs, now, base, objective)
    parts = [_charger_part(c, inputs, plan, boosts) for c in inputs.chargers]
    lease = Lease(
        gw=inputs.gateway_id,
        version=version,
        issued_ms=ms(now),
        valid_until_ms=ms(now + validity),
        site=SiteInfo(
            main_fuse_a=site.main_fuse_a,
            phases=1 if site.phases == 1 else 3,
            voltage_v=site.voltage_v,
        ),
        objective=objective,
        carbon_weight=site.carbon_weight,
        slots_start_ms=ms(inputs.slots_start),
        price_p_per_kwh=list(inputs.prices),
        carbon_g_per_kwh=list(inputs.carbon),
        chargers=[p.charger for p in parts],
    )
    return Composed(
        lease,
        all(p.charger.feasible for p in parts),
        sum(p.cost_p for p in parts),
        sum(p.carbon_g for p in parts),
        tuple((c.charger_id, c.refused) for c in plan.chargers if c.refused)
        if plan is not None
        else (),
    )


# -------------------------------------------------------- replanning on the edge


@dataclass(frozen=True)
class LocalCharger:
    """A charger of an expired lease as the edge knows it now: its energy register,
    the most it may draw (its own current limit x voltage x phases) and the site
    phase it is wired to."""

    charger_id: str
    register_wh: float | None
    max_power_w: float
    phase: int = 1


def replan_expired(
    lease: Lease, now: datetime, chargers: Sequence[LocalCharger], site: SiteLimit
) -> Plan | None:
    """Replan the requests of an expired ``lease`` for ``chargers`` (those charging
    now) under ``site``, from the lease's curves extended to the latest ready-by.
    None when none of them has a request. ``PlanningError`` if the site cannot be
    planned; a single unusable request is refused (no periods), the others are
    planned."""
    by_id = {c.charger_id: c for c in chargers}
    requests: list[EvRequest] = []
    for entry in lease.chargers:  # in the lease's order, as the cloud planned them
        charger = by_id.get(entry.charger_id)
        request = entry.request
        if request is None or charger is None:
            continue
        needed = still_needed_kwh(
            request.energy_needed_kwh,
            request.register_wh_at_request,
            charger.register_wh,
        )
        requests.append(
            EvRequest(
                charger_id=charger.charger_id,
                ready_by=from_ms(request.ready_by_ms),
                max_power_w=min(request.max_power_w, charger.max_power_w),
                phases=request.phases,
                min_power_w=request.min_power_w,
                energy_needed_kwh=needed,
                phase=charger.phase,
                voltage_v=site.voltage_v,
            )
        )
    if not requests:
        return None
    # one slot past the latest ready-by, so its slot is covered whole
    until = max(r.ready_by for r in requests) + SLOT
    start = from_ms(lease.slots_start_ms)
    prices = extend_curve(lease.price_p_per_kwh, start, until)
    carbon = extend_curve(lease.carbon_g_per_kwh, start, until)
    return plan_charging(
        now,
        requests,
        site,
        SlotCurve(start, prices),
        carbon=SlotCurve(start, carbon, "gCO2/kWh") if carbon else None,
        objective=lease.objective,
        carbon_weight=lease.carbon_weight,
        bad_requests="refuse",
    )


def limits_at(plan: Plan, now: datetime) -> dict[str, float]:
    """Each planned charger's limit (W) at ``now``: 0 outside its periods."""
    out: dict[str, float] = {}
    for charger_plan in plan.chargers:
        out[charger_plan.charger_id] = 0.0
        for period in charger_plan.periods:
            if period.start <= now < period.end:
                out[charger_plan.charger_id] = period.limit_w
    return out
