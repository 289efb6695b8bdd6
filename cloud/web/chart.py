"""The chart of the next 24 h as inline SVG: planned charging power as bars over
the price line, and the charging windows the plan makes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cloud.web.formatting import kw, parse_dt
from cloud.web.markup import h

SLOT = timedelta(minutes=30)
CHART_SLOTS = 48  # the next 24 h

# drawing geometry (SVG user units)
_BAR_W, _LEFT, _TOP, _HEIGHT, _BOTTOM = 12, 40, 14, 170, 34

# (slot start, price p/kWh or None, planned W summed over chargers)
_Row = tuple[datetime, float | None, float]
Window = tuple[datetime, datetime, float]


def _floor_slot(t: datetime) -> datetime:
    return t.replace(minute=t.minute - t.minute % 30, second=0, microsecond=0)


def _chart_rows(
    slots: Sequence[Mapping[str, Any]], start: datetime, end: datetime
) -> list[_Row]:
    rows: list[_Row] = []
    for s in slots:
        t = parse_dt(s.get("slot_start"))
        if t is None or not start <= t < end:
            continue
        price = s.get("price_p_per_kwh")
        planned = s.get("planned_w") or {}
        total_w = sum(v for v in planned.values() if isinstance(v, int | float))
        rows.append((t, price if isinstance(price, int | float) else None, total_w))
    return rows


def _charging_windows(rows: Sequence[_Row]) -> list[Window]:
    windows: list[Window] = []
    for t, _, w in rows:
        if w <= 0:
            continue
        if windows and windows[-1][1] == t:
            a, _, peak = windows[-1]
            windows[-1] = (a, t + SLOT, max(peak, w))
        else:
            windows.append((t, t + SLOT, w))
    return windows


def _frame(width: int, max_w: float, p_lo: float, p_hi: float) -> list[str]:
    """The SVG opening, the axis and the scale labels (kW left, price right)."""
    left, top, height, bottom = _LEFT, _TOP, _HEIGHT, _BOTTOM
    return [
        f'<svg class="chart" viewBox="0 0 {width} {top + height + bottom}" '
        'role="img" aria-label="Planned charging power and price, next 24 hours">',
        f'<line x1="{left}" y1="{top + height}" x2="{left + _BAR_W * CHART_SLOTS}" '
        f'y2="{top + height}" class="axis"/>',
        f'<text x="{left - 4}" y="{top + 8}" class="lbl" text-anchor="end">'
        f"{max_w / 1000:.1f}</text>",
        f'<text x="{left - 4}" y="{top + height}" class="lbl" text-anchor="end">0'
        "</text>",
        f'<text x="{left - 4}" y="{top + height + 30}" class="lbl" '
        'text-anchor="end">kW</text>',
        f'<text x="{width - 2}" y="{top + 8}" class="lbl price" text-anchor="end">'
        f"{p_hi:.0f}p</text>",
        f'<text x="{width - 2}" y="{top + height}" class="lbl price" '
        f'text-anchor="end">{p_lo:.0f}p</text>',
    ]


def _chart_svg(rows: Sequence[_Row], start: datetime, tz: ZoneInfo) -> str:
    bar_w, left, top, height = _BAR_W, _LEFT, _TOP, _HEIGHT
    width = left + bar_w * CHART_SLOTS + 44
    max_w = max([w for *_, w in rows] + [1000.0])
    prices = [p for _, p, _ in rows if p is not None]
    p_lo, p_hi = (min(prices), max(prices)) if prices else (0.0, 1.0)
    if p_hi - p_lo < 1e-9:
        p_lo, p_hi = p_lo - 1, p_hi + 1
    parts = _frame(width, max_w, p_lo, p_hi)
    points = []
    for t, price, w in rows:
        i = int((t - start) / SLOT)
        x = left + i * bar_w
        when = t.astimezone(tz).strftime("%H:%M")
        if w > 0:
            bh = max(1.0, height * w / max_w)
            parts.append(
                f'<rect class="bar" x="{x + 1}" y="{top + height - bh:.1f}" '
                f'width="{bar_w - 2}" height="{bh:.1f}" data-slot="{h(when)}" '
                f'data-w="{w:.0f}"><title>{h(when)}: {kw(w)}'
                f"{f', {price:.1f} p/kWh' if price is not None else ''}</title></rect>"
            )
        if price is not None:
            y = top + height - height * (price - p_lo) / (p_hi - p_lo)
            points.append(f"{x + bar_w / 2:.1f},{y:.1f}")
        local = t.astimezone(tz)
        if local.minute == 0 and local.hour % 3 == 0:
            parts.append(
                f'<text x="{x}" y="{top + height + 18}" class="lbl" '
                f'text-anchor="middle">{local:%H}</text>'
            )
    if points:
        parts.append(f'<polyline class="price" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def plan_chart(
    slots: Sequence[Mapping[str, Any]], now: datetime, tz: ZoneInfo
) -> tuple[str, list[tuple[datetime, datetime, float]]]:
    """SVG of the next 24 h: planned charging power as bars over the price line;
    and the charging windows (start, end, peak W)."""
    start = _floor_slot(now.astimezone(UTC))
    rows = _chart_rows(slots, start, start + SLOT * CHART_SLOTS)
    windows = _charging_windows(rows)
    if not rows:
        return '<p class="muted">No plan slots in the next 24 h.</p>', windows
    return _chart_svg(rows, start, tz), windows
