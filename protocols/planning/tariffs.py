"""Tariffs and carbon intensity on half-hourly slots.

Every curve here is a :class:`SlotCurve`: one value per half-hour slot, slots aligned to
``:00``/``:30`` UTC, contiguous, starting at ``start``. Prices are in pence per kWh
(``p/kWh``, VAT included, may be negative), carbon intensity in grams of CO2 per kWh
(``gCO2/kWh``).

Tariff kinds (all answer :meth:`Tariff.price_at` for any slot and :meth:`Tariff.curve`
for a range of slots):

* :class:`DynamicTariff`: a price per slot, as published day-ahead (Octopus Agile-like).
* :class:`TimeOfUseTariff`: fixed windows of local time with their own price, the rest
  of the day at the standard rate (Octopus Go / Intelligent Go: 7.5 p 23:30-05:30,
  27 p otherwise). Windows may cross midnight.
* :class:`FlatTariff`: one price at every slot.

Carbon intensity is a plain :class:`SlotCurve` (``unit="gCO2/kWh"``).

Files (the only I/O here; each loader takes a path, each parser the text):

* CSV, a header row then one row per slot: ``slot_start`` (ISO 8601 with offset or
  ``Z``), then the value column named by ``value_column`` (``price_p_per_kwh`` or
  ``carbon_g_per_kwh``; any other columns are ignored). Blank lines and lines starting
  with ``#`` are skipped.
* JSON, either ``{"unit": "p/kWh", "start": "2025-01-01T00:00Z", "values": [..]}`` or
  ``{"unit": "p/kWh", "slots": [{"slot_start": "...", "value": 12.3}, ...]}``.

Bad input raises :class:`CurveFormatError` (a ``ValueError``) naming the line (CSV) or
the item (JSON) and the field. Error tree::

    ValueError
     +-- CurveFormatError      bad file content: line/item and field named
     +-- CurveRangeError       a slot outside the curve was asked for

:class:`TariffSource` is the interface of a remote price feed (an HTTP client in the
cloud implements it); the file-backed one, which reads files and so cannot live in
this pure package, is ``cloud.tariffs.FileTariffSource``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

SLOT = timedelta(minutes=30)
"""Length of one slot."""
SLOT_HOURS = 0.5
"""Length of one slot in hours."""

PRICE_UNIT = "p/kWh"
CARBON_UNIT = "gCO2/kWh"


class CurveFormatError(ValueError):
    """A curve file or text is malformed; the message names the line/item and field."""


class CurveRangeError(ValueError):
    """A slot outside the curve's range was asked for."""


