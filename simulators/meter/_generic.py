"""The simulator's generic JSON meter, described by ``SIM_GENERIC_MAPPING``."""

from __future__ import annotations

from protocols.meters import FieldMapping, GenericMapping, MeterFormat
from protocols.readings import ts_to_ms
from simulators.household import MeterSample
from simulators.meter._wire import (
    DeviceMemory,
    SimMeterModel,
    WireResolution,
    compact_json,
    per,
)

SIM_GENERIC_MAPPING = GenericMapping(
    fields=(
        FieldMapping(path="meter.energy_kwh", quantity="import_energy_wh", unit="kWh"),
        FieldMapping(
            path="meter.export_kwh",
            quantity="export_energy_wh",
            unit="kWh",
            required=False,
        ),
        FieldMapping(path="meter.power_kw", quantity="power_w", unit="kW"),
        FieldMapping(path="meter.voltage_v", quantity="voltage_v", required=False),
        FieldMapping(path="meter.current_a", quantity="current_a", required=False),
        *(
            FieldMapping(
                path=f"meter.phases.{index}.{key}",
                quantity=quantity.format(n=index + 1),
                unit=unit,
                required=False,
            )
            for index in range(3)
            for key, quantity, unit in (
                ("power_kw", "power_l{n}_w", "kW"),
                ("voltage_v", "voltage_l{n}_v", "V"),
                ("current_a", "current_l{n}_a", "A"),
            )
        ),
    ),
    timestamp_path="ts",
    timestamp_format="unix_ms",
)
"""The ``GenericMapping`` of the simulator's generic format: configure the edge's
generic meter with it. Payload on ``sim/<device>/reading``::

    {"ts": 1714586400000,
     "meter": {"energy_kwh": 6613.405, "export_kwh": 0.0, "power_kw": 0.951,
               "voltage_v": 231.4, "current_a": 4.33}}

(three-phase: ``"phases": [{"power_kw", "voltage_v", "current_a"} x 3]`` in place
of ``voltage_v``/``current_a``)."""


def encode_generic(memory: DeviceMemory, sample: MeterSample) -> bytes:
    """The generic payload (``SIM_GENERIC_MAPPING`` decodes it)."""
    meter: dict[str, object] = {
        "energy_kwh": per(sample.import_energy_wh, 1000),
        "export_kwh": per(sample.export_energy_wh, 1000),
        "power_kw": per(sample.power_w, 1000),
    }
    if len(sample.phases) == 3:
        meter["phases"] = [
            {
                "power_kw": per(phase.power_w, 1000),
                "voltage_v": phase.voltage_v,
                "current_a": phase.current_a,
            }
            for phase in sample.phases
        ]
    else:
        meter["voltage_v"] = sample.phases[0].voltage_v
        meter["current_a"] = sample.phases[0].current_a
    return compact_json({"ts": ts_to_ms(sample.ts), "meter": meter})


MODEL = SimMeterModel(
    format=MeterFormat.GENERIC,
    resolution=WireResolution(0, 0, 1, 3, 2),
    base_topic=lambda device_id: f"sim/{device_id}/reading",
    encode=encode_generic,
)
