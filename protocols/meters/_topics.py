"""Which MQTT topics each meter model publishes its readings on."""

from __future__ import annotations

import enum


class MeterFormat(enum.StrEnum):
    """The payload formats ``protocols.meters`` decodes; the value is the name used in
    device configuration and on the simulator's ``--format`` flag."""

    GLOW = "glow"
    TASMOTA = "tasmota"
    SHELLY = "shelly"
    GENERIC = "generic"


def meter_topic_filters(
    meter_format: MeterFormat | str, base_topic: str, *, shelly_channel: int = 0
) -> tuple[str, ...]:
    """The MQTT topic filters to subscribe to for one meter.

    ``base_topic`` is what the installer reads off the device:

    * glow: ``glow/<device-mac>`` -> ``glow/<mac>/SENSOR/electricitymeter``
    * tasmota: ``tele/<topic>`` (the FullTopic up to the command) ->
      ``tele/<topic>/SENSOR``
    * shelly: the device's MQTT topic prefix (default its id,
      ``shellypro3em-<mac>``) -> ``<prefix>/events/rpc`` plus the ``status``
      topics of the metering components with id ``shelly_channel``
    * generic: the exact topic (wildcards allowed) -> itself

    Raises ``ValueError`` for an empty base topic, one with a leading or trailing
    ``/``, or a wildcard in a model whose topics are fixed.
    """
    meter_format = MeterFormat(meter_format)
    if not base_topic or base_topic.startswith("/") or base_topic.endswith("/"):
        raise ValueError(
            f"base topic {base_topic!r} must be non-empty without a leading or "
            "trailing '/', e.g. 'tele/grid-meter'"
        )
    if "\x00" in base_topic:
        raise ValueError("base topic must not contain NUL")
    if meter_format is MeterFormat.GENERIC:
        return (base_topic,)
    if "+" in base_topic or "#" in base_topic:
        raise ValueError(
            f"base topic {base_topic!r} of a {meter_format} meter must not contain "
            "wildcards: give the device's own topic"
        )
    if meter_format is MeterFormat.GLOW:
        return (f"{base_topic}/SENSOR/electricitymeter",)
    if meter_format is MeterFormat.TASMOTA:
        return (f"{base_topic}/SENSOR",)
    if shelly_channel < 0:
        raise ValueError("shelly_channel must be >= 0")
    return (
        f"{base_topic}/events/rpc",
        f"{base_topic}/status/em:{shelly_channel}",
        f"{base_topic}/status/emdata:{shelly_channel}",
        f"{base_topic}/status/em1:{shelly_channel}",
        f"{base_topic}/status/em1data:{shelly_channel}",
    )
