"""Canonical readings: what every meter decoder returns and the outbox stores.

A reading is one value of one quantity of one device at one instant. Every quantity
name carries its unit (``power_w``, ``import_energy_wh``). The table ``QUANTITIES``
says which quantities are cumulative registers (never thinned, never dropped, must
not run backwards) and which are instantaneous samples (may be thinned when the
gateway's disk is full).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from protocols.times import from_ms, to_ms


class QuantityKind(enum.StrEnum):
    """How a quantity behaves over time; decides the outbox's full-disk policy."""

    CUMULATIVE = "cumulative"
    INSTANT = "instant"
    EVENT = "event"


QUANTITIES: dict[str, QuantityKind] = {
    # cumulative energy registers (Wh), monotonically non-decreasing
    "import_energy_wh": QuantityKind.CUMULATIVE,
    "export_energy_wh": QuantityKind.CUMULATIVE,
    "import_energy_l1_wh": QuantityKind.CUMULATIVE,
    "import_energy_l2_wh": QuantityKind.CUMULATIVE,
    "import_energy_l3_wh": QuantityKind.CUMULATIVE,
    "gas_volume_m3": QuantityKind.CUMULATIVE,
    # instantaneous samples; power is positive when importing from the grid
    "power_w": QuantityKind.INSTANT,
    "power_l1_w": QuantityKind.INSTANT,
    "power_l2_w": QuantityKind.INSTANT,
    "power_l3_w": QuantityKind.INSTANT,
    "voltage_v": QuantityKind.INSTANT,
    "voltage_l1_v": QuantityKind.INSTANT,
    "voltage_l2_v": QuantityKind.INSTANT,
    "voltage_l3_v": QuantityKind.INSTANT,
    "current_a": QuantityKind.INSTANT,
    "current_l1_a": QuantityKind.INSTANT,
    "current_l2_a": QuantityKind.INSTANT,
    "current_l3_a": QuantityKind.INSTANT,
    "frequency_hz": QuantityKind.INSTANT,
    "power_factor": QuantityKind.INSTANT,
    "soc_pct": QuantityKind.INSTANT,
    "temperature_c": QuantityKind.INSTANT,
}

_EVENT_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Plausibility bounds: a reading outside them is an absurd value, not a measurement.
MAX_ABS_POWER_W = 1_000_000.0  # 1 MW: far above any home or small site
MAX_ENERGY_WH = 1e12
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TS = datetime(2100, 1, 1, tzinfo=UTC)


def quantity_kind(quantity: str) -> QuantityKind:
    """The kind of a quantity name; raises ``KeyError`` for an unknown name."""
    return QUANTITIES[quantity]


def is_event_kind(name: str) -> bool:
    """Event kinds are lower_snake names; they share the stream namespace with
    quantities, so they must not collide with one."""
    return bool(_EVENT_KIND.match(name)) and name not in QUANTITIES


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one device at one instant (UTC)."""

    device_id: str
    quantity: str
    ts: datetime
    value: float

    @property
    def kind(self) -> QuantityKind:
        return QUANTITIES[self.quantity]


class ImplausibleReading(ValueError):
    """A decoded value that cannot be a real measurement (negative register,
    timestamp in 1970, 10 GW of household load). Counted and logged, never stored."""


def check_plausible(reading: Reading) -> None:
    """Raise ``ImplausibleReading`` if ``reading`` is absurd on its own.

    Checks that need history (a register running backwards) live with the state
    that knows the previous value: see ``edge.outbox``.
    """
    if reading.quantity not in QUANTITIES:
        raise ImplausibleReading(f"unknown quantity {reading.quantity!r}")
    if reading.ts.tzinfo is None:
        raise ImplausibleReading("timestamp has no timezone")
    if not EARLIEST_TS <= reading.ts < LATEST_TS:
        raise ImplausibleReading(f"timestamp {reading.ts.isoformat()} out of range")
    value = reading.value
    if value != value or value in (float("inf"), float("-inf")):
        raise ImplausibleReading(f"{reading.quantity} is not a finite number")
    if reading.kind is QuantityKind.CUMULATIVE and not 0 <= value <= MAX_ENERGY_WH:
        raise ImplausibleReading(
            f"{reading.quantity}={value} outside 0..{MAX_ENERGY_WH}"
        )
    if reading.quantity.startswith("power") and abs(value) > MAX_ABS_POWER_W:
        raise ImplausibleReading(
            f"{reading.quantity}={value} beyond {MAX_ABS_POWER_W} W"
        )


# the names the readings code has always used (protocols.times has the helpers)
ts_to_ms = to_ms
ms_to_ts = from_ms
