"""A JSON meter described by configuration instead of code.

A ``GenericMapping`` names where each value sits in the device's JSON, which canonical
quantity it is and in which unit the device sends it::

    GenericMapping(
        fields=[
            FieldMapping(path="meter.energy_kwh", quantity="import_energy_wh",
                         unit="kWh"),
            FieldMapping(path="meter.power_kw", quantity="power_w", unit="kW"),
            FieldMapping(path="meter.phases.0.voltage_v", quantity="voltage_l1_v",
                         required=False),
        ],
        timestamp_path="ts",
        timestamp_format="unix_ms",
    )

The mapping is validated when it is built (unknown quantity, a unit that does not fit
the quantity, a bad path, a bad time zone are all ``pydantic.ValidationError``), so a
device config that loads is a device config that can decode.

The edge's ``[[meters]]`` table is ``GenericMeter`` (a topic and a mapping);
``MODEL`` is its line in the registry and its payloads are in
``tests/fixtures/meters/generic``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from protocols.meters._core import (
    MISSING,
    DecodeReason,
    FieldSpec,
    MeterDecodeError,
    decimal_context,
    finish,
    load_json,
    lookup,
    parse_iso_ts,
    parse_path,
    parse_unix_ts,
    read_table,
    utc_now,
    zone,
)
from protocols.meters._model import MeterModel, MeterSettings, topic_as_given
from protocols.readings import QUANTITIES, Reading

# The canonical unit of a quantity is the suffix of its name; each table lists the
# units a device may send for that suffix and the factor to the canonical unit.
_UNITS_BY_SUFFIX: Mapping[str, Mapping[str, Decimal]] = {
    "_wh": {"Wh": Decimal(1), "kWh": Decimal(1000), "MWh": Decimal(1_000_000)},
    "_w": {"W": Decimal(1), "kW": Decimal(1000), "MW": Decimal(1_000_000)},
    "_v": {"V": Decimal(1), "mV": Decimal("0.001"), "kV": Decimal(1000)},
    "_a": {"A": Decimal(1), "mA": Decimal("0.001")},
    "_hz": {"Hz": Decimal(1)},
    "_m3": {"m3": Decimal(1), "m³": Decimal(1), "L": Decimal("0.001")},
    "_pct": {"%": Decimal(1)},
    "_c": {"C": Decimal(1), "°C": Decimal(1)},
    "power_factor": {"": Decimal(1)},
}


def units_for(quantity: str) -> Mapping[str, Decimal]:
    """The units a device may use for ``quantity`` and their factor to its canonical
    unit (the one in its name). Raises ``KeyError`` for a name without a unit."""
    for suffix, units in _UNITS_BY_SUFFIX.items():
        if quantity.endswith(suffix):
            return units
    raise KeyError(quantity)


class FieldMapping(BaseModel):
    """Where one value is in the device's JSON and what it means.

    Give ``unit`` (the device's unit, converted to the canonical unit of
    ``quantity``) or ``scale`` (a plain multiplier), or neither when the device
    already sends the canonical unit. ``required=False`` skips a field that is
    absent or null instead of refusing the message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="dotted path; digits index arrays: 'a.b.0.c'")
    quantity: str = Field(description="canonical quantity, e.g. 'power_w'")
    unit: str | None = Field(default=None, description="device unit, e.g. 'kW'")
    scale: Decimal | None = Field(default=None, description="multiplier to canonical")
    required: bool = True

    @field_validator("path")
    @classmethod
    def _path_is_dotted(cls, value: str) -> str:
        parse_path(value)
        return value

    @field_validator("quantity")
    @classmethod
    def _quantity_is_known(cls, value: str) -> str:
        if value not in QUANTITIES:
            known = ", ".join(sorted(QUANTITIES))
            raise ValueError(f"unknown quantity {value!r}; known: {known}")
        return value

    @model_validator(mode="after")
    def _unit_fits_quantity(self) -> FieldMapping:
        if self.unit is not None and self.scale is not None:
            raise ValueError("give unit or scale, not both")
        if self.unit is not None:
            units = units_for(self.quantity)
            if self.unit not in units:
                raise ValueError(
                    f"unit {self.unit!r} does not fit {self.quantity}; "
                    f"use one of {sorted(units)}"
                )
        if self.scale is not None and not self.scale.is_finite():
            raise ValueError("scale must be a finite number")
        return self

    def spec(self) -> FieldSpec:
        """This mapping as a decoder table row."""
        if self.unit is not None:
            factor = units_for(self.quantity)[self.unit]
        elif self.scale is not None:
            factor = self.scale
        else:
            factor = Decimal(1)
        return FieldSpec(
            path=parse_path(self.path),
            quantity=self.quantity,
            scale=factor,
            required=self.required,
        )


