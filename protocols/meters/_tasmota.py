"""Tasmota telemetry: ``tele/<topic>/SENSOR`` every TelePeriod (default 300 s).

Two shapes carry meter data. A device with its own energy chip, or a Modbus meter
(SDM120/SDM630) read by Tasmota, publishes an ``ENERGY`` block::

    {"Time": "2024-03-05T18:04:10",
     "ENERGY": {"TotalStartTime": "2023-11-02T09:12:44", "Total": 1523.412,
                "Yesterday": 9.871, "Today": 6.102, "Period": 12, "Power": 1460,
                "ApparentPower": 1502, "ReactivePower": 352, "Factor": 0.97,
                "Voltage": 238, "Current": 6.310}}

On a three-phase device ``Power``, ``Voltage``, ``Current`` (and ``Total`` with
SetOption129) are arrays, one element per phase. A smart meter read by an optical head
(Smart Meter Interface) publishes a block named after the meter in its script, with
field names from that script; the common default is::

    {"Time": "2024-03-05T18:04:10",
     "SML": {"Total_in": 12345.6789, "Total_out": 321.0042, "Power_curr": 452}}

``decode_tasmota`` takes the SML block name and field table as parameters (defaults
above). ``Time`` is the device's local wall time without an offset (unless SetOption52
is on), so the caller passes the device's IANA time zone.

The edge's ``[[meters]]`` table is ``TasmotaMeter`` (default SML block and fields);
``MODEL`` is its line in the registry and its payloads are in
``tests/fixtures/meters/tasmota``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from protocols.meters._core import (
    KWH_TO_WH,
    DecodeReason,
    FieldSpec,
    MeterDecodeError,
    as_decimal,
    decimal_context,
    finish,
    load_json,
    parse_iso_ts,
    require_object,
    utc_now,
    zone,
)
from protocols.meters._generic import FieldMapping, decode_mapped
from protocols.meters._model import MeterModel, MeterSettings
from protocols.readings import Reading


@dataclass(frozen=True, slots=True)
class EnergyField:
    """One row of the ``ENERGY`` table. A scalar value is ``quantity``; an array is
    per phase (``phase_quantities``, L1 first) and, when ``array_total`` says so,
    also ``quantity`` as the sum of the elements or the first element."""

    key: str
    quantity: str
    phase_quantities: tuple[str, ...] = ()
    array_total: Literal["sum", "first", "none"] = "none"
    scale: Decimal = Decimal(1)
    required: bool = False


TASMOTA_ENERGY_FIELDS = (
    EnergyField(
        "Total",
        "import_energy_wh",
        ("import_energy_l1_wh", "import_energy_l2_wh", "import_energy_l3_wh"),
        array_total="sum",
        scale=KWH_TO_WH,
        required=True,
    ),
    EnergyField("ExportActive", "export_energy_wh", array_total="sum", scale=KWH_TO_WH),
    EnergyField(
        "Power",
        "power_w",
        ("power_l1_w", "power_l2_w", "power_l3_w"),
        array_total="sum",
        required=True,
    ),
    EnergyField(
        "Voltage", "voltage_v", ("voltage_l1_v", "voltage_l2_v", "voltage_l3_v")
    ),
    EnergyField(
        "Current", "current_a", ("current_l1_a", "current_l2_a", "current_l3_a")
    ),
    EnergyField("Frequency", "frequency_hz", array_total="first"),
    EnergyField("Factor", "power_factor"),
)
"""``ENERGY`` key to canonical quantity. Energies are kWh, power W, voltage V,
current A. Arrays longer than three (multi-channel plugs) count in the totals only."""

DEFAULT_TASMOTA_SML_BLOCK = "SML"

DEFAULT_TASMOTA_SML_FIELDS = (
    FieldMapping(path="Total_in", quantity="import_energy_wh", unit="kWh"),
    FieldMapping(
        path="Total_out", quantity="export_energy_wh", unit="kWh", required=False
    ),
    FieldMapping(path="Power_curr", quantity="power_w", unit="W", required=False),
    FieldMapping(path="Power_L1", quantity="power_l1_w", unit="W", required=False),
    FieldMapping(path="Power_L2", quantity="power_l2_w", unit="W", required=False),
    FieldMapping(path="Power_L3", quantity="power_l3_w", unit="W", required=False),
    FieldMapping(path="Volt_L1", quantity="voltage_l1_v", unit="V", required=False),
    FieldMapping(path="Volt_L2", quantity="voltage_l2_v", unit="V", required=False),
    FieldMapping(path="Volt_L3", quantity="voltage_l3_v", unit="V", required=False),
)
"""Field names of the most common SML meter scripts (paths relative to the block)."""


def _read_energy(energy: dict[str, object]) -> list[tuple[str, Decimal]]:
    values: list[tuple[str, Decimal]] = []
    for row in TASMOTA_ENERGY_FIELDS:
        name = f"ENERGY.{row.key}"
        raw = energy.get(row.key)
        if raw is None:
            if row.required:
                raise MeterDecodeError(
                    DecodeReason.MISSING_FIELD, f"{name} is missing", field=name
                )
            continue
        if not isinstance(raw, list):
            values.append((row.quantity, as_decimal(raw, name) * row.scale))
            continue
        if not raw:
            raise MeterDecodeError(
                DecodeReason.WRONG_TYPE, f"{name} is an empty array", field=name
            )
        elements = [
            as_decimal(item, f"{name}.{index}") * row.scale
            for index, item in enumerate(raw)
        ]
        if row.array_total == "sum":
            values.append((row.quantity, sum(elements, Decimal(0))))
        elif row.array_total == "first":
            values.append((row.quantity, elements[0]))
        values.extend(zip(row.phase_quantities, elements, strict=False))
    return values


def decode_tasmota(
    payload: bytes | bytearray | str,
    *,
    device_id: str,
    now: datetime,
    timezone: str = "UTC",
    sml_block: str = DEFAULT_TASMOTA_SML_BLOCK,
    sml_fields: Sequence[FieldMapping] = DEFAULT_TASMOTA_SML_FIELDS,
) -> list[Reading]:
    """Decode one ``tele/<topic>/SENSOR`` message.

    ``timezone`` is the device's IANA zone (its ``Time`` has no offset); a ``Time``
    with an offset is taken as is, no ``Time`` means ``now``. When the message has a
    block named ``sml_block`` it is decoded with ``sml_fields``; otherwise the
    ``ENERGY`` block is decoded. Raises ``MeterDecodeError``: ``missing_field`` when
    the message has neither (a SENSOR message from another sensor), ``implausible``
    for a device whose clock is not set (``1970-01-01T…``).
    """
    now = utc_now(now)
    device_tz = zone(timezone)
    with decimal_context():
        document = require_object(load_json(payload), "payload")
        raw_ts = document.get("Time")
        ts = now if raw_ts is None else parse_iso_ts(raw_ts, "Time", naive_tz=device_tz)
        if sml_block in document:
            block = require_object(document[sml_block], sml_block)
            table: tuple[FieldSpec, ...] = tuple(
                mapping.spec() for mapping in sml_fields
            )
            return decode_mapped(
                block, table, device_id=device_id, ts=ts, where=f"{sml_block}."
            )
        if "ENERGY" in document:
            energy = require_object(document["ENERGY"], "ENERGY")
            return finish(_read_energy(energy), device_id=device_id, ts=ts)
        keys = ", ".join(sorted(document)[:8]) or "none"
        raise MeterDecodeError(
            DecodeReason.MISSING_FIELD,
            f"neither ENERGY nor {sml_block} in the message (keys: {keys})",
            field="ENERGY",
        )


def tasmota_topic_filters(base_topic: str, channel: int) -> tuple[str, ...]:
    """A Tasmota publishes on ``<base>/SENSOR`` (its base is ``tele/<topic>``)."""
    return (f"{base_topic}/SENSOR",)


class TasmotaMeter(MeterSettings):
    """Tasmota energy or SML telemetry on tele/<device>/SENSOR."""

    type: Literal["tasmota"]
    topic: str = Field(description="tele/<device topic>, e.g. tele/tasmota_5A3B1C")
    timezone: str = Field(default="UTC", description="the device's local time zone")

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        zone(value)  # the decoder's own rule; refused here rather than per message
        return value


def _decode(
    cfg: TasmotaMeter, topic: str, payload: bytes, now: datetime
) -> list[Reading]:
    return decode_tasmota(payload, device_id=cfg.id, now=now, timezone=cfg.timezone)


MODEL = MeterModel(
    settings=TasmotaMeter,
    decode=_decode,
    topic_filters=tasmota_topic_filters,
    summary="Tasmota `ENERGY` telemetry (plugs, SDM120/SDM630) or an SML reading head",
    example={"topic": "tele/tasmota_5A3B1C", "timezone": "Europe/London"},
    fixtures="tasmota",
)
"""The Tasmota's line in the registry."""
