"""The ingest core: everything about storing gateways' batches that is not transport.

Both front doors run it: ``cloud.ingest`` (an MQTT ``$share`` subscription, for
one node and the embedded demo) and ``cloud.ingest_jetstream`` (a durable pull
consumer on the backbone's ``FUSEBOX_UP`` stream). A door only receives
``(topic, payload)``, sends the answers this core makes, and acknowledges to its
transport; decoding, screening, storing, the answer and the side writes are here,
so neither door holds logic the other lacks.

The path of one message::

    IngestCore.accept(topic, payload) -> Inbound
        status    -> side write (gateway row), nothing to answer
        bad batch -> Reject (when it names its range) + side write (rejected_batches)
        batch     -> IngestCore.store_batch(batch) -> Ack | Busy | Poisoned

A batch is stored in one transaction (:class:`BatchStore`):

1. its readings are COPYed into a per-connection temporary table and moved into
   ``readings`` with ``INSERT ... ON CONFLICT DO NOTHING`` (a redelivered batch, or
   one a crashed worker half-did, changes nothing);
2. its sequence range is merged into the gateway's coverage, under a row lock on
   ``gateway_epochs``, giving ``stored_through_seq``: the highest sequence below
   which everything is stored;
3. after COMMIT the door publishes ``Ack(first_seq, last_seq, stored_through_seq)``.

Only then may the edge prune. If a worker dies between 1 and 3 nothing is acked and
the edge (or the stream) delivers the batch again.

When PostgreSQL fails the answer is ``Busy(retry_after_s)``: the edge keeps the
readings. An exception that is not the database's (a bug meeting an unexpected
batch) is ``Poisoned``: counted by reason, logged once per gateway and reason, not
answered (the edge keeps the readings and resends later); the JetStream door also
moves the message to the dead-letter stream. Either way the next batch flows.

Quarantine (``cloud.screening``): a batch that meets the contract but holds a value
PostgreSQL cannot store (a NUL character, a NaN or binary data in an event) loses
only those items, counted by reason in ``BatchStore.quarantine`` and logged once
per gateway and reason; the rest is stored and the whole range acked. A session
event whose charger id could not be in a lease is stored raw in ``events`` but not
folded into ``sessions``, so it never reaches the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgpack

from cloud.db import Partitions
from cloud.screening import (
    CHARGER_ID_PATTERN,
    SESSION_EVENT_INVALID,
    Finding,
    Quarantine,
    charger_id_problem,
    screen_batch,
)
from protocols import contract
from protocols.backoff import Backoff, Reconnect
from protocols.events import (
    EventError,
    SessionStarted,
    SessionStopped,
    is_session_event,
    parse_event,
)
from protocols.readings import ms_to_ts

__all__ = [
    "DB_ERRORS",
    "DB_RETRY_AFTER_S",
    "BatchStore",
    "Inbound",
    "IngestCore",
    "IngestMetrics",
    "Poisoned",
    "batch_head",
]

log = logging.getLogger("fusebox.cloud.ingest")

DB_RETRY_AFTER_S = 5.0
# what a lost, restarting or overloaded PostgreSQL raises: answer busy, retry later
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

# The first value seen for each column wins: a redelivered or late event changes
# nothing, and a stop that overtook its start still leaves one complete row.
_SESSION_STARTED = """
INSERT INTO sessions AS s (gateway_id, charger_id, transaction_id, connector_id,
    id_tag, started_at, meter_start_wh)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (gateway_id, charger_id, transaction_id) DO UPDATE SET
    connector_id = coalesce(s.connector_id, excluded.connector_id),
    id_tag = coalesce(nullif(s.id_tag, ''), excluded.id_tag),
    started_at = coalesce(s.started_at, excluded.started_at),
    meter_start_wh = coalesce(s.meter_start_wh, excluded.meter_start_wh),
    updated_at = now()