TimestampFormat = Literal["iso", "unix_s", "unix_ms"]


class GenericMapping(BaseModel):
    """How to decode one JSON meter: its fields and, optionally, its timestamp.

    ``timestamp_format`` is ``"iso"`` (ISO-8601 text; without an offset it is local
    time in ``timezone``), ``"unix_s"`` or ``"unix_ms"`` (numbers). Without
    ``timestamp_path``, or when the message has no value there, readings are
    stamped with the caller's ``now``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: tuple[FieldMapping, ...] = Field(min_length=1)
    timestamp_path: str | None = None
    timestamp_format: TimestampFormat = "iso"
    timezone: str = "UTC"

    _table: tuple[FieldSpec, ...] = PrivateAttr(default=())

    def model_post_init(self, context: object, /) -> None:
        self._table = tuple(mapping.spec() for mapping in self.fields)

    @field_validator("timestamp_path")
    @classmethod
    def _timestamp_path_is_dotted(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        zone(value)
        return value

    def table(self) -> tuple[FieldSpec, ...]:
        """The mapping as a decoder table (built once, when the mapping is)."""
        return self._table


def decode_mapped(
    document: object,
    table: Sequence[FieldSpec],
    *,
    device_id: str,
    ts: datetime,
    where: str = "",
) -> list[Reading]:
    """Apply a table (from ``GenericMapping.table()`` or a model's own) to an
    already-parsed document. Raises ``MeterDecodeError``."""
    values = read_table(document, table, where=where)
    if not values:
        raise MeterDecodeError(
            DecodeReason.MISSING_FIELD,
            f"none of the mapped fields is present under {where or 'the document'}",
        )
    return finish(values, device_id=device_id, ts=ts)


def decode_generic(
    payload: bytes | bytearray | str,
    *,
    device_id: str,
    now: datetime,
    mapping: GenericMapping,
) -> list[Reading]:
    """Decode one message of a JSON meter described by ``mapping``.

    Returns one reading per mapped field present, stamped with the payload's
    timestamp or ``now``. Raises ``MeterDecodeError``; a message with none of the
    mapped fields is ``missing_field``.
    """
    now = utc_now(now)
    with decimal_context():
        document = load_json(payload)
        ts = now
        if mapping.timestamp_path is not None:
            raw_ts = lookup(document, parse_path(mapping.timestamp_path))
            if raw_ts is not MISSING and raw_ts is not None:
                name = mapping.timestamp_path
                if mapping.timestamp_format == "iso":
                    ts = parse_iso_ts(raw_ts, name, naive_tz=zone(mapping.timezone))
                elif mapping.timestamp_format == "unix_s":
                    ts = parse_unix_ts(raw_ts, name, units_per_s=1)
                else:
                    ts = parse_unix_ts(raw_ts, name, units_per_s=1000)
        return decode_mapped(document, mapping.table(), device_id=device_id, ts=ts)


class GenericMeter(MeterSettings):
    """Any JSON payload, mapped field by field."""

    type: Literal["generic"]
    topic: str = Field(
        description="the exact topic (or filter) the device publishes on"
    )
    mapping: GenericMapping = Field(
        description="where each value is in the JSON, its quantity and unit"
    )


def _decode(
    cfg: GenericMeter, topic: str, payload: bytes, now: datetime
) -> list[Reading]:
    return decode_generic(payload, device_id=cfg.id, now=now, mapping=cfg.mapping)


MODEL = MeterModel(
    settings=GenericMeter,
    decode=_decode,
    topic_filters=topic_as_given,
    summary="any JSON meter, described field by field in `[meters.mapping]`",
    example={
        "topic": "sim/my-meter/reading",
        "mapping": {
            "timestamp_path": "ts",
            "timestamp_format": "unix_ms",
            "fields": [
                {
                    "path": "meter.energy_kwh",
                    "quantity": "import_energy_wh",
                    "unit": "kWh",
                },
                {"path": "meter.power_kw", "quantity": "power_w", "unit": "kW"},
            ],
        },
    },
    fixtures="generic",
    wildcards=True,
)
"""The generic meter's line in the registry."""
