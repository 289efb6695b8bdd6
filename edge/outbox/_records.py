"""The outbox's schema and counters, and the records it takes and hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocols.readings import Reading

SCHEMA_VERSION = 1
_THIN_BUCKETS_MS = (60_000, 300_000, 900_000, 3_600_000, None)  # None: drop all
_LOW_WATER = 0.90

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    UNIQUE (device_id, name)
);
-- seq is the rowid: no separate index, rows stored in sequence order
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    value REAL,
    data BLOB
);
CREATE TABLE IF NOT EXISTS last (
    stream INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    value REAL
);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    value REAL,
    data BLOB,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"""

_COUNTERS = (
    "last_seq",
    "acked_through",
    "appended_total",
    "thinned_total",
    "duplicate_total",
    "backwards_total",
    "rejected_total",
    "thinned_disk_total",
    "refused_cap_total",
    "refused_disk_total",
)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened (a session started, a connector faulted), stored and
    shipped like a reading. ``kind`` is a lower_snake name; ``data`` must pack as
    MessagePack (str/int/float/bool/None, lists, dicts with str keys)."""

    source_id: str
    kind: str
    ts: datetime
    data: dict[str, Any]


Item = Reading | Event


@dataclass(slots=True)
class AppendResult:
    """What happened to one group of items handed to ``append``."""

    accepted: int = 0
    duplicates: int = 0
    backwards: int = 0
    first_seq: int | None = None
    last_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One stored record as the uplink reads it: a reading (``value``) or an
    event (``data``, MessagePack)."""

    seq: int
    ts_ms: int
    stream: int
    value: float | None
    data: bytes | None


@dataclass(slots=True)
class OutboxStats:
    """How full the outbox is and how far the cloud has acknowledged it."""

    backlog_records: int
    backlog_oldest_ms: int | None
    used_bytes: int
    file_bytes: int
    cap_bytes: int
    last_seq: int
    acked_through: int
    counters: dict[str, int] = field(default_factory=dict)
    fs_free_bytes: int = 0
    limit_bytes: int = 0  # what the outbox may hold now (cap, or less: disk)
    limit_reason: str = "cap"
    reserve_bytes: int = 0  # held beside the outbox for a full disk
    prunes_pending: int = 0  # acknowledged ranges not deleted yet (disk full)
