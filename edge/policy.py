"""The edge's charging decision, sans I/O: what current every charger may draw now.

:class:`ChargingPolicy` is fed the facts of one evaluation (``now``, each charger's
live state, the site meter, the lease, the boosts) and returns a :class:`Decision`;
it sends nothing, reads no clock and no file. ``edge.controller`` is the shell that
gathers the facts, applies the decision as charging profiles and reports it. The
policy keeps only what a decision needs to remember: when a throttled charger's
headroom appeared (hysteresis), each charger's random delay per night (default
window) and the last local replan.

For every charger with a running transaction:

1. **What the plan wants**, first match wins:
   * ``boost``: the owner asked for full power now (from the cloud, or locally);
   * ``applied``: the lease is valid and names the charger: its period at this time
     (0 between periods, or when its mode is off);
   * ``local_plan``: the lease has run out (the cloud would have refreshed it had
     it been reachable): the edge replans with the same rules as the cloud
     (``protocols.planning.leasing.replan_expired``): the requests less what the
     registers counted since, on the lease's price curve extended as the cloud
     extends one;
   * ``default_window``: nothing is known: full power inside the site's off-peak
     window, from a random delay after its start (UK Smart Charge Points
     Regulations 2021), else 0.
2. **The fuse guard** (``protocols.fuse``): the site meter's live import minus the
   EVs' own draw is the rest of the house; the fuse (minus a margin) minus that is
   what the EVs may share; below an EV's 6 A minimum it is paused. Meter data
   older than ``stale_after_s`` (or no site meter): at most ``safe_current_a``.
3. **Hysteresis**: a charger the guard throttled is raised again only after the
   headroom has lasted ``raise_hold_s``, and only to the least it offered over
   that time; lowering is immediate.

Worked example (tests/unit/test_policy.py): a 40 A fuse, no margin, 10 A of house,
two idle EVs wanting 32 A and 16 A share 30 A: 15 A each, both ``fuse_limited``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from edge.config import SiteConfig
from edge.ocpp.config import ChargerConfig
from protocols.fuse import Draw, allocate, phase_headroom_a
from protocols.lease import SLOT_MS, Lease, ScheduleState
from protocols.planning import PlanningError, SiteLimit
from protocols.planning.leasing import LocalCharger, limits_at, replan_expired
from protocols.times import to_ms

__all__ = [
    "ChargerDecision",
    "ChargerMemory",
    "ChargerNow",
    "ChargingPolicy",
    "Decision",
    "Guarded",
    "SiteNow",
    "Want",
]

# the controller's logger: the policy's few log lines are the controller's story
log = logging.getLogger("fusebox.edge.controller")

CHANGE_A = 0.5  # smaller changes are not worth a profile (nor a raise hold)


@dataclass(slots=True)
class ChargerDecision:
    """What the controller decided for one charger at one evaluation."""

    charger_id: str
    state: ScheduleState
    limit_a: float  # per phase
    planned_a: float | None
    limit_w: float
    detail: str = ""


class Want(NamedTuple):
    """What the plan wants for one charger: current per phase, why, and a note."""

    limit_a: float
    state: ScheduleState
    detail: str


class Guarded(NamedTuple):
    """What the fuse guard allows: current per phase, the state if the guard
    changed it, and whether the guard holds the charger below its plan."""

    limit_a: float
    state: ScheduleState | None
    held: bool


@dataclass(frozen=True, slots=True)
class ChargerNow:
    """One charger at one evaluation: its configuration, whether it is connected
    and accepted (``online``), whether a transaction runs (``charging``; kept while
    it is offline), what it measures, and the limit it holds from the controller
    (``applied_a``, None: none accepted) with whether the guard set it."""

    config: ChargerConfig
    online: bool
    charging: bool
    power_w: float | None = None
    register_wh: float | None = None
    applied_a: float | None = None
    applied_for_fuse: bool = False


@dataclass(frozen=True, slots=True)
class SiteNow:
    """The site at one evaluation: its configuration and the site meter's latest
    import (W per phase, or one total) and when it was measured."""

    config: SiteConfig
    import_w: tuple[float, ...] | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One evaluation's outcome. ``decisions``: every charger online with a
    transaction, and every offline one (``not_connected``), in configuration
    order; ``fuse_held``: the chargers to apply a limit to, each with whether the
    guard holds it; ``boosts_ended``: boosts over (their time passed, or the
    session ended) that the caller should forget."""

    decisions: dict[str, ChargerDecision]
    fuse_held: dict[str, bool]
    boosts_ended: tuple[str, ...]


@dataclass(slots=True)
class ChargerMemory:
    """What the policy remembers of one charger between evaluations."""

    raise_since: datetime | None = None
    raise_to_a: float = 0.0  # the smallest target seen since raise_since
    window_delay: dict[date, float] = field(default_factory=dict)


@lru_cache(maxsize=8)
def _window(spec: str, timezone: str) -> tuple[dtime, dtime, ZoneInfo]:
    start, end = spec.split("-")
    return dtime.fromisoformat(start), dtime.fromisoformat(end), ZoneInfo(timezone)


