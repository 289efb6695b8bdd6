"""A household's electrical load, second by second, for simulated smart meters.

Pure and deterministic: no clock and no I/O; the caller moves simulated time forward
with ``HouseholdLoad.advance_to(t)`` and gets a ``MeterSample`` back. The same seed,
start and settings give the same samples whatever the steps the caller takes, because
every random draw happens on a fixed grid of simulated time (every 10 s, every minute,
every 15 min, at appliance and fridge transitions), never at the caller's query times.

The load is what a UK home looks like on a smart meter:

* base load: standby (router, chargers, boiler electronics: 100-150 W per home), a
  fridge-freezer compressor cycling on and off, a little noise every 10 s;
* activity (lights, TV, computers) following the time of day, low at night, a morning
  shoulder and an evening peak from 17:00 to 21:00 local time;
* appliances as random events, more likely at their usual hours: kettle (2.2-3 kW,
  2-4 min), toaster, microwave, hob, oven with thermostat cycling, washing machine and
  dishwasher cycles (heating phases at ~2 kW between low-power phases), tumble dryer,
  vacuum cleaner and an electric shower (8.5-9.5 kW for 5-12 min).

Power is constant within each whole second and the import register is the exact
integral of it: ``import_energy_wh(t2) - import_energy_wh(t1) == sum(power_w) / 3600``
over the seconds in between (up to float rounding). A typical day is 7-11 kWh.

Loads outside the model (an EV charger behind the same meter, a test's spike) are
added with ``set_extra_w``: from that instant on they are part of the power the meter
shows and are integrated into its import register like the household's own load.
They never touch the random stream, so the household itself stays the same.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

SECONDS_PER_HOUR = 3600
NOMINAL_VOLTAGE_V = 230.0
NOMINAL_FREQUENCY_HZ = 50.0
LOAD_POWER_FACTOR = 0.95
NOISE_PERIOD_S = 10
ACTIVITY_PERIOD_S = 900
APPLIANCE_DRAW_PERIOD_S = 60


@dataclass(frozen=True, slots=True)
class PhaseSample:
    """One phase (or the only phase) of a meter at one instant."""

    power_w: float
    voltage_v: float
    current_a: float
    import_energy_wh: float
    power_factor: float = LOAD_POWER_FACTOR


@dataclass(frozen=True, slots=True)
class MeterSample:
    """What a meter shows at ``ts`` (aware UTC, whole seconds).

    ``phases`` has one entry for a single-phase supply and three (L1, L2, L3) for a
    three-phase one; ``power_w`` and ``import_energy_wh`` are the totals.
    """

    ts: datetime
    import_energy_wh: float
    export_energy_wh: float
    power_w: float
    frequency_hz: float
    phases: tuple[PhaseSample, ...]


def hourly_profile(
    levels: Mapping[tuple[int, int], float], *, default: float
) -> tuple[float, ...]:
    """24 values, one per local hour: ``levels`` maps ``(first_hour, end_hour)``
    (end exclusive) to a value, other hours get ``default``."""
    profile = [default] * 24
    for (first, end), level in levels.items():
        if not 0 <= first < end <= 24:
            raise ValueError(f"bad hour range {(first, end)}")
        for hour in range(first, end):
            profile[hour] = level
    return tuple(profile)


@dataclass(frozen=True, slots=True)
class Appliance:
    """An appliance that runs as random events.

    ``uses_per_day`` runs are spread over the day by ``hourly_weights`` (24 relative
    weights, local time). A run draws its power from ``power_w`` and its length from
    ``duration_s``; ``stages`` splits the run into consecutive parts, each
    ``(fraction of the run, fraction of the power)`` (a washing machine heats, then
    washes at low power, then spins).
    """

    name: str
    power_w: tuple[float, float]
    duration_s: tuple[int, int]
    uses_per_day: float
    hourly_weights: tuple[float, ...]
    stages: tuple[tuple[float, float], ...] = ((1.0, 1.0),)

    def __post_init__(self) -> None:
        if len(self.hourly_weights) != 24 or sum(self.hourly_weights) <= 0:
            raise ValueError(f"{self.name}: hourly_weights needs 24 values, sum > 0")
        if not math.isclose(sum(fraction for fraction, _ in self.stages), 1.0):
            raise ValueError(f"{self.name}: stage fractions must add up to 1")

    def start_probability_per_minute(self, local_hour: int) -> float:
        """Chance that a run starts in one minute of ``local_hour``."""
        share = self.hourly_weights[local_hour] / sum(self.hourly_weights)
        return self.uses_per_day * share / 60.0


_NIGHT = 0.02
DEFAULT_APPLIANCES: tuple[Appliance, ...] = (
    Appliance(
        "kettle",
        (2200.0, 3000.0),
        (120, 240),
        3.0,
        hourly_profile(
            {(0, 6): _NIGHT, (6, 9): 3.0, (9, 16): 1.0, (16, 22): 2.0}, default=0.3
        ),
    ),
    Appliance(
        "toaster",
        (800.0, 1200.0),
        (120, 240),
        0.5,
        hourly_profile({(6, 10): 3.0, (10, 20): 0.3}, default=_NIGHT),
    ),
    Appliance(
        "microwave",
        (900.0, 1250.0),
        (60, 360),
        1.2,
        hourly_profile({(12, 14): 2.0, (17, 21): 3.0, (7, 12): 0.5}, default=0.1),
    ),
    Appliance(
        "hob",
        (1200.0, 2000.0),
        (600, 1800),
        0.7,
        hourly_profile({(12, 13): 1.0, (17, 20): 4.0}, default=0.05),
    ),
    Appliance(
        "oven",
        (1800.0, 2500.0),
        (1800, 3600),
        0.4,
        hourly_profile({(11, 13): 1.0, (16, 19): 4.0}, default=0.05),
        stages=((0.25, 1.0), (0.75, 0.55)),
    ),
    Appliance(
        "washing_machine",
        (1800.0, 2200.0),
        (3600, 7200),
        0.45,
        hourly_profile({(8, 20): 1.0}, default=0.05),
        stages=((0.05, 0.1), (0.2, 1.0), (0.55, 0.12), (0.2, 0.25)),
    ),
    Appliance(
        "dishwasher",
        (1800.0, 2100.0),
        (5400, 8100),
        0.3,
        hourly_profile({(19, 23): 3.0, (12, 15): 0.5}, default=0.05),
        stages=((0.1, 0.05), (0.25, 1.0), (0.35, 0.05), (0.2, 1.0), (0.1, 0.02)),
    ),
    Appliance(
        "tumble_dryer",
        (2000.0, 2500.0),
        (3600, 5400),
        0.12,
        hourly_profile({(9, 21): 1.0}, default=0.02),
        stages=((0.85, 1.0), (0.15, 0.1)),
    ),
    Appliance(
        "vacuum_cleaner",
        (700.0, 1400.0),
        (600, 1500),
        0.2,
        hourly_profile({(9, 18): 1.0}, default=0.01),
    ),
    Appliance(
        "electric_shower",
        (8500.0, 9500.0),
        (300, 720),
        0.5,
        hourly_profile({(6, 9): 4.0, (19, 23): 1.5}, default=0.05),
    ),
)

ACTIVITY_W_BY_HOUR: tuple[float, ...] = (
    *(40, 20, 15, 15, 15, 20, 90, 180, 160, 80, 70, 70),
    *(90, 80, 70, 80, 130, 260, 330, 360, 340, 280, 180, 90),
)  # fmt: skip
"""Lights, TV and computers by local hour (W, before the household's own scale)."""


@dataclass(slots=True)
class _Run:
    appliance: int
    phase: int
    stage_ends_s: tuple[int, ...]
    stage_powers_w: tuple[float, ...]

    def power_at(self, t_s: int) -> float:
        for end_s, power_w in zip(self.stage_ends_s, self.stage_powers_w, strict=True):
            if t_s < end_s:
                return power_w
        return 0.0


def _whole_second(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("simulated time must be timezone-aware")
    return math.floor(ts.timestamp())


class HouseholdLoad:
    """One household's load and its meter's registers.

    ``start`` is the first simulated instant (aware; truncated to the second).
    ``import_energy_wh`` (and, for three phases, ``phase_import_energy_wh``) set
    the registers at ``start``; the model has no generation, so the export register
    stays at ``export_energy_wh``. ``timezone`` is the household's, for the time of
    day. Move time forward with ``advance_to``; it never goes back.
    """

    def __init__(
        self,
        *,
        seed: int,
        start: datetime,
        import_energy_wh: float = 0.0,
        export_energy_wh: float = 0.0,
        phases: int = 1,
        phase_import_energy_wh: Sequence[float] | None = None,
        timezone: str = "Europe/London",
        appliances: Sequence[Appliance] = DEFAULT_APPLIANCES,
    ) -> None:
        if phases not in (1, 3):
            raise ValueError("phases must be 1 or 3")
        if import_energy_wh < 0 or export_energy_wh < 0:
            raise ValueError("registers cannot be negative")
        self._rng = random.Random(seed)
        self._tz: tzinfo = UTC if timezone.upper() == "UTC" else ZoneInfo(timezone)
        self._appliances = tuple(appliances)
        self._phases = phases
        self._t_s = _whole_second(start)
        self._import_wh = float(import_energy_wh)
        self._export_wh = float(export_energy_wh)
        if phase_import_energy_wh is None:
            share = self._import_wh / phases
            self._phase_import_wh = [share] * phases
        elif len(phase_import_energy_wh) != phases:
            raise ValueError(f"phase_import_energy_wh needs {phases} values")
        else:
            self._phase_import_wh = [float(value) for value in phase_import_energy_wh]

        rng = self._rng
        # What makes this household itself rather than the average one.
        self._standby_w = rng.uniform(100.0, 150.0)
        self._fridge_w = rng.uniform(80.0, 120.0)
        self._activity_scale = rng.uniform(0.7, 1.1)
        self._appliance_phase = [rng.randrange(phases) for _ in self._appliances]
        self._voltage_offset_v = [rng.uniform(-4.0, 4.0) for _ in range(phases)]

        self._fridge_on = rng.random() < 0.3
        self._fridge_toggle_s = self._t_s + rng.randint(60, 1800)
        self._runs: list[_Run] = []
        self._noise_w = 0.0
        self._activity_factor = 1.0
        self._frequency_hz = NOMINAL_FREQUENCY_HZ
        self._voltage_v = [NOMINAL_VOLTAGE_V] * phases
        self._phase_power_w = [0.0] * phases
        self._next_change_s = self._t_s
        self._extra_w = [0.0] * phases
        self._apply_changes(initial=True)

    @property
    def now(self) -> datetime:
        """The current simulated instant."""
        return datetime.fromtimestamp(self._t_s, tz=UTC)

    @property
    def extra_w(self) -> float:
        """The load added with ``set_extra_w`` (total over the phases)."""
        return sum(self._extra_w)

    def set_extra_w(self, watts: float, *, phase: int | None = None) -> None:
        """From ``now`` on, add ``watts`` (>= 0) of load outside the model: on
        ``phase`` (1-3), or spread evenly over the supply's phases. Replaces the
        previous extra load; it stays until set again."""
        if not math.isfinite(watts) or watts < 0:
            raise ValueError(f"extra load must be a finite W >= 0, got {watts!r}")
        if phase is None:
            self._extra_w = [watts / self._phases] * self._phases
        elif 1 <= phase <= self._phases:
            self._extra_w = [0.0] * self._phases
            self._extra_w[phase - 1] = watts
        else:
            raise ValueError(f"phase must be 1..{self._phases}, got {phase}")

    def advance_to(self, ts: datetime) -> MeterSample:
        """Run the household up to ``ts`` (truncated to the second) and return the
        meter there. Raises ``ValueError`` if ``ts`` is before ``now``."""
        target_s = _whole_second(ts)
        if target_s < self._t_s:
            raise ValueError(f"cannot go back in time from {self.now} to {ts}")
        while self._t_s < target_s:
            until_s = min(self._next_change_s, target_s)
            elapsed_h = (until_s - self._t_s) / SECONDS_PER_HOUR
            powers = self._metered_power_w()
            for phase, power_w in enumerate(powers):
                self._phase_import_wh[phase] += power_w * elapsed_h
            self._import_wh += sum(powers) * elapsed_h
            self._t_s = until_s
            if self._t_s == self._next_change_s:
                self._apply_changes(initial=False)
        return self.sample()

    def _metered_power_w(self) -> list[float]:
        """Per-phase power the meter sees: the household plus the extra load."""
        return [
            own + extra
            for own, extra in zip(self._phase_power_w, self._extra_w, strict=True)
        ]

    def sample(self) -> MeterSample:
        """The meter at ``now`` without moving time."""
        metered = self._metered_power_w()
        phases = tuple(
            PhaseSample(
                power_w=power_w,
                voltage_v=voltage_v,
                current_a=power_w / (voltage_v * LOAD_POWER_FACTOR),
                import_energy_wh=import_wh,
            )
            for power_w, voltage_v, import_wh in zip(
                metered,
                self._voltage_v,
                self._phase_import_wh,
                strict=True,
            )
        )
        return MeterSample(
            ts=self.now,
            import_energy_wh=self._import_wh,
            export_energy_wh=self._export_wh,
            power_w=sum(metered),
            frequency_hz=self._frequency_hz,
            phases=phases,
        )

    @property
    def running_appliances(self) -> tuple[str, ...]:
        """Names of the appliances running at ``now`` (for logs and tests)."""
        return tuple(self._appliances[run.appliance].name for run in self._runs)

    # --- the fixed grid of changes ------------------------------------------------

    def _local_hour(self) -> int:
        return datetime.fromtimestamp(self._t_s, tz=self._tz).hour

    def _apply_changes(self, *, initial: bool) -> None:
        """Everything that happens at ``self._t_s``, in a fixed order, then the
        power until the next change."""
        rng = self._rng
        t_s = self._t_s
        hour = self._local_hour()
        if initial or t_s % NOISE_PERIOD_S == 0:
            self._noise_w = max(-25.0, min(25.0, rng.gauss(0.0, 8.0)))
            self._frequency_hz = max(
                49.85, min(50.15, self._frequency_hz + rng.gauss(0.0, 0.01))
            )
            self._voltage_v = [
                NOMINAL_VOLTAGE_V + offset + rng.gauss(0.0, 0.8)
                for offset in self._voltage_offset_v
            ]
        if initial or t_s % ACTIVITY_PERIOD_S == 0:
            self._activity_factor = rng.uniform(0.6, 1.4)
        if t_s >= self._fridge_toggle_s:
            self._fridge_on = not self._fridge_on
            on_s, off_s = (900, 1500) if self._fridge_on else (1800, 3000)
            self._fridge_toggle_s = t_s + rng.randint(on_s, off_s)
        self._runs = [run for run in self._runs if t_s < run.stage_ends_s[-1]]
        if t_s % APPLIANCE_DRAW_PERIOD_S == 0:
            running = {run.appliance for run in self._runs}
            for index, appliance in enumerate(self._appliances):
                # Draw for every appliance every minute, running or not, so that the
                # random stream does not depend on what happened before.
                draw = rng.random()
                if index in running:
                    continue
                if draw < appliance.start_probability_per_minute(hour):
                    self._runs.append(self._start_run(index, appliance, t_s))
        self._recompute_power(hour)

    def _start_run(self, index: int, appliance: Appliance, t_s: int) -> _Run:
        rng = self._rng
        power_w = rng.uniform(*appliance.power_w)
        duration_s = rng.randint(*appliance.duration_s)
        ends: list[int] = []
        elapsed = 0.0
        for fraction, _ in appliance.stages:
            elapsed += fraction * duration_s
            ends.append(t_s + max(1, round(elapsed)))
        return _Run(
            appliance=index,
            phase=self._appliance_phase[index],
            stage_ends_s=tuple(ends),
            stage_powers_w=tuple(power_w * share for _, share in appliance.stages),
        )

    def _recompute_power(self, hour: int) -> None:
        t_s = self._t_s
        phases = self._phases
        activity_w = (
            ACTIVITY_W_BY_HOUR[hour] * self._activity_scale * self._activity_factor
        )
        shared_w = (self._standby_w + activity_w) / phases
        powers = [shared_w] * phases
        powers[0] += self._noise_w + (self._fridge_w if self._fridge_on else 0.0)
        for run in self._runs:
            powers[run.phase] += run.power_at(t_s)
        self._phase_power_w = [max(1.0, power_w) for power_w in powers]
        next_grid_s = (t_s // NOISE_PERIOD_S + 1) * NOISE_PERIOD_S
        next_stage_s = min(
            (end for run in self._runs for end in run.stage_ends_s if end > t_s),
            default=next_grid_s,
        )
        self._next_change_s = min(next_grid_s, next_stage_s, self._fridge_toggle_s)
