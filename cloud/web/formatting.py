"""Values as the pages show them (local times, kW, kWh, pence, CO₂) and form
numbers as the API wants them. Anything missing or of the wrong type shows
as ``—``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_ZONE = "Europe/London"


def zone(name: str | None) -> ZoneInfo:
    """The time zone ``name``, or ``DEFAULT_ZONE`` when unset or unknown."""
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def parse_dt(value: Any) -> datetime | None:
    """``value`` (a datetime or an ISO string) as an aware datetime, naive ones
    taken as UTC; ``None`` when it is neither."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return None
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return None


def local(value: Any, tz: ZoneInfo, fmt: str = "%a %d %b %H:%M") -> str:
    """``value`` as local time in ``tz``, formatted with ``fmt``."""
    t = parse_dt(value)
    return t.astimezone(tz).strftime(fmt) if t else "—"


def kw(w: Any) -> str:
    """Watts as ``1.2 kW``."""
    return f"{w / 1000:.1f} kW" if isinstance(w, int | float) else "—"


def kwh(wh: Any) -> str:
    """Watt-hours as ``1.23 kWh``."""
    return f"{wh / 1000:.2f} kWh" if isinstance(wh, int | float) else "—"


def money(p: Any) -> str:
    """Pence as ``£1.23``."""
    return f"£{p / 100:.2f}" if isinstance(p, int | float) else "—"


def carbon(g: Any) -> str:
    """Grams of CO₂, in kg from 1,000 g."""
    if not isinstance(g, int | float):
        return "—"
    return f"{g / 1000:.2f} kg CO₂" if g >= 1000 else f"{g:.0f} g CO₂"


def num(v: Any, default: str = "") -> str:
    """A number for an input's ``value`` (``7.5``, ``63``), else ``default``."""
    if isinstance(v, int | float):
        return f"{v:g}"
    return default


def float_or_none(text: str | None) -> float | str | None:
    """A form field as a number for the API: ``None`` when blank, the text
    itself when it is not a finite number (``abc``, but also ``nan``, ``inf``
    and ``1e999``, which JSON cannot carry): the API then names the field in
    its 422 ("not a number")."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text  # the API names the field in its 422
    return value if math.isfinite(value) else text
