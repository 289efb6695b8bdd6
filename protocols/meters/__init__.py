"""Smart-meter payload decoders: MQTT message bytes in, canonical ``Reading``s out.

Pure: no I/O, no clock. The caller passes ``now`` (an aware datetime) which stamps
readings from payloads that carry no timestamp of their own.

Each model is a declarative table from source field to canonical quantity (unit in
the name) and scale, in the style of Home Assistant's HomeWizard sensor descriptions.
One entry point per model, all of the same shape::

    decode_glow(payload, *, device_id, now) -> list[Reading]
    decode_tasmota(payload, *, device_id, now, timezone="UTC",
                   sml_block="SML", sml_fields=DEFAULT_TASMOTA_SML_FIELDS)
    decode_shelly(payload, *, device_id, now, topic, channel=0)
    decode_generic(payload, *, device_id, now, mapping: GenericMapping)

Energy registers come out in Wh (``import_energy_wh``, ``export_energy_wh``, per
phase ``import_energy_l1_wh``...), power in W (``power_w``, ``power_l1_w``...; positive
while importing), voltage in V, current in A, frequency in Hz. Every returned reading
has passed ``protocols.readings.check_plausible``. Numbers are parsed as ``Decimal``,
so a register converts exactly (``6613.405`` kWh is ``6613405.0`` Wh).

Subscribe with ``meter_topic_filters(format, base_topic)``; route each message to the
decoder of its device's format.

Errors::

    ValueError
     └── MeterDecodeError        .reason: DecodeReason, .field: str | None
           reasons: too_large, not_json, wrong_type, missing_field,
                    bad_timestamp, wrong_unit, unexpected_topic, implausible

A ``MeterDecodeError`` concerns one message: count it by ``reason``, log it, keep the
subscription. Other exceptions are caller errors (``now`` without a time zone, an
unknown ``timezone`` name: ``ValueError``) and a bad ``GenericMapping`` fails when it
is built (``pydantic.ValidationError``). ``MAX_PAYLOAD_BYTES`` (64 KiB) is checked
before anything else.
"""

from __future__ import annotations

from protocols.meters._core import (
    MAX_PAYLOAD_BYTES,
    DecodeReason,
    FieldSpec,
    MeterDecodeError,
)
from protocols.meters._generic import (
    FieldMapping,
    GenericMapping,
    TimestampFormat,
    decode_generic,
    units_for,
)
from protocols.meters._glow import GLOW_ELECTRICITY_FIELDS, decode_glow
from protocols.meters._shelly import SHELLY_COMPONENT_FIELDS, decode_shelly
from protocols.meters._tasmota import (
    DEFAULT_TASMOTA_SML_BLOCK,
    DEFAULT_TASMOTA_SML_FIELDS,
    TASMOTA_ENERGY_FIELDS,
    decode_tasmota,
)
from protocols.meters._topics import MeterFormat, meter_topic_filters

__all__ = [
    "DEFAULT_TASMOTA_SML_BLOCK",
    "DEFAULT_TASMOTA_SML_FIELDS",
    "GLOW_ELECTRICITY_FIELDS",
    "MAX_PAYLOAD_BYTES",
    "SHELLY_COMPONENT_FIELDS",
    "TASMOTA_ENERGY_FIELDS",
    "DecodeReason",
    "FieldMapping",
    "FieldSpec",
    "GenericMapping",
    "MeterDecodeError",
    "MeterFormat",
    "TimestampFormat",
    "decode_generic",
    "decode_glow",
    "decode_shelly",
    "decode_tasmota",
    "meter_topic_filters",
    "units_for",
]