def floor_slot(t: datetime) -> datetime:
    """Start of the half-hour slot containing ``t`` (aware; returned in UTC)."""
    if t.tzinfo is None:
        raise ValueError(
            f"naive datetime {t.isoformat()}: times must be timezone-aware"
        )
    t = t.astimezone(UTC)
    return t.replace(minute=(t.minute // 30) * 30, second=0, microsecond=0)


def is_slot_start(t: datetime) -> bool:
    """True when ``t`` is exactly on a ``:00``/``:30`` UTC boundary."""
    return floor_slot(t) == t


def parse_time(text: str) -> datetime:
    """Parse ISO 8601 with an offset (``Z`` allowed) to an aware UTC datetime."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return t.astimezone(UTC)


@dataclass(frozen=True)
class SlotCurve:
    """One value per half-hour slot from ``start`` (UTC, slot-aligned), contiguous.

    ``unit`` is ``"p/kWh"`` for prices, ``"gCO2/kWh"`` for carbon intensity, ``"W"``
    for load forecasts.
    """

    start: datetime
    values: tuple[float, ...]
    unit: str = PRICE_UNIT

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or not is_slot_start(self.start):
            raise ValueError(
                f"curve start {self.start!r} must be an aware half-hour slot start"
            )
        if self.start.tzinfo is not UTC:
            object.__setattr__(self, "start", self.start.astimezone(UTC))
        for i, v in enumerate(self.values):
            if not math.isfinite(v):
                raise ValueError(f"slot {i} of the curve is not a finite number: {v}")

    @property
    def end(self) -> datetime:
        """End of the last slot (exclusive)."""
        return self.start + SLOT * len(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def index_of(self, slot_start: datetime) -> int:
        """Index of the slot containing ``slot_start``; CurveRangeError if outside."""
        k = (floor_slot(slot_start) - self.start) // SLOT
        if not 0 <= k < len(self.values):
            raise CurveRangeError(
                f"{slot_start.isoformat()} is outside the curve "
                f"[{self.start.isoformat()}, {self.end.isoformat()})"
            )
        return int(k)

    def at(self, t: datetime) -> float:
        """Value for the slot containing ``t``."""
        return self.values[self.index_of(t)]

    def slots(self) -> Iterable[tuple[datetime, float]]:
        """``(slot_start, value)`` pairs."""
        for i, v in enumerate(self.values):
            yield self.start + SLOT * i, v

    def window(self, start: datetime, end: datetime) -> SlotCurve:
        """The slots from ``floor_slot(start)`` to ``end`` (slots starting before)."""
        first = floor_slot(start)
        n = math.ceil((end - first) / SLOT)
        if n <= 0:
            return SlotCurve(first, (), self.unit)
        i = self.index_of(first)
        if i + n > len(self.values):
            raise CurveRangeError(
                f"the curve ends at {self.end.isoformat()}, "
                f"{end.isoformat()} was asked for"
            )
        return SlotCurve(first, self.values[i : i + n], self.unit)


class Tariff(Protocol):
    """Anything that prices a slot in p/kWh."""

    def price_at(self, slot_start: datetime) -> float:
        """Import price in p/kWh for the slot containing ``slot_start``."""
        ...


def tariff_curve(tariff: Tariff, start: datetime, end: datetime) -> SlotCurve:
    """The tariff as a price curve over the slots from ``start`` to ``end``."""
    first = floor_slot(start)
    n = max(0, math.ceil((end - first) / SLOT))
    return SlotCurve(
        first, tuple(tariff.price_at(first + SLOT * i) for i in range(n)), PRICE_UNIT
    )


@dataclass(frozen=True)
class DynamicTariff:
    """A price per slot (Agile-like). Prices in p/kWh, may be negative."""

    prices: SlotCurve

    def price_at(self, slot_start: datetime) -> float:
        """Price in p/kWh of the slot; CurveRangeError when not published."""
        return self.prices.at(slot_start)

    def curve(self, start: datetime, end: datetime) -> SlotCurve:
        """Prices for the slots in ``[start, end)``."""
        return self.prices.window(start, end)


@dataclass(frozen=True)
class FlatTariff:
    """The same price (p/kWh) at every slot."""

    price_p_per_kwh: float

    def price_at(self, slot_start: datetime) -> float:
        """Price in p/kWh (the same for every slot)."""
        return self.price_p_per_kwh

    def curve(self, start: datetime, end: datetime) -> SlotCurve:
        """Prices for the slots in ``[start, end)``."""
        return tariff_curve(self, start, end)


@dataclass(frozen=True)
class TouWindow:
    """A daily window of local wall-clock time ``[start, end)`` at ``price_p_per_kwh``.

    ``end <= start`` means the window crosses midnight (23:30-05:30).
    """

    start: time
    end: time
    price_p_per_kwh: float

    def contains(self, local: time) -> bool:
        """True when the local time of day falls inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class TimeOfUseTariff:
    """Fixed daily windows (local time in ``timezone``) and a standard rate elsewhere.

    The first window containing a slot's start wins. Prices in p/kWh.
    """

    standard_p_per_kwh: float
    windows: tuple[TouWindow, ...]
    timezone: str = "UTC"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", ZoneInfo(self.timezone))

    @classmethod
    def go_like(
        cls,
        cheap_p_per_kwh: float = 7.5,
        standard_p_per_kwh: float = 27.0,
        start: time = time(23, 30),
        end: time = time(5, 30),
        timezone: str = "UTC",
    ) -> TimeOfUseTariff:
        """A Go / Intelligent Go-like tariff: one cheap overnight window."""
        return cls(
            standard_p_per_kwh, (TouWindow(start, end, cheap_p_per_kwh),), timezone
        )

    def price_at(self, slot_start: datetime) -> float:
        """Price in p/kWh of the slot containing ``slot_start``."""
        local = floor_slot(slot_start).astimezone(self._zone).time()
        for w in self.windows:
            if w.contains(local):
                return w.price_p_per_kwh
        return self.standard_p_per_kwh

    def curve(self, start: datetime, end: datetime) -> SlotCurve:
        """Prices for the slots in ``[start, end)``."""
        return tariff_curve(self, start, end)


# ------------------------------------------------------------------------ loaders


def _curve_from_pairs(
    pairs: Sequence[tuple[datetime, float, str]], unit: str, what: str
) -> SlotCurve:
    """Check contiguity; ``pairs`` are (slot_start, value, where) in file order."""
    if not pairs:
        raise CurveFormatError(f"{what}: no slots")
    start = pairs[0][0]
    values: list[float] = []
    for k, (t, v, where) in enumerate(pairs):
        if not is_slot_start(t):
            raise CurveFormatError(
                f"{where}: slot_start {t.isoformat()} is not on a :00/:30 boundary"
            )
        expected = start + SLOT * k
        if t != expected:
            problem = "duplicate or out of order" if t < expected else "gap before it"
            raise CurveFormatError(
                f"{where}: slot_start {t.isoformat()} ({problem}; "
                f"expected {expected.isoformat()})"
            )
        values.append(v)
    return SlotCurve(start, tuple(values), unit)


def _number(text: Any, where: str, name: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise CurveFormatError(
            f"{where}: field {name!r}: {text!r} is not a number"
        ) from None
    if not math.isfinite(v):
        raise CurveFormatError(f"{where}: field {name!r}: {text!r} is not finite")
    return v


def _time(text: Any, where: str, name: str) -> datetime:
    if not isinstance(text, str):
        raise CurveFormatError(f"{where}: field {name!r}: {text!r} is not a time")
    try:
        return parse_time(text)
    except ValueError as e:
        raise CurveFormatError(
            f"{where}: field {name!r}: {text!r} is not an ISO 8601 time with offset"
            f" ({e})"
        ) from None


def parse_curve_csv(
    text: str,
    value_column: str = "price_p_per_kwh",
    unit: str = PRICE_UNIT,
    source: str = "<csv>",
) -> SlotCurve:
    """Parse CSV text with columns ``slot_start`` and ``value_column`` (module doc)."""
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise CurveFormatError(f"{source}: empty, expected a header row")
    header_no, header_line = lines[0]
    header = [h.strip() for h in next(csv.reader([header_line]))]
    for needed in ("slot_start", value_column):
        if needed not in header:
            raise CurveFormatError(
                f"{source} line {header_no}: header has no {needed!r} column "
                f"(found {header})"
            )
    i_t, i_v = header.index("slot_start"), header.index(value_column)
    pairs: list[tuple[datetime, float, str]] = []
    rows = csv.reader(io.StringIO("\n".join(line for _, line in lines[1:])))
    for (n, _), row in zip(lines[1:], rows, strict=True):
        where = f"{source} line {n}"
        if len(row) <= max(i_t, i_v):
            raise CurveFormatError(
                f"{where}: {len(row)} fields, expected at least {len(header)}"
            )
        pairs.append(
            (
                _time(row[i_t].strip(), where, "slot_start"),
                _number(row[i_v].strip(), where, value_column),
                where,
            )
        )
    return _curve_from_pairs(pairs, unit, source)


def parse_curve_json(
    text: str, unit: str | None = None, source: str = "<json>"
) -> SlotCurve:
    """Parse a JSON curve (either form in the module doc).

    ``unit`` (when given) must match the file's ``unit`` if it has one.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise CurveFormatError(
            f"{source} line {e.lineno} column {e.colno}: not JSON: {e.msg}"
        ) from None
    if not isinstance(doc, dict):
        raise CurveFormatError(f"{source}: expected a JSON object at the top")
    file_unit = doc.get("unit", unit or PRICE_UNIT)
    if not isinstance(file_unit, str):
        raise CurveFormatError(f"{source}: field 'unit' must be a string")
    if unit is not None and file_unit != unit:
        raise CurveFormatError(
            f"{source}: field 'unit' is {file_unit!r}, want {unit!r}"
        )
    if "values" in doc:
        start = _time(doc.get("start"), source, "start")
        values = doc["values"]
        if not isinstance(values, list):
            raise CurveFormatError(f"{source}: field 'values' must be a list")
        nums = tuple(
            _number(v, f"{source} values[{i}]", "values") for i, v in enumerate(values)
        )
        if not is_slot_start(start):
            raise CurveFormatError(
                f"{source}: field 'start' {start.isoformat()} is not a slot start"
            )
        if not nums:
            raise CurveFormatError(f"{source}: no slots")
        return SlotCurve(start, nums, file_unit)
    slots = doc.get("slots")
    if not isinstance(slots, list):
        raise CurveFormatError(f"{source}: needs a 'values' list or a 'slots' list")
    pairs: list[tuple[datetime, float, str]] = []
    for i, item in enumerate(slots):
        where = f"{source} slots[{i}]"
        if not isinstance(item, dict):
            raise CurveFormatError(f"{where}: expected an object")
        pairs.append(
            (
                _time(item.get("slot_start"), where, "slot_start"),
                _number(item.get("value"), where, "value"),
                where,
            )
        )
    return _curve_from_pairs(pairs, file_unit, source)


def parse_curve(
    text: str,
    source: str,
    value_column: str = "price_p_per_kwh",
    unit: str = PRICE_UNIT,
) -> SlotCurve:
    """Parse a curve given as text, JSON if ``source`` (a file name) ends in
    ``.json``, else CSV. Reading the file is the caller's (``cloud.tariffs``)."""
    if source.lower().endswith(".json"):
        return parse_curve_json(text, unit, source)
    return parse_curve_csv(text, value_column, unit, source)


def curve_to_csv(curve: SlotCurve, value_column: str, decimals: int = 2) -> str:
    """CSV text (the format :func:`parse_curve_csv` reads) for ``curve``."""
    out = [f"slot_start,{value_column}"]
    for t, v in curve.slots():
        out.append(f"{t.strftime('%Y-%m-%dT%H:%MZ')},{v:.{decimals}f}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------ sources


@runtime_checkable
class TariffSource(Protocol):
    """A price (or carbon) feed, e.g. an HTTP API client in the cloud.

    ``fetch`` returns the curve for the slots in ``[start, end)`` as far as published
    (it may be shorter than asked: day-ahead prices stop at the last published slot).
    """

    async def fetch(self, start: datetime, end: datetime) -> SlotCurve:
        """The curve for ``[start, end)``, possibly truncated to what is published."""
        ...


HttpTariffSource = TariffSource
"""The name the cloud's HTTP clients implement; the same interface."""
