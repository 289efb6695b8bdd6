"""Charging transactions on the edge: durable ids, idempotency, meter values.

``TransactionStore`` is a small SQLite file beside the outbox (``<outbox
stem>-ocpp.db``), ``synchronous=FULL``, written before the charger is answered:

* **1.6 transaction ids** are issued here: a strictly rising integer per gateway.
  The counter and the start that got it are committed together, so an id is never
  handed out twice, not even after ``kill -9``. A new file seeds the counter with
  the seconds since 2020-01-01, so a store that was wiped and re-created still
  issues ids above the ones it gave before (a gateway cannot have started more
  than one transaction per second on average) and they fit a signed 32-bit
  integer, as many chargers store them, until about 2088.
* **1.6 StartTransaction redelivery**: (charger, connector, idTag, timestamp,
  meterStart) maps to its id, so a start resent after a lost answer gets the same
  id again.
* **2.0.1 TransactionEvent**: the (transaction, seqNo) pairs already stored and
  the last energy register per transaction (the meter stop of an Ended event
  without one).
* the **authorisation cache**: id tags answered Accepted, with the time.

``meter_readings`` turns OCPP sampled values into ``Reading``s, skipping (and
reporting) what it cannot convert instead of failing the message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from edge.paths import StatePaths
from protocols.readings import (
    EARLIEST_TS,
    ImplausibleReading,
    Reading,
    check_plausible,
)

__all__ = [
    "MeterConversion",
    "TransactionStore",
    "TxState201",
    "device_for",
    "meter_readings",
    "parse_charger_ts",
    "store_path_beside",
]

log = logging.getLogger("fusebox.edge.ocpp.transactions")

_T = TypeVar("_T")
_ID_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_MAX_FUTURE = timedelta(days=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS starts16 (
    charger TEXT NOT NULL,
    connector INTEGER NOT NULL,
    id_tag TEXT NOT NULL,
    ts TEXT NOT NULL,
    meter_start INTEGER NOT NULL,
    tx_id INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (charger, connector, id_tag, ts, meter_start)
);
CREATE TABLE IF NOT EXISTS tx201 (
    charger TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    connector INTEGER,
    last_register_wh REAL,
    PRIMARY KEY (charger, tx_id)
);
CREATE TABLE IF NOT EXISTS seq201 (
    charger TEXT NOT NULL,
    tx_id TEXT NOT NULL,
    seq_no INTEGER NOT NULL,
    PRIMARY KEY (charger, tx_id, seq_no)
);
CREATE TABLE IF NOT EXISTS id_tag_cache (
    id_tag TEXT PRIMARY KEY,
    accepted_at_ms INTEGER NOT NULL
);
"""


def store_path_beside(outbox_path: Path) -> Path:
    """``var/outbox.db`` -> ``var/outbox-ocpp.db``
    (``StatePaths.ocpp_transactions``)."""
    return StatePaths.beside(outbox_path).ocpp_transactions


@dataclass(frozen=True, slots=True)
class TxState201:
    """What the store knows of one 2.0.1 transaction before an event is stored."""

    seen: bool  # this (transaction, seqNo) was stored already
    connector: int | None
    last_register_wh: float | None


