"""Shared machinery of the meter decoders: JSON loading, field tables, timestamps.

Every decoder is the same three steps: ``load_json`` (size limit, UTF-8, JSON,
numbers parsed as exact ``Decimal``), one or more declarative ``FieldSpec`` tables
applied with ``read_table``, and ``finish`` (plausibility of every reading). Numbers
stay ``Decimal`` until the scale to the canonical unit has been applied, so
``6613.405`` kWh becomes exactly ``6613405.0`` Wh and a simulator can reconcile its
ledger to the watt-hour.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from zoneinfo import ZoneInfo

from protocols.readings import (
    QUANTITIES,
    ImplausibleReading,
    Reading,
    check_plausible,
)

MAX_PAYLOAD_BYTES = 64 * 1024
"""Payloads longer than this are refused before they are parsed (reason ``too_large``):
no meter publishes more than a few KiB, and the limit bounds the work a bad publisher
can cause."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Decoders compute in this context: no traps, so a number like 1e999999 scaled to Wh
# becomes Infinity (and 0 * Infinity NaN) instead of raising, and check_plausible
# refuses it as implausible like any other absurd value.
_DECODE_CONTEXT = Context(prec=34, traps=[])


def decimal_context() -> AbstractContextManager[Context]:
    """Enter around a decoder's arithmetic: ``with decimal_context(): ...``."""
    return localcontext(_DECODE_CONTEXT)


_MICROS_PER_S = Decimal(1_000_000)


class DecodeReason(enum.StrEnum):
    """Machine-readable cause of a ``MeterDecodeError``; compare it with plain strings
    (``err.reason == "not_json"``) or use it as a metric label."""

    TOO_LARGE = "too_large"
    """The payload is longer than ``MAX_PAYLOAD_BYTES``."""
    NOT_JSON = "not_json"
    """Not UTF-8, not JSON, or nested too deeply to parse."""
    WRONG_TYPE = "wrong_type"
    """A field (or the document) has the wrong JSON type, e.g. a string for a number."""
    MISSING_FIELD = "missing_field"
    """A field the model always publishes is absent or null."""
    BAD_TIMESTAMP = "bad_timestamp"
    """The device's timestamp cannot be parsed."""
    WRONG_UNIT = "wrong_unit"
    """The payload declares a unit the decoder does not convert (e.g. Glow in Wh)."""
    UNEXPECTED_TOPIC = "unexpected_topic"
    """The decoder cannot tell from the topic what the payload is."""
    IMPLAUSIBLE = "implausible"
    """A value decoded fine but cannot be a measurement (negative register, NaN,
    10 GW, a timestamp in 1970): see ``protocols.readings.check_plausible``."""


