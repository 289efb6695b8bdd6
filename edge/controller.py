"""The edge's charging controller: executes the cloud's lease under a live fuse guard,
and keeps charging sensibly when the cloud is gone (ARCHITECTURE decisions 4, 5).

Every evaluation (on each site-meter reading, each charger change, each lease or
command, and at least every ``tick_s``) decides, for every charger with a running
transaction, the current it may draw:

1. **What the plan wants**, first match wins:
   * ``boost``: the owner asked for full power now (from the cloud, or locally);
   * ``applied``: the lease is valid and names the charger: its period at this time
     (0 between periods, or when its mode is off);
   * ``local_plan``: the lease has run out (the cloud would have refreshed it had it
     been reachable): the edge replans with the same planner
     (``protocols.planning``) from the requests and the price curve the lease
     carried (the curve's last day repeated if it is too short);
   * ``default_window``: nothing is known: full power inside the site's off-peak
     window, from a random delay after its start (UK Smart Charge Points
     Regulations 2021), else 0.
2. **The fuse guard** (``protocols.fuse``): the site meter's live import minus the
   EVs' own draw is the rest of the house; the fuse (minus a margin) minus that is
   what the EVs may share; below an EV's 6 A minimum it is paused. A throttled EV
   is raised again only after the headroom has lasted ``raise_hold_s`` (no
   flapping); lowering is immediate. Meter data older than ``stale_after_s``:
   every charger gets at most ``safe_current_a``.
3. **Applying**: a TxProfile bound to the running transaction (stack level 1, the
   charger's unit: A, or W for power-only chargers), with a duration, refreshed
   before it ends, so that if the gateway dies the charger falls back within that
   time to the **fail-safe default** (a TxDefaultProfile at stack level 0 and
   ``failsafe_current_a``) that the controller installs on every charger when it
   connects. Profiles are re-applied after a charger reconnects or reboots.

Each charger's outcome is reported to the cloud as a ``ScheduleStatus`` when it
changes. The lease is kept in a file beside the outbox, so an edge restarted with
the cloud unreachable still has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import EdgeConfig
from edge.ocpp.commands import ChargerNotConnected, CommandFailed
from edge.ocpp.config import ChargerConfig
from edge.ocpp.server import ChargerState, OcppServer
from protocols.clock import Clock
from protocols.contract import ContractError, pack
from protocols.fuse import Draw, allocate, phase_headroom_a
from protocols.lease import (
    SLOT_MS,
    CommandResult,
    Lease,
    ScheduleState,
    ScheduleStatus,
    unpack_command,
    unpack_lease,
)
from protocols.ocpp import (
    ChargingProfile,
    ChargingSchedule,
    ProfileError,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
)
from protocols.planning import (
    EvRequest,
    PlanningError,
    SiteLimit,
    SlotCurve,
    plan_charging,
)
from protocols.readings import Reading

__all__ = ["ChargerDecision", "Controller"]

log = logging.getLogger("fusebox.edge.controller")

TX_PROFILE_ID = 2100  # + connector: one stable id per connector
FAILSAFE_PROFILE_ID = 2000
TX_STACK_LEVEL = 1
_PHASE_QUANTITIES = ("power_l1_w", "power_l2_w", "power_l3_w")
_CHANGE_A = 0.5  # smaller changes are not worth a profile
_REFUSED_PAUSE = timedelta(seconds=30)  # before the same profile is asked again


@dataclass(slots=True)
class ChargerDecision:
    """What the controller decided for one charger at one evaluation."""

    charger_id: str
    state: ScheduleState
    limit_a: float  # per phase
    planned_a: float | None
    limit_w: float
    detail: str = ""


@dataclass(slots=True)
class _Applied:
    connection: int  # id() of the ChargerState the profile was sent on
    transaction_id: str
    limit_a: float
    sent_at: datetime
    fuse_held: bool


@dataclass(slots=True)
class _ChargerRuntime:
    applied: _Applied | None = None
    raise_since: datetime | None = None
    raise_to_a: float = 0.0  # the smallest target seen since raise_since
    failsafe_on: int | None = None  # id() of the connection it was installed on
    busy: bool = False
    reported: tuple[str, float] | None = None
    # (transaction, limit) the charger refused, and until when not to ask again
    refused: tuple[str, float, datetime] | None = None
    window_delay: dict[date, float] = field(default_factory=dict)


class Controller:
    """See the module docstring. ``post`` sends a message to the cloud (the
    uplink's ``post``); ``lease_path`` keeps the lease across restarts."""

    def __init__(
        self,
        config: EdgeConfig,
        ocpp: OcppServer,
        *,
        clock: Clock | None = None,
        post: Callable[[str, bytes, str], None] | None = None,
        lease_path: Path | None = None,
        rng: random.Random | None = None,
        tick_s: float = 5.0,
        min_interval_s: float = 0.2,
        tx_profile_duration_s: int = 900,
    ) -> None:
        self.config = config
        self.site = config.site
        self.ocpp = ocpp
        self.clock = clock or Clock()
        self.post = post
        self.lease_path = lease_path
        self.rng = rng or random.Random()
        self.tick_s = tick_s
        self.min_interval_s = min_interval_s
        self.tx_profile_duration_s = tx_profile_duration_s
        self.chargers: dict[str, ChargerConfig] = {c.id: c for c in config.chargers}
        self.lease: Lease | None = self._load_lease()
        self.boosts: dict[str, datetime | None] = {}
        self.site_import_w: list[float] | None = None
        self.site_at: datetime | None = None
        self.decisions: dict[str, ChargerDecision] = {}
        self._runtime: dict[str, _ChargerRuntime] = {
            c: _ChargerRuntime() for c in self.chargers
        }
        self._tz = ZoneInfo(self.site.timezone)
        start, end = self.site.default_window.split("-")
        self._window = (time.fromisoformat(start), time.fromisoformat(end))
        self._local_plan: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        ocpp.observers.append(self.on_charger)

    # -- inputs -----------------------------------------------------------------

    def on_meter(self, meter_id: str, readings: Any) -> None:
        """A meter's stored readings; the site meter's feed the fuse guard."""
        if meter_id != self.site.meter:
            return
        latest: dict[str, Reading] = {}
        for r in readings:
            wanted = r.quantity == "power_w" or r.quantity in _PHASE_QUANTITIES
            if wanted and (r.quantity not in latest or r.ts >= latest[r.quantity].ts):
                latest[r.quantity] = r
        if not latest:
            return
        ts = max(r.ts for r in latest.values())
        if self.site_at is not None and ts < self.site_at:
            return  # a redelivered old message
        phases = [latest.get(q) for q in _PHASE_QUANTITIES]
        if self.site.phases == 3 and all(p is not None for p in phases):
            self.site_import_w = [p.value for p in phases if p is not None]
        elif "power_w" in latest:
            self.site_import_w = [latest["power_w"].value]
        else:
            return
        self.site_at = ts
        self._wake.set()

    def on_charger(self, charger_id: str) -> None:
        self._wake.set()

    async def on_down(self, leaf: str, payload: bytes) -> None:
        """A message from the cloud (the uplink's ``on_down``)."""
        if leaf == "down/schedule":
            self.accept_lease(payload)
        elif leaf == "down/cmd":
            self._command(payload)
        else:
            log.warning("controller: message on unknown topic leaf %r ignored", leaf)

    def accept_lease(self, payload: bytes) -> bool:
        """Take a lease if it is valid, ours and newer; True if taken."""
        try:
            lease = unpack_lease(payload)
        except ContractError as exc:
            log.warning("controller: malformed lease ignored: %s", exc)
            return False
        if lease.gw != self.config.gateway_id:
            log.warning("controller: lease for %s ignored", lease.gw)
            return False
        if self.lease is not None and lease.version <= self.lease.version:
            return False
        self.lease = lease
        self._local_plan = None
        self._save_lease(payload)
        log.info(
            "controller: lease %d for %d charger(s), valid until %s",
            lease.version,
            len(lease.chargers),
            _iso_ms(lease.valid_until_ms),
        )
        self._wake.set()
        return True

    def _command(self, payload: bytes) -> None:
        try:
            cmd = unpack_command(payload)
        except ContractError as exc:
            log.warning("controller: malformed command ignored: %s", exc)
            return
        ok, detail = True, ""
        if cmd.gw != self.config.gateway_id:
            return
        if cmd.charger_id not in self.chargers:
            ok, detail = False, f"unknown charger {cmd.charger_id}"
        elif cmd.action == "boost":
            until = None if cmd.until_ms is None else _from_ms(cmd.until_ms)
            self.boost(cmd.charger_id, until)
        else:
            self.cancel_boost(cmd.charger_id)
        if self.post is not None:
            result = CommandResult(
                id=cmd.id,
                gw=self.config.gateway_id,
                ok=ok,
                detail=detail,
                at_ms=_ms(self.clock.now()),
            )
            self.post("up/cmd_result", pack(result), f"cmd:{cmd.id}")

    def boost(self, charger_id: str, until: datetime | None = None) -> None:
        """Full power (under the fuse guard) until ``until`` or the session's end;
        works with the cloud unreachable."""
        if charger_id not in self.chargers:
            raise KeyError(f"unknown charger {charger_id!r}")
        self.boosts[charger_id] = until
        log.info("controller: boost on %s until %s", charger_id, until or "unplug")
        self._wake.set()

    def cancel_boost(self, charger_id: str) -> None:
        self.boosts.pop(charger_id, None)
        self._wake.set()

    def add_charger(self, charger: ChargerConfig) -> None:
        """Take a charger under control from the next evaluation (one the installer
        approved on the local page while the edge runs)."""
        self.chargers[charger.id] = charger
        self._runtime.setdefault(charger.id, _ChargerRuntime())
        log.info("controller: %s now under control", charger.id)
        self._wake.set()

    def set_main_fuse(self, main_fuse_a: float) -> None:
        """Protect a fuse of ``main_fuse_a`` from the next evaluation on (the
        installer's local page; the caller validates and persists the value)."""
        self.site = self.site.model_copy(update={"main_fuse_a": main_fuse_a})
        self._local_plan = None  # planned against the old limit
        log.info("controller: main fuse now %g A", main_fuse_a)
        self._wake.set()

    def metrics(self) -> list[tuple[str, str, dict[str, str], float]]:
        """Prometheus samples: each charger's limit and state, the site and lease."""
        now = self.clock.now()
        out: list[tuple[str, str, dict[str, str], float]] = []
        for cid, d in sorted(self.decisions.items()):
            out.append(
                (
                    "fusebox_charger_limit_a",
                    "current per phase the controller gives the charger",
                    {"charger": cid, "state": d.state},
                    round(d.limit_a, 2),
                )
            )
        if self.site_import_w is not None and self.site_at is not None:
            out.append(
                (
                    "fusebox_site_import_w",
                    "site meter import (all phases)",
                    {},
                    sum(self.site_import_w),
                )
            )
            out.append(
                (
                    "fusebox_site_meter_age_seconds",
                    "age of the site meter's last reading",
                    {},
                    round((now - self.site_at).total_seconds(), 1),
                )
            )
        if self.lease is not None:
            out.append(
                ("fusebox_lease_version", "the lease in force", {}, self.lease.version)
            )
            out.append(
                (
                    "fusebox_lease_valid_seconds",
                    "seconds until the lease runs out (negative: expired)",
                    {},
                    round(self.lease.valid_until_ms / 1000 - now.timestamp(), 1),
                )
            )
        return out

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                # cancel that lands as the wake is set, and the loop never stops
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick_s):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    self.evaluate()
                except Exception:
                    log.exception("controller: evaluation failed; next tick retries")
                # wakes that come meanwhile (every meter value of every charger
                # wakes it) are served by one evaluation after this pause
                await asyncio.sleep(self.min_interval_s)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def evaluate(self) -> dict[str, ChargerDecision]:
        """Decide every charger now and start applying what changed."""
        now = self.clock.now()
        wanted: dict[str, tuple[float, ScheduleState, str]] = {}
        decisions: dict[str, ChargerDecision] = {}
        for cid, cfg in self.chargers.items():
            state = self.ocpp.chargers.get(cid)
            if state is None or not state.connected or state.registration != "accepted":
                decisions[cid] = ChargerDecision(cid, "not_connected", 0.0, None, 0.0)
                continue
            self._ensure_failsafe(cfg, state)
            if not state.transactions:
                self.boosts.pop(cid, None)  # a boost ends with the session
                continue
            wanted[cid] = self._planned(cfg, state, now)
        limits = self._guard(wanted, now)
        for cid, (limit_a, guard_state, fuse_held) in limits.items():
            planned_a, plan_state, detail = wanted[cid]
            cfg = self.chargers[cid]
            state_name: ScheduleState = guard_state or plan_state
            held_a = self._hysteresis(cid, limit_a, fuse_held, now)
            if held_a < limit_a - 0.1:
                # still held down for the fuse while the headroom lasts raise_hold_s
                # (else the next evaluation, seeing an unheld profile, raises at once)
                fuse_held, state_name = True, "fuse_limited"
            limit_a = held_a
            decision = ChargerDecision(
                cid,
                state_name,
                limit_a,
                planned_a,
                limit_a * self.site.voltage_v * cfg.phases,
                detail,
            )
            decisions[cid] = decision
            self._apply(cfg, decision, fuse_held, now)
        for decision in decisions.values():
            self._report(decision, now)
        self.decisions = decisions
        return decisions

    # -- 1. the plan ---------------------------------------------------------------

    def _planned(
        self, cfg: ChargerConfig, state: ChargerState, now: datetime
    ) -> tuple[float, ScheduleState, str]:
        cid = cfg.id
        watts_per_a = self.site.voltage_v * cfg.phases
        if cid in self.boosts:
            until = self.boosts[cid]
            if until is None or now < until:
                return cfg.max_current_a, "boost", ""
            del self.boosts[cid]
        lease = self.lease
        now_ms = _ms(now)
        if lease is not None:
            entry = lease.charger(cid)
            if now_ms < lease.valid_until_ms and entry is not None:
                if entry.mode == "off":
                    return 0.0, "applied", "mode off"
                if entry.mode == "boost":
                    return cfg.max_current_a, "boost", "boost in the lease"
                limit_w = entry.limit_at(now_ms)
                limit_a = 0.0 if limit_w is None else limit_w / watts_per_a
                return min(limit_a, cfg.max_current_a), "applied", ""
            if now_ms >= lease.valid_until_ms and entry is not None and entry.request:
                local = self._local_limit_w(now)
                if cid in local:
                    limit_a = local[cid] / watts_per_a
                    return min(limit_a, cfg.max_current_a), "local_plan", ""
        return self._default_window(cfg, now)

    def _default_window(
        self, cfg: ChargerConfig, now: datetime
    ) -> tuple[float, ScheduleState, str]:
        runtime = self._runtime[cfg.id]
        start_t, end_t = self._window
        local = now.astimezone(self._tz)
        for day in (local.date() - timedelta(days=1), local.date()):
            start = datetime.combine(day, start_t, self._tz)
            end_day = day if end_t > start_t else day + timedelta(days=1)
            end = datetime.combine(end_day, end_t, self._tz)
            if day not in runtime.window_delay:
                runtime.window_delay[day] = self.rng.uniform(
                    0, self.site.random_delay_max_s
                )
                for old in [d for d in runtime.window_delay if d < day - timedelta(2)]:
                    del runtime.window_delay[old]
            begin = start + timedelta(seconds=runtime.window_delay[day])
            if begin <= local < end:
                return cfg.max_current_a, "default_window", f"from {begin:%H:%M:%S}"
        return 0.0, "default_window", "waiting for the off-peak window"

    def _local_limit_w(self, now: datetime) -> dict[str, float]:
        """Limits (W) now from a local replan of the expired lease's requests."""
        lease = self.lease
        assert lease is not None
        slot = _ms(now) // SLOT_MS
        active = tuple(
            sorted(
                cid
                for cid in self.chargers
                if (s := self.ocpp.chargers.get(cid)) is not None and s.transactions
            )
        )
        key = (lease.version, slot, active)
        if self._local_plan is not None and self._local_plan[0] == key:
            return self._local_plan[1]
        requests = []
        for entry in lease.chargers:
            request = entry.request
            state = self.ocpp.chargers.get(entry.charger_id)
            cfg = self.chargers.get(entry.charger_id)
            if request is None or cfg is None or entry.charger_id not in active:
                continue
            needed = request.energy_needed_kwh
            at_request = request.register_wh_at_request
            register = state.register_wh if state is not None else None
            # a register of 0 Wh at the request is a reading, not a missing one
            if register is not None and at_request is not None:
                needed -= max(0.0, register - at_request) / 1000.0
            requests.append(
                EvRequest(
                    charger_id=entry.charger_id,
                    ready_by=_from_ms(request.ready_by_ms),
                    max_power_w=min(
                        request.max_power_w,
                        cfg.max_current_a * self.site.voltage_v * cfg.phases,
                    ),
                    phases=request.phases,
                    min_power_w=request.min_power_w,
                    energy_needed_kwh=max(0.0, needed),
                    phase=cfg.phase,
                    voltage_v=self.site.voltage_v,
                )
            )
        limits: dict[str, float] = {}
        if requests:
            try:
                limits = self._replan(lease, requests, now)
            except PlanningError as exc:
                log.warning("controller: local replan failed (%s); default window", exc)
                limits = {}
        self._local_plan = (key, limits)
        return limits

    def _replan(
        self, lease: Lease, requests: list[EvRequest], now: datetime
    ) -> dict[str, float]:
        horizon_end = max(r.ready_by for r in requests) + timedelta(minutes=30)
        prices = list(lease.price_p_per_kwh)
        carbon = list(lease.carbon_g_per_kwh)
        start = _from_ms(lease.slots_start_ms)
        # the curve's last day stands in for the days it does not reach
        day = min(48, len(prices))
        while start + timedelta(minutes=30) * len(prices) < horizon_end and day:
            prices.extend(prices[-day:])
            if carbon:
                carbon.extend(carbon[-day:])
        plan = plan_charging(
            now,
            requests,
            SiteLimit(
                self.site.main_fuse_a - self.site.margin_a,
                self.site.voltage_v,
                self.site.phases,
            ),
            SlotCurve(start, tuple(prices)),
            carbon=SlotCurve(start, tuple(carbon), "gCO2/kWh") if carbon else None,
            objective=lease.objective,
            carbon_weight=lease.carbon_weight,
        )
        out: dict[str, float] = {}
        for charger_plan in plan.chargers:
            out[charger_plan.charger_id] = 0.0
            for period in charger_plan.periods:
                if period.start <= now < period.end:
                    out[charger_plan.charger_id] = period.limit_w
        log.info(
            "controller: lease %d expired, cloud silent: local plan for %s",
            lease.version,
            ", ".join(f"{k} {v:.0f} W" for k, v in sorted(out.items())),
        )
        return out

    # -- 2. the fuse guard --------------------------------------------------------

    def _guard(
        self, wanted: dict[str, tuple[float, ScheduleState, str]], now: datetime
    ) -> dict[str, tuple[float, ScheduleState | None, bool]]:
        """(limit A, state if the guard changed it, held by the guard) per charger."""
        site = self.site
        stale = (
            site.meter is None
            or self.site_at is None
            or self.site_import_w is None
            or (now - self.site_at).total_seconds() > site.stale_after_s
        )
        out: dict[str, tuple[float, ScheduleState | None, bool]] = {}
        if stale:
            for cid, (want, _, _) in wanted.items():
                if want > site.safe_current_a:
                    out[cid] = (site.safe_current_a, "safe_current", True)
                else:
                    out[cid] = (want, None, False)
            return out
        assert self.site_import_w is not None
        ev_draw = [0.0] * site.phases
        for cid in wanted:
            cfg = self.chargers[cid]
            draw_w = self._draw_estimate_w(cid)
            phases_on = Draw(cid, 0, cfg.phases, cfg.phase).on(site.phases)
            for p in phases_on:
                ev_draw[p - 1] += draw_w / len(phases_on)
        imports = self.site_import_w
        draws_w = ev_draw if len(imports) == site.phases else [sum(ev_draw)]
        headroom = phase_headroom_a(
            main_fuse_a=site.main_fuse_a,
            margin_a=site.margin_a,
            site_phases=site.phases,
            voltage_v=site.voltage_v,
            import_w=imports,
            ev_draw_w=draws_w,
        )
        draws = [
            Draw(
                cid,
                want,
                self.chargers[cid].phases,
                self.chargers[cid].phase,
            )
            for cid, (want, _, _) in wanted.items()
        ]
        shares = allocate(headroom, draws, site_phases=site.phases)
        for cid, (want, _, _) in wanted.items():
            got = math.floor(shares[cid] * 10) / 10
            held = got < want - 0.1
            out[cid] = (min(got, want), "fuse_limited" if held else None, held)
        return out

    def _draw_estimate_w(self, charger_id: str) -> float:
        """What the charger draws now: its last measured power (the meter saw about
        the same), else the limit last applied, else nothing. A report that lags a
        throttle makes the house look smaller for a moment; raising waits
        ``raise_hold_s``, so that cannot make an EV flap up."""
        state = self.ocpp.chargers.get(charger_id)
        if state is not None and state.power_w is not None:
            return max(0.0, state.power_w)
        applied = self._runtime[charger_id].applied
        if applied is None:
            return 0.0
        return applied.limit_a * self.site.voltage_v * self.chargers[charger_id].phases

    def _hysteresis(
        self, charger_id: str, target_a: float, fuse_held: bool, now: datetime
    ) -> float:
        runtime = self._runtime[charger_id]
        applied = runtime.applied
        if applied is None or target_a <= applied.limit_a + _CHANGE_A:
            runtime.raise_since = None
            return target_a
        if not applied.fuse_held:
            return target_a  # the plan raises it: no reason to wait
        if runtime.raise_since is None:
            runtime.raise_since = now
            runtime.raise_to_a = target_a
        # only the headroom that lasted the whole hold is given: a little headroom
        # during a spike must not release the full target the moment it ends
        runtime.raise_to_a = min(runtime.raise_to_a, target_a)
        if (now - runtime.raise_since).total_seconds() >= self.site.raise_hold_s:
            runtime.raise_since = None
            return runtime.raise_to_a
        return applied.limit_a

    # -- 3. applying ------------------------------------------------------------

    def _apply(
        self,
        cfg: ChargerConfig,
        decision: ChargerDecision,
        fuse_held: bool,
        now: datetime,
    ) -> None:
        state = self.ocpp.chargers.get(cfg.id)
        runtime = self._runtime[cfg.id]
        if state is None or not state.transactions or runtime.busy:
            return
        connector, tx_id = next(iter(sorted(state.transactions.items())))
        applied = runtime.applied
        fresh = (
            applied is not None
            and applied.connection == id(state)
            and applied.transaction_id == tx_id
            and abs(applied.limit_a - decision.limit_a) < _CHANGE_A
            and (now - applied.sent_at).total_seconds() < self.tx_profile_duration_s / 2
        )
        if fresh:
            if applied is not None:
                applied.fuse_held = fuse_held
            return
        refused = runtime.refused
        if (
            refused is not None
            and refused[0] == tx_id
            and abs(refused[1] - decision.limit_a) < _CHANGE_A
            and now < refused[2]
        ):
            return  # asked already; e.g. a transaction the charger has ended
        profile = self._tx_profile(cfg, state, tx_id, decision.limit_a, now)
        if profile is None:
            return
        runtime.busy = True
        self._spawn(
            self._send(cfg, state, connector, tx_id, profile, decision, fuse_held, now)
        )

    async def _send(
        self,
        cfg: ChargerConfig,
        state: ChargerState,
        connector: int,
        tx_id: str,
        profile: ChargingProfile,
        decision: ChargerDecision,
        fuse_held: bool,
        now: datetime,
    ) -> None:
        runtime = self._runtime[cfg.id]
        try:
            status = await self.ocpp.set_charging_profile(cfg.id, connector, profile)
        except (ChargerNotConnected, CommandFailed, TimeoutError, ProfileError) as exc:
            status = f"failed: {exc}"
        finally:
            runtime.busy = False
            self._wake.set()
        if status == "Accepted":
            runtime.refused = None
            runtime.applied = _Applied(
                id(state), tx_id, decision.limit_a, now, fuse_held
            )
            log.info(
                "controller: %s at %.1f A (%s%s)",
                cfg.id,
                decision.limit_a,
                decision.state,
                f", {decision.detail}" if decision.detail else "",
            )
        else:
            runtime.applied = None
            runtime.refused = (tx_id, decision.limit_a, now + _REFUSED_PAUSE)
            log.warning("controller: %s refused its profile: %s", cfg.id, status)
            self._report(
                ChargerDecision(
                    cfg.id,
                    "rejected",
                    decision.limit_a,
                    decision.planned_a,
                    decision.limit_w,
                    status[:200],
                ),
                self.clock.now(),
            )

    def _unit(self, state: ChargerState) -> RateUnit:
        caps = state.capabilities
        if caps is not None and caps.rate_units == {"W"}:
            return RateUnit.W  # power-only chargers
        return RateUnit.A

    def _tx_profile(
        self,
        cfg: ChargerConfig,
        state: ChargerState,
        tx_id: str,
        limit_a: float,
        now: datetime,
    ) -> ChargingProfile | None:
        unit = self._unit(state)
        limit = (
            limit_a
            if unit is RateUnit.A
            else limit_a * self.site.voltage_v * cfg.phases
        )
        caps = state.capabilities
        stack = TX_STACK_LEVEL
        if caps is not None and caps.max_stack_level is not None:
            stack = min(stack, caps.max_stack_level)
        transaction: int | str = tx_id
        if state.ocpp_version == "1.6":
            try:
                transaction = int(tx_id)
            except ValueError:
                return None
        connector = next(iter(sorted(state.transactions)))
        return ChargingProfile(
            id=TX_PROFILE_ID + connector,
            stack_level=stack,
            purpose=ProfilePurpose.TX,
            kind=ProfileKind.ABSOLUTE,
            transaction_id=transaction,
            schedules=(
                ChargingSchedule(
                    rate_unit=unit,
                    periods=(
                        SchedulePeriod(0, math.floor(limit * 10) / 10, cfg.phases),
                    ),
                    start_schedule=(now - timedelta(seconds=60)).replace(microsecond=0),
                    duration_s=self.tx_profile_duration_s + 60,
                ),
            ),
        )

    def _ensure_failsafe(self, cfg: ChargerConfig, state: ChargerState) -> None:
        runtime = self._runtime[cfg.id]
        if runtime.failsafe_on == id(state) or state.capabilities is None:
            return
        runtime.failsafe_on = id(state)
        unit = self._unit(state)
        limit_a = min(self.site.failsafe_current_a, cfg.max_current_a)
        limit = (
            limit_a
            if unit is RateUnit.A
            else limit_a * self.site.voltage_v * cfg.phases
        )
        profile = ChargingProfile(
            id=FAILSAFE_PROFILE_ID,
            stack_level=0,
            purpose=ProfilePurpose.TX_DEFAULT,
            kind=ProfileKind.ABSOLUTE,
            schedules=(
                ChargingSchedule(
                    rate_unit=unit,
                    periods=(
                        SchedulePeriod(0, math.floor(limit * 10) / 10, cfg.phases),
                    ),
                    start_schedule=datetime(2020, 1, 1, tzinfo=UTC),
                ),
            ),
        )

        async def install() -> None:
            try:
                status = await self.ocpp.set_charging_profile(cfg.id, 0, profile)
            except (
                ChargerNotConnected,
                CommandFailed,
                TimeoutError,
                ProfileError,
            ) as e:
                status = f"failed: {e}"
            if status == "Accepted":
                log.info("controller: %s fail-safe default %.1f A", cfg.id, limit_a)
            else:
                log.warning(
                    "controller: %s refused the fail-safe default profile (%s); it "
                    "is unprotected if the gateway dies",
                    cfg.id,
                    status,
                )

        self._spawn(install())

    def _report(self, decision: ChargerDecision, now: datetime) -> None:
        runtime = self._runtime.get(decision.charger_id)
        if runtime is None:
            return
        key = (decision.state, round(decision.limit_a, 1))
        if runtime.reported == key:
            return
        runtime.reported = key
        if self.post is None:
            return
        cfg = self.chargers[decision.charger_id]
        watts_per_a = self.site.voltage_v * cfg.phases
        status = ScheduleStatus(
            gw=self.config.gateway_id,
            charger_id=decision.charger_id,
            lease_version=self.lease.version if self.lease else 0,
            state=decision.state,
            limit_w=max(0.0, decision.limit_a * watts_per_a),
            planned_w=None
            if decision.planned_a is None
            else max(0.0, decision.planned_a * watts_per_a),
            at_ms=_ms(now),
            detail=decision.detail[:500],
        )
        self.post("up/schedule_status", pack(status), f"ss:{decision.charger_id}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the lease on disk -------------------------------------------------------

    def _load_lease(self) -> Lease | None:
        if self.lease_path is None or not self.lease_path.exists():
            return None
        try:
            lease = unpack_lease(self.lease_path.read_bytes())
        except (OSError, ContractError) as exc:
            log.warning(
                "controller: stored lease %s unusable (%s)", self.lease_path, exc
            )
            return None
        log.info("controller: lease %d loaded from %s", lease.version, self.lease_path)
        return lease

    def _save_lease(self, payload: bytes) -> None:
        if self.lease_path is None:
            return
        tmp = self.lease_path.with_suffix(".tmp")
        try:
            self.lease_path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.lease_path)
        except OSError as exc:
            log.error("controller: could not keep the lease on disk: %s", exc)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso_ms(ms: int) -> str:
    return _from_ms(ms).isoformat(timespec="seconds").replace("+00:00", "Z")
