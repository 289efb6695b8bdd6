"""The cloud scheduler: plans each site's charging and leases the plan to its gateway.

A separate service (ARCHITECTURE decision 3): it shares only PostgreSQL and the
broker with ingest and the API. Every few seconds (fewer real seconds when the
clock is simulated and fast) it:

1. publishes owner commands the API queued in ``commands`` on ``down/cmd`` (QoS 1,
   not retained) and marks them published; commands not published within an hour
   are closed as expired;
2. publishes any persisted plan whose lease has not been published yet (the broker
   was down when it was made);
3. finds the gateways that need a new plan and why (``plans.reason``):

   ``plug_in``      a charger has an open session (``sessions``) the plan lacks
   ``unplug``       a planned charger's session ended: replan the others
   ``preferences``  ``charging_preferences`` changed after the plan's inputs were read
   ``settings``     ``sites`` / ``site_chargers`` changed likewise
   ``prices``       the site's tariff was updated likewise
   ``refresh``      the lease is within ``refresh_before_s`` of ``valid_until``

4. reads what each such site's plan depends on (``gather``: the sessions, the
   owners' asks, the tariff from ``cloud.tariffs``), composes the lease with
   :func:`protocols.planning.leasing.compose_lease` (the pure rules the edge's local
   replan shares: energy still needed, curve extension), persists the plan in
   ``plans`` and publishes it as a retained :class:`~protocols.lease.Lease` on
   ``down/schedule``.

One bad charger never stops a site's planning: a charger whose id could not be
in a lease (``cloud.screening.charger_id_problem``), or whose part of the lease
cannot be built (``cloud.screening.compose_skipping``), is left out with a log
line (once an hour per charger) and ``chargers_skipped`` counted; the others are
planned, and it is no reason to replan until something else changes.

Versions rise per gateway: ``max(previous) + 1``, taken under a per-gateway
advisory lock, and ``(gateway_id, version)`` is the primary key, so two schedulers
can never issue one version twice. ``valid_until`` is ``now + lease_validity_s`` on
the scheduler's clock; the lease carries the price (and carbon) curve from the
current slot to at least the latest ready-by (``horizon_h``, at most 48 h) so the
edge can replan offline.

What the edge reports on ``up/schedule_status`` and ``up/cmd_result`` is validated
with the contract models and stored (``schedule_status`` latest and history;
``commands.result_*``). A bad payload is counted and logged, never fatal.
PostgreSQL being unreachable is logged once and retried every cycle; the broker
being lost is retried with capped backoff. All times come from a
:class:`~protocols.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.mqtt import Client, MqttError, check_cloud_client_id, cloud_client
from cloud.screening import charger_id_problem, compose_skipping
from cloud.tariffs import load_prices, read_slots
from protocols import contract
from protocols.backoff import Backoff, Reconnect
from protocols.clock import Clock
from protocols.lease import (
    Command,
    Lease,
    down_cmd,
    down_schedule,
    unpack_command_result,
    unpack_schedule_status,
)
from protocols.planning import SLOT, floor_slot
from protocols.planning.leasing import (
    ChargerInputs,
    Composed,
    OwnerTarget,
    SiteInputs,
    SiteRow,
    cap_periods,
    compose_lease,
    fill_curve,
    horizon_slots,
    ms,
    next_local_time,
    owner_ask,
)
from protocols.times import from_ms

__all__ = [
    "DB_ERRORS",
    "RESULT_FILTER",
    "STATUS_FILTER",
    "ChargerInputs",
    "Composed",
    "Reason",
    "Scheduler",
    "SchedulerMetrics",
    "SchedulerSettings",
    "SiteInputs",
    "SiteRow",
    "cap_periods",
    "compose_lease",
    "fill_curve",
    "load_prices",
    "ms",
    "next_local_time",
]

log = logging.getLogger("fusebox.cloud.scheduler")

# what a lost, restarting or overloaded PostgreSQL raises: retry later
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

STATUS_FILTER = f"{contract.TOPIC_ROOT}/+/up/schedule_status"
RESULT_FILTER = f"{contract.TOPIC_ROOT}/+/up/cmd_result"

Reason = Literal["plug_in", "unplug", "preferences", "settings", "prices", "refresh"]
_ACTIVE_SESSION_AGE = timedelta(days=7)
_COMMAND_TTL = "1 hour"


class SchedulerSettings(BaseSettings):
    """Scheduler knobs, from ``FUSEBOX_SCHEDULER_*`` variables (or the CLI)."""

    model_config = SettingsConfigDict(env_prefix="FUSEBOX_SCHEDULER_", extra="ignore")

    interval_s: float = Field(default=5.0, gt=0, le=3600, description="real seconds")
    lease_validity_s: float = Field(default=3600.0, ge=60, le=7 * 86400)
    refresh_before_s: float = Field(default=600.0, ge=0, le=86400)
    horizon_h: float = Field(default=24.0, ge=1, le=48)
    default_tariff: str = Field(
        default="default", pattern=r"^[A-Za-z0-9][\w.\-]{0,63}$"
    )
    default_price_p_per_kwh: float = Field(default=24.5, ge=-1000, le=1000)
    default_base_load_w: float = Field(default=500.0, ge=0, le=1_000_000)
    default_main_fuse_a: float = Field(default=60.0, gt=0, le=2000)
    default_timezone: str = "Europe/London"
    default_ready_by: dtime = dtime(7, 30)
    default_energy_kwh: float = Field(default=20.0, ge=0, le=1000)
    default_max_power_w: float = Field(default=7400.0, gt=0, le=1_000_000)
    assumed_soc_pct: float = Field(default=20.0, ge=0, le=100)
    meter_window_s: float = Field(default=900.0, gt=0, le=86400)
    client_id: str | None = None


@dataclass(slots=True)
class SchedulerMetrics:
    """Counters of the scheduler since start (cycles, plans, leases, commands, failures
    by reason) for /metrics."""

    cycles: int = 0
    plans_made: int = 0
    leases_published: int = 0
    commands_published: int = 0
    commands_expired: int = 0
    statuses_stored: int = 0
    results_stored: int = 0
    results_unknown: int = 0
    bad_payloads: int = 0
    db_failures: int = 0
    planning_failures: int = 0
    chargers_skipped: int = 0  # left out of a plan (a bad id or settings)
    reasons: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------- SQL

# The newest session per charger, if still open: a session whose stop was lost is
# closed by any later session on the same charger.
_ACTIVE = """
SELECT o.gateway_id, o.charger_id, o.transaction_id, o.connector_id, o.started_at,
       o.meter_start_wh
