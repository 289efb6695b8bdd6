"""The fuse guard's arithmetic: how much current the EVs may draw, and who gets it.

Pure. The edge's controller feeds it the site meter's live import and each
charger's measured draw, and applies what it returns (with hysteresis, which is
state and lives in the controller).

**Headroom.** The site meter sees everything: the house and the EVs. Per phase,
what the EVs may draw is ``fuse - margin - (import - EV draw)``: the fuse minus a
safety margin minus the rest of the house. With per-phase meter data the phases
are computed separately; with only a total, the house is assumed spread evenly.

**Allocation.** Currents are shared by water-filling: every charging EV gets the
same current until it reaches what it wants (its plan, boost, or its maximum) or
a phase it draws from runs out; what one does not need goes to the others. An EV
that would get less than its minimum (6 A: below that an EV stops charging or
faults) is paused (0) and its share is given to the others, starting with the EV
that wanted least (so that, when not all fit, as many as possible keep charging).
A three-phase charger draws its current on every phase; a single-phase one on the
phase it is wired to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MIN_CURRENT_A", "Draw", "allocate", "phase_headroom_a"]

MIN_CURRENT_A = 6.0
_EPS = 1e-9


@dataclass(frozen=True)
class Draw:
    """One charging EV as the guard sees it.

    ``wanted_a``: the current per phase it should get if there is room; ``phases``:
    1 or 3; ``phase``: the site phase (1-3) a single-phase charger is wired to;
    ``min_a``: the least current per phase it can charge at.
    """

    charger_id: str
    wanted_a: float
    phases: int = 1
    phase: int = 1
    min_a: float = MIN_CURRENT_A

    def on(self, site_phases: int) -> tuple[int, ...]:
        """The site phases (1-based) this EV draws from."""
        if site_phases == 1:
            return (1,)
        if self.phases == 3:
            return (1, 2, 3)
        return (self.phase,)


def phase_headroom_a(
    *,
    main_fuse_a: float,
    margin_a: float,
    site_phases: int,
    voltage_v: float,
    import_w: Sequence[float],
    ev_draw_w: Sequence[float],
) -> list[float]:
    """Current (A) the EVs may draw on each site phase.

    ``import_w``: the meter's import per phase (one value: the total, spread evenly
    over ``site_phases``); ``ev_draw_w``: the EVs' measured draw on each phase (same
    shape). Export (negative import) counts as room, as the fuse carries the net
    current. Never negative.
    """
    if site_phases not in (1, 3):
        raise ValueError("site_phases must be 1 or 3")
    imports = _per_phase(import_w, site_phases)
    evs = _per_phase(ev_draw_w, site_phases)
    out = []
    for imp, ev in zip(imports, evs, strict=True):
        house_a = (imp - ev) / voltage_v
        out.append(max(0.0, main_fuse_a - margin_a - house_a))
    return out


def _per_phase(values: Sequence[float], site_phases: int) -> list[float]:
    if len(values) == site_phases:
        return [float(v) for v in values]
    if len(values) == 1:
        return [float(values[0]) / site_phases] * site_phases
    raise ValueError(f"give 1 or {site_phases} values per phase, not {len(values)}")


def allocate(
    headroom_a: Sequence[float], draws: Sequence[Draw], *, site_phases: int
) -> Mapping[str, float]:
    """Current per phase (A) for each charger: ``wanted_a`` or less, 0 (paused), or at
    least ``min_a``, with no phase above its headroom."""
    if len(headroom_a) != site_phases:
        raise ValueError("one headroom value per site phase")
    active = [d for d in draws if d.wanted_a >= d.min_a - _EPS]
    result = {d.charger_id: 0.0 for d in draws}
    while active:
        shares = _water_fill(headroom_a, active, site_phases)
        starved = [d for d in active if shares[d.charger_id] < d.min_a - _EPS]
        if not starved:
            result.update(shares)
            break
        # pause the one that wanted least (frees the least for a start) and retry
        victim = min(starved, key=lambda d: (d.wanted_a, d.charger_id))
        active = [d for d in active if d is not victim]
    return result


def _water_fill(
    headroom_a: Sequence[float], draws: Sequence[Draw], site_phases: int
) -> dict[str, float]:
    room = [float(h) for h in headroom_a]
    level = {d.charger_id: 0.0 for d in draws}
    open_ = list(draws)
    while open_:
        # the largest equal raise every open EV can take
        step = min(d.wanted_a - level[d.charger_id] for d in open_)
        for p in range(site_phases):
            users = sum(1 for d in open_ if p + 1 in d.on(site_phases))
            if users:
                step = min(step, room[p] / users)
        step = max(0.0, step)
        for d in open_:
            level[d.charger_id] += step
            for p in d.on(site_phases):
                room[p - 1] -= step
        full_phases = {p + 1 for p in range(site_phases) if room[p] <= _EPS}
        open_ = [
            d
            for d in open_
            if level[d.charger_id] < d.wanted_a - _EPS
            and not full_phases.intersection(d.on(site_phases))
        ]
        if step <= _EPS and open_:
            break
    return level
