"""Shelly Gen2+ energy meters over MQTT: Pro 3EM (``em``/``emdata``) and Pro EM,
EM Gen3 (``em1``/``em1data``).

A Shelly publishes its meter two ways, both decoded here:

* RPC notifications on ``<prefix>/events/rpc`` (``rpc_ntf``, on by default)::

      {"src": "shellypro3em-0cb815fc1234", "dst": "shellypro3em-0cb815fc1234/events",
       "method": "NotifyStatus",
       "params": {"ts": 1709661850.21,
                  "em:0": {"id": 0, "a_act_power": 1203.4, "total_act_power": 1630.8}}}

  ``params.ts`` is Unix seconds (UTC). A NotifyStatus carries only what changed, so
  every field is optional; notifications about other components (wifi, sys) and
  NotifyEvent frames decode to ``[]``.
* Full component status on ``<prefix>/status/<component>`` (``status_ntf``), e.g.
  ``<prefix>/status/emdata:0`` with ``{"id": 0, "total_act": 2852055.81, ...}``.
  These have no timestamp: readings are stamped with ``now``.

Power is W (``act_power`` is signed: negative while exporting), energy registers Wh.

The edge's ``[[meters]]`` table is ``ShellyMeter`` (channel 0); ``MODEL`` is its
line in the registry and its payloads are in ``tests/fixtures/meters/shelly``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from protocols.meters._core import (
    DecodeReason,
    FieldSpec,
    MeterDecodeError,
    decimal_context,
    finish,
    load_json,
    parse_unix_ts,
    read_table,
    require_object,
    table_row,
    utc_now,
)
from protocols.meters._model import MeterModel, MeterSettings
from protocols.readings import Reading

SHELLY_EM_FIELDS = (
    table_row("total_act_power", "power_w"),
    table_row("a_act_power", "power_l1_w"),
    table_row("b_act_power", "power_l2_w"),
    table_row("c_act_power", "power_l3_w"),
    table_row("a_voltage", "voltage_l1_v"),
    table_row("b_voltage", "voltage_l2_v"),
    table_row("c_voltage", "voltage_l3_v"),
    table_row("a_current", "current_l1_a"),
    table_row("b_current", "current_l2_a"),
    table_row("c_current", "current_l3_a"),
    table_row("a_freq", "frequency_hz"),
)
"""``em:<id>`` status (three-phase): W, V, A, Hz."""

SHELLY_EMDATA_FIELDS = (
    table_row("total_act", "import_energy_wh"),
    table_row("total_act_ret", "export_energy_wh"),
    table_row("a_total_act_energy", "import_energy_l1_wh"),
    table_row("b_total_act_energy", "import_energy_l2_wh"),
    table_row("c_total_act_energy", "import_energy_l3_wh"),
)
"""``emdata:<id>`` status (three-phase): Wh."""

SHELLY_EM1_FIELDS = (
    table_row("act_power", "power_w"),
    table_row("voltage", "voltage_v"),
    table_row("current", "current_a"),
    table_row("freq", "frequency_hz"),
    table_row("pf", "power_factor"),
)
"""``em1:<id>`` status (one single-phase channel): W, V, A, Hz."""

SHELLY_EM1DATA_FIELDS = (
    table_row("total_act_energy", "import_energy_wh"),
    table_row("total_act_ret_energy", "export_energy_wh"),
)
"""``em1data:<id>`` status (one single-phase channel): Wh."""

SHELLY_COMPONENT_FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "em": SHELLY_EM_FIELDS,
    "emdata": SHELLY_EMDATA_FIELDS,
    "em1": SHELLY_EM1_FIELDS,
    "em1data": SHELLY_EM1DATA_FIELDS,
}
"""Component type to its table; the meter is the component with the configured id."""

_NOTIFY_METHODS = frozenset({"NotifyStatus", "NotifyFullStatus"})


def _component_values(
    container: dict[str, object], channel: int, where: str
) -> list[tuple[str, Decimal]]:
    values: list[tuple[str, Decimal]] = []
    for component_type, table in SHELLY_COMPONENT_FIELDS.items():
        key = f"{component_type}:{channel}"
        if key in container:
            status = require_object(container[key], f"{where}{key}")
            values.extend(read_table(status, table, where=f"{where}{key}."))
    return values


def decode_shelly(
    payload: bytes | bytearray | str,
    *,
    device_id: str,
    now: datetime,
    topic: str,
    channel: int = 0,
) -> list[Reading]:
    """Decode one message from a Shelly meter, telling the shape from ``topic``.

    ``channel`` is the id of the metering component (``em:0``, or ``em1:1`` for the
    second clamp of a Pro EM). Returns ``[]`` for notifications that carry no meter
    values. Raises ``MeterDecodeError``; ``unexpected_topic`` if ``topic`` is neither
    ``…/events/rpc`` nor ``…/status/<component>``.
    """
    now = utc_now(now)
    with decimal_context():
        document = require_object(load_json(payload), "payload")
        if topic.endswith("/events/rpc"):
            if document.get("method") not in _NOTIFY_METHODS:
                return []
            if "params" not in document:
                raise MeterDecodeError(
                    DecodeReason.MISSING_FIELD, "params is missing", field="params"
                )
            params = require_object(document["params"], "params")
            raw_ts = params.get("ts")
            ts = (
                now
                if raw_ts is None
                else parse_unix_ts(raw_ts, "params.ts", units_per_s=1)
            )
            values = _component_values(params, channel, "params.")
            return finish(values, device_id=device_id, ts=ts)
        prefix, _, component = topic.rpartition("/")
        if prefix.endswith("/status") or prefix == "status":
            component_type, _, component_id = component.partition(":")
            table = SHELLY_COMPONENT_FIELDS.get(component_type)
            if table is None or component_id != str(channel):
                return []  # another component's status: not the meter
            values = read_table(document, table, where=f"{component}.")
            if not values:
                raise MeterDecodeError(
                    DecodeReason.MISSING_FIELD,
                    f"status of {component} has none of the meter fields",
                    field=component,
                )
            return finish(values, device_id=device_id, ts=now)
    raise MeterDecodeError(
        DecodeReason.UNEXPECTED_TOPIC,
        f"topic {topic!r} is neither <prefix>/events/rpc "
        "nor <prefix>/status/<component>",
    )


def shelly_topic_filters(base_topic: str, channel: int) -> tuple[str, ...]:
    """A Shelly's RPC notifications and the status topics of its metering
    components with id ``channel`` (``ValueError`` if it is negative)."""
    if channel < 0:
        raise ValueError("shelly_channel must be >= 0")
    return (
        f"{base_topic}/events/rpc",
        f"{base_topic}/status/em:{channel}",
        f"{base_topic}/status/emdata:{channel}",
        f"{base_topic}/status/em1:{channel}",
        f"{base_topic}/status/em1data:{channel}",
    )


class ShellyMeter(MeterSettings):
    """Shelly Pro EM / Pro 3EM (Gen2) over MQTT."""

    type: Literal["shelly"]
    topic: str = Field(description="the device's MQTT prefix, e.g. shellypro3em-abc")


def _decode(
    cfg: ShellyMeter, topic: str, payload: bytes, now: datetime
) -> list[Reading]:
    return decode_shelly(payload, topic=topic, device_id=cfg.id, now=now)


MODEL = MeterModel(
    settings=ShellyMeter,
    decode=_decode,
    topic_filters=shelly_topic_filters,
    summary="Shelly Pro EM, EM Gen3 and Pro 3EM (Gen2+ RPC notifications and status)",
    example={"topic": "shellypro3em-0cb815fc1234"},
    fixtures="shelly",
)
"""The Shelly's line in the registry."""