FROM sessions o
WHERE o.stopped_at IS NULL AND o.started_at > $1
  AND ($2::text IS NULL OR o.gateway_id = $2)
  AND NOT EXISTS (
      SELECT 1 FROM sessions n
      WHERE n.gateway_id = o.gateway_id AND n.charger_id = o.charger_id
        AND n.started_at > o.started_at)
"""

_DUE = f"""
WITH active AS ({_ACTIVE}),
latest AS (
    SELECT DISTINCT ON (gateway_id) gateway_id, version, inputs_at, valid_until,
           charger_ids
    FROM plans ORDER BY gateway_id, version DESC
),
cand AS (
    SELECT gateway_id FROM active
    UNION SELECT gateway_id FROM latest WHERE cardinality(charger_ids) > 0
)
SELECT c.gateway_id, l.version, l.inputs_at, l.valid_until, l.charger_ids,
    coalesce((SELECT array_agg(DISTINCT a.charger_id) FROM active a
              WHERE a.gateway_id = c.gateway_id), '{{}}') AS active_ids,
    (SELECT max(p.updated_at) FROM charging_preferences p
     WHERE p.gateway_id = c.gateway_id) AS prefs_at,
    greatest(
        (SELECT s.updated_at FROM sites s WHERE s.gateway_id = c.gateway_id),
        (SELECT max(sc.updated_at) FROM site_chargers sc
         WHERE sc.gateway_id = c.gateway_id)) AS settings_at,
    (SELECT t.updated_at FROM tariffs t WHERE t.id = coalesce(
        (SELECT s.tariff_id FROM sites s WHERE s.gateway_id = c.gateway_id), $3))
        AS prices_at
