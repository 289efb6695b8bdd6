"""Samples to ``(topic, payload)`` through the model ``_registry`` has for a
format, at the resolution the format publishes."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

from protocols.meters import MeterFormat, meter_topic_filters
from simulators.household import MeterSample, PhaseSample
from simulators.meter._registry import sim_base_topic, sim_meter_model
from simulators.meter._wire import (
    DeviceMemory,
    TasmotaVariant,
    exact_decimal,
    quantize_to,
)


def quantize_sample(
    meter_format: MeterFormat | str, sample: MeterSample
) -> MeterSample:
    """``sample`` at the resolution ``meter_format`` publishes, so that decoding the
    encoded sample gives these values exactly. The total power of a three-phase
    sample becomes the exact sum of its rounded phases (Tasmota publishes only the
    phases)."""
    res = sim_meter_model(meter_format).resolution
    phases = tuple(
        PhaseSample(
            power_w=quantize_to(phase.power_w, res.power_w),
            voltage_v=quantize_to(phase.voltage_v, res.voltage_v),
            current_a=quantize_to(phase.current_a, res.current_a),
            import_energy_wh=quantize_to(phase.import_energy_wh, res.energy_wh),
            power_factor=quantize_to(phase.power_factor, res.power_factor),
        )
        for phase in sample.phases
    )
    total_power_w = float(
        sum((exact_decimal(phase.power_w) for phase in phases), Decimal(0))
    )
    return MeterSample(
        ts=sample.ts.astimezone(UTC).replace(microsecond=0),
        import_energy_wh=quantize_to(sample.import_energy_wh, res.energy_wh),
        export_energy_wh=quantize_to(sample.export_energy_wh, res.energy_wh),
        power_w=total_power_w,
        frequency_hz=quantize_to(sample.frequency_hz, res.frequency_hz),
        phases=phases,
    )


class MeterEncoder:
    """Turns samples into ``(topic, payload)`` exactly as the real device publishes.

    Stateful only for the informational period counters real devices carry (a
    Glow's day/week/month import, a Tasmota's Today/Yesterday/Period), which start
    counting at the first sample. Decoders ignore those counters.
    """

    def __init__(
        self,
        meter_format: MeterFormat | str,
        device_id: str,
        *,
        tasmota_variant: TasmotaVariant = "energy",
    ) -> None:
        self.meter_format = MeterFormat(meter_format)
        self.device_id = device_id
        self.tasmota_variant = tasmota_variant
        self.model = sim_meter_model(self.meter_format)
        # The first filter the edge subscribes to is where the device publishes.
        self.topic = meter_topic_filters(
            self.meter_format, sim_base_topic(self.meter_format, device_id)
        )[0]
        self.memory = DeviceMemory(device_id, tasmota_variant)

    def quantize(self, sample: MeterSample) -> MeterSample:
        """``quantize_sample`` for this encoder's format."""
        return quantize_sample(self.meter_format, sample)

    def encode(self, sample: MeterSample) -> tuple[str, bytes]:
        """The topic and payload for ``sample`` (quantized first)."""
        sample = self.quantize(sample)
        if self.memory.first_ts is None:
            self.memory.first_ts = sample.ts
        payload = self.model.encode(self.memory, sample)
        self.memory.last_import_wh = sample.import_energy_wh
        return self.topic, payload
