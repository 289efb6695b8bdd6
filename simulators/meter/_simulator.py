"""``MeterSimulator``: the household model, the encoder, the publisher and the
ledger of one meter."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from simulators.household import HouseholdLoad, MeterSample
from simulators.meter._config import MeterSimConfig
from simulators.meter._encoder import MeterEncoder
from simulators.meter._ledger import LedgerEntry, last_ledger_entry
from simulators.meter._publisher import _Publisher, _wait

log = logging.getLogger("fusebox.sim.meter")

PROGRESS_EVERY_READINGS = 1000


class MeterSimulator:
    """One simulated meter: household model, encoder, publisher and ledger."""

    def __init__(self, config: MeterSimConfig) -> None:
        self.config = config
        self.encoder = MeterEncoder(
            config.meter_format,
            config.device_id,
            tasmota_variant=config.tasmota_variant,
        )
        self.published = 0
        resume = (
            last_ledger_entry(config.ledger_path)
            if config.resume_ledger and config.ledger_path is not None
            else None
        )
        if resume is not None:
            if (
                resume.device != config.device_id
                or resume.format != config.meter_format
            ):
                raise ValueError(
                    f"ledger {config.ledger_path} is for {resume.format} meter "
                    f"{resume.device!r}, not {config.meter_format} {config.device_id!r}"
                )
            origin, first_index = resume.ts, 1
            import_wh, export_wh = resume.import_energy_wh, resume.export_energy_wh
            phase_wh = resume.phase_import_energy_wh
            if phase_wh is not None and len(phase_wh) != config.phases:
                raise ValueError(
                    f"ledger has {len(phase_wh)} phases, not {config.phases}"
                )
            log.info(
                "resuming %s after %s at %.0f Wh", config.device_id, origin, import_wh
            )
        else:
            if config.simulated:
                origin = datetime.fromtimestamp(
                    math.ceil(config.clock.timestamp()), UTC
                )
            else:
                origin = config.start or datetime.now(UTC).replace(microsecond=0)
            first_index = 0
            seeded = random.Random(config.seed)
            import_kwh = (
                config.initial_import_kwh
                if config.initial_import_kwh is not None
                else seeded.uniform(5_000.0, 40_000.0)
            )
            import_wh, export_wh, phase_wh = import_kwh * 1000.0, 0.0, None
        household_start = origin
        clock_start = config.clock.start
        if resume is None and clock_start is not None and clock_start <= origin:
            # the household runs from the clock's start: the same seed gives the
            # same household in every run of a scenario, whenever the meter starts
            household_start = clock_start
        self._origin = origin
        self._first_index = first_index
        # simulated clock: when the next reading is due (epoch seconds)
        self._next_s = origin.timestamp() + (config.interval_s if resume else 0.0)
        self._last_s: int | None = math.floor(origin.timestamp()) if resume else None
        self._extra_w = 0.0
        self._unreadable: set[Path] = set()
        self.household = HouseholdLoad(
            seed=config.seed,
            start=household_start,
            import_energy_wh=import_wh,
            export_energy_wh=export_wh,
            phases=config.phases,
            phase_import_energy_wh=phase_wh,
            timezone=config.household_timezone,
        )

    def sim_time(self, n: int) -> datetime:
        """Simulated instant of the ``n``-th reading of this run (``n`` from 1)."""
        offset_s = math.floor((n - 1 + self._first_index) * self.config.step_s)
        return self._origin + timedelta(seconds=offset_s)

    def next_clock_time(self) -> datetime:
        """Simulated clock: the instant of the next reading, ``interval`` after the
        last one, or the clock's now (to the second) if that is more than an
        interval behind it (an outage: carry on, no burst)."""
        interval = self.config.interval_s
        now_s = self.config.clock.timestamp()
        due = self._next_s
        if due < now_s - interval:
            due = math.floor(now_s)
        ts_s = math.floor(due)
        if self._last_s is not None:
            ts_s = max(ts_s, self._last_s + 1)
        self._next_s = due + interval
        self._last_s = ts_s
        return datetime.fromtimestamp(ts_s, UTC)

    def extra_load_w(self) -> float:
        """The loads behind the meter from ``--add-load-file`` and ``--spike-file``
        now (W)."""
        total = 0.0
        for path in self.config.add_load_paths:
            total += self._read_watts(path, "power_w")
        spike = self.config.spike_path
        if spike is not None:
            total += self._read_watts(spike, "add_w")
        return total

    def _read_watts(self, path: Path, key: str) -> float:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0.0
        except (OSError, ValueError) as exc:
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("load file %s unreadable (%s): adds nothing", path, exc)
            return 0.0
        value = document.get(key) if isinstance(document, dict) else None
        try:
            watts = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            watts = math.nan
        if not math.isfinite(watts) or watts < 0:
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("load file %s has no %s >= 0: adds nothing", path, key)
            return 0.0
        self._unreadable.discard(path)
        return watts

    def prepare(self, n: int) -> tuple[MeterSample, str, bytes]:
        """Advance the household to reading ``n`` and encode it."""
        return self.prepare_at(self.sim_time(n))

    def prepare_at(self, ts: datetime) -> tuple[MeterSample, str, bytes]:
        """Advance the household to ``ts``, add the loads behind the meter as they
        are now, and encode the reading."""
        self.household.advance_to(ts)
        if self.config.add_load_paths or self.config.spike_path is not None:
            extra_w = self.extra_load_w()
            if (extra_w > 0) != (self._extra_w > 0) or abs(
                extra_w - self._extra_w
            ) > 1000:
                log.info(
                    "meter %s: load behind the meter %.0f W (was %.0f W)",
                    self.config.device_id,
                    extra_w,
                    self._extra_w,
                )
            self._extra_w = extra_w
            self.household.set_extra_w(extra_w)
        sample = self.encoder.quantize(self.household.sample())
        topic, payload = self.encoder.encode(sample)
        return sample, topic, payload

    def ledger_entry(self, n: int, sample: MeterSample, topic: str) -> LedgerEntry:
        """The ledger entry for reading ``n`` (``sample`` as published on ``topic``)."""
        return LedgerEntry(
            n=n,
            device=self.config.device_id,
            format=self.config.meter_format.value,
            topic=topic,
            ts=sample.ts,
            import_energy_wh=sample.import_energy_wh,
            export_energy_wh=sample.export_energy_wh,
            power_w=sample.power_w,
            phase_import_energy_wh=tuple(p.import_energy_wh for p in sample.phases)
            if len(sample.phases) > 1
            else None,
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Publish readings until ``count`` is reached or ``stop`` is set; 0 when
        done, 1 if the ledger cannot be written."""
        config = self.config
        ledger: TextIO | None = None
        publisher = _Publisher(config, stop)
        loop = asyncio.get_running_loop()
        next_due = loop.time()
        last_log = time.monotonic()
        n = 1
        try:
            if config.ledger_path is not None:
                ledger = config.ledger_path.open("a", encoding="utf-8")
            while not stop.is_set() and (config.count is None or n <= config.count):
                if config.simulated:
                    ts = self.next_clock_time()
                    ahead_s = (ts - config.clock.now()).total_seconds()
                    if await _wait(stop, config.clock.real_seconds(ahead_s)):
                        break
                else:
                    if await _wait(stop, next_due - loop.time()):
                        break
                    ts = self.sim_time(n)
                # read the loads behind the meter at the moment of the reading
                sample, topic, payload = self.prepare_at(ts)
                if not await publisher.publish(topic, payload):
                    break
                if ledger is not None:
                    entry = self.ledger_entry(n, sample, topic)
                    ledger.write(entry.to_json() + "\n")
                    ledger.flush()
                self.published = n
                now_mono = time.monotonic()
                if (
                    n == 1
                    or n % PROGRESS_EVERY_READINGS == 0
                    or now_mono - last_log >= config.log_every_s
                ):
                    last_log = now_mono
                    self._log_progress(sample, publisher.reconnects)
                n += 1
                next_due += config.interval_s
                if next_due < loop.time():
                    next_due = loop.time()  # after an outage: carry on, no burst
        except OSError as exc:
            log.error("cannot write the ledger %s: %s", config.ledger_path, exc)
            return 1
        finally:
            await publisher.close()
            if ledger is not None:
                ledger.close()
        log.info(
            "meter %s stopped after %d readings (%d reconnects)",
            config.device_id,
            self.published,
            publisher.reconnects,
        )
        return 0

    def _log_progress(self, sample: MeterSample, reconnects: int) -> None:
        log.info(
            "meter %s: %d readings sent; last %s import=%.0f Wh power=%.0f W "
            "running=%s reconnects=%d",
            self.config.device_id,
            self.published,
            sample.ts.isoformat(),
            sample.import_energy_wh,
            sample.power_w,
            ",".join(self.household.running_appliances) or "-",
            reconnects,
        )