class MeterDecodeError(ValueError):
    """A meter payload that yields no readings. The edge counts it by ``reason`` and
    logs ``str(err)``; it never stops the meter's subscription.

    ``reason`` is a ``DecodeReason`` (a ``str``); ``field`` is the dotted path of the
    offending field when there is one.
    """

    def __init__(
        self, reason: DecodeReason, message: str, *, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field

    def __repr__(self) -> str:
        return f"MeterDecodeError({self.reason.value!r}, {str(self)!r})"


# --- JSON ----------------------------------------------------------------------------


def _parse_constant(name: str) -> Decimal:
    # NaN and Infinity are not JSON but Python's parser (and some firmware) emit them;
    # they decode to a non-finite number that check_plausible then refuses.
    return Decimal(name)


def load_json(payload: bytes | bytearray | str) -> object:
    """Parse a payload into JSON values with every non-integer number as ``Decimal``.

    Raises ``MeterDecodeError`` with reason ``too_large``, ``wrong_type`` (not bytes)
    or ``not_json``.
    """
    if isinstance(payload, str):
        raw = payload.encode("utf-8", errors="surrogatepass")
    elif isinstance(payload, bytes | bytearray):
        raw = bytes(payload)
    else:
        raise MeterDecodeError(
            DecodeReason.WRONG_TYPE,
            f"payload must be bytes, got {type(payload).__name__}",
        )
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise MeterDecodeError(
            DecodeReason.TOO_LARGE,
            f"payload is {len(raw)} bytes, the limit is {MAX_PAYLOAD_BYTES}",
        )
    try:
        text = raw.decode("utf-8")
        return json.loads(text, parse_float=Decimal, parse_constant=_parse_constant)
    except RecursionError:
        raise MeterDecodeError(
            DecodeReason.NOT_JSON, "payload is nested too deeply"
        ) from None
    except ValueError as exc:  # UnicodeDecodeError, JSONDecodeError, int digit limit
        raise MeterDecodeError(
            DecodeReason.NOT_JSON, f"payload is not JSON: {exc}"
        ) from None


def require_object(value: object, where: str) -> dict[str, object]:
    """``value`` as a JSON object, or ``MeterDecodeError(wrong_type)``."""
    if not isinstance(value, dict):
        raise MeterDecodeError(
            DecodeReason.WRONG_TYPE,
            f"{where} must be a JSON object, got {json_type(value)}",
            field=where,
        )
    return value


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- paths and numbers -------------------------------------------------------------

Path = tuple[str, ...]


class _Missing:
    """Sentinel for an absent field (distinct from JSON ``null``)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()


def parse_path(dotted: str) -> Path:
    """``"meter.phases.0.power_kw"`` to its segments; a segment of digits indexes an
    array (and is an ordinary key in an object). Keys containing dots cannot be
    addressed."""
    segments = tuple(dotted.split("."))
    if not dotted or any(not segment for segment in segments):
        raise ValueError(f"bad field path {dotted!r}: use dotted keys like 'a.b.0.c'")
    return segments


def lookup(document: object, path: Path, *, where: str = "") -> object:
    """The value at ``path`` in ``document``, or ``MISSING`` when a key or index is
    absent. Raises ``MeterDecodeError(wrong_type)`` when the path runs into a scalar
    (``where`` prefixes the field name in the error)."""
    node = document
    for depth, segment in enumerate(path):
        if isinstance(node, dict):
            if segment not in node:
                return MISSING
            node = node[segment]
            continue
        if node is None:
            return MISSING
        name = where + ".".join(path)
        reached = where + ".".join(path[:depth]) or "document"
        if not isinstance(node, list):
            raise MeterDecodeError(
                DecodeReason.WRONG_TYPE,
                f"{reached} is a {json_type(node)}, expected an object",
                field=name,
            )
        if not segment.isdigit():
            raise MeterDecodeError(
                DecodeReason.WRONG_TYPE,
                f"{reached} is an array, expected an object with key {segment!r}",
                field=name,
            )
        index = int(segment)
        if index >= len(node):
            return MISSING
        node = node[index]
    return node


def as_decimal(value: object, field: str) -> Decimal:
    """A JSON number as ``Decimal``; booleans, strings and others are ``wrong_type``."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise MeterDecodeError(
            DecodeReason.WRONG_TYPE,
            f"{field} must be a number, got {json_type(value)}",
            field=field,
        )
    return Decimal(value)


def to_float(value: Decimal) -> float:
    """Exact-as-possible float of a ``Decimal`` (``nan``/``inf`` pass through, for
    ``check_plausible`` to refuse)."""
    return float(value)


