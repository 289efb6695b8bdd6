"""The registry of meter models: one line per model in ``METER_MODELS``.

Derived from it: the edge config's ``[[meters]]`` union (``meter_config_union``,
discriminated on ``type``), the edge's driver factory (``edge.meters``), the topic
filters (``meter_topic_filters``) and the README's table of models
(``meter_models_markdown``, written by ``python -m fusebox.docs --write``).
``tests/unit/test_meter_registry.py`` fails when the registry, the config schema,
the driver factory, the fixture folders, the simulator's formats or the README
drift apart.

To add a model: copy ``_glow.py`` (decoder table, entry point, ``topic_filters``,
config class, ``MODEL``), capture payloads under ``tests/fixtures/meters/<name>``
(checked in ``tests/unit/test_meter_decoders.py``), add its name to ``MeterFormat``
and its ``MODEL`` to ``METER_MODELS`` below.
"""

from __future__ import annotations

import enum
import functools
import operator
from typing import Annotated, Any, Final

from pydantic import Field

from protocols.meters import _generic, _glow, _shelly, _tasmota
from protocols.meters._model import MeterModel, check_base_topic


class MeterFormat(enum.StrEnum):
    """The payload formats ``protocols.meters`` decodes; the value is the name used in
    device configuration and on the simulator's ``--format`` flag."""

    GLOW = "glow"
    TASMOTA = "tasmota"
    SHELLY = "shelly"
    GENERIC = "generic"


METER_MODELS: Final[dict[MeterFormat, MeterModel[Any]]] = {
    MeterFormat(model.type): model
    for model in (_glow.MODEL, _tasmota.MODEL, _shelly.MODEL, _generic.MODEL)
}
"""Every meter model by its ``type``, in the order the docs and errors list them."""


def meter_model(meter_format: MeterFormat | str) -> MeterModel[Any]:
    """The model named ``meter_format``; ``ValueError`` for an unknown name."""
    return METER_MODELS[MeterFormat(meter_format)]


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

    Raises ``ValueError`` for an unknown format, an empty base topic, one with a
    leading or trailing ``/``, or a wildcard in a model whose topics are fixed.
    """
    model = meter_model(meter_format)
    check_base_topic(base_topic, model.type, wildcards=model.wildcards)
    return model.topic_filters(base_topic, shelly_channel)


def meter_config_union() -> Any:
    """``Annotated[<every model's config class> | ..., Field(discriminator="type")]``:
    the type of one ``[[meters]]`` table in the edge config, in registry order (so
    pydantic lists the expected tags in that order)."""
    classes = [model.settings for model in METER_MODELS.values()]
    union = functools.reduce(operator.or_, classes)
    return Annotated[union, Field(discriminator="type")]


def meter_type_choices(*, quoted: bool = False, separator: str = ", ") -> str:
    """The model names for a message: ``glow, tasmota, ...`` or, ``quoted``,
    ``"glow" | "tasmota" | ...`` (with ``separator=" | "``)."""
    names = [f'"{name}"' if quoted else str(name) for name in METER_MODELS]
    return separator.join(names)


MARKDOWN_BEGIN = (
    "<!-- meter-models: generated from protocols.meters by "
    "`python -m fusebox.docs --write`; do not edit -->"
)
MARKDOWN_END = "<!-- /meter-models -->"


def _markdown_text(text: str) -> str:
    # a description is plain text: keep its <placeholders> and pipes literal
    return text.replace("|", "\\|").replace("<", "\\<")


def meter_models_markdown() -> str:
    """The README's table of meter models (between ``MARKDOWN_BEGIN`` and
    ``MARKDOWN_END``, which it includes): one row per registry line, its keys
    described by its config class's fields."""
    rows = [
        MARKDOWN_BEGIN,
        "| `type` | device | keys besides `type` and `id` |",
        "|---|---|---|",
    ]
    for name, model in METER_MODELS.items():
        keys = []
        for key, info in model.settings.model_fields.items():
            if key in ("id", "type"):
                continue
            text = f"`{key}`"
            if not info.is_required():
                text += f" (default `{info.default}`)"
            if info.description:
                text += ": " + _markdown_text(info.description)
            keys.append(text)
        rows.append(f"| `{name}` | {model.summary} | {'; '.join(keys)} |")
    rows.append(MARKDOWN_END)
    return "\n".join(rows) + "\n"
