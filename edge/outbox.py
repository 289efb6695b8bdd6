"""The edge outbox: the system of record for every reading until the cloud stores it.

SQLite in WAL mode. Each record (a reading or an event) gets a gateway-local,
strictly rising sequence number when it is appended; the highest ever assigned is
kept in ``meta`` in the same transaction, so a number is never reused, not even
after every row was pruned or the process was killed mid-commit. Appends are
group-committed: whatever arrives while one commit runs goes into the next, so a
durable commit (``synchronous=FULL``) is paid per group, not per reading.

Rows leave the outbox only when the cloud acknowledges them (``prune_range`` for
one stored batch, ``prune_through`` for the cloud's contiguous watermark), or by
the full-disk policy below.

Full-disk policy (``cap_bytes``): when the pages in use exceed the cap, instantaneous
samples (power, voltage, current...) are thinned, oldest first, to one sample per
stream per bucket; the bucket grows 1 min -> 5 min -> 15 min -> 1 h -> all until
usage is below 90 % of the cap. Cumulative energy registers and events are never
thinned. Every thinned reading is counted (``thinned_total``) and reported to the
cloud in the gateway status. If only registers and events remain and the cap is
still reached, ``append`` raises ``OutboxFull``; drivers then leave the device
unacknowledged (the broker keeps the message) and retry. The same policy runs when
SQLite reports the disk itself full (``SQLITE_FULL``).

Per stream the outbox remembers the last timestamp and value it committed, in the
same transaction as the rows: a reading at or before that timestamp is a redelivery
of one already stored (dropped, counted as duplicate), and a cumulative register
below the last value is running backwards (dropped, counted as bad input).

All methods of ``OutboxStore`` are synchronous and must be called from one thread;
``Outbox`` wraps it for asyncio with a single worker thread and the group commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack

from edge import OutboxError, OutboxFull
from protocols.readings import QUANTITIES, QuantityKind, Reading, is_event_kind

log = logging.getLogger("fusebox.edge.outbox")

SCHEMA_VERSION = 1
_THIN_BUCKETS_MS = (60_000, 300_000, 900_000, 3_600_000, None)  # None: drop all
_LOW_WATER = 0.90
_THIN_CHUNK_SEQS = 20_000  # rows rewritten per thinning transaction

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
    seq: int
    ts_ms: int
    stream: int
    value: float | None
    data: bytes | None


@dataclass(slots=True)
class OutboxStats:
    backlog_records: int
    backlog_oldest_ms: int | None
    used_bytes: int
    file_bytes: int
    cap_bytes: int
    last_seq: int
    acked_through: int
    counters: dict[str, int] = field(default_factory=dict)


class OutboxStore:
    """Synchronous SQLite outbox. Use from one thread only (``Outbox`` does)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        cap_bytes: int = 512 * 1024 * 1024,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cap_bytes = cap_bytes
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA temp_store=MEMORY")
        self._db.execute("PRAGMA cache_size=-8000")  # 8 MB page cache: keeps RSS low
        # checkpoint every ~4 MB and truncate the WAL back to 4 MB: the cap is on
        # the database; this keeps the log beside it small
        self._db.execute("PRAGMA wal_autocheckpoint=1000")
        self._db.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
        self._db.executescript(_SCHEMA)
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._streams: dict[tuple[str, str], int] = {}
        self._stream_kind: dict[int, QuantityKind] = {}
        self._stream_names: dict[int, tuple[str, str]] = {}
        for sid, device_id, name, kind in self._db.execute(
            "SELECT id, device_id, name, kind FROM streams"
        ):
            self._remember_stream(sid, device_id, name, QuantityKind(kind))
        self._last: dict[int, tuple[int, float | None]] = {
            s: (t, v)
            for s, t, v in self._db.execute("SELECT stream, ts_ms, value FROM last")
        }
        self.counters = dict.fromkeys(_COUNTERS, 0)
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            if key in self.counters:
                self.counters[key] = int(value)
        # A crash between a commit of rows and the meta update is impossible (same
        # transaction), but a database restored from elsewhere could disagree.
        max_seq = self._db.execute("SELECT max(seq) FROM records").fetchone()[0] or 0
        self.counters["last_seq"] = max(self.counters["last_seq"], max_seq)
        self.backlog_records = int(
            self._db.execute("SELECT count(*) FROM records").fetchone()[0]
        )
        row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            # drawn once per outbox; see protocols.contract on why epochs exist
            self.epoch = secrets.randbelow(2**62) + 1
            self._set_meta({"epoch": self.epoch})
        else:
            self.epoch = int(row[0])
        self._set_meta({"schema_version": SCHEMA_VERSION})

    # ----------------------------------------------------------------- internals

    def _remember_stream(
        self, sid: int, device_id: str, name: str, kind: QuantityKind
    ) -> None:
        self._streams[(device_id, name)] = sid
        self._stream_kind[sid] = kind
        self._stream_names[sid] = (device_id, name)

    def _stream_id(self, device_id: str, name: str, kind: QuantityKind) -> int:
        sid = self._streams.get((device_id, name))
        if sid is None:
            cur = self._db.execute(
                "INSERT INTO streams (device_id, name, kind) VALUES (?, ?, ?)",
                (device_id, name, kind.value),
            )
            sid = int(cur.lastrowid or 0)
            self._remember_stream(sid, device_id, name, kind)
        return sid

    def _set_meta(self, values: dict[str, int]) -> None:
        self._db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    # --------------------------------------------------------------------- writes

    def append(self, groups: Sequence[Sequence[Item]]) -> list[AppendResult]:
        """Append groups of items in one durable transaction; one result per group.

        Raises ``OutboxFull`` when nothing more fits even after thinning; then no
        item of any group was stored.
        """
        try:
            return self._append_once(groups)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise OutboxError(f"outbox append failed: {exc}") from exc
            log.warning("outbox: disk full (%s); thinning and retrying", exc)
        try:
            self.thin(force=True)
        except sqlite3.OperationalError as exc:
            # thinning writes too (and rewrites pages): it can hit the full disk
            if "full" not in str(exc).lower():
                raise OutboxError(f"outbox thinning failed: {exc}") from exc
            raise OutboxFull(
                "the disk is full and even thinning cannot write; free disk space; "
                "the devices keep their readings meanwhile"
            ) from exc
        try:
            return self._append_once(groups)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise OutboxFull(
                    "the disk is full and nothing is left to thin; free disk space "
                    "or raise the cap; the devices keep their readings meanwhile"
                ) from exc
            raise OutboxError(f"outbox append failed: {exc}") from exc

    def _append_once(self, groups: Sequence[Sequence[Item]]) -> list[AppendResult]:
        if (
            self.cap_bytes
            and self.used_bytes() >= self.cap_bytes
            and self.thin() == 0
            and self.used_bytes() >= self.cap_bytes
        ):
            raise OutboxFull(
                f"outbox holds {self.used_bytes()} bytes, cap {self.cap_bytes}, "
                "and only registers and events are left (never thinned); the "
                "uplink must drain before more fits"
            )
        db = self._db
        seq = self.counters["last_seq"]
        rows: list[tuple[int, int, int, float | None, bytes | None]] = []
        last_updates: dict[int, tuple[int, float | None]] = {}
        last = self._last
        results: list[AppendResult] = []
        dup = back = 0
        # the loop below is the edge's hottest path: names bound locally on purpose
        stream_of = self._streams.get
        kind_of = self._stream_kind
        cumulative = QuantityKind.CUMULATIVE
        pending_last = last_updates.get
        committed_last = last.get
        add_row = rows.append
        db.execute("BEGIN IMMEDIATE")
        try:
            for group in groups:
                res = AppendResult()
                for item in group:
                    ts_ms = int(item.ts.timestamp() * 1000)
                    if isinstance(item, Reading):
                        value = item.value
                        sid = stream_of((item.device_id, item.quantity))
                        if sid is None:
                            sid = self._stream_id(
                                item.device_id, item.quantity, QUANTITIES[item.quantity]
                            )
                        prev = pending_last(sid) or committed_last(sid)
                        if prev is not None:
                            if ts_ms <= prev[0]:
                                res.duplicates += 1
                                continue
                            if (
                                prev[1] is not None
                                and value < prev[1]
                                and kind_of[sid] is cumulative
                            ):
                                res.backwards += 1
                                continue
                        seq += 1
                        add_row((seq, ts_ms, sid, value, None))
                        last_updates[sid] = (ts_ms, value)
                    else:
                        if not is_event_kind(item.kind):
                            raise ValueError(f"bad event kind {item.kind!r}")
                        sid = self._stream_id(
                            item.source_id, item.kind, QuantityKind.EVENT
                        )
                        seq += 1
                        add_row((seq, ts_ms, sid, None, msgpack.packb(item.data)))
                    if res.first_seq is None:
                        res.first_seq = seq
                    res.last_seq = seq
                    res.accepted += 1
                dup += res.duplicates
                back += res.backwards
                results.append(res)
            db.executemany(
                "INSERT INTO records (seq, ts_ms, stream, value, data) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            if last_updates:
                db.executemany(
                    "INSERT INTO last (stream, ts_ms, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (stream) DO UPDATE SET ts_ms = excluded.ts_ms, "
                    "value = excluded.value",
                    [(s, t, v) for s, (t, v) in last_updates.items()],
                )
            counters = dict(self.counters)
            counters["last_seq"] = seq
            counters["appended_total"] += len(rows)
            counters["duplicate_total"] += dup
            counters["backwards_total"] += back
            self._set_meta(counters)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            # streams created in the rolled-back transaction are gone again
            self._reload_streams()
            raise
        self.counters = counters
        last.update(last_updates)
        self.backlog_records += len(rows)
        if self.cap_bytes and self.used_bytes() > self.cap_bytes:
            # the rows are committed: a failure to thin now must not report the
            # append as failed (the next append thins, or refuses, again)
            try:
                self.thin()
            except sqlite3.Error as exc:
                log.warning("outbox: thinning after a commit failed: %s", exc)
        return results

    def _reload_streams(self) -> None:
        self._streams.clear()
        self._stream_kind.clear()
        self._stream_names.clear()
        for sid, device_id, name, kind in self._db.execute(
            "SELECT id, device_id, name, kind FROM streams"
        ):
            self._remember_stream(sid, device_id, name, QuantityKind(kind))

    def prune_range(self, first_seq: int, last_seq: int) -> int:
        """Delete the records of one batch the cloud stored; returns rows deleted."""
        cur = self._db.execute(
            "DELETE FROM records WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
        )
        self.backlog_records -= cur.rowcount
        return cur.rowcount

    def prune_through(self, stored_through_seq: int) -> int:
        """Delete everything up to the cloud's contiguous watermark and remember it
        (the uplink resumes after it). Returns rows deleted."""
        if stored_through_seq <= self.counters["acked_through"]:
            return 0
        stored_through_seq = min(stored_through_seq, self.counters["last_seq"])
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cur = self._db.execute(
                "DELETE FROM records WHERE seq <= ?", (stored_through_seq,)
            )
            self._set_meta({"acked_through": stored_through_seq})
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self.counters["acked_through"] = stored_through_seq
        self.backlog_records -= cur.rowcount
        return cur.rowcount

    def quarantine_range(self, first_seq: int, last_seq: int, reason: str) -> int:
        """Move a batch the cloud rejected out of the send path, keeping the rows
        (nothing is deleted silently). Returns rows moved."""
        now_ms = int(time.time() * 1000)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO quarantine "
                "(seq, ts_ms, stream, value, data, reason, at_ms) "
                "SELECT seq, ts_ms, stream, value, data, ?, ? FROM records "
                "WHERE seq BETWEEN ? AND ?",
                (reason[:500], now_ms, first_seq, last_seq),
            )
            cur = self._db.execute(
                "DELETE FROM records WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
            )
            self.counters["rejected_total"] += cur.rowcount
            self._set_meta({"rejected_total": self.counters["rejected_total"]})
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self.backlog_records -= cur.rowcount
        return cur.rowcount

    # ------------------------------------------------------------------ thinning

    def used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size)

    def thin(self, *, force: bool = False) -> int:
        """Apply the full-disk policy; returns readings thinned (0 if under the cap
        and not ``force``d, or if only registers and events are left)."""
        if not force and (not self.cap_bytes or self.used_bytes() < self.cap_bytes):
            return 0
        instant = [s for s, k in self._stream_kind.items() if k is QuantityKind.INSTANT]
        if not instant:
            return 0
        target = int(self.cap_bytes * _LOW_WATER) if self.cap_bytes else 0
        total = 0
        lo_hi = self._db.execute("SELECT min(seq), max(seq) FROM records").fetchone()
        if lo_hi[0] is None:
            return 0
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        # Oldest first, one chunk of sequence numbers at a time, so that thinning
        # stops as soon as usage is under the low-water mark.
        done = False
        for bucket_ms in _THIN_BUCKETS_MS:
            for first in range(lo, hi + 1, _THIN_CHUNK_SEQS):
                last = min(hi, first + _THIN_CHUNK_SEQS - 1)
                total += self._thin_chunk(first, last, bucket_ms, instant)
                if self.used_bytes() <= target:
                    done = True
                    break
            if done:
                break
        if total:
            log.warning(
                "outbox over its cap of %d bytes: thinned %d instantaneous samples "
                "(energy registers kept); %d thinned so far",
                self.cap_bytes,
                total,
                self.counters["thinned_total"],
            )
        return total

    def _thin_chunk(
        self, first: int, last: int, bucket_ms: int | None, instant: list[int]
    ) -> int:
        """Thin the samples with ``first <= seq <= last``; returns rows deleted.

        Deleting every other row leaves each B-tree page half full and frees no
        page at all (SQLite merges a page only below a third full, and new rows
        always go to the right end), so the surviving rows of the chunk are
        rewritten: that packs them into fewer pages and frees the rest.
        """
        marks = ",".join("?" * len(instant))
        if bucket_ms is None:
            sql = (
                f"DELETE FROM records WHERE seq BETWEEN ? AND ? AND stream IN ({marks})"
            )
            params: list[Any] = [first, last, *instant]
        else:
            sql = (
                "DELETE FROM records WHERE seq IN (SELECT seq FROM ("
                "SELECT seq, row_number() OVER (PARTITION BY stream, ts_ms / ? "
                "ORDER BY seq) AS n FROM records "
                f"WHERE seq BETWEEN ? AND ? AND stream IN ({marks})) WHERE n > 1)"
            )
            params = [bucket_ms, first, last, *instant]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute(sql, params).rowcount
            if n:
                keep = db.execute(
                    "SELECT seq, ts_ms, stream, value, data FROM records "
                    "WHERE seq BETWEEN ? AND ?",
                    (first, last),
                ).fetchall()
                db.execute(
                    "DELETE FROM records WHERE seq BETWEEN ? AND ?", (first, last)
                )
                db.executemany(
                    "INSERT INTO records (seq, ts_ms, stream, value, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    keep,
                )
                thinned_total = self.counters["thinned_total"] + n
                self._set_meta({"thinned_total": thinned_total})
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if n:
            self.counters["thinned_total"] = thinned_total
            self.backlog_records -= n
        return n

    # ---------------------------------------------------------------------- reads

    def read(self, from_seq: int, to_seq: int | None, limit: int) -> list[Row]:
        """Records with ``from_seq <= seq <= to_seq`` (no upper bound if None), in
        sequence order, at most ``limit``."""
        if to_seq is None:
            cur = self._db.execute(
                "SELECT seq, ts_ms, stream, value, data FROM records WHERE seq >= ? "
                "ORDER BY seq LIMIT ?",
                (from_seq, limit),
            )
        else:
            cur = self._db.execute(
                "SELECT seq, ts_ms, stream, value, data FROM records "
                "WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
                (from_seq, to_seq, limit),
            )
        return [Row(*r) for r in cur]

    def stream_name(self, stream: int) -> tuple[str, str]:
        """``(device_id, quantity or event kind)`` of a stream id."""
        return self._stream_names[stream]

    def stats(self) -> OutboxStats:
        oldest = self._db.execute(
            "SELECT ts_ms FROM records ORDER BY seq LIMIT 1"
        ).fetchone()
        try:
            file_bytes = self.path.stat().st_size
            wal = self.path.with_name(self.path.name + "-wal")
            file_bytes += wal.stat().st_size if wal.exists() else 0
        except OSError:
            file_bytes = 0
        return OutboxStats(
            backlog_records=self.backlog_records,
            backlog_oldest_ms=oldest[0] if oldest else None,
            used_bytes=self.used_bytes(),
            file_bytes=file_bytes,
            cap_bytes=self.cap_bytes,
            last_seq=self.counters["last_seq"],
            acked_through=self.counters["acked_through"],
            counters=dict(self.counters),
        )

    def close(self) -> None:
        self._db.close()


