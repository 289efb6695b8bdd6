"""The edge's charging controller: executes the cloud's lease under a live fuse guard,
and keeps charging sensibly when the cloud is gone (ARCHITECTURE decisions 4, 5).

The decision itself (plan, fuse guard, hysteresis, default window, local replan) is
``edge.policy.ChargingPolicy``, which does no I/O. This module is its shell: every
evaluation (on each site-meter reading, each charger change, each lease or command,
and at least every ``tick_s``) it gathers the facts, asks the policy, and applies
what it decided:

* **Applying**: a TxProfile bound to the running transaction (stack level 1, the
  charger's unit: A, or W for power-only chargers), with a duration, refreshed
  before it ends, so that if the gateway dies the charger falls back within that
  time to the **fail-safe default** (a TxDefaultProfile at stack level 0 and
  ``failsafe_current_a``) that the controller installs on every charger when it
  connects. Both come from one profile builder (``_profile``). Profiles are
  re-applied after a charger reconnects or reboots; one the charger refused is
  not asked again for ``_REFUSED_PAUSE``.
* **Reporting**: each charger's outcome goes to the cloud as a ``ScheduleStatus``
  when it changes.
* **The lease** is kept in a file beside the outbox, so an edge restarted with the
  cloud unreachable still has it.

Chargers are reached through ``edge.charger_port.ChargerPort``
(``edge.ocpp.server.OcppServer`` in production, any small stand-in in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.charger_port import ChargerPort, ChargerView
from edge.config import EdgeConfig
from edge.ocpp.commands import ChargerNotConnected, CommandFailed
from edge.ocpp.config import ChargerConfig
from edge.policy import (
    CHANGE_A,
    ChargerDecision,
    ChargerMemory,
    ChargerNow,
    ChargingPolicy,
    Guarded,
    SiteNow,
    Want,
)
from protocols.backoff import Backoff, Reconnect
from protocols.clock import Clock
from protocols.contract import ContractError, pack
from protocols.lease import (
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
from protocols.readings import Reading
from protocols.times import from_ms, iso_z, to_ms

__all__ = ["ChargerDecision", "ChargerPort", "ChargerView", "Controller"]

log = logging.getLogger("fusebox.edge.controller")

TX_PROFILE_ID = 2100  # + connector: one stable id per connector
FAILSAFE_PROFILE_ID = 2000
TX_STACK_LEVEL = 1
_PHASE_QUANTITIES = ("power_l1_w", "power_l2_w", "power_l3_w")
_REFUSED_PAUSE = timedelta(seconds=30)  # before the same profile is asked again
_SEND_ERRORS = (ChargerNotConnected, CommandFailed, TimeoutError, ProfileError)


# -- what the controller remembers per charger -------------------------------------


@dataclass(slots=True)
class _Applied:
    connection: int  # id() of the ChargerState the profile was sent on
    transaction_id: str
    limit_a: float
    sent_at: datetime
    fuse_held: bool


@dataclass(slots=True)
class _ChargerRuntime:
    memory: ChargerMemory  # the policy's memory of this charger
    applied: _Applied | None = None
    failsafe_on: int | None = None  # id() of the connection it was installed on
    # the fail-safe default's state on the current connection: None until sent,
    # then True (accepted) or False (refused or unanswered: retried, unprotected)
    failsafe_ok: bool | None = None
    failsafe_tries: int = 0
    busy: bool = False
    reported: tuple[str, float] | None = None
    # (transaction, limit) the charger refused, and until when not to ask again
    refused: tuple[str, float, datetime] | None = None

    @property
    def window_delay(self) -> dict[date, float]:
        """This charger's random delay (s) into the default window, per night."""
        return self.memory.window_delay