"""
_SESSION_STOPPED = """
INSERT INTO sessions AS s (gateway_id, charger_id, transaction_id, id_tag,
    stopped_at, meter_stop_wh, stop_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (gateway_id, charger_id, transaction_id) DO UPDATE SET
    id_tag = coalesce(nullif(s.id_tag, ''), excluded.id_tag),
    stopped_at = coalesce(s.stopped_at, excluded.stopped_at),
    meter_stop_wh = coalesce(s.meter_stop_wh, excluded.meter_stop_wh),
    stop_reason = coalesce(s.stop_reason, excluded.stop_reason),
    updated_at = now()
"""

SideWrite = Callable[[asyncpg.Connection], Awaitable[None]]


@dataclass(slots=True)
class IngestMetrics:
    """Counters of one ingest worker since start (batches, readings, rejects, database
    failures, ...) for its status and /metrics."""

    batches_stored: int = 0
    readings_stored: int = 0  # rows in batches stored, duplicates included
    events_stored: int = 0
    busy_sent: int = 0
    rejected: int = 0
    db_failures: int = 0
    status_updates: int = 0
    side_writes_dropped: int = 0
    poisoned: int = 0  # batches the core failed on (not the database): not stored
    dead_lettered: int = 0  # messages moved to the dead-letter stream (JetStream)
    busy_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


class BatchStore:
    """Stores batches; one instance per process, shared by its connections."""

    def __init__(self) -> None:
        self.partitions = Partitions()
        self._gateways: set[str] = set()
        self._streams: dict[tuple[str, str, str], int] = {}
        self.bad_session_events = 0
        # items taken out of batches, by reason (cloud.screening)
        self.quarantine = Quarantine(log)

    @staticmethod
    async def init_connection(conn: asyncpg.Connection) -> None:
        """Per-connection set-up for a pool's ``init``: the temporary table batches are
        copied into."""
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS ingest_readings ("
            " seq bigint, ts_ms bigint, stream_id integer, value double precision)"
            " ON COMMIT DELETE ROWS"
        )

    async def _stream_ids(
        self, conn: asyncpg.Connection, batch: contract.Batch
    ) -> list[int]:
        gw = batch.gw
        missing = [s for s in batch.streams if (gw, *s) not in self._streams]
        if missing:
            if gw not in self._gateways:
                await conn.execute(
                    "INSERT INTO gateways (id) VALUES ($1) ON CONFLICT DO NOTHING", gw
                )
                self._gateways.add(gw)
            await conn.executemany(
                "INSERT INTO streams (gateway_id, device_id, name) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(gw, d, n) for d, n in missing],
            )
            rows = await conn.fetch(
                "SELECT id, device_id, name FROM streams WHERE gateway_id = $1", gw
            )
            for r in rows:
                self._streams[(gw, r["device_id"], r["name"])] = r["id"]
        return [self._streams[(gw, d, n)] for d, n in batch.streams]

    async def store(self, conn: asyncpg.Connection, batch: contract.Batch) -> int:
        """Store one batch; returns the gateway's ``stored_through_seq`` after it.

        What PostgreSQL cannot store is taken out first and counted
        (``cloud.screening``); the rest is stored and the whole range covered."""
        batch, findings = screen_batch(batch)
        for finding in findings:
            self.quarantine.record(finding, "not stored")
        gw = batch.gw
        if gw not in self._gateways:
            await conn.execute(
                "INSERT INTO gateways (id) VALUES ($1) ON CONFLICT DO NOTHING", gw
            )
            self._gateways.add(gw)
        ids = await self._stream_ids(conn, batch)
        if batch.readings:
            ts = [r[1] for r in batch.readings]
            await self.partitions.ensure(conn, min(ts), max(ts))
        async with conn.transaction():
            if batch.readings:
                await conn.copy_records_to_table(
                    "ingest_readings",
                    records=[(s, t, ids[i], v) for s, t, i, v in batch.readings],
                    columns=["seq", "ts_ms", "stream_id", "value"],
                )
                await conn.execute(
                    "INSERT INTO readings (gateway_id, seq, ts, stream_id, value) "
                    "SELECT $1, seq,"
                    " timestamptz 'epoch' + ts_ms * interval '1 millisecond',"
                    " stream_id, value FROM ingest_readings ON CONFLICT DO NOTHING",
                    gw,
                )
            if batch.events:
                await conn.executemany(
                    "INSERT INTO events (gateway_id, seq, ts, stream_id, data) VALUES "
                    "($1, $2, timestamptz 'epoch' + $3 * interval '1 millisecond',"
                    " $4, $5)"
                    " ON CONFLICT DO NOTHING",
                    [(gw, s, t, ids[i], json.dumps(d)) for s, t, i, d in batch.events],
                )
                await self._fold_sessions(conn, batch)
            return await self._cover(
                conn, gw, batch.epoch, batch.first_seq, batch.last_seq
            )

    async def _fold_sessions(
        self, conn: asyncpg.Connection, batch: contract.Batch
    ) -> None:
        """Session events into ``sessions`` rows; order-independent, idempotent."""
        for seq, _ts, idx, data in batch.events:
            kind = batch.streams[idx][1]
            if not is_session_event(kind):
                continue
            try:
                event = parse_event(kind, data)
                problem = charger_id_problem(getattr(event, "charger_id", None))
                reason = CHARGER_ID_PATTERN
            except EventError as exc:
                problem, reason = str(exc), SESSION_EVENT_INVALID
            if problem is not None:
                # the raw event is stored; only the fold is skipped, so that the
                # scheduler never meets a charger it cannot put in a lease
                self.bad_session_events += 1
                self.quarantine.record(
                    Finding(reason, batch.gw, seq, f"{kind}: {problem}"),
                    "stored raw, not folded into sessions",
                )
                continue
            if isinstance(event, SessionStarted):
                await conn.execute(
                    _SESSION_STARTED,
                    batch.gw,
                    event.charger_id,
                    event.transaction_id,
                    event.connector_id,
                    event.id_tag,
                    event.started_at,
                    event.meter_start_wh,
                )
            elif isinstance(event, SessionStopped):
                await conn.execute(
                    _SESSION_STOPPED,
                    batch.gw,
                    event.charger_id,
                    event.transaction_id,
                    event.id_tag,
                    event.stopped_at,
                    event.meter_stop_wh,
                    event.reason,
                )

    @staticmethod
    async def _cover(
        conn: asyncpg.Connection, gw: str, epoch: int, first: int, last: int
    ) -> int:
        await conn.execute(
            "INSERT INTO gateway_epochs (gateway_id, epoch) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            gw,
            epoch,
        )
        stored: int = await conn.fetchval(
            "SELECT stored_through_seq FROM gateway_epochs "
            "WHERE gateway_id = $1 AND epoch = $2 FOR UPDATE",
            gw,
            epoch,
        )
        if last <= stored:
            return stored
        if first > stored + 1:
            await conn.execute(
                "INSERT INTO covered_ranges (gateway_id, epoch, first_seq, last_seq) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                gw,
                epoch,
                first,
                last,
            )
            return stored
        new = last
        ranges = await conn.fetch(
            "SELECT first_seq, last_seq FROM covered_ranges "
            "WHERE gateway_id = $1 AND epoch = $2 ORDER BY first_seq",
            gw,
            epoch,
        )
        merged = []
        for r in ranges:
            if r["first_seq"] > new + 1:
                break
            new = max(new, r["last_seq"])
            merged.append(r["first_seq"])
        if merged:
            await conn.execute(
                "DELETE FROM covered_ranges WHERE gateway_id = $1 AND epoch = $2 "
                "AND first_seq <= $3",
                gw,
                epoch,
                max(merged),
            )
        await conn.execute(
            "UPDATE gateway_epochs SET stored_through_seq = $3 "
            "WHERE gateway_id = $1 AND epoch = $2",
            gw,
            epoch,
            new,
        )
        return new

    async def update_status(
        self, conn: asyncpg.Connection, st: contract.GatewayStatus
    ) -> None:
        """Upsert the gateway's row from its status message (backlog, outbox use,
        counters)."""
        oldest = (
            None if st.backlog_oldest_ms is None else ms_to_ts(st.backlog_oldest_ms)
        )
        await conn.execute(
            """
            INSERT INTO gateways AS g (id, last_seen, state, software, backlog_records,
                backlog_oldest, outbox_bytes, outbox_cap_bytes, appended_total,
                thinned_total, rejected_total, acked_through_seq, status_at,
                claim_sha256, thinned_disk_total, refused_cap_total,
                refused_disk_total)
            VALUES ($1, now(), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now(), $12,
                $13, $14, $15)
            ON CONFLICT (id) DO UPDATE SET
                last_seen = now(), state = excluded.state,
                software = coalesce(nullif(excluded.software, ''), g.software),
                backlog_records = excluded.backlog_records,
                backlog_oldest = excluded.backlog_oldest,
                outbox_bytes = excluded.outbox_bytes,
                outbox_cap_bytes = excluded.outbox_cap_bytes,
                appended_total = excluded.appended_total,
                thinned_total = greatest(g.thinned_total, excluded.thinned_total),
                rejected_total = greatest(g.rejected_total, excluded.rejected_total),
                acked_through_seq = excluded.acked_through_seq,
                status_at = now(),
                -- a gateway stops showing its code once claimed: keep the last
                claim_sha256 = coalesce(excluded.claim_sha256, g.claim_sha256),
                thinned_disk_total = greatest(g.thinned_disk_total,
                    excluded.thinned_disk_total),
                refused_cap_total = greatest(g.refused_cap_total,
                    excluded.refused_cap_total),
                refused_disk_total = greatest(g.refused_disk_total,
                    excluded.refused_disk_total)
            """,
            st.gw,
            st.state,
            st.software,
            st.backlog_records,
            oldest,
            st.outbox_bytes,
            st.outbox_cap_bytes,
            st.appended_total,
            st.thinned_total,
            st.rejected_total,
            st.acked_through_seq,
            st.claim_sha256,
            st.thinned_disk_total,
            st.refused_cap_total,
            st.refused_disk_total,
        )
        self._gateways.add(st.gw)


@dataclass(frozen=True, slots=True)
class Poisoned:
    """A batch the core failed on for a reason that is not the database's: not
    stored, not answered. ``reason`` is short (the exception's type and text)."""

    gw: str
    first_seq: int
    last_seq: int
    reason: str


StoreOutcome = contract.Ack | contract.Busy | Poisoned


@dataclass(frozen=True, slots=True)
class Inbound:
    """What :meth:`IngestCore.accept` made of one message: a batch to store, an
    answer to send at once (a ``Reject``), and the reason it was rejected (for a
    door's dead-letter copy). All ``None``: nothing to do (a status, another leaf)."""

    batch: contract.Batch | None = None
    answer: contract.Reject | None = None
    rejected: str | None = None


POISON_REASON = "ingest_error"
_SIDE_QUEUE_MAX = 1000


class IngestCore:
    """The shared ingest logic of one process: its PostgreSQL pool, the batch
    store, the side writes and the counters. A door calls :meth:`open`, runs
    :meth:`run_tasks` beside its receive loop, and for each message
    :meth:`accept`, then :meth:`store_batch` for a batch; :meth:`close` at the
    end."""

    def __init__(
        self,
        *,
        dsn: str,
        concurrency: int = 4,
        rng: random.Random | None = None,
        name: str = "ingest",
        command_timeout_s: float = 60.0,
    ) -> None:
        self.dsn = dsn
        # how long one statement may take before the database counts as gone
        # (a blackholed PostgreSQL answers nothing, it does not refuse)
        self.command_timeout_s = command_timeout_s
        self.concurrency = concurrency
        self.name = name
        self.rng = rng or random.Random()
        self.store = BatchStore()
        self.metrics = IngestMetrics()
        # batches not stored for a reason of ours, by reason, logged once per gw
        self.poison = Quarantine(log)
        self.pool: asyncpg.Pool | None = None
        self.db_ok = True
        self.batch_s = 0.05  # moving average of storing one batch
        self._side: asyncio.Queue[tuple[str, SideWrite]] = asyncio.Queue(
            _SIDE_QUEUE_MAX
        )

    # ------------------------------------------------------------ life cycle

    async def open(self) -> None:
        """Open the PostgreSQL pool (``concurrency`` connections), retrying with
        backoff until the database answers."""
        reconnect = Reconnect(Backoff(0.5, 10))
        while True:
            try:
                self.pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.concurrency,
                    init=BatchStore.init_connection,
                    timeout=10,
                    command_timeout=self.command_timeout_s,
                )
                return
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                delay_s = reconnect.failed(self.rng)
                if reconnect.first_failure:
                    log.warning("ingest: PostgreSQL unreachable (%s); retrying", exc)
                await asyncio.sleep(delay_s)

    async def close(self) -> None:
        """Close the pool."""
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def run_tasks(self, queued: Callable[[], int]) -> None:
        """The core's background work until cancelled: side writes and the rate
        report (``queued`` tells how many batches wait in the door)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._side_writer(), name="ingest-side")
            tg.create_task(self._report(queued), name="ingest-report")

    # -------------------------------------------------------------- messages

    def accept(self, topic: str, payload: bytes) -> Inbound:
        """Decode one message from ``topic``: a status is queued for its side
        write; a batch that fails the contract is recorded and answered (see
        :class:`Inbound`); a good batch is returned for :meth:`store_batch`."""
        if topic.endswith("/up/status"):
            self._status(topic, payload)
            return Inbound()
        if not topic.endswith("/up/batch"):
            return Inbound()  # other leaves (schedule status, ...) are not ingest's
        try:
            batch = contract.unpack_batch(payload)
            if batch.gw != contract.gateway_of(topic):
                raise contract.ContractError(
                    "gateway id in payload does not match topic"
                )
        except contract.ContractError as exc:
            return Inbound(
                answer=self._reject(topic, payload, exc.reason), rejected=exc.reason
            )
        return Inbound(batch=batch)

    async def store_batch(self, batch: contract.Batch) -> StoreOutcome:
        """Store ``batch``: its ``Ack`` after COMMIT; ``Busy`` when PostgreSQL
        fails (``db_ok`` turns false until a store succeeds or :meth:`probe_later`
        lets one try); ``Poisoned`` when something else fails."""
        assert self.pool is not None, "open() first"
        started = time.monotonic()
        try:
            async with self.pool.acquire(timeout=10) as conn:
                stored_through = await self.store.store(conn, batch)
        except DB_ERRORS as exc:
            self.metrics.db_failures += 1
            if self.db_ok:
                log.error(
                    "ingest: cannot store in PostgreSQL (%s: %s); answering busy "
                    "until it recovers",
                    type(exc).__name__,
                    exc,
                )
            self.db_ok = False
            return self.busy(batch, DB_RETRY_AFTER_S, "database unavailable")
        except Exception as exc:  # a bug meeting this batch: it must not stop others
            return self._poisoned(batch, exc)
        if not self.db_ok:
            log.info("ingest: PostgreSQL is back; storing again")
            self.db_ok = True
        took = time.monotonic() - started
        self.batch_s = 0.9 * self.batch_s + 0.1 * took
        m = self.metrics
        m.busy_seconds += took
        m.batches_stored += 1
        if m.batches_stored == 1:
            log.info("ingest %s: first batch stored", self.name)
        m.readings_stored += len(batch.readings)
        m.events_stored += len(batch.events)
        return contract.Ack(
            gw=batch.gw,
            epoch=batch.epoch,
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            stored_through_seq=stored_through,
        )

    def probe_later(self) -> None:
        """Let batches try the database again after ``DB_RETRY_AFTER_S``: the next
        one tells whether it is back."""

        def probe() -> None:
            self.db_ok = True

        asyncio.get_running_loop().call_later(DB_RETRY_AFTER_S, probe)

    def busy(self, batch: contract.Batch, after_s: float, why: str) -> contract.Busy:
        """The ``Busy`` answer for ``batch`` (counted)."""
        self.metrics.busy_sent += 1
        return contract.Busy(
            gw=batch.gw,
            epoch=batch.epoch,
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            retry_after_s=after_s,
            reason=why,
        )

    def retry_after(self, queued: int) -> float:
        """Seconds a refused gateway should wait: time to work off ``queued``
        batches, with room for the one being refused."""
        drain_s = (queued + 1) * self.batch_s / self.concurrency
        return round(min(60.0, max(1.0, 2 * drain_s)), 2)

    def _poisoned(self, batch: contract.Batch, exc: Exception) -> Poisoned:
        self.metrics.poisoned += 1
        reason = f"{type(exc).__name__}: {exc}"[:300]
        self.poison.record(
            Finding(POISON_REASON, batch.gw, batch.first_seq, reason),
            f"batch {batch.first_seq}..{batch.last_seq} not stored (ingest failed)",
        )
        return Poisoned(batch.gw, batch.first_seq, batch.last_seq, reason)

    # ----------------------------------------------------------- side writes

    def side_write(self, what: str, write: SideWrite) -> None:
        """Queue a database write that must not hold up the receive loop (status
        updates, rejected-batch records): batches keep being answered at once even
        while every connection is busy."""
        try:
            self._side.put_nowait((what, write))
        except asyncio.QueueFull:
            self.metrics.side_writes_dropped += 1
            if self.metrics.side_writes_dropped % 100 == 1:
                log.warning(
                    "ingest: database too slow for side writes; %s not recorded "
                    "(%d dropped so far)",
                    what,
                    self.metrics.side_writes_dropped,
                )

    async def _side_writer(self) -> None:
        while True:
            what, write = await self._side.get()
            assert self.pool is not None
            try:
                async with self.pool.acquire(timeout=30) as conn:
                    await write(conn)
            except DB_ERRORS as exc:
                log.info("ingest: %s not recorded (%s)", what, exc)

    def _status(self, topic: str, payload: bytes) -> None:
        try:
            st = contract.unpack_status(payload)
            if st.gw != contract.gateway_of(topic):
                raise contract.ContractError(
                    "gateway id in payload does not match topic"
                )
        except contract.ContractError as exc:
            log.warning("ingest: bad status on %s: %s", topic, exc.reason)
            return

        async def write(conn: asyncpg.Connection) -> None:
            """Store the status (a side write: dropped if the queue is full, not
            retried)."""
            await self.store.update_status(conn, st)
            self.metrics.status_updates += 1

        self.side_write(f"status of {st.gw}", write)

    def _reject(
        self, topic: str, payload: bytes, reason: str
    ) -> contract.Reject | None:
        """Count, log and record a batch that fails the contract; its ``Reject``
        if the batch names a consistent gateway and range, else None."""
        self.metrics.rejected += 1
        head = batch_head(payload)
        log.warning("ingest: rejected batch on %s: %s", topic[:200], reason)
        gw = None
        with contextlib.suppress(contract.ContractError):
            gw = contract.gateway_of(topic)

        async def write(conn: asyncpg.Connection) -> None:
            """Record the rejected batch's head for the operator."""
            await conn.execute(
                "INSERT INTO rejected_batches (gateway_id, topic, reason, first_seq,"
                " last_seq, payload_head) VALUES ($1, $2, $3, $4, $5, $6)",
                gw,
                topic[:500],
                reason[:1000],
                head.get("first_seq"),
                head.get("last_seq"),
                payload[:4096],
            )

        self.side_write("rejected batch", write)
        try:
            answer = contract.Reject.model_validate(
                {
                    "gw": gw or "",
                    "epoch": head.get("epoch"),
                    "first_seq": head.get("first_seq"),
                    "last_seq": head.get("last_seq"),
                    "reason": reason[:500],
                }
            )
        except ValueError:
            return None  # the batch does not even name its range: nothing to answer
        return answer if answer.gw == head.get("gw") else None

    async def _report(self, queued: Callable[[], int]) -> None:
        last_rows, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(10)
            now = time.monotonic()
            m = self.metrics
            rate = (m.readings_stored - last_rows) / (now - last_t)
            if m.readings_stored != last_rows or m.busy_sent:
                log.info(
                    "ingest: %.0f readings/s; stored %d batches, %d readings; busy %d, "
                    "rejected %d, quarantined %d, poisoned %d, dead-lettered %d, "
                    "queue %d",
                    rate,
                    m.batches_stored,
                    m.readings_stored,
                    m.busy_sent,
                    m.rejected,
                    self.store.quarantine.total,
                    m.poisoned,
                    m.dead_lettered,
                    queued(),
                )
            last_rows, last_t = m.readings_stored, now


_HEAD_KEYS = ("gw", "epoch", "first_seq", "last_seq")


def batch_head(payload: bytes) -> dict[str, Any]:
    """Best-effort range of a batch that failed validation (for the Reject), also
    of one over the size limit: the map's leading keys are read and the rest
    (its readings) skipped, never built."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(payload), 1))
    head: dict[str, Any] = {}
    try:
        unpacker.feed(payload)
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if key in _HEAD_KEYS:
                value = unpacker.unpack()
                if isinstance(value, int | str) and not isinstance(value, bool):
                    head[key] = value
                if len(head) == len(_HEAD_KEYS):
                    break
            else:
                unpacker.skip()
    except Exception:  # msgpack raises several unrelated types on bad data
        return head
    return head
