"""A Shelly Pro EM (single phase, ``em1``) or Pro 3EM (``--phases 3``, ``em``):
its ``NotifyStatus`` events on ``<device>/events/rpc``."""

from __future__ import annotations

from protocols.meters import MeterFormat
from simulators.household import MeterSample
from simulators.meter._wire import (
    DeviceMemory,
    SimMeterModel,
    WireResolution,
    compact_json,
)


def encode_shelly(memory: DeviceMemory, sample: MeterSample) -> bytes:
    """The Shelly ``NotifyStatus`` event with the meter's status."""
    phases = sample.phases
    params: dict[str, object] = {"ts": sample.ts.timestamp()}
    if len(phases) == 3:
        em: dict[str, object] = {"id": 0}
        emdata: dict[str, object] = {"id": 0}
        for letter, phase in zip("abc", phases, strict=True):
            em[f"{letter}_current"] = phase.current_a
            em[f"{letter}_voltage"] = phase.voltage_v
            em[f"{letter}_act_power"] = phase.power_w
            em[f"{letter}_aprt_power"] = round(phase.voltage_v * phase.current_a, 1)
            em[f"{letter}_pf"] = phase.power_factor
            em[f"{letter}_freq"] = sample.frequency_hz
            emdata[f"{letter}_total_act_energy"] = phase.import_energy_wh
            emdata[f"{letter}_total_act_ret_energy"] = 0.0
        em["n_current"] = None
        em["total_current"] = round(sum(p.current_a for p in phases), 3)
        em["total_act_power"] = sample.power_w
        em["total_aprt_power"] = round(
            sum(p.voltage_v * p.current_a for p in phases), 3
        )
        em["user_calibrated_phase"] = []
        emdata["total_act"] = sample.import_energy_wh
        emdata["total_act_ret"] = sample.export_energy_wh
        params["em:0"] = em
        params["emdata:0"] = emdata
    else:
        (phase,) = phases
        params["em1:0"] = {
            "id": 0,
            "current": phase.current_a,
            "voltage": phase.voltage_v,
            "act_power": phase.power_w,
            "aprt_power": round(phase.voltage_v * phase.current_a, 1),
            "pf": phase.power_factor,
            "freq": sample.frequency_hz,
            "calibration": "factory",
        }
        params["em1data:0"] = {
            "id": 0,
            "total_act_energy": sample.import_energy_wh,
            "total_act_ret_energy": sample.export_energy_wh,
        }
    return compact_json(
        {
            "src": memory.device_id,
            "dst": f"{memory.device_id}/events",
            "method": "NotifyStatus",
            "params": params,
        }
    )


MODEL = SimMeterModel(
    format=MeterFormat.SHELLY,
    resolution=WireResolution(2, 1, 1, 3, 1),
    base_topic=lambda device_id: device_id,
    encode=encode_shelly,
)
