"""A seeded, deterministic UK-like year of half-hourly import prices and carbon.

There is no internet here, so the demo, the tests and ``fusebox bench planner`` use
this synthetic year (shipped pre-generated in ``fusebox/data/``). The model, per day
``d`` and half-hour slot ``k`` (times in UTC, which is UK winter time; summer's hour
of BST is ignored):

* **Wind** ``w_d`` in [0, 1]: an AR(1) process (``w = 0.7 w_prev + 0.3 noise``) around
  a seasonal mean (0.55 in January, 0.3 in July), plus a small intra-day wobble. Windy
  days make power cheap and green at the same time: that correlation is the point.
* **Wholesale price** (p/kWh): a seasonal level ``11 + 3 cos(2 pi (doy - 15) / 365)``
  (winter dearer), times the daily shape (overnight trough 00:00-05:00 at 0.6, morning
  ramp, daytime 1.0, a summer solar dip around 12:00, the 16:00-19:00 peak at 1.5,
  evening decline), minus a wind discount ``8 w^2`` that is twice as strong at night;
  so windy nights go below zero.
* **Import price** (Agile-like): ``2.2 x wholesale + 12 p in 16:00-19:00``, capped at
  100 p, plus Gaussian noise (sd 0.8 p), rounded to 0.01 p. Negative wholesale prices
  pass through uncapped (Agile pays you on those slots).
* **Carbon intensity** (gCO2/kWh): a seasonal level ``190 + 50 cos(...)`` times the
  daily shape (0.8 overnight, 1.15 at the evening peak, a midday solar dip in
  summer), times ``1 - 0.65 w``, plus noise (sd 8), floored at 20, rounded to 1 g.

The same seed gives the same year, byte for byte (only :class:`random.Random`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

from protocols.planning.tariffs import CARBON_UNIT, PRICE_UNIT, SLOT, SlotCurve

SLOTS_PER_DAY = 48


@dataclass(frozen=True)
class SampleYear:
    """A generated year: import prices (p/kWh) and carbon intensity (gCO2/kWh)."""

    prices: SlotCurve
    carbon: SlotCurve


def _price_shape(hour: float, summer: float) -> float:
    """Relative wholesale level by UTC hour; ``summer`` (0-1) deepens the solar dip."""
    if hour < 5.0:
        base = 0.6
    elif hour < 7.0:
        base = 0.6 + 0.4 * (hour - 5.0) / 2.0
    elif hour < 16.0:
        base = 1.0 - 0.35 * summer * math.exp(-(((hour - 12.5) / 2.0) ** 2))
    elif hour < 19.0:
        base = 1.5
    elif hour < 23.0:
        base = 1.15 - 0.45 * (hour - 19.0) / 4.0
    else:
        base = 0.7 - 0.1 * (hour - 23.0)
    return base


def _carbon_shape(hour: float, summer: float) -> float:
    """Relative carbon intensity by UTC hour."""
    if hour < 5.0:
        base = 0.8
    elif hour < 8.0:
        base = 0.8 + 0.2 * (hour - 5.0) / 3.0
    elif hour < 16.0:
        base = 1.0 - 0.3 * summer * math.exp(-(((hour - 12.5) / 2.5) ** 2))
    elif hour < 20.0:
        base = 1.15
    else:
        base = 1.15 - 0.35 * (hour - 20.0) / 4.0
    return base


def generate_sample_year(
    seed: int = 2025, start: datetime | None = None, days: int = 365
) -> SampleYear:
    """Generate ``days`` days of half-hourly prices and carbon from ``start``.

    ``start`` defaults to 2025-01-01T00:00Z and must be a UTC midnight.
    """
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    if start.astimezone(UTC).time() != datetime.min.time():
        raise ValueError("start must be a UTC midnight")
    rng = random.Random(seed)
    prices: list[float] = []
    carbon: list[float] = []
    wind = 0.5
    for d in range(days):
        day = start + SLOT * (SLOTS_PER_DAY * d)
        doy = day.timetuple().tm_yday
        season = math.cos(2.0 * math.pi * (doy - 15) / 365.0)  # +1 mid-Jan, -1 July
        summer = (1.0 - season) / 2.0
        wind_mean = 0.425 + 0.125 * season
        wind = 0.7 * wind + 0.3 * min(1.0, max(0.0, rng.gauss(wind_mean, 0.3)))
        wind = min(1.0, max(0.0, wind))
        level = 11.0 + 3.0 * season
        c_level = 190.0 + 50.0 * season
        wobble_phase = rng.uniform(0.0, 2.0 * math.pi)
        for k in range(SLOTS_PER_DAY):
            hour = k / 2.0
            w = min(1.0, max(0.0, wind + 0.1 * math.sin(wobble_phase + hour / 3.0)))
            night = hour < 6.0 or hour >= 22.0
            wholesale = level * _price_shape(hour, summer) - 8.0 * w * w * (
                2.0 if night else 1.0
            )
            price = 2.2 * wholesale if wholesale > 0 else wholesale
            if 16.0 <= hour < 19.0:
                price += 12.0
            price = min(100.0, price + rng.gauss(0.0, 0.8))
            prices.append(round(price, 2))
            ci = c_level * _carbon_shape(hour, summer) * (1.0 - 0.65 * w)
            ci += rng.gauss(0.0, 8.0)
            carbon.append(float(round(max(20.0, ci))))
    return SampleYear(
        prices=SlotCurve(start, tuple(prices), PRICE_UNIT),
        carbon=SlotCurve(start, tuple(carbon), CARBON_UNIT),
    )