def _boosting(until: datetime | None, now: datetime) -> bool:
    return until is None or now < until


class ChargingPolicy:
    """See the module docstring. ``rng`` draws the default window's delays."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.memory: dict[str, ChargerMemory] = {}
        self._local: tuple[tuple[object, ...], dict[str, float]] | None = None

    def memory_of(self, charger_id: str) -> ChargerMemory:
        """The policy's memory of ``charger_id`` (made on first use)."""
        return self.memory.setdefault(charger_id, ChargerMemory())

    def decide(
        self,
        now: datetime,
        chargers: Mapping[str, ChargerNow],
        site: SiteNow,
        lease: Lease | None,
        boosts: Mapping[str, datetime | None],
    ) -> Decision:
        """Decide every charger now (plan, fuse guard, hysteresis). Apply
        ``fuse_held``'s chargers at their decision's ``limit_a``; tell the policy
        nothing back: the next call's ``ChargerNow.applied_a`` says what took."""
        decisions: dict[str, ChargerDecision] = {}
        ended: list[str] = []
        wanted: dict[str, Want] = {}
        for cid, charger in chargers.items():
            if not charger.online:
                decisions[cid] = ChargerDecision(cid, "not_connected", 0.0, None, 0.0)
                continue
            if not charger.charging:
                if cid in boosts:
                    ended.append(cid)  # a boost ends with the session
                continue
            if cid in boosts and not _boosting(boosts[cid], now):
                ended.append(cid)
            wanted[cid] = self.planned(cid, now, chargers, site, lease, boosts)
        held: dict[str, bool] = {}
        volts = site.config.voltage_v
        for cid, (limit_a, guard_state, fuse_held) in self.guard(
            wanted, chargers, site, now
        ).items():
            planned_a, plan_state, detail = wanted[cid]
            charger = chargers[cid]
            state: ScheduleState = guard_state or plan_state
            held_a = self.hysteresis(
                cid, limit_a, charger.applied_a, charger.applied_for_fuse, now, site
            )
            if held_a < limit_a - 0.1:
                # still held down for the fuse while the headroom lasts raise_hold_s
                # (else the next evaluation, seeing an unheld profile, raises at once)
                fuse_held, state = True, "fuse_limited"
            watts = held_a * volts * charger.config.phases
            decisions[cid] = ChargerDecision(
                cid, state, held_a, planned_a, watts, detail
            )
            held[cid] = fuse_held
        return Decision(decisions, held, tuple(ended))

    # -- 1. the plan ---------------------------------------------------------------

    def planned(
        self,
        charger_id: str,
        now: datetime,
        chargers: Mapping[str, ChargerNow],
        site: SiteNow,
        lease: Lease | None,
        boosts: Mapping[str, datetime | None],
    ) -> Want:
        """What the plan wants for ``charger_id`` (step 1 of the module docstring);
        a boost whose time has passed is ignored."""
        cfg = chargers[charger_id].config
        watts_per_a = site.config.voltage_v * cfg.phases
        if charger_id in boosts and _boosting(boosts[charger_id], now):
            return Want(cfg.max_current_a, "boost", "")
        now_ms = to_ms(now)
        entry = lease.charger(charger_id) if lease is not None else None
        if lease is not None and entry is not None:
            if now_ms < lease.valid_until_ms:
                if entry.mode == "off":
                    return Want(0.0, "applied", "mode off")
                if entry.mode == "boost":
                    return Want(cfg.max_current_a, "boost", "boost in the lease")
                limit_w = entry.limit_at(now_ms)
                limit_a = 0.0 if limit_w is None else limit_w / watts_per_a
                return Want(min(limit_a, cfg.max_current_a), "applied", "")
            if entry.request:
                local = self.local_limits_w(now, chargers, site, lease)
                if charger_id in local:
                    limit_a = local[charger_id] / watts_per_a
                    return Want(min(limit_a, cfg.max_current_a), "local_plan", "")
        return self.default_window(charger_id, cfg, site.config, now)

    def default_window(
        self, charger_id: str, cfg: ChargerConfig, site: SiteConfig, now: datetime
    ) -> Want:
        """Full power inside the site's off-peak window from this charger's random
        delay after its start (drawn once per night and charger), else 0."""
        memory = self.memory_of(charger_id)
        start_t, end_t, tz = _window(site.default_window, site.timezone)
        local = now.astimezone(tz)
        for day in (local.date() - timedelta(days=1), local.date()):
            start = datetime.combine(day, start_t, tz)
            end_day = day if end_t > start_t else day + timedelta(days=1)
            end = datetime.combine(end_day, end_t, tz)
            if day not in memory.window_delay:
                memory.window_delay[day] = self.rng.uniform(0, site.random_delay_max_s)
                for old in [d for d in memory.window_delay if d < day - timedelta(2)]:
                    del memory.window_delay[old]
            begin = start + timedelta(seconds=memory.window_delay[day])
            if begin <= local < end:
                return Want(
                    cfg.max_current_a, "default_window", f"from {begin:%H:%M:%S}"
                )
        return Want(0.0, "default_window", "waiting for the off-peak window")

    def local_limits_w(
        self,
        now: datetime,
        chargers: Mapping[str, ChargerNow],
        site: SiteNow,
        lease: Lease,
    ) -> dict[str, float]:
        """Limits (W) now from a local replan of the expired lease's requests for
        the chargers charging now; replanned once a slot (or when the lease, the
        chargers charging or the fuse change). {} if it cannot be planned."""
        cfg = site.config
        limit = SiteLimit(cfg.main_fuse_a - cfg.margin_a, cfg.voltage_v, cfg.phases)
        active = tuple(sorted(cid for cid, c in chargers.items() if c.charging))
        key = (lease.version, to_ms(now) // SLOT_MS, active, limit)
        if self._local is not None and self._local[0] == key:
            return self._local[1]
        local = [
            LocalCharger(
                charger_id=cid,
                register_wh=chargers[cid].register_wh,
                max_power_w=chargers[cid].config.max_current_a
                * cfg.voltage_v
                * chargers[cid].config.phases,
                phase=chargers[cid].config.phase,
            )
            for cid in active
        ]
        limits: dict[str, float] = {}
        try:
            plan = replan_expired(lease, now, local, limit)
        except PlanningError as exc:
            log.warning("controller: local replan failed (%s); default window", exc)
            plan = None
        if plan is not None:
            limits = limits_at(plan, now)
            log.info(
                "controller: lease %d expired, cloud silent: local plan for %s",
                lease.version,
                ", ".join(f"{k} {v:.0f} W" for k, v in sorted(limits.items())),
            )
        self._local = (key, limits)
        return limits

    # -- 2. the fuse guard --------------------------------------------------------

    def guard(
        self,
        wanted: Mapping[str, Want],
        chargers: Mapping[str, ChargerNow],
        site: SiteNow,
        now: datetime,
    ) -> dict[str, Guarded]:
        """What the fuse guard allows each charger that wants current."""
        cfg = site.config
        stale = (
            cfg.meter is None
            or site.at is None
            or site.import_w is None
            or (now - site.at).total_seconds() > cfg.stale_after_s
        )
        if stale or site.import_w is None:
            return {
                cid: Guarded(cfg.safe_current_a, "safe_current", True)
                if want > cfg.safe_current_a
                else Guarded(want, None, False)
                for cid, (want, _, _) in wanted.items()
            }
        ev_draw = [0.0] * cfg.phases
        for cid in wanted:
            charger = chargers[cid]
            draw_w = _draw_estimate_w(charger, cfg.voltage_v)
            phases_on = Draw(cid, 0, charger.config.phases, charger.config.phase).on(
                cfg.phases
            )
            for p in phases_on:
                ev_draw[p - 1] += draw_w / len(phases_on)
        imports = site.import_w
        headroom = phase_headroom_a(
            main_fuse_a=cfg.main_fuse_a,
            margin_a=cfg.margin_a,
            site_phases=cfg.phases,
            voltage_v=cfg.voltage_v,
            import_w=imports,
            ev_draw_w=ev_draw if len(imports) == cfg.phases else [sum(ev_draw)],
        )
        draws = [
            Draw(cid, want, chargers[cid].config.phases, chargers[cid].config.phase)
            for cid, (want, _, _) in wanted.items()
        ]
        shares = allocate(headroom, draws, site_phases=cfg.phases)
        out: dict[str, Guarded] = {}
        for cid, (want, _, _) in wanted.items():
            got = math.floor(shares[cid] * 10) / 10
            held = got < want - 0.1
            out[cid] = Guarded(min(got, want), "fuse_limited" if held else None, held)
        return out

    # -- 3. hysteresis ------------------------------------------------------------

    def hysteresis(
        self,
        charger_id: str,
        target_a: float,
        applied_a: float | None,
        applied_for_fuse: bool,
        now: datetime,
        site: SiteNow,
    ) -> float:
        """The limit to give instead of ``target_a``: a raise over what the charger
        holds for the fuse waits until the headroom has lasted ``raise_hold_s``."""
        memory = self.memory_of(charger_id)
        if applied_a is None or target_a <= applied_a + CHANGE_A:
            memory.raise_since = None
            return target_a
        if not applied_for_fuse:
            return target_a  # the plan raises it: no reason to wait
        if memory.raise_since is None:
            memory.raise_since = now
            memory.raise_to_a = target_a
        # only the headroom that lasted the whole hold is given: a little headroom
        # during a spike must not release the full target the moment it ends
        memory.raise_to_a = min(memory.raise_to_a, target_a)
        if (now - memory.raise_since).total_seconds() >= site.config.raise_hold_s:
            memory.raise_since = None
            return memory.raise_to_a
        return applied_a


def _draw_estimate_w(charger: ChargerNow, voltage_v: float) -> float:
    """What the charger draws now: its last measured power (the meter saw about
    the same), else the limit last applied, else nothing. A report that lags a
    throttle makes the house look smaller for a moment; raising waits
    ``raise_hold_s``, so that cannot make an EV flap up."""
    if charger.power_w is not None:
        return max(0.0, charger.power_w)
    if charger.applied_a is None:
        return 0.0
    return charger.applied_a * voltage_v * charger.config.phases
