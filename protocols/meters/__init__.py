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

The models are registered in ``METER_MODELS`` (``_registry``): one ``MeterModel``
per ``type``, holding its config class (``GlowMeter``...: the keys of a
``[[meters]]`` table), its decoder, its topic filters, its line in the docs and its
fixture folder. The edge's config union (``meter_config_union``) and driver factory
are built from it; ``_registry``'s docstring says how to add a model.

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
    GenericMeter,
    TimestampFormat,
    decode_generic,
    units_for,
)
from protocols.meters._glow import GLOW_ELECTRICITY_FIELDS, GlowMeter, decode_glow
from protocols.meters._model import (
    DEVICE_ID_PATTERN,
    MeterModel,
    MeterSettings,
    check_base_topic,
)
from protocols.meters._registry import (
    MARKDOWN_BEGIN,
    MARKDOWN_END,
    METER_MODELS,
    MeterFormat,
    meter_config_union,
    meter_model,
    meter_models_markdown,
    meter_topic_filters,
    meter_type_choices,
)
from protocols.meters._shelly import (
    SHELLY_COMPONENT_FIELDS,
    ShellyMeter,
    decode_shelly,
)
from protocols.meters._tasmota import (
    DEFAULT_TASMOTA_SML_BLOCK,
    DEFAULT_TASMOTA_SML_FIELDS,
    TASMOTA_ENERGY_FIELDS,
    TasmotaMeter,
    decode_tasmota,
)

__all__ = [
    "DEFAULT_TASMOTA_SML_BLOCK",
    "DEFAULT_TASMOTA_SML_FIELDS",
    "DEVICE_ID_PATTERN",
    "GLOW_ELECTRICITY_FIELDS",
    "MARKDOWN_BEGIN",
    "MARKDOWN_END",
    "MAX_PAYLOAD_BYTES",
    "METER_MODELS",
    "SHELLY_COMPONENT_FIELDS",
    "TASMOTA_ENERGY_FIELDS",
    "DecodeReason",
    "FieldMapping",
    "FieldSpec",
    "GenericMapping",
    "GenericMeter",
    "GlowMeter",
    "MeterDecodeError",
    "MeterFormat",
    "MeterModel",
    "MeterSettings",
    "ShellyMeter",
    "TasmotaMeter",
    "TimestampFormat",
    "check_base_topic",
    "decode_generic",
    "decode_glow",
    "decode_shelly",
    "decode_tasmota",
    "meter_config_union",
    "meter_model",
    "meter_models_markdown",
    "meter_topic_filters",
    "meter_type_choices",
    "units_for",
]
