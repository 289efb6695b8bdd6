"""What every simulated meter model is made of: the decimal places it publishes,
what the device remembers between readings, and the exact-decimal helpers its
payload is written with."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from protocols.meters import MeterFormat
from simulators.household import MeterSample

TasmotaVariant = Literal["energy", "sml"]


@dataclass(frozen=True, slots=True)
class WireResolution:
    """Decimal places each format publishes, in canonical units (a Glow's kWh with 3
    decimals is Wh with 0)."""

    energy_wh: int
    power_w: int
    voltage_v: int
    current_a: int
    frequency_hz: int
    power_factor: int = 2


@dataclass(slots=True)
class DeviceMemory:
    """What a simulated device remembers between readings: its id and variant, and
    the informational period counters real devices carry (a Glow's day/week/month
    import, a Tasmota's Today/Yesterday/Period), which start counting at the first
    sample. Decoders ignore those counters."""

    device_id: str
    tasmota_variant: TasmotaVariant = "energy"
    period_start_wh: dict[str, tuple[object, float]] = field(default_factory=dict)
    yesterday_kwh: float = 0.0
    last_import_wh: float | None = None
    first_ts: datetime | None = None

    def period_kwh(self, period: str, key: object, register_wh: float) -> float:
        """Import since the start of the current day/week/month, in kWh; a period
        starts at the last register seen before it (or at the first sample)."""
        start = self.period_start_wh.get(period)
        if start is None or start[0] != key:
            base_wh = (
                register_wh if self.last_import_wh is None else self.last_import_wh
            )
            if period == "day" and start is not None:
                self.yesterday_kwh = round((base_wh - start[1]) / 1000, 3)
            start = (key, base_wh)
            self.period_start_wh[period] = start
        return round((register_wh - start[1]) / 1000, 3)


@dataclass(frozen=True, slots=True)
class SimMeterModel:
    """One simulated meter format: one module per format (``_glow``, ...), one
    line in ``_registry.SIM_METER_MODELS``."""

    format: MeterFormat
    resolution: WireResolution
    base_topic: Callable[[str], str]
    """The base topic for a device id, as ``protocols.meters.meter_topic_filters``
    expects it; the device publishes on the first filter."""
    encode: Callable[[DeviceMemory, MeterSample], bytes]
    """The payload for an already quantized sample, exactly as the device sends it."""


def exact_decimal(value: float) -> Decimal:
    """``value`` as the decimal its shortest repr spells."""
    return Decimal(repr(value))


def quantize_to(value: float, places: int) -> float:
    """``value`` rounded half-even to ``places`` decimals, in decimal."""
    exponent = Decimal(1).scaleb(-places)
    return float(exact_decimal(value).quantize(exponent, rounding=ROUND_HALF_EVEN))


def per(value: float, divisor: int) -> float:
    """``value / divisor`` exactly in decimal (6613405.0 Wh -> 6613.405 kWh), so
    that the decoder's ``* divisor`` gives ``value`` back."""
    return float(exact_decimal(value) / divisor)


def compact_json(document: object) -> bytes:
    """``document`` as compact JSON bytes (no spaces, no NaN)."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
