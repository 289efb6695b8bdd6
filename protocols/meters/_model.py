"""What a meter model is made of: its config class and its ``MeterModel`` record.

A model module (``_glow`` is the one to copy) holds the decoder table and entry
point, a ``MeterSettings`` subclass with ``type: Literal["<name>"]`` (the keys of
its ``[[meters]]`` table in the edge config) and ``MODEL``, a ``MeterModel`` that
ties them together. ``_registry.METER_MODELS`` lists every ``MODEL``; the edge's
config union, its driver factory, the README's table of models and the drift tests
are derived from that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

from protocols.readings import Reading

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
"""A meter's id: what its readings carry as ``device_id`` (same rule as a gateway
id in the edge config)."""


class MeterSettings(BaseModel):
    """The keys every ``[[meters]]`` table has; each model's config class narrows
    ``type`` to its own name and describes its ``topic``. Unknown keys are refused
    (a misspelt key is an error, not a silently ignored setting)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=DEVICE_ID_PATTERN, description="device id used in readings")
    type: str
    topic: str


SettingsT = TypeVar("SettingsT", bound=MeterSettings)

TopicFilters = Callable[[str, int], tuple[str, ...]]
"""``(base topic, channel) -> topic filters``; only multi-channel devices (Shelly)
use the channel, the others ignore it."""


@dataclass(frozen=True, slots=True)
class MeterModel(Generic[SettingsT]):
    """One meter model: everything the edge, the docs and the tests need to know.

    ``decode(settings, topic, payload, now)`` decodes one message of a configured
    meter (``MeterDecodeError`` for a bad payload). ``topic_filters`` maps a checked
    base topic to what to subscribe to; a model with ``wildcards`` subscribes to the
    configured topic as given (it is a filter itself). ``summary`` is the model's
    line in the README's table of models, whose keys are described there by the
    config class's field descriptions. ``example`` holds the model's own keys of a
    valid ``[[meters]]`` table (besides ``type`` and ``id``), checked by the tests;
    ``fixtures`` names the model's folder of captured payloads under
    ``tests/fixtures/meters``.
    """

    settings: type[SettingsT]
    decode: Callable[[SettingsT, str, bytes, datetime], list[Reading]]
    topic_filters: TopicFilters
    summary: str
    example: Mapping[str, Any]
    fixtures: str
    wildcards: bool = False

    def __post_init__(self) -> None:
        settings_type(self.settings)  # a config class without a name fails at import

    @property
    def type(self) -> str:
        """The model's name: the ``type`` of its ``[[meters]]`` tables."""
        return settings_type(self.settings)

    def subscriptions(self, settings: SettingsT) -> tuple[str, ...]:
        """The topic filters the edge subscribes to for one configured meter.

        Raises ``ValueError`` for a base topic the model cannot use (see
        ``check_base_topic``); a ``wildcards`` model's topic is taken as given.
        """
        if self.wildcards:
            return (settings.topic,)
        check_base_topic(settings.topic, self.type, wildcards=False)
        return self.topic_filters(settings.topic, 0)


def settings_type(settings: type[MeterSettings]) -> str:
    """The one name in a config class's ``type: Literal["<name>"]``; ``TypeError``
    for a class that does not declare exactly one."""
    annotation = settings.model_fields["type"].annotation
    names = get_args(annotation) if get_origin(annotation) is Literal else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise TypeError(
            f"{settings.__name__}.type must be Literal['<model name>'], "
            f"not {annotation!r}"
        )
    return names[0]


def check_base_topic(base_topic: str, model_type: str, *, wildcards: bool) -> None:
    """Refuse (``ValueError``) an empty base topic, one with a leading or trailing
    ``/`` or a NUL, and, unless ``wildcards``, one with ``+`` or ``#``."""
    if not base_topic or base_topic.startswith("/") or base_topic.endswith("/"):
        raise ValueError(
            f"base topic {base_topic!r} must be non-empty without a leading or "
            "trailing '/', e.g. 'tele/grid-meter'"
        )
    if "\x00" in base_topic:
        raise ValueError("base topic must not contain NUL")
    if not wildcards and ("+" in base_topic or "#" in base_topic):
        raise ValueError(
            f"base topic {base_topic!r} of a {model_type} meter must not contain "
            "wildcards: give the device's own topic"
        )


def topic_as_given(base_topic: str, channel: int) -> tuple[str, ...]:
    """``TopicFilters`` of a model whose configured topic is the filter itself."""
    return (base_topic,)