# --- declarative tables ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One row of a decoder table: the value at ``path`` times ``scale`` is the
    canonical ``quantity`` (whose name carries the unit).

    ``required`` fields raise ``missing_field`` when absent or null; optional ones are
    skipped. ``skip_values`` are raw values the device publishes to mean "no
    reading" (Glow's ``-8388.608`` kW), which are skipped rather than stored.
    """

    path: Path
    quantity: str
    scale: Decimal = Decimal(1)
    required: bool = False
    skip_values: frozenset[Decimal] = frozenset()

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise ValueError(f"unknown quantity {self.quantity!r} in a meter table")


def table_row(
    dotted: str,
    quantity: str,
    *,
    scale: Decimal | int | str = 1,
    required: bool = False,
    skip_values: Iterable[str] = (),
) -> FieldSpec:
    """Shorthand for a ``FieldSpec``: ``table_row("power.value", "power_w",
    scale=KW_TO_W, required=True)``."""
    return FieldSpec(
        path=parse_path(dotted),
        quantity=quantity,
        scale=Decimal(scale),
        required=required,
        skip_values=frozenset(Decimal(value) for value in skip_values),
    )


KWH_TO_WH = Decimal(1000)
KW_TO_W = Decimal(1000)


def read_table(
    document: object, table: Sequence[FieldSpec], *, where: str = ""
) -> list[tuple[str, Decimal]]:
    """Apply ``table`` to ``document``: ``(quantity, value in canonical unit)`` for
    every field present, in table order. ``where`` prefixes field names in errors."""
    values: list[tuple[str, Decimal]] = []
    for spec in table:
        name = where + ".".join(spec.path)
        raw = lookup(document, spec.path, where=where)
        if raw is MISSING or raw is None:
            if spec.required:
                raise MeterDecodeError(
                    DecodeReason.MISSING_FIELD, f"{name} is missing", field=name
                )
            continue
        number = as_decimal(raw, name)
        if number in spec.skip_values:
            continue
        values.append((spec.quantity, number * spec.scale))
    return values


def finish(
    values: Iterable[tuple[str, Decimal]], *, device_id: str, ts: datetime
) -> list[Reading]:
    """Turn decoded values into ``Reading``s, each checked by ``check_plausible``.

    Raises ``MeterDecodeError(implausible)`` on the first absurd value: one absurd
    field makes the whole message suspect.
    """
    readings: list[Reading] = []
    for quantity, value in values:
        reading = Reading(
            device_id=device_id, quantity=quantity, ts=ts, value=to_float(value)
        )
        try:
            check_plausible(reading)
        except ImplausibleReading as exc:
            raise MeterDecodeError(
                DecodeReason.IMPLAUSIBLE, str(exc), field=quantity
            ) from None
        readings.append(reading)
    return readings


# --- timestamps ----------------------------------------------------------------------


def utc_now(now: datetime) -> datetime:
    """Validate the caller's ``now`` (must be timezone-aware) and return it in UTC."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def zone(name: str) -> tzinfo:
    """The ``ZoneInfo`` for an IANA name; a bad name is a configuration error
    (``ValueError``), not a decode error."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {name!r}: use an IANA name") from exc


def parse_iso_ts(value: object, field: str, *, naive_tz: tzinfo) -> datetime:
    """An ISO-8601 string as an aware UTC datetime; a string without an offset is
    local time in ``naive_tz`` (earlier of two wall times in a DST fold)."""
    if not isinstance(value, str):
        raise MeterDecodeError(
            DecodeReason.BAD_TIMESTAMP,
            f"{field} must be an ISO-8601 string, got {json_type(value)}",
            field=field,
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MeterDecodeError(
            DecodeReason.BAD_TIMESTAMP,
            f"{field}={value[:40]!r} is not an ISO-8601 timestamp",
            field=field,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=naive_tz)
    return parsed.astimezone(UTC)


def parse_unix_ts(value: object, field: str, *, units_per_s: int) -> datetime:
    """A Unix time number (seconds when ``units_per_s`` is 1, ms when 1000) as an
    aware UTC datetime, exact to the microsecond."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise MeterDecodeError(
            DecodeReason.BAD_TIMESTAMP,
            f"{field} must be a Unix time number, got {json_type(value)}",
            field=field,
        )
    try:
        micros = (Decimal(value) * _MICROS_PER_S / units_per_s).to_integral_value(
            ROUND_HALF_EVEN
        )
        return _EPOCH + timedelta(microseconds=int(micros))
    except (InvalidOperation, OverflowError, ValueError):
        raise MeterDecodeError(
            DecodeReason.IMPLAUSIBLE,
            f"{field}={value} is not a representable Unix time",
            field=field,
        ) from None
