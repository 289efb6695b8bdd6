"""Hildebrand Glow (IHD or CAD) local MQTT: the SMETS2 electricity meter.

The Glow publishes on ``glow/<device-mac>/SENSOR/electricitymeter`` about every 10 s::

    {"electricitymeter": {
        "timestamp": "2022-06-11T20:38:00Z",
        "energy": {
            "export": {"cumulative": 0.000, "units": "kWh"},
            "import": {"cumulative": 6613.405, "day": 13.252, "week": 141.710,
                       "month": 293.598, "units": "kWh", "mpan": "1234",
                       "supplier": "ABC ENERGY",
                       "price": {"unitrate": 0.04998, "standingcharge": 0.24030}}},
        "power": {"value": 0.951, "units": "kW"}}}

Registers are kWh with 3 decimals and power is kW with 3 decimals (negative while
exporting). Two device quirks are absorbed here rather than passed on:
``power.value == -8388.608`` (the 24-bit "no reading" value) is skipped, and an import
register of exactly ``0.000`` (published while the meter has not answered the CAD) is
skipped rather than stored as a register that ran back to zero. The day/week/month and
price fields are informational and not decoded: the cumulative registers carry the
same energy without gaps.

The edge's ``[[meters]]`` table is ``GlowMeter``; ``MODEL`` is its line in the
registry (``protocols.meters._registry``) and its payloads are captured in
``tests/fixtures/meters/glow``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from protocols.meters._core import (
    KW_TO_W,
    KWH_TO_WH,
    MISSING,
    DecodeReason,
    MeterDecodeError,
    decimal_context,
    finish,
    load_json,
    lookup,
    parse_iso_ts,
    parse_path,
    read_table,
    require_object,
    table_row,
    utc_now,
)
from protocols.meters._model import MeterModel, MeterSettings
from protocols.readings import Reading

GLOW_NO_READING_KW = "-8388.608"

GLOW_ELECTRICITY_FIELDS = (
    table_row(
        "energy.import.cumulative",
        "import_energy_wh",
        scale=KWH_TO_WH,
        required=True,
        skip_values=("0",),
    ),
    table_row("energy.export.cumulative", "export_energy_wh", scale=KWH_TO_WH),
    table_row(
        "power.value",
        "power_w",
        scale=KW_TO_W,
        required=True,
        skip_values=(GLOW_NO_READING_KW,),
    ),
)
"""Source field (under ``electricitymeter``) to canonical quantity."""

_DECLARED_UNITS = (
    (parse_path("energy.import.units"), "kWh"),
    (parse_path("energy.export.units"), "kWh"),
    (parse_path("power.units"), "kW"),
)


def decode_glow(
    payload: bytes | bytearray | str, *, device_id: str, now: datetime
) -> list[Reading]:
    """Decode one ``glow/<mac>/SENSOR/electricitymeter`` message.

    Returns import/export registers in Wh and power in W, stamped with the meter's
    own ``timestamp`` (UTC, whole seconds), or ``now`` if it has none. Raises
    ``MeterDecodeError``; an empty list means the meter answered with "no reading"
    values only.
    """
    now = utc_now(now)
    with decimal_context():
        document = require_object(load_json(payload), "payload")
        if "electricitymeter" not in document:
            raise MeterDecodeError(
                DecodeReason.MISSING_FIELD,
                "electricitymeter is missing (is this the gasmeter or STATE topic?)",
                field="electricitymeter",
            )
        meter = require_object(document["electricitymeter"], "electricitymeter")
        for path, expected in _DECLARED_UNITS:
            declared = lookup(meter, path, where="electricitymeter.")
            if (
                declared is not MISSING
                and declared is not None
                and declared != expected
            ):
                name = "electricitymeter." + ".".join(path)
                raise MeterDecodeError(
                    DecodeReason.WRONG_UNIT,
                    f"{name} is {declared!r}, expected {expected!r}",
                    field=name,
                )
        raw_ts = meter.get("timestamp")
        ts = (
            now
            if raw_ts is None
            else parse_iso_ts(raw_ts, "electricitymeter.timestamp", naive_tz=UTC)
        )
        values = read_table(meter, GLOW_ELECTRICITY_FIELDS, where="electricitymeter.")
        return finish(values, device_id=device_id, ts=ts)


def glow_topic_filters(base_topic: str, channel: int) -> tuple[str, ...]:
    """A Glow publishes its meter on ``<base>/SENSOR/electricitymeter``."""
    return (f"{base_topic}/SENSOR/electricitymeter",)


class GlowMeter(MeterSettings):
    """Hildebrand Glow (SMETS2 consumer access device), local MQTT."""

    type: Literal["glow"]
    topic: str = Field(description="base topic, e.g. glow/ABCDEF123456")


def _decode(cfg: GlowMeter, topic: str, payload: bytes, now: datetime) -> list[Reading]:
    return decode_glow(payload, device_id=cfg.id, now=now)


MODEL = MeterModel(
    settings=GlowMeter,
    decode=_decode,
    topic_filters=glow_topic_filters,
    summary="Hildebrand Glow IHD/CAD (SMETS2 smart meter), local MQTT",
    example={"topic": "glow/70B3D54B0001"},
    fixtures="glow",
)
"""The Glow's line in the registry."""