class TransactionStore:
    """The durable transaction state; every method is a coroutine run on one
    worker thread (SQLite commits with fsync must not block the event loop)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocpp-tx")
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = 'last_tx_id'"
        ).fetchone()
        if row is None:
            seed = int((datetime.now(UTC) - _ID_EPOCH).total_seconds())
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_tx_id', ?)", (seed,)
            )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, fn, *args
        )

    def close(self) -> None:
        """Finish the queued work, then close the database."""
        self._executor.shutdown(wait=True)
        self._db.close()

    # -- 1.6 transaction ids ------------------------------------------------

    def _start16(
        self, charger: str, connector: int, id_tag: str, ts: str, meter_start: int
    ) -> tuple[int, bool]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT tx_id FROM starts16 WHERE charger = ? AND connector = ? "
                "AND id_tag = ? AND ts = ? AND meter_start = ?",
                (charger, connector, id_tag, ts, meter_start),
            ).fetchone()
            if row is not None:
                db.execute("COMMIT")
                return int(row[0]), False
            last = int(
                db.execute(
                    "SELECT value FROM meta WHERE key = 'last_tx_id'"
                ).fetchone()[0]
            )
            tx_id = last + 1
            db.execute(
                "INSERT INTO starts16 VALUES (?, ?, ?, ?, ?, ?)",
                (charger, connector, id_tag, ts, meter_start, tx_id),
            )
            db.execute("UPDATE meta SET value = ? WHERE key = 'last_tx_id'", (tx_id,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return tx_id, True

    async def start16(
        self, charger: str, connector: int, id_tag: str, ts: str, meter_start: int
    ) -> tuple[int, bool]:
        """The transaction id of this start, durable before it returns; ``True``
        when newly issued, ``False`` for a redelivered start."""
        result: tuple[int, bool] = await self._run(
            self._start16, charger, connector, id_tag, ts, meter_start
        )
        return result

    def _connector16(self, charger: str, tx_id: int) -> int | None:
        row = self._db.execute(
            "SELECT connector FROM starts16 WHERE charger = ? AND tx_id = ?",
            (charger, tx_id),
        ).fetchone()
        return None if row is None else int(row[0])

    async def connector16(self, charger: str, tx_id: int) -> int | None:
        """The connector of a transaction this edge issued, None if unknown."""
        result: int | None = await self._run(self._connector16, charger, tx_id)
        return result

    # -- 2.0.1 transaction events ----------------------------------------------

    def _state201(self, charger: str, tx_id: str, seq_no: int | None) -> TxState201:
        row = self._db.execute(
            "SELECT connector, last_register_wh FROM tx201 "
            "WHERE charger = ? AND tx_id = ?",
            (charger, tx_id),
        ).fetchone()
        seen = False
        if seq_no is not None:
            seen = (
                self._db.execute(
                    "SELECT 1 FROM seq201 WHERE charger = ? AND tx_id = ? "
                    "AND seq_no = ?",
                    (charger, tx_id, seq_no),
                ).fetchone()
                is not None
            )
        if row is None:
            return TxState201(seen, None, None)
        return TxState201(seen, row[0], row[1])

    async def state201(
        self, charger: str, tx_id: str, seq_no: int | None
    ) -> TxState201:
        """What is stored of this 2.0.1 transaction before an event is stored."""
        result: TxState201 = await self._run(self._state201, charger, tx_id, seq_no)
        return result

    def _record201(
        self,
        charger: str,
        tx_id: str,
        seq_no: int | None,
        connector: int | None,
        register_wh: float | None,
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO tx201 (charger, tx_id, connector, last_register_wh) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (charger, tx_id) DO UPDATE SET "
                "connector = coalesce(excluded.connector, connector), "
                "last_register_wh = max(coalesce(excluded.last_register_wh, "
                "last_register_wh), coalesce(last_register_wh, "
                "excluded.last_register_wh))",
                (charger, tx_id, connector, register_wh),
            )
            if seq_no is not None:
                db.execute(
                    "INSERT OR IGNORE INTO seq201 VALUES (?, ?, ?)",
                    (charger, tx_id, seq_no),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def record201(
        self,
        charger: str,
        tx_id: str,
        seq_no: int | None,
        connector: int | None,
        register_wh: float | None,
    ) -> None:
        """Remember that this event is stored (call after the outbox commit)."""
        await self._run(self._record201, charger, tx_id, seq_no, connector, register_wh)

    # -- authorisation cache ------------------------------------------------------

    def _cache_get(self, key: str) -> int | None:
        row = self._db.execute(
            "SELECT accepted_at_ms FROM id_tag_cache WHERE id_tag = ?", (key,)
        ).fetchone()
        return None if row is None else int(row[0])

    async def cached_at_ms(self, key: str) -> int | None:
        """When the id-tag cache last saw ``key`` accepted (ms), or None."""
        result: int | None = await self._run(self._cache_get, key)
        return result

    def _cache_put(self, key: str, at_ms: int) -> None:
        self._db.execute(
            "INSERT INTO id_tag_cache VALUES (?, ?) ON CONFLICT (id_tag) "
            "DO UPDATE SET accepted_at_ms = excluded.accepted_at_ms",
            (key, at_ms),
        )

    async def cache_accepted(self, key: str, at_ms: int) -> None:
        """Remember that ``key`` was accepted at ``at_ms``."""
        await self._run(self._cache_put, key, at_ms)


# -- meter values -----------------------------------------------------------------


def parse_charger_ts(value: object, received_at: datetime) -> datetime:
    """A charger's timestamp as aware UTC; the receive time when it is missing,
    unreadable, before 2000 (clock never set) or more than a day ahead."""
    if not isinstance(value, str) or not value.strip():
        return received_at
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return received_at
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)  # OCPP recommends UTC; assume it
    ts = ts.astimezone(UTC)
    if ts < EARLIEST_TS or ts > received_at + _MAX_FUTURE:
        return received_at
    return ts


def device_for(charger: str, connector: int | None) -> str:
    """Readings of connector (1.6) / EVSE (2.0.1) 0 and 1 belong to the charger;
    further ones get their own device ``<charger>-<n>``."""
    if connector is None or connector <= 1:
        return charger
    return f"{charger}-{connector}"


# measurand -> (quantity without phase, per-phase pattern, natural unit)
_MEASURANDS: dict[str, tuple[str, str | None, str]] = {
    "Energy.Active.Import.Register": (
        "import_energy_wh",
        "import_energy_{p}_wh",
        "Wh",
    ),
    "Energy.Active.Export.Register": ("export_energy_wh", None, "Wh"),
    "Power.Active.Import": ("power_w", "power_{p}_w", "W"),
    "Current.Import": ("current_a", "current_{p}_a", "A"),
    "Voltage": ("voltage_v", "voltage_{p}_v", "V"),
    "SoC": ("soc_pct", None, "Percent"),
    "Temperature": ("temperature_c", None, "Celsius"),
    "Frequency": ("frequency_hz", None, "Hz"),
    "Power.Factor": ("power_factor", None, ""),
}
# unit spelling (case-insensitive) -> (natural unit, factor, offset)
_UNITS: dict[str, tuple[str, float, float]] = {
    "wh": ("Wh", 1.0, 0.0),
    "kwh": ("Wh", 1000.0, 0.0),
    "w": ("W", 1.0, 0.0),
    "kw": ("W", 1000.0, 0.0),
    "a": ("A", 1.0, 0.0),
    "v": ("V", 1.0, 0.0),
    "percent": ("Percent", 1.0, 0.0),
    "%": ("Percent", 1.0, 0.0),
    "celsius": ("Celsius", 1.0, 0.0),
    "celcius": ("Celsius", 1.0, 0.0),  # the 1.6 schema's own spelling (sic)
    "c": ("Celsius", 1.0, 0.0),
    "k": ("Celsius", 1.0, -273.15),
    "fahrenheit": ("Celsius", 5 / 9, -32 * 5 / 9),
    "hz": ("Hz", 1.0, 0.0),
    "hertz": ("Hz", 1.0, 0.0),
}
_PHASES = {"l1": "l1", "l2": "l2", "l3": "l3", "l1-n": "l1", "l2-n": "l2", "l3-n": "l3"}


@dataclass(slots=True)
class MeterConversion:
    """Readings from a list of meter values, and what was skipped (reason keys
    such as ``measurand:Power.Offered`` or ``unit:Voltage/kV``)."""

    readings: list[Reading] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def register_wh(self, device_id: str, *, last: bool) -> float | None:
        """The first (or last, by time) total import register of ``device_id``."""
        values = sorted(
            (r.ts, r.value)
            for r in self.readings
            if r.device_id == device_id and r.quantity == "import_energy_wh"
        )
        if not values:
            return None
        return values[-1 if last else 0][1]


def _number(raw: object) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw.strip().strip("'\""))
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _convert(
    sample: Mapping[str, Any], v201: bool, energy_in_kwh: bool = False
) -> tuple[str, float] | str:
    """``(quantity, value)`` or the reason to skip the sample. ``energy_in_kwh``:
    energy registers labelled Wh (or not labelled) are really kWh (a firmware
    quirk, OpenEVSE#703); an explicit kWh label is read as kWh either way."""
    measurand = sample.get("measurand") or "Energy.Active.Import.Register"
    if not isinstance(measurand, str):
        return "measurand:?"
    if sample.get("format") == "SignedData":
        return "format:SignedData"
    spec = _MEASURANDS.get(measurand)
    if spec is None:
        return f"measurand:{measurand}"
    base, per_phase, natural = spec
    multiplier = 0
    unit_raw: object
    if v201:
        uom = sample.get("unit_of_measure")
        uom = uom if isinstance(uom, Mapping) else {}
        unit_raw = uom.get("unit")
        mult = uom.get("multiplier", 0)
        multiplier = mult if isinstance(mult, int) and -9 <= mult <= 9 else 0
    else:
        unit_raw = sample.get("unit")
    if unit_raw is None or unit_raw == "":
        unit, factor, offset = natural, 1.0, 0.0  # the measurand's own unit
    elif isinstance(unit_raw, str) and unit_raw.strip().lower() in _UNITS:
        unit, factor, offset = _UNITS[unit_raw.strip().lower()]
    else:
        return f"unit:{measurand}/{unit_raw}"
    if unit != natural:
        return f"unit:{measurand}/{unit_raw}"
    if energy_in_kwh and natural == "Wh" and factor == 1.0:
        factor = 1000.0
    number = _number(sample.get("value"))
    if number is None:
        return f"value:{measurand}"
    value = number * (10.0**multiplier) * factor + offset
    phase = sample.get("phase")
    quantity = base
    if isinstance(phase, str) and phase:
        key = _PHASES.get(phase.lower())
        if key is None or per_phase is None:
            return f"phase:{measurand}/{phase}"
        quantity = per_phase.format(p=key)
    return quantity, value


def meter_readings(
    charger: str,
    connector: int | None,
    meter_values: object,
    received_at: datetime,
    *,
    v201: bool,
    energy_in_kwh: bool = False,
    trust_clock: bool = True,
) -> MeterConversion:
    """Readings from a 1.6 ``meterValue``/``transactionData`` or a 2.0.1
    ``meterValue`` list (snake_case dicts, as the ``ocpp`` library passes them).
    ``energy_in_kwh``: see ``_convert``; ``trust_clock`` False stamps every value
    with ``received_at`` (chargers whose clock cannot be trusted)."""
    out = MeterConversion()
    device = device_for(charger, connector)
    items: list[Any] = meter_values if isinstance(meter_values, list) else []
    stamps = [
        parse_charger_ts(mv.get("timestamp"), received_at)
        if isinstance(mv, Mapping)
        else received_at
        for mv in items
    ]
    # an untrusted clock: the newest value is stamped on arrival and the others
    # keep their spacing from it (a StopTransaction's transactionData spans hours)
    shift = received_at - max(stamps) if stamps and not trust_clock else None
    for mv, charger_ts in zip(items, stamps, strict=True):
        if not isinstance(mv, Mapping):
            out.skipped.append("meter_value:not an object")
            continue
        ts = charger_ts if shift is None else charger_ts + shift
        samples = mv.get("sampled_value")
        for sample in samples if isinstance(samples, list) else []:
            if not isinstance(sample, Mapping):
                out.skipped.append("sampled_value:not an object")
                continue
            converted = _convert(sample, v201, energy_in_kwh)
            if isinstance(converted, str):
                out.skipped.append(converted)
                continue
            reading = Reading(device, converted[0], ts, converted[1])
            try:
                check_plausible(reading)
            except ImplausibleReading:
                # the quantity only: the value would make every reason new
                out.skipped.append(f"implausible:{converted[0]}")
                continue
            out.readings.append(reading)
    return out
