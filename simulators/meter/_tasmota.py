"""A Tasmota on MQTT (``tele/<device>/SENSOR``): its ``ENERGY`` block, or an SML
reading head (``--tasmota-variant sml``)."""

from __future__ import annotations

import math

from protocols.meters import MeterFormat
from simulators.household import MeterSample
from simulators.meter._wire import (
    DeviceMemory,
    SimMeterModel,
    WireResolution,
    compact_json,
    per,
)


def encode_tasmota(memory: DeviceMemory, sample: MeterSample) -> bytes:
    """The Tasmota ``SENSOR`` payload: its ``ENERGY`` block or an ``SML`` block."""
    local_time = sample.ts.strftime("%Y-%m-%dT%H:%M:%S")
    phases = sample.phases
    three_phase = len(phases) == 3
    if memory.tasmota_variant == "sml":
        block: dict[str, object] = {
            "Total_in": per(sample.import_energy_wh, 1000),
            "Total_out": per(sample.export_energy_wh, 1000),
            "Power_curr": sample.power_w,
        }
        if three_phase:
            for index, phase in enumerate(phases, start=1):
                block[f"Power_L{index}"] = phase.power_w
        return compact_json({"Time": local_time, "SML": block})

    def per_phase(values: list[float]) -> float | list[float]:
        return values if three_phase else values[0]

    today_kwh = memory.period_kwh("day", sample.ts.date(), sample.import_energy_wh)
    period_wh = (
        0
        if memory.last_import_wh is None
        else round(sample.import_energy_wh - memory.last_import_wh)
    )
    apparent = [round(p.voltage_v * p.current_a) for p in phases]
    reactive = [
        round(math.sqrt(max(0.0, s * s - p.power_w * p.power_w)))
        for s, p in zip(apparent, phases, strict=True)
    ]
    first_ts = memory.first_ts or sample.ts
    energy: dict[str, object] = {
        "TotalStartTime": first_ts.strftime("%Y-%m-%dT%H:%M:%S"),
        "Total": per(sample.import_energy_wh, 1000),
        "Yesterday": memory.yesterday_kwh,
        "Today": today_kwh,
        "Period": period_wh,
        "Power": per_phase([p.power_w for p in phases]),
        "ApparentPower": per_phase([float(s) for s in apparent]),
        "ReactivePower": per_phase([float(r) for r in reactive]),
        "Factor": per_phase([p.power_factor for p in phases]),
        "Frequency": sample.frequency_hz,
        "Voltage": per_phase([p.voltage_v for p in phases]),
        "Current": per_phase([p.current_a for p in phases]),
        "ExportActive": per(sample.export_energy_wh, 1000),
    }
    return compact_json({"Time": local_time, "ENERGY": energy})


MODEL = SimMeterModel(
    format=MeterFormat.TASMOTA,
    resolution=WireResolution(0, 0, 0, 3, 0),
    base_topic=lambda device_id: f"tele/{device_id}",
    encode=encode_tasmota,
)