class Controller:
    """See the module docstring. ``post`` sends a message to the cloud (the
    uplink's ``post``); ``lease_path`` keeps the lease across restarts (the
    agent passes ``StatePaths.lease``, beside the outbox)."""

    def __init__(
        self,
        config: EdgeConfig,
        ocpp: ChargerPort,
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
        self.clock = clock or Clock(real=time.time)
        self.post = post
        self.lease_path = lease_path
        self.policy = ChargingPolicy(rng)
        self._rng = rng or random.Random()
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
            c: self._new_runtime(c) for c in self.chargers
        }
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        ocpp.observers.append(self.on_charger)

    def _new_runtime(self, charger_id: str) -> _ChargerRuntime:
        return _ChargerRuntime(self.policy.memory_of(charger_id))

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
        """A charger's state changed (the OCPP server's observer): evaluate soon."""
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
            until = None if cmd.until_ms is None else from_ms(cmd.until_ms)
            self.boost(cmd.charger_id, until)
        else:
            self.cancel_boost(cmd.charger_id)
        if self.post is not None:
            result = CommandResult(
                id=cmd.id,
                gw=self.config.gateway_id,
                ok=ok,
                detail=detail,
                at_ms=to_ms(self.clock.now()),
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
        """Back to the plan (a boost not running is no error)."""
        self.boosts.pop(charger_id, None)
        self._wake.set()

    def add_charger(self, charger: ChargerConfig) -> None:
        """Take a charger under control from the next evaluation (one the installer
        approved on the local page while the edge runs)."""
        self.chargers[charger.id] = charger
        self._runtime.setdefault(charger.id, self._new_runtime(charger.id))
        log.info("controller: %s now under control", charger.id)
        self._wake.set()

    def set_main_fuse(self, main_fuse_a: float) -> None:
        """Protect a fuse of ``main_fuse_a`` from the next evaluation on (the
        installer's local page; the caller validates and persists the value)."""
        self.site = self.site.model_copy(update={"main_fuse_a": main_fuse_a})
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
        for cid, runtime in sorted(self._runtime.items()):
            out.append(
                (
                    "fusebox_charger_unprotected",
                    "1 while the charger has refused the fail-safe default profile "
                    "(it would run unlimited if the gateway died); retried",
                    {"charger": cid},
                    1.0 if runtime.failsafe_ok is False else 0.0,
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
        """Evaluate on every wake and at least every ``tick_s``, until cancelled."""
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
        for cid, cfg in self.chargers.items():
            state = self.ocpp.chargers.get(cid)
            if state is not None and _online(state):
                self._ensure_failsafe(cfg, state)
        decision = self.policy.decide(
            now, self._chargers_now(), self._site_now(), self.lease, self.boosts
        )
        for cid in decision.boosts_ended:
            self.boosts.pop(cid, None)
        for cid, fuse_held in decision.fuse_held.items():
            self._apply(self.chargers[cid], decision.decisions[cid], fuse_held, now)
        for charger_decision in decision.decisions.values():
            self._report(charger_decision, now)
        self.decisions = decision.decisions
        return decision.decisions

    def _chargers_now(self) -> dict[str, ChargerNow]:
        """The facts the policy decides on, per configured charger."""
        out: dict[str, ChargerNow] = {}
        for cid, cfg in self.chargers.items():
            state = self.ocpp.chargers.get(cid)
            applied = self._runtime[cid].applied
            out[cid] = ChargerNow(
                config=cfg,
                online=state is not None and _online(state),
                charging=state is not None and bool(state.transactions),
                power_w=state.power_w if state is not None else None,
                register_wh=state.register_wh if state is not None else None,
                applied_a=applied.limit_a if applied is not None else None,
                applied_for_fuse=applied is not None and applied.fuse_held,
            )
        return out

    def _site_now(self) -> SiteNow:
        imports = self.site_import_w
        return SiteNow(
            self.site, tuple(imports) if imports is not None else None, self.site_at
        )

    # -- the policy's steps one at a time (the unit tests drive them) -------------

    def _planned(self, cfg: ChargerConfig, state: object, now: datetime) -> Want:
        until = self.boosts.get(cfg.id)
        if cfg.id in self.boosts and until is not None and now >= until:
            del self.boosts[cfg.id]
        return self.policy.planned(
            cfg.id, now, self._chargers_now(), self._site_now(), self.lease, self.boosts
        )

    def _default_window(self, cfg: ChargerConfig, now: datetime) -> Want:
        return self.policy.default_window(cfg.id, cfg, self.site, now)

    def _guard(
        self, wanted: Mapping[str, tuple[float, ScheduleState, str]], now: datetime
    ) -> dict[str, Guarded]:
        want = {cid: Want(*w) for cid, w in wanted.items()}
        return self.policy.guard(want, self._chargers_now(), self._site_now(), now)

    def _hysteresis(
        self, charger_id: str, target_a: float, fuse_held: bool, now: datetime
    ) -> float:
        applied = self._runtime[charger_id].applied
        return self.policy.hysteresis(
            charger_id,
            target_a,
            applied.limit_a if applied is not None else None,
            applied is not None and applied.fuse_held,
            now,
            self._site_now(),
        )

    # -- applying ---------------------------------------------------------------

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
            and abs(applied.limit_a - decision.limit_a) < CHANGE_A
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
            and abs(refused[1] - decision.limit_a) < CHANGE_A
            and now < refused[2]
        ):
            return  # asked already; e.g. a transaction the charger has ended
        profile = self._profile(cfg, state, decision.limit_a, now, tx_id=tx_id)
        if profile is None:
            return
        runtime.busy = True
        self._spawn(
            self._send(cfg, state, connector, tx_id, profile, decision, fuse_held, now)
        )

    async def _send(
        self,
        cfg: ChargerConfig,
        state: ChargerView,
        connector: int,
        tx_id: str,
        profile: ChargingProfile,
        decision: ChargerDecision,
        fuse_held: bool,
        now: datetime,
    ) -> None:
        runtime = self._runtime[cfg.id]
        try:
            status = await self._set_profile(cfg.id, connector, profile)
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

    async def _set_profile(
        self, charger_id: str, target: int, profile: ChargingProfile
    ) -> str:
        """The charger's answer, or "failed: ..." if it could not be asked."""
        try:
            return await self.ocpp.set_charging_profile(charger_id, target, profile)
        except _SEND_ERRORS as exc:
            return f"failed: {exc}"

    def _profile(
        self,
        cfg: ChargerConfig,
        state: ChargerView,
        limit_a: float,
        now: datetime,
        *,
        tx_id: str | None,
    ) -> ChargingProfile | None:
        """The one profile builder: ``limit_a`` per phase in the charger's unit (W
        for power-only chargers), as a TxProfile bound to ``tx_id`` that lasts
        ``tx_profile_duration_s`` (None: the transaction id does not fit 1.6's
        integer), or, with ``tx_id`` None, as the fail-safe TxDefaultProfile."""
        caps = state.capabilities
        unit = RateUnit.A
        if caps is not None and caps.rate_units == {"W"}:
            unit = RateUnit.W  # power-only chargers
        limit = (
            limit_a
            if unit is RateUnit.A
            else limit_a * self.site.voltage_v * cfg.phases
        )
        periods = (SchedulePeriod(0, math.floor(limit * 10) / 10, cfg.phases),)
        if tx_id is None:
            return ChargingProfile(
                id=FAILSAFE_PROFILE_ID,
                stack_level=0,
                purpose=ProfilePurpose.TX_DEFAULT,
                kind=ProfileKind.ABSOLUTE,
                schedules=(
                    ChargingSchedule(
                        rate_unit=unit,
                        periods=periods,
                        start_schedule=datetime(2020, 1, 1, tzinfo=UTC),
                    ),
                ),
            )
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
                    periods=periods,
                    start_schedule=(now - timedelta(seconds=60)).replace(microsecond=0),
                    duration_s=self.tx_profile_duration_s + 60,
                ),
            ),
        )

    def _ensure_failsafe(self, cfg: ChargerConfig, state: ChargerView) -> None:
        runtime = self._runtime[cfg.id]
        if runtime.failsafe_on == id(state) or not state.profiles_ready:
            return
        runtime.failsafe_on = id(state)
        runtime.failsafe_ok, runtime.failsafe_tries = None, 0
        self._spawn(self._install_failsafe(cfg, state))

    async def _install_failsafe(self, cfg: ChargerConfig, state: ChargerView) -> None:
        """Send the fail-safe default until the charger accepts it, backing off
        (5 s up to 5 min) while it refuses; meanwhile it is flagged unprotected
        (``fusebox_charger_unprotected``). Stops when the connection is gone."""
        runtime = self._runtime[cfg.id]
        retry = Reconnect(Backoff(5.0, 300.0))
        limit_a = min(self.site.failsafe_current_a, cfg.max_current_a)
        while runtime.failsafe_on == id(state) and state.connected:
            profile = self._profile(cfg, state, limit_a, self.clock.now(), tx_id=None)
            assert profile is not None  # a default profile always fits
            runtime.failsafe_tries += 1
            status = await self._set_profile(cfg.id, 0, profile)
            if status == "Accepted":
                runtime.failsafe_ok = True
                log.info("controller: %s fail-safe default %.1f A", cfg.id, limit_a)
                return
            runtime.failsafe_ok = False
            delay_s = retry.failed(self._rng)
            if retry.first_failure:
                log.warning(
                    "controller: %s refused the fail-safe default profile (%s); it "
                    "is unprotected if the gateway dies; retrying with backoff",
                    cfg.id,
                    status,
                )
            await asyncio.sleep(delay_s)

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
            at_ms=to_ms(now),
            detail=decision.detail[:500],
        )
        self.post("up/schedule_status", pack(status), f"ss:{decision.charger_id}")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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


def _online(state: ChargerView) -> bool:
    return state.connected and state.registration == "accepted"


def _iso_ms(ms: int) -> str:
    return iso_z(from_ms(ms))