FROM cand c LEFT JOIN latest l USING (gateway_id)
ORDER BY c.gateway_id
"""

_LATEST_VALUE = """
SELECT r.value FROM readings r JOIN streams s ON s.id = r.stream_id
WHERE s.gateway_id = $1 AND s.device_id = ANY($2::text[]) AND s.name = $3
  AND r.ts >= $4 AND r.ts <= $5
ORDER BY r.ts DESC LIMIT 1
"""

_POWER_AVERAGES = """
SELECT s.device_id, avg(r.value) AS w
FROM readings r JOIN streams s ON s.id = r.stream_id
WHERE s.gateway_id = $1 AND s.name = 'power_w' AND r.ts >= $2 AND r.ts <= $3
GROUP BY s.device_id
"""


# ------------------------------------------------------------------ the service


class Scheduler:
    """The scheduler service. ``run()`` until cancelled."""

    def __init__(
        self,
        *,
        dsn: str,
        mqtt: Any,
        clock: Clock | None = None,
        settings: SchedulerSettings | None = None,
        client_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.dsn = dsn
        self.mqtt = mqtt
        self.clock = clock or Clock(real=time.time)
        self.settings = settings or SchedulerSettings()
        self.client_id = check_cloud_client_id(
            client_id
            or self.settings.client_id
            or f"fusebox-scheduler-{random.getrandbits(32):08x}"
        )
        self.rng = rng or random.Random()
        self.metrics = SchedulerMetrics()
        self.ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._db_ok = True
        self._held: dict[str, float] = {}  # gateway -> monotonic time to retry
        # gateway -> chargers its last plan left out (not a reason to replan)
        self._skipped: dict[str, set[str]] = {}
        self._warned: dict[str, float] = {}  # warning key -> monotonic time
        self._writes: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(2000)

    # ---- lifecycle

    def wake(self) -> None:
        """Run a cycle now (instead of at the next tick)."""
        self._wake.set()

    def _tick_s(self) -> float:
        """Real seconds between cycles: ``interval_s``, shorter when the clock is
        simulated and fast enough that a lease refresh would be missed."""
        s = self.settings
        sim_bound = self.clock.real_seconds(max(1.0, s.refresh_before_s) / 4)
        return max(0.05, min(s.interval_s, sim_bound))

    async def run(self) -> None:
        """Connect to the broker and run cycles until cancelled; reconnect with
        capped backoff when the broker is lost."""
        writer = asyncio.create_task(self._writer(), name="scheduler-writer")
        reconnect = Reconnect(Backoff(0.5, 15))
        try:
            while True:
                m = self.mqtt
                try:
                    async with cloud_client(m, self.client_id) as client:
                        await client.subscribe(STATUS_FILTER, qos=1)
                        await client.subscribe(RESULT_FILTER, qos=1)
                        log.info(
                            "scheduler %s: on %s (clock %s)",
                            self.client_id,
                            m.url(),
                            self.clock.spec(),
                        )
                        reconnect.succeeded()
                        self.ready.set()
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._receive(client), name="sched-receive")
                            tg.create_task(self._loop(client), name="sched-loop")
                except* (MqttError, OSError, TimeoutError) as group:
                    self.ready.clear()
                    delay_s = reconnect.failed(self.rng)
                    if reconnect.first_failure:
                        log.warning(
                            "scheduler: broker %s lost (%s); reconnecting",
                            m.url(),
                            group.exceptions[0],
                        )
                    await asyncio.sleep(delay_s)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await self._pool.close()

    async def _loop(self, client: Client) -> None:
        while True:
            self.metrics.cycles += 1
            try:
                await self.cycle(client)
                if not self._db_ok:
                    log.info("scheduler: PostgreSQL is back")
                    self._db_ok = True
            except DB_ERRORS as exc:
                self._db_failed(exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._tick_s()):
                    await self._wake.wait()
            self._wake.clear()

    def _db_failed(self, exc: BaseException) -> None:
        self.metrics.db_failures += 1
        if self._db_ok:
            log.error(
                "scheduler: PostgreSQL unavailable (%s: %s); retrying every cycle",
                type(exc).__name__,
                exc,
            )
        self._db_ok = False

    async def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=4, timeout=5, command_timeout=30
            )
        return self._pool

    def _warn(self, key: str, every_s: float, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._warned.get(key, 0.0):
            self._warned[key] = now + every_s
            log.warning(msg, *args)

    # ---- one cycle

    async def cycle(self, client: Client) -> None:
        """Publish queued commands and unpublished leases, then plan what is due."""
        pool = await self._db()
        now = self.clock.now()
        async with pool.acquire(timeout=10) as conn:
            await self._commands(conn, client, now)
            await self._republish(conn, client)
            due = await self.due(conn, now)
        for gw, reason in due:
            if self._held.get(gw, 0.0) > time.monotonic():
                continue
            try:
                async with pool.acquire(timeout=10) as conn:
                    lease = await self.plan_site(conn, gw, reason, now)
            except DB_ERRORS:
                raise
            except Exception as exc:  # a site that cannot be planned: not the others
                self.metrics.planning_failures += 1
                self._held[gw] = time.monotonic() + 60.0
                log.error("scheduler: cannot plan %s (%s): %s", gw, reason, exc)
                continue
            self._held.pop(gw, None)
            await self._publish_lease(client, lease)
            async with pool.acquire(timeout=10) as conn:
                await conn.execute(
                    "UPDATE plans SET published_at = now() "
                    "WHERE gateway_id = $1 AND version = $2",
                    gw,
                    lease.version,
                )

    async def due(
        self, conn: asyncpg.Connection, now: datetime
    ) -> list[tuple[str, Reason]]:
        """The gateways needing a new plan, with the reason."""
        rows = await conn.fetch(
            _DUE, now - _ACTIVE_SESSION_AGE, None, self.settings.default_tariff
        )
        refresh = timedelta(
            seconds=min(
                self.settings.refresh_before_s, self.settings.lease_validity_s / 2
            )
        )
        out: list[tuple[str, Reason]] = []
        for r in rows:
            left_out = self._skipped.get(r["gateway_id"], set())
            active = {
                c
                for c in r["active_ids"]
                if c not in left_out and charger_id_problem(c) is None
            }
            planned = set(r["charger_ids"] or [])
            since = r["inputs_at"]
            reason: Reason | None = None
            if r["version"] is None or active - planned:
                reason = "plug_in"
            elif planned - active:
                reason = "unplug"
            elif r["prefs_at"] is not None and r["prefs_at"] > since:
                reason = "preferences"
            elif r["settings_at"] is not None and r["settings_at"] > since:
                reason = "settings"
            elif r["prices_at"] is not None and r["prices_at"] > since:
                reason = "prices"
            elif active and r["valid_until"] - now <= refresh:
                reason = "refresh"
            if reason is not None:
                out.append((r["gateway_id"], reason))
        return out

    async def gather(
        self, conn: asyncpg.Connection, gw: str, now: datetime
    ) -> SiteInputs:
        """Read everything the plan of ``gw`` depends on."""
        inputs_at: datetime = await conn.fetchval("SELECT now()")
        site = await self._site_row(conn, gw)
        sessions = await conn.fetch(
            _ACTIVE + " ORDER BY o.charger_id", now - _ACTIVE_SESSION_AGE, gw
        )
        configured = {
            r["charger_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM site_chargers WHERE gateway_id = $1", gw
            )
        }
        prefs = {
            r["charger_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM charging_preferences WHERE gateway_id = $1", gw
            )
        }
        tz = self._zone(gw, site.timezone)
        chargers: list[ChargerInputs] = []
        seen: set[str] = set()
        self._skipped[gw] = set()
        for s in sessions:
            cid = s["charger_id"]
            if cid in seen:  # two open sessions started at the same instant
                continue
            seen.add(cid)
            problem = charger_id_problem(cid)
            if problem is not None:
                self._skip(gw, cid, problem)
                continue
            chargers.append(
                await self._charger_inputs(
                    conn, gw, s, configured.get(cid), prefs.get(cid), tz, now
                )
            )
        start = floor_slot(now)
        n = horizon_slots(
            start,
            (c.ready_by for c in chargers),
            at_least=timedelta(hours=self.settings.horizon_h),
        )
        prices, carbon, note = await self._curves(conn, gw, site.tariff_id, start, n)
        base = site.base_load_w
        if base is None:
            base = await self._base_load(conn, gw, now, seen | set(configured))
        return SiteInputs(
            gateway_id=gw,
            inputs_at=inputs_at,
            site=site,
            chargers=tuple(chargers),
            slots_start=start,
            prices=prices,
            carbon=carbon,
            base_load_w=base,
            price_note=note,
        )

    async def _site_row(self, conn: asyncpg.Connection, gw: str) -> SiteRow:
        """The site's settings, or the defaults for a site nobody configured."""
        st = self.settings
        row = await conn.fetchrow("SELECT * FROM sites WHERE gateway_id = $1", gw)
        if row is None:
            return SiteRow(
                st.default_main_fuse_a, 1, 230.0, st.default_tariff,
                st.default_timezone, "cost", 0.5, None,
            )  # fmt: skip
        return SiteRow(
            row["main_fuse_a"],
            row["phases"],
            row["voltage_v"],
            row["tariff_id"] or st.default_tariff,
            row["timezone"],
            row["objective"],
            row["carbon_weight"],
            row["base_load_w"],
        )

    def _zone(self, gw: str, name: str) -> ZoneInfo:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self._warn(f"tz:{gw}", 600, "scheduler: %s: unknown timezone %r; using UTC",
                       gw, name)  # fmt: skip
            return ZoneInfo("UTC")

    async def _charger_inputs(
        self,
        conn: asyncpg.Connection,
        gw: str,
        session: asyncpg.Record,
        conf: asyncpg.Record | None,
        pref: asyncpg.Record | None,
        tz: ZoneInfo,
        now: datetime,
    ) -> ChargerInputs:
        """One open session with its charger's settings and its owner's ask; the
        energy still needed by ``protocols.planning.leasing.owner_ask``."""
        st = self.settings
        cid = session["charger_id"]
        connector = (conf["connector_id"] if conf else None) or session["connector_id"]
        connector = connector if connector and connector >= 1 else 1
        devices = [cid] if connector <= 1 else [cid, f"{cid}-{connector}"]
        since = session["started_at"]
        register = await conn.fetchval(
            _LATEST_VALUE, gw, devices, "import_energy_wh", since, now
        )
        target: OwnerTarget | None = None
        soc = None
        if pref is not None:
            target = OwnerTarget(
                pref["target_energy_kwh"], pref["target_soc_pct"], pref["battery_kwh"]
            )
            if target.target_energy_kwh is None:
                soc = await conn.fetchval(
                    _LATEST_VALUE, gw, devices, "soc_pct", since, now
                )
        need = owner_ask(
            target,
            default_kwh=st.default_energy_kwh,
            assumed_soc_pct=st.assumed_soc_pct,
            soc_pct=soc,
            session_start_wh=session["meter_start_wh"],
            register_wh=register,
        )
        ready_at = pref["ready_by"] if pref else st.default_ready_by
        return ChargerInputs(
            charger_id=cid,
            connector_id=connector,
            max_power_w=conf["max_power_w"] if conf else st.default_max_power_w,
            min_power_w=conf["min_power_w"] if conf else None,
            phases=conf["phases"] if conf else 1,
            phase=conf["phase"] if conf else 1,
            mode=pref["mode"] if pref else "smart",
            ready_by=next_local_time(now, ready_at, tz),
            energy_needed_kwh=need,
            register_wh=register if register is not None else session["meter_start_wh"],
            max_price_p_per_kwh=pref["max_price_p_per_kwh"] if pref else None,
        )

    async def _curves(
        self, conn: asyncpg.Connection, gw: str, tariff_id: str, start: datetime, n: int
    ) -> tuple[tuple[float, ...], tuple[float, ...], str]:
        """The tariff's prices and carbon for ``n`` slots from ``start``, gaps filled
        by ``protocols.planning.leasing.fill_curve``'s rule; what is still missing
        takes the flat or default price (with a warning) and the mean carbon; and a
        note when the prices are all a default."""
        st = self.settings
        stored = await read_slots(
            conn, tariff_id, start - timedelta(days=1), start + SLOT * n
        )
        prices, filled = fill_curve(stored.prices, start, n)
        default = st.default_price_p_per_kwh
        note = ""
        if stored.flat_price_p_per_kwh is not None:
            default = stored.flat_price_p_per_kwh
        elif all(p is None for p in prices):
            note = f"no prices loaded for tariff {tariff_id!r}"
            self._warn(
                f"noprices:{tariff_id}",
                600,
                "scheduler: NO PRICES LOADED for tariff %r (site %s) from %s: planning "
                "with a flat %.2f p/kWh; load a curve with `fusebox cloud prices load "
                "--tariff %s --csv FILE` or PUT /v1/tariffs/%s/prices",
                tariff_id,
                gw,
                start.isoformat(),
                default,
                tariff_id,
                tariff_id,
            )
        elif filled or any(p is None for p in prices):
            self._warn(
                f"gaps:{tariff_id}",
                600,
                "scheduler: tariff %r has gaps in the next %d slots: %d filled from "
                "the day before, %d at the default %.2f p/kWh",
                tariff_id,
                n,
                filled,
                sum(p is None for p in prices),
                default,
            )
        carbon, _ = fill_curve(stored.carbon, start, n)
        carbon_out: tuple[float, ...] = ()
        known = [c for c in carbon if c is not None]
        if known:
            mean = sum(known) / len(known)
            carbon_out = tuple(mean if c is None else c for c in carbon)
        return tuple(default if p is None else p for p in prices), carbon_out, note

    async def _base_load(
        self, conn: asyncpg.Connection, gw: str, now: datetime, chargers: set[str]
    ) -> float:
        """The site meter's recent average import minus the chargers' own draw."""
        since = now - timedelta(seconds=self.settings.meter_window_s)
        rows = await conn.fetch(_POWER_AVERAGES, gw, since, now)

        def is_charger(device: str) -> bool:
            """Whether ``device`` is a charger or one of its connectors
            (``<charger>-<n>``)."""
            return device in chargers or device.rpartition("-")[0] in chargers

        meters = [r["w"] for r in rows if not is_charger(r["device_id"])]
        if not meters:
            return self.settings.default_base_load_w
        evs = sum(float(r["w"]) for r in rows if is_charger(r["device_id"]))
        return max(0.0, float(max(meters)) - evs)

    async def plan_site(
        self, conn: asyncpg.Connection, gw: str, reason: Reason, now: datetime
    ) -> Lease:
        """Plan ``gw``, persist the plan and return its lease (not yet published)."""
        inputs = await self.gather(conn, gw, now)
        validity = timedelta(seconds=self.settings.lease_validity_s)
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('fusebox-plan:' || $1))", gw
            )
            version: int = await conn.fetchval(
                "SELECT coalesce(max(version), 0) + 1 FROM plans WHERE gateway_id = $1",
                gw,
            )
            composed, inputs, skipped = compose_skipping(
                inputs, now=now, version=version, validity=validity
            )
            for cid, why in skipped:
                self._skip(gw, cid, why)
            for cid, why in composed.refused:
                self._warn(f"refused:{gw}:{cid}", 3600, "scheduler: %s: charger "
                           "%.80r gets no periods: %s", gw, cid, why)  # fmt: skip
            lease = composed.lease
            await conn.execute(
                "INSERT INTO plans (gateway_id, version, issued_at, valid_until,"
                " inputs_at, reason, charger_ids, feasible, cost_p, carbon_g, lease)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)",
                gw,
                version,
                now,
                now + validity,
                inputs.inputs_at,
                reason,
                [c.charger_id for c in inputs.chargers],
                composed.feasible,
                composed.cost_p,
                composed.carbon_g,
                json.dumps(lease.model_dump(mode="json")),
            )
        self.metrics.plans_made += 1
        self.metrics.reasons[reason] = self.metrics.reasons.get(reason, 0) + 1
        log.info(
            "scheduler: %s lease v%d (%s): %s%s",
            gw,
            version,
            reason,
            ", ".join(
                f"{c.charger_id} {c.mode} {c.energy_needed_kwh:.1f} kWh by "
                f"{c.ready_by:%H:%MZ}"
                for c in inputs.chargers
            )
            or "no chargers",
            "" if composed.feasible else " (not all feasible)",
        )
        return lease

    def _skip(self, gw: str, charger_id: str, why: str) -> None:
        """Leave a charger out of ``gw``'s plan (the rest is planned), say so once
        an hour per charger, and do not replan for it until something changes."""
        self.metrics.chargers_skipped += 1
        self._skipped.setdefault(gw, set()).add(charger_id)
        self._warn(f"skip:{gw}:{charger_id}", 3600,
                   "scheduler: %s: charger %.80r left out of the plan (%s); the "
                   "rest of the site is planned", gw, charger_id, why)  # fmt: skip

    async def _publish_lease(self, client: Client, lease: Lease) -> None:
        await client.publish(
            down_schedule(lease.gw), contract.pack(lease), qos=1, retain=True
        )
        self.metrics.leases_published += 1

    async def _republish(self, conn: asyncpg.Connection, client: Client) -> None:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (gateway_id) gateway_id, version, lease, published_at"
            " FROM plans WHERE gateway_id IN"
            " (SELECT gateway_id FROM plans WHERE published_at IS NULL"
            " AND created_at > now() - interval '1 day')"
            " ORDER BY gateway_id, version DESC"
        )
        for r in rows:
            if r["published_at"] is not None:
                continue  # a newer plan is out already
            lease = Lease.model_validate(json.loads(r["lease"]))
            await self._publish_lease(client, lease)
            await conn.execute(
                "UPDATE plans SET published_at = now() "
                "WHERE gateway_id = $1 AND version = $2",
                r["gateway_id"],
                r["version"],
            )

    async def _commands(
        self, conn: asyncpg.Connection, client: Client, now: datetime
    ) -> None:
        expired = await conn.execute(
            "UPDATE commands SET result_ok = false, result_at = now(), result_detail ="
            " 'expired: not published within " + _COMMAND_TTL + "'"
            " WHERE published_at IS NULL AND result_at IS NULL"
            " AND created_at < now() - interval '" + _COMMAND_TTL + "'"
        )
        if expired != "UPDATE 0":
            self.metrics.commands_expired += int(expired.split()[-1])
        rows = await conn.fetch(
            "SELECT * FROM commands WHERE published_at IS NULL AND result_at IS NULL"
            " ORDER BY created_at LIMIT 200"
        )
        for r in rows:
            until = r["until"]
            if until is None and r["duration_s"] is not None:
                until = now + timedelta(seconds=r["duration_s"])
            try:
                cmd = Command(
                    id=r["id"],
                    gw=r["gateway_id"],
                    action=r["action"],
                    charger_id=r["charger_id"],
                    issued_ms=ms(now),
                    until_ms=None if until is None else ms(until),
                )
            except ValueError as exc:
                await conn.execute(
                    "UPDATE commands SET result_ok = false, result_at = now(),"
                    " result_detail = $2 WHERE id = $1",
                    r["id"],
                    f"invalid command: {exc}"[:500],
                )
                continue
            await client.publish(down_cmd(cmd.gw), contract.pack(cmd), qos=1)
            await conn.execute(
                "UPDATE commands SET published_at = now() WHERE id = $1", r["id"]
            )
            self.metrics.commands_published += 1
            log.info("scheduler: %s %s on %s sent (%s)", cmd.gw, cmd.action,
                     cmd.charger_id, cmd.id)  # fmt: skip

    # ---- what the edge reports

    async def _receive(self, client: Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            self.handle(topic, bytes(payload))

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate one report and queue it for storing; count and log bad ones."""
        try:
            gw = contract.gateway_of(topic)
            msg: Any
            if topic.endswith("/up/schedule_status"):
                msg = unpack_schedule_status(payload)
                kind = "status"
            elif topic.endswith("/up/cmd_result"):
                msg = unpack_command_result(payload)
                kind = "result"
            else:
                raise contract.ContractError("unexpected topic")
            if msg.gw != gw:
                raise contract.ContractError(
                    "gateway id in payload does not match topic"
                )
        except contract.ContractError as exc:
            self.metrics.bad_payloads += 1
            self._warn(
                f"bad:{topic}",
                60,
                "scheduler: bad payload on %s: %s (%d bad so far)",
                topic[:200],
                exc.reason,
                self.metrics.bad_payloads,
            )
            return
        try:
            self._writes.put_nowait((kind, msg))
        except asyncio.QueueFull:
            self._warn("writes", 60, "scheduler: database too slow; report dropped")

    async def _writer(self) -> None:
        reconnect = Reconnect(Backoff(0.5, 10))
        while True:
            kind, msg = await self._writes.get()
            while True:
                try:
                    pool = await self._db()
                    async with pool.acquire(timeout=10) as conn:
                        if kind == "status":
                            await self._store_status(conn, msg)
                        else:
                            await self._store_result(conn, msg)
                    reconnect.succeeded()
                    break
                except DB_ERRORS as exc:
                    self._db_failed(exc)
                    await asyncio.sleep(reconnect.failed(self.rng))

    async def _store_status(self, conn: asyncpg.Connection, st: Any) -> None:
        at = from_ms(st.at_ms)
        args = (st.gw, st.charger_id, st.lease_version, st.state, st.limit_w,
                st.planned_w, at, st.detail)  # fmt: skip
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO schedule_status_history (gateway_id, charger_id,"
                " lease_version, state, limit_w, planned_w, at, detail)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                *args,
            )
            await conn.execute(
                "INSERT INTO schedule_status AS s (gateway_id, charger_id,"
                " lease_version, state, limit_w, planned_w, at, detail)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                " ON CONFLICT (gateway_id, charger_id) DO UPDATE SET"
                " lease_version = excluded.lease_version, state = excluded.state,"
                " limit_w = excluded.limit_w, planned_w = excluded.planned_w,"
                " at = excluded.at, detail = excluded.detail, received_at = now()"
                " WHERE s.at <= excluded.at",
                *args,
            )
        self.metrics.statuses_stored += 1

    async def _store_result(self, conn: asyncpg.Connection, res: Any) -> None:
        done = await conn.execute(
            "UPDATE commands SET result_ok = $3, result_detail = $4,"
            " result_at = $5 WHERE id = $1 AND gateway_id = $2",
            res.id,
            res.gw,
            res.ok,
            res.detail,
            from_ms(res.at_ms),
        )
        if done == "UPDATE 0":
            self.metrics.results_unknown += 1
            self._warn("unknown-cmd", 60, "scheduler: result for unknown command %r "
                       "from %s", res.id, res.gw)  # fmt: skip
            return
        self.metrics.results_stored += 1
