"""``OutboxStore``: the synchronous SQLite outbox (see ``edge.outbox``)."""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from edge import OutboxError, OutboxFull
from edge.outbox._records import (
    _COUNTERS,
    _LOW_WATER,
    _SCHEMA,
    _THIN_BUCKETS_MS,
    SCHEMA_VERSION,
    AppendResult,
    Item,
    OutboxStats,
    Row,
)
from edge.outbox_space import (
    Reserve,
    SpacePlan,
    SpaceUse,
    file_bytes,
    fs_free_bytes,
    fs_total_bytes,
    is_disk_full,
)
from protocols.readings import QUANTITIES, QuantityKind, Reading, is_event_kind

log = logging.getLogger("fusebox.edge.outbox")

_T = TypeVar("_T")


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
        self._db = self._connect()
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA temp_store=MEMORY")
        self._db.execute("PRAGMA cache_size=-8000")  # 8 MB page cache: keeps RSS low
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        # checkpoint every wal_limit bytes (4 MB on a large disk, a sixteenth of a
        # small one) and truncate the WAL back to that: a WAL larger than the
        # disk is never checkpointed, and then nothing can be written any more
        self.space = SpacePlan.for_disk(
            fs_total_bytes(self.path.parent), self._page_size
        )
        self._db.execute(f"PRAGMA wal_autocheckpoint={self.space.wal_pages}")
        self._db.execute(f"PRAGMA journal_size_limit={self.space.wal_limit_bytes}")
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self.reserve = Reserve(
            self.path.with_name(self.path.name + "-reserve"), self.space.reserve_bytes
        )
        # acknowledged but not deleted yet (the disk was full): retried later
        self._pending_ranges: list[tuple[int, int]] = []
        self._pending_through = 0
        self._db.executescript(_SCHEMA)
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
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if "epoch" not in meta:
            # drawn once per outbox; see protocols.contract on why epochs exist
            self.epoch = secrets.randbelow(2**62) + 1
            self._set_meta({"epoch": self.epoch})
        else:
            self.epoch = int(meta["epoch"])
        if meta.get("schema_version") != SCHEMA_VERSION:
            self._set_meta({"schema_version": SCHEMA_VERSION})
        # nothing else is written at start: a restart on a full disk must work
        self.maintain()

    # ----------------------------------------------------------------- internals

    def _connect(self) -> sqlite3.Connection:
        """Open in WAL mode. Opening makes the ``-wal`` and ``-shm`` files after a
        clean shutdown: on a full disk, give the reserve back for them."""
        for attempt in (0, 1):
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                reserve = self.path.with_name(self.path.name + "-reserve")
                if attempt or not reserve.exists():
                    raise OutboxError(f"cannot open the outbox: {exc}") from exc
                log.warning("outbox: cannot open (%s); giving back the reserve", exc)
                reserve.unlink()
        raise AssertionError("unreachable")

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

    # -------------------------------------------------------------- disk space

    def space_use(self) -> SpaceUse:
        """The database's pages and files now, and the free space on its file system."""
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return SpaceUse(
            used_bytes=(pages - free) * self._page_size,
            free_page_bytes=free * self._page_size,
            logical_bytes=pages * self._page_size,
            db_file_bytes=file_bytes(self.path),
            wal_file_bytes=file_bytes(self._wal_path),
            fs_free_bytes=fs_free_bytes(self.path.parent),
            reserve_held=self.reserve.held,
        )

    def _make_room(self) -> bool:
        """SQLite said the disk is full: give the reserve back and checkpoint, so
        that a retry can write. Returns whether anything changed."""
        freed = self.reserve.release()
        if freed:
            log.warning(
                "outbox: the disk is full; gave back the %d-byte reserve so pruning "
                "and thinning can write (made again once there is room)",
                freed,
            )
        return self._checkpoint() or bool(freed)

    def _checkpoint(self) -> bool:
        try:
            busy, frames, done = self._db.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        except sqlite3.Error as exc:
            log.debug("outbox: checkpoint failed: %s", exc)
            return False
        return not busy and frames >= 0 and done == frames

    def _write(self, fn: Callable[[], _T]) -> _T:
        """Run a write transaction; on ``SQLITE_FULL`` make room and try again once."""
        try:
            return fn()
        except sqlite3.Error as exc:
            if not is_disk_full(exc) or not self._make_room():
                raise
        return fn()

    def maintain(self) -> None:
        """Retry prunes the disk refused, and make the reserve when there is room.
        Cheap when there is nothing to do; never raises for a full disk."""
        if self._pending_ranges or self._pending_through:
            self._retry_pending()
        use = self.space_use()
        if self.space.can_make_reserve(use) and self.reserve.make():
            log.info("outbox: reserve of %d bytes in place", self.reserve.size)

    # --------------------------------------------------------------------- writes

    def append(self, groups: Sequence[Sequence[Item]]) -> list[AppendResult]:
        """Append groups of items in one durable transaction; one result per group.

        Raises ``OutboxFull`` when nothing more fits even after thinning; then no
        item of any group was stored, and the items are counted as refused.
        """
        if self._pending_ranges or self._pending_through:
            self._retry_pending()  # frees space before it is needed
        try:
            return self._append_once(groups)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise OutboxError(f"outbox append failed: {exc}") from exc
            log.warning("outbox: disk full (%s); thinning and retrying", exc)
        self._make_room()
        try:
            self.thin(force=True)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise OutboxError(f"outbox thinning failed: {exc}") from exc
        try:
            return self._append_once(groups)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise OutboxError(f"outbox append failed: {exc}") from exc
            self._refuse(groups, "disk")
            raise OutboxFull(
                "the disk is full and nothing is left to thin; the outbox frees "
                "space as the cloud acknowledges (or free disk space); the devices "
                "keep their readings meanwhile"
            ) from exc

    def _refuse(self, groups: Sequence[Sequence[Item]], reason: str) -> None:
        n = sum(len(g) for g in groups)
        self.counters[f"refused_{reason}_total"] += n  # saved with the next commit

    def _check_room(self, groups: Sequence[Sequence[Item]]) -> None:
        """Thin, then refuse, before the limit is reached rather than after."""
        limit = self.space.limit(self.space_use(), self.cap_bytes)
        if self.used_bytes() < limit.limit_bytes:
            return
        self.thin()
        limit = self.space.limit(self.space_use(), self.cap_bytes)
        if self.used_bytes() < limit.limit_bytes:
            return
        self._refuse(groups, limit.reason)
        if limit.reason == "cap":
            raise OutboxFull(
                f"outbox holds {self.used_bytes()} bytes, cap {self.cap_bytes}, "
                "and only registers and events are left (never thinned); the "
                "uplink must drain before more fits"
            )
        raise OutboxFull(
            f"the disk is full: the outbox holds {self.used_bytes()} bytes, all it "
            f"may with {self.space_use().fs_free_bytes} bytes free on the disk, "
            "and only registers and events are left (never thinned); the uplink "
            "must drain before more fits"
        )

    def _append_once(self, groups: Sequence[Sequence[Item]]) -> list[AppendResult]:
        self._check_room(groups)
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
        # the rows are committed: a failure to thin now must not report the
        # append as failed (the next append thins, or refuses, again)
        try:
            self.thin()
        except sqlite3.Error as exc:
            log.warning("outbox: thinning after a commit failed: %s", exc)
        return results

    def _reload_streams(self) -> None:
        """Forget streams a rolled-back transaction created.

        The maps are rebuilt aside and swapped in whole: the uplink reads
        ``stream_name`` from the event loop's thread meanwhile, and clearing
        them in place let it see a committed stream missing (a KeyError that
        ended the uplink; tests/component/test_outbox.py forces that window).
        """
        streams: dict[tuple[str, str], int] = {}
        kinds: dict[int, QuantityKind] = {}
        names: dict[int, tuple[str, str]] = {}
        for sid, device_id, name, kind in self._db.execute(
            "SELECT id, device_id, name, kind FROM streams"
        ):
            streams[(device_id, name)] = sid
            kinds[sid] = QuantityKind(kind)
            names[sid] = (device_id, name)
        self._streams, self._stream_kind, self._stream_names = streams, kinds, names

    def prune_range(self, first_seq: int, last_seq: int) -> int:
        """Delete the records of one batch the cloud stored; returns rows deleted.

        Runs in transactions of ``space.chunk_rows`` sequence numbers. What the
        disk does not let it delete now is remembered and retried (``maintain``),
        never raised: the cloud has the rows, so they only wait for room."""
        deleted = 0
        chunk = self.space.chunk_rows
        for first in range(first_seq, last_seq + 1, chunk):
            last = min(last_seq, first + chunk - 1)
            try:
                deleted += self._write(partial(self._delete, first, last))
            except sqlite3.Error as exc:
                self._pending_ranges.append((first, last_seq))
                self._prune_failed(exc, first, last_seq)
                break
        return deleted

    def _delete(self, first: int, last: int) -> int:
        cur = self._db.execute(
            "DELETE FROM records WHERE seq BETWEEN ? AND ?", (first, last)
        )
        self.backlog_records -= cur.rowcount
        return cur.rowcount

    def _prune_failed(self, exc: sqlite3.Error, first: int, last: int) -> None:
        if not is_disk_full(exc):
            raise OutboxError(f"outbox prune failed: {exc}") from exc
        log.warning(
            "outbox: the disk is full: cannot delete acknowledged records %d..%d "
            "yet (%s); retrying as space allows, nothing is lost",
            first,
            last,
            exc,
        )

    def prune_through(self, stored_through_seq: int) -> int:
        """Delete everything up to the cloud's contiguous watermark and remember it
        (the uplink resumes after it). Returns rows deleted.

        Chunked like ``prune_range``; ``acked_through`` advances with each chunk
        deleted, so it never claims rows that are still there. A watermark the
        disk does not let it reach now is retried later, not raised."""
        target = min(stored_through_seq, self.counters["last_seq"])
        if target <= self.counters["acked_through"]:
            return 0
        row = self._db.execute("SELECT min(seq) FROM records").fetchone()
        start = max(self.counters["acked_through"], (row[0] or target + 1) - 1)
        deleted = 0
        chunk = self.space.chunk_rows
        for end in [*range(start + chunk, target, chunk), target]:
            try:
                deleted += self._write(partial(self._delete_through, end))
            except sqlite3.Error as exc:
                self._pending_through = max(self._pending_through, target)
                self._prune_failed(exc, self.counters["acked_through"] + 1, target)
                break
        if self._pending_through <= self.counters["acked_through"]:
            self._pending_through = 0
        return deleted

    def _delete_through(self, end: int) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute("DELETE FROM records WHERE seq <= ?", (end,))
            acked = max(end, self.counters["acked_through"])
            self._set_meta({"acked_through": acked})
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.counters["acked_through"] = acked
        self.backlog_records -= cur.rowcount
        return cur.rowcount

    def _retry_pending(self) -> int:
        """Prunes the disk refused earlier; returns rows deleted now."""
        ranges, self._pending_ranges = self._pending_ranges, []
        through, self._pending_through = self._pending_through, 0
        deleted = 0
        try:
            if through:
                deleted += self.prune_through(through)
            for first, last in ranges:
                if last > self.counters["acked_through"]:
                    deleted += self.prune_range(
                        max(first, self.counters["acked_through"] + 1), last
                    )
        except OutboxError as exc:  # not a full disk: keep them for next time
            log.warning("outbox: retrying a prune failed: %s", exc)
            self._pending_ranges += ranges
            self._pending_through = max(self._pending_through, through)
        if deleted:
            log.info("outbox: deleted %d acknowledged records left over", deleted)
        return deleted

    @property
    def prunes_pending(self) -> int:
        """Acknowledged ranges whose delete is still waiting for disk room."""
        return len(self._pending_ranges) + (1 if self._pending_through else 0)

    def quarantine_range(self, first_seq: int, last_seq: int, reason: str) -> int:
        """Move a batch the cloud rejected out of the send path, keeping the rows
        (nothing is deleted silently). Returns rows moved. Raises ``OutboxFull``
        if the disk has no room even after giving back the reserve (the rows stay
        where they are and are sent, and rejected, again later)."""
        try:
            return self._write(
                partial(self._quarantine, first_seq, last_seq, reason[:500])
            )
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                raise OutboxFull(
                    f"the disk is full: cannot quarantine {first_seq}..{last_seq}"
                ) from exc
            raise OutboxError(f"outbox quarantine failed: {exc}") from exc

    def _quarantine(self, first_seq: int, last_seq: int, reason: str) -> int:
        now_ms = int(time.time() * 1000)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT OR IGNORE INTO quarantine "
                "(seq, ts_ms, stream, value, data, reason, at_ms) "
                "SELECT seq, ts_ms, stream, value, data, ?, ? FROM records "
                "WHERE seq BETWEEN ? AND ?",
                (reason, now_ms, first_seq, last_seq),
            )
            cur = db.execute(
                "DELETE FROM records WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
            )
            rejected = self.counters["rejected_total"] + cur.rowcount
            self._set_meta({"rejected_total": rejected})
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.counters["rejected_total"] = rejected
        self.backlog_records -= cur.rowcount
        return cur.rowcount

    # ------------------------------------------------------------------ thinning

    def used_bytes(self) -> int:
        """Bytes of database pages that hold data (the freelist excluded)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size)

    def thin(self, *, force: bool = False) -> int:
        """Apply the full-disk policy; returns readings thinned (0 if under the
        limit and not ``force``d, or if only registers and events are left).

        ``force`` (SQLite reported the disk full though the limit was not reached)
        thins to 90 % of what is in use. A chunk the disk does not let it rewrite
        ends thinning for now; that is logged, not raised."""
        limit = self.space.limit(self.space_use(), self.cap_bytes)
        used = self.used_bytes()
        if not force and used < limit.limit_bytes:
            return 0
        instant = [s for s, k in self._stream_kind.items() if k is QuantityKind.INSTANT]
        if not instant:
            return 0
        target = int(min(limit.limit_bytes, used) * _LOW_WATER)
        reason = "disk" if force else limit.reason
        total = 0
        lo_hi = self._db.execute("SELECT min(seq), max(seq) FROM records").fetchone()
        if lo_hi[0] is None:
            return 0
        lo, hi = int(lo_hi[0]), int(lo_hi[1])
        chunk = self.space.chunk_rows
        # Oldest first, one chunk of sequence numbers at a time, so that thinning
        # stops as soon as usage is under the low-water mark.
        try:
            for bucket_ms in _THIN_BUCKETS_MS:
                for first in range(lo, hi + 1, chunk):
                    last = min(hi, first + chunk - 1)
                    total += self._write(
                        partial(
                            self._thin_chunk, first, last, bucket_ms, instant, reason
                        )
                    )
                    if self.used_bytes() <= target:
                        break
                else:
                    continue
                break
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            log.warning("outbox: the disk is too full to thin further: %s", exc)
        if total:
            log.warning(
                "outbox over its %s limit of %d bytes: thinned %d instantaneous "
                "samples (energy registers kept); %d thinned so far",
                reason,
                limit.limit_bytes,
                total,
                self.counters["thinned_total"],
            )
        return total

    def _thin_chunk(
        self,
        first: int,
        last: int,
        bucket_ms: int | None,
        instant: list[int],
        reason: str = "cap",
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
                thinned = {"thinned_total": self.counters["thinned_total"] + n}
                if reason == "disk":
                    thinned["thinned_disk_total"] = (
                        self.counters["thinned_disk_total"] + n
                    )
                self._set_meta(thinned)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if n:
            self.counters.update(thinned)
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
        """Counters and space; reads only (``maintain`` is the writing part)."""
        oldest = self._db.execute(
            "SELECT ts_ms FROM records ORDER BY seq LIMIT 1"
        ).fetchone()
        use = self.space_use()
        limit = self.space.limit(use, self.cap_bytes)
        return OutboxStats(
            backlog_records=self.backlog_records,
            backlog_oldest_ms=oldest[0] if oldest else None,
            used_bytes=use.used_bytes,
            file_bytes=use.db_file_bytes + use.wal_file_bytes,
            cap_bytes=self.cap_bytes,
            last_seq=self.counters["last_seq"],
            acked_through=self.counters["acked_through"],
            counters=dict(self.counters),
            fs_free_bytes=use.fs_free_bytes,
            limit_bytes=limit.limit_bytes,
            limit_reason=limit.reason,
            reserve_bytes=self.reserve.size if use.reserve_held else 0,
            prunes_pending=self.prunes_pending,
        )

    def maintained_stats(self) -> OutboxStats:
        """``maintain`` (best effort), then ``stats``: what the periodic status
        and metrics call, so a prune the disk refused is retried at least that
        often."""
        try:
            self.maintain()
        except sqlite3.Error as exc:
            log.warning("outbox: maintenance failed: %s", exc)
        return self.stats()

    def close(self) -> None:
        """Close the database connection (call on the outbox thread)."""
        self._db.close()
