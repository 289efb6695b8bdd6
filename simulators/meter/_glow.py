"""A Hildebrand Glow (IHD/CAD) on MQTT: ``glow/<device>/SENSOR/electricitymeter``."""

from __future__ import annotations

from protocols.meters import MeterFormat
from simulators.household import MeterSample
from simulators.meter._wire import (
    DeviceMemory,
    SimMeterModel,
    WireResolution,
    compact_json,
    per,
)


def encode_glow(memory: DeviceMemory, sample: MeterSample) -> bytes:
    """The Glow ``electricitymeter`` payload (energy in kWh, power in kW)."""
    ts = sample.ts
    iso_week = ts.isocalendar()[:2]
    register_wh = sample.import_energy_wh
    return compact_json(
        {
            "electricitymeter": {
                "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "energy": {
                    "export": {
                        "cumulative": per(sample.export_energy_wh, 1000),
                        "units": "kWh",
                    },
                    "import": {
                        "cumulative": per(register_wh, 1000),
                        "day": memory.period_kwh("day", ts.date(), register_wh),
                        "week": memory.period_kwh("week", iso_week, register_wh),
                        "month": memory.period_kwh(
                            "month", (ts.year, ts.month), register_wh
                        ),
                        "units": "kWh",
                        "mpan": "1900012345678",
                        "supplier": "Fusebox Sim Energy",
                        "price": {"unitrate": 0.2450, "standingcharge": 0.6040},
                    },
                },
                "power": {"value": per(sample.power_w, 1000), "units": "kW"},
            }
        }
    )


MODEL = SimMeterModel(
    format=MeterFormat.GLOW,
    resolution=WireResolution(0, 0, 1, 3, 2),
    base_topic=lambda device_id: f"glow/{device_id}",
    encode=encode_glow,
)
