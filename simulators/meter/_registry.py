"""The registry of simulated meter models: one line per format. The CLI's
``--format`` choices, ``sim_base_topic`` and ``WIRE_RESOLUTION`` are derived from
it. To add a model, write its module (resolution, base topic, encoder; see
``_glow``) and add it here."""

from __future__ import annotations

from typing import Final

from protocols.meters import MeterFormat
from simulators.meter import _generic, _glow, _shelly, _tasmota
from simulators.meter._wire import SimMeterModel, WireResolution

SIM_METER_MODELS: Final[dict[MeterFormat, SimMeterModel]] = {
    model.format: model
    for model in (_glow.MODEL, _tasmota.MODEL, _shelly.MODEL, _generic.MODEL)
}
"""Every simulated meter model by its format (the ``--format`` name)."""

FORMAT_CHOICES: Final = tuple(meter_format.value for meter_format in SIM_METER_MODELS)
"""The ``--format`` choices, in registry order."""

WIRE_RESOLUTION: dict[MeterFormat, WireResolution] = {
    meter_format: model.resolution for meter_format, model in SIM_METER_MODELS.items()
}
"""Decimal places each format publishes (from the registry)."""


def sim_meter_model(meter_format: MeterFormat | str) -> SimMeterModel:
    """The model of ``meter_format``; ``ValueError`` for an unknown format name."""
    return SIM_METER_MODELS[MeterFormat(meter_format)]


def sim_base_topic(meter_format: MeterFormat | str, device_id: str) -> str:
    """The base topic to configure on the edge for a simulated meter, as
    ``protocols.meters.meter_topic_filters`` expects it."""
    return sim_meter_model(meter_format).base_topic(device_id)
