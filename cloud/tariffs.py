"""Tariff storage: the ``tariffs`` and ``tariff_slots`` tables.

Written by the API (``PUT /v1/tariffs/{id}/prices``) and the CLI (``fusebox cloud
prices load``), read by the scheduler. Marking a tariff updated (``updated_at``)
makes the scheduler replan the sites on it. A module of its own so that the API
process needs nothing of the scheduler service.

Also the curve files (``load_curve``, ``FileTariffSource``): reading files is I/O,
which ``protocols`` does not do; the parsing is ``protocols.planning``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg

from protocols.planning import (
    PRICE_UNIT,
    SlotCurve,
    floor_slot,
    parse_curve,
    parse_curve_csv,
)

__all__ = [
    "FileTariffSource",
    "TariffSlots",
    "load_curve",
    "load_curve_csv",
    "load_prices",
    "read_slots",
    "store_tariff",
]


async def load_prices(
    dsn: str,
    tariff_id: str,
    *,
    prices: SlotCurve | None = None,
    carbon: SlotCurve | None = None,
    kind: Literal["dynamic", "tou", "flat"] = "dynamic",
    flat_price_p_per_kwh: float | None = None,
) -> int:
    """Store a tariff's price and/or carbon curve (upsert per slot; a value not
    given keeps the stored one) and mark the tariff updated, so the scheduler
    replans the sites on it. Returns the number of slots written."""
    merged: dict[datetime, list[float | None]] = {}
    for curve, i in ((prices, 0), (carbon, 1)):
        if curve is None:
            continue
        for t, v in curve.slots():
            merged.setdefault(t, [None, None])[i] = v
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            await store_tariff(
                conn,
                tariff_id,
                kind,
                flat_price_p_per_kwh,
                [(t, p, c) for t, (p, c) in sorted(merged.items())],
            )
    finally:
        await conn.close()
    return len(merged)


async def store_tariff(
    conn: asyncpg.Connection,
    tariff_id: str,
    kind: str,
    flat_price_p_per_kwh: float | None,
    slots: Sequence[tuple[datetime, float | None, float | None]],
) -> None:
    """Upsert a tariff and its slots (inside the caller's transaction)."""
    await conn.execute(
        "INSERT INTO tariffs (id, kind, flat_price_p_per_kwh) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET kind = excluded.kind,"
        " flat_price_p_per_kwh = coalesce(excluded.flat_price_p_per_kwh,"
        " tariffs.flat_price_p_per_kwh), updated_at = now()",
        tariff_id,
        kind,
        flat_price_p_per_kwh,
    )
    if not slots:
        return
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS tariff_load (slot_start timestamptz,"
        " price_p_per_kwh double precision, carbon_g_per_kwh double precision)"
        " ON COMMIT DROP"
    )
    await conn.copy_records_to_table(
        "tariff_load",
        records=list(slots),
        columns=["slot_start", "price_p_per_kwh", "carbon_g_per_kwh"],
    )
    await conn.execute(
        "INSERT INTO tariff_slots (tariff_id, slot_start, price_p_per_kwh,"
        " carbon_g_per_kwh) SELECT $1, slot_start, price_p_per_kwh, carbon_g_per_kwh"
        " FROM tariff_load ON CONFLICT (tariff_id, slot_start) DO UPDATE SET"
        " price_p_per_kwh = coalesce(excluded.price_p_per_kwh,"
        " tariff_slots.price_p_per_kwh),"
        " carbon_g_per_kwh = coalesce(excluded.carbon_g_per_kwh,"
        " tariff_slots.carbon_g_per_kwh)",
        tariff_id,
    )
    await conn.execute("DROP TABLE tariff_load")


@dataclass(frozen=True)
class TariffSlots:
    """What is stored of a tariff over a time range: its flat price (None: not
    flat, or no such tariff), and the known prices and carbon by slot."""

    flat_price_p_per_kwh: float | None
    prices: dict[datetime, float]
    carbon: dict[datetime, float]


async def read_slots(
    conn: asyncpg.Connection, tariff_id: str, since: datetime, until: datetime
) -> TariffSlots:
    """The tariff's stored slots in ``[since, until)``."""
    tariff = await conn.fetchrow("SELECT * FROM tariffs WHERE id = $1", tariff_id)
    rows = await conn.fetch(
        "SELECT slot_start, price_p_per_kwh, carbon_g_per_kwh FROM tariff_slots "
        "WHERE tariff_id = $1 AND slot_start >= $2 AND slot_start < $3",
        tariff_id,
        since,
        until,
    )
    return TariffSlots(
        flat_price_p_per_kwh=None if tariff is None else tariff["flat_price_p_per_kwh"],
        prices={
            r["slot_start"]: r["price_p_per_kwh"]
            for r in rows
            if r["price_p_per_kwh"] is not None
        },
        carbon={
            r["slot_start"]: r["carbon_g_per_kwh"]
            for r in rows
            if r["carbon_g_per_kwh"] is not None
        },
    )


def load_curve(
    path: str | Path, value_column: str = "price_p_per_kwh", unit: str = PRICE_UNIT
) -> SlotCurve:
    """Load a ``.csv`` or ``.json`` curve file (``protocols.planning.parse_curve``)."""
    p = Path(path)
    return parse_curve(p.read_text(encoding="utf-8"), str(p), value_column, unit)


def load_curve_csv(
    path: str | Path, value_column: str = "price_p_per_kwh", unit: str = PRICE_UNIT
) -> SlotCurve:
    """Load a CSV curve file, whatever its name (``parse_curve_csv``)."""
    p = Path(path)
    return parse_curve_csv(p.read_text(encoding="utf-8"), value_column, unit, str(p))


@dataclass
class FileTariffSource:
    """A ``TariffSource`` reading a CSV or JSON curve file (read on each fetch)."""

    path: Path
    value_column: str = "price_p_per_kwh"
    unit: str = PRICE_UNIT

    async def fetch(self, start: datetime, end: datetime) -> SlotCurve:
        """The file's slots in ``[start, end)``, truncated to the file's range."""
        curve = load_curve(self.path, self.value_column, self.unit)
        first = max(floor_slot(start), curve.start)
        last = min(end, curve.end)
        if last <= first:
            return SlotCurve(first, (), curve.unit)
        return curve.window(first, last)