@dataclass(slots=True)
class _Pending:
    items: Sequence[Item]
    future: asyncio.Future[AppendResult]


class Outbox:
    """The asyncio face of ``OutboxStore``: group commit on one worker thread.

    ``await outbox.append(items)`` returns once the items are durable. Callers that
    must not wait (a driver acknowledging its device only after the commit) use
    ``submit`` and attach to the returned future. ``changed`` is set after every
    commit so the uplink can wake up.
    """

    def __init__(self, store: OutboxStore, *, max_group_records: int = 50_000) -> None:
        self.store = store
        self.max_group_records = max_group_records
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._pending: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._single = 0  # groups to commit one by one after a failed group commit

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> Outbox:
        store_args = {
            k: kwargs.pop(k) for k in ("cap_bytes", "synchronous") if k in kwargs
        }
        return cls(OutboxStore(path, **store_args), **kwargs)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._commit_loop(), name="outbox-commit")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.call(self.store.close)
        self._executor.shutdown(wait=True)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a store method on the outbox thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, fn, *args
        )

    def submit(self, items: Sequence[Item]) -> asyncio.Future[AppendResult]:
        if self._closing:
            raise OutboxError("outbox is closing")
        fut: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(items, fut))
        self._wake.set()
        return fut

    async def append(self, items: Sequence[Item]) -> AppendResult:
        return await self.submit(items)

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                take: list[_Pending] = []
                n = 0
                limit = 0 if self._single else self.max_group_records
                if self._single:
                    self._single -= 1
                while self._pending and (not take or n < limit):
                    p = self._pending.popleft()
                    take.append(p)
                    n += len(p.items)
                try:
                    results = await self.call(
                        self.store.append, [p.items for p in take]
                    )
                except OutboxFull as exc:
                    for p in take:
                        if not p.future.done():
                            p.future.set_exception(exc)
                    continue
                except Exception as exc:
                    if len(take) == 1:
                        if not take[0].future.done():
                            take[0].future.set_exception(exc)
                        continue
                    # one caller's bad item must not fail the others sharing the
                    # commit: put each group back to be committed on its own
                    log.warning(
                        "outbox: group commit failed (%s); retrying singly", exc
                    )
                    for p in reversed(take):
                        self._pending.appendleft(p)
                    self._single = len(take)
                    continue
                for p, r in zip(take, results, strict=True):
                    if not p.future.done():
                        p.future.set_result(r)
                self.changed.set()
            if self._closing:
                return

    @property
    def last_seq(self) -> int:
        """The highest sequence number committed so far (read without a hop to
        the outbox thread: the counters are swapped in whole after each commit)."""
        return self.store.counters["last_seq"]

    # convenience wrappers for the uplink and metrics
    async def read(self, from_seq: int, to_seq: int | None, limit: int) -> list[Row]:
        rows: list[Row] = await self.call(self.store.read, from_seq, to_seq, limit)
        return rows

    async def prune_range(self, first_seq: int, last_seq: int) -> int:
        n: int = await self.call(self.store.prune_range, first_seq, last_seq)
        return n

    async def prune_through(self, seq: int) -> int:
        n: int = await self.call(self.store.prune_through, seq)
        return n

    async def quarantine_range(self, first_seq: int, last_seq: int, reason: str) -> int:
        n: int = await self.call(
            self.store.quarantine_range, first_seq, last_seq, reason
        )
        return n

    async def stats(self) -> OutboxStats:
        s: OutboxStats = await self.call(self.store.stats)
        return s
