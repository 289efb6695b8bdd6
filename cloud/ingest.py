"""The ingest worker: batches from gateways into PostgreSQL, idempotently, then ack.

Several workers may run at once: they share the batches through an MQTT shared
subscription (``$share/fusebox-ingest/...``) and coordinate only through
PostgreSQL. A batch is stored in one transaction:

1. its readings are COPYed into a per-connection temporary table and moved into
   ``readings`` with ``INSERT ... ON CONFLICT DO NOTHING`` (a redelivered batch, or
   one a crashed worker half-did, changes nothing);
2. its sequence range is merged into the gateway's coverage, under a row lock on
   ``gateway_epochs``, giving ``stored_through_seq``: the highest sequence below
   which everything is stored;
3. after COMMIT the worker publishes ``Ack(first_seq, last_seq, stored_through_seq)``.

Only then may the edge prune. If a worker dies between 1 and 3 nothing is acked and
the edge resends after its ack timeout.

Admission control: batches wait in a bounded queue for ``concurrency`` database
connections. When the queue is full, or PostgreSQL fails, the worker answers
``Busy(retry_after_s)`` at once instead of letting work pile up; the edge holds the
readings meanwhile. A batch that fails the contract is answered ``Reject`` (when it
names its range) and recorded in ``rejected_batches``; the worker carries on.

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
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgpack

from cloud.db import Partitions
from cloud.mqtt import Client, MqttError, Will, check_cloud_client_id, cloud_client
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
from protocols.urls import MqttTarget

log = logging.getLogger("fusebox.cloud.ingest")

_DB_RETRY_AFTER_S = 5.0
# what a lost, restarting or overloaded PostgreSQL raises: answer busy, retry later
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

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


class IngestWorker:
    """One ingest worker process (or task). ``run`` until cancelled."""

    def __init__(
        self,
        *,
        dsn: str,
        mqtt: MqttTarget,
        shared: bool,
        concurrency: int = 4,
        queue_max: int = 32,
        client_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.dsn = dsn
        self.mqtt = mqtt
        self.shared = shared
        self.concurrency = concurrency
        self.queue: asyncio.Queue[tuple[contract.Batch, float]] = asyncio.Queue(
            queue_max
        )
        self.client_id = check_cloud_client_id(
            client_id or f"fusebox-ingest-{random.getrandbits(32):08x}"
        )
        # the presence topic names the worker; a client id that cannot be a topic
        # level (a "/" or "+" in it) is replaced by a stable hash of it
        worker = self.client_id
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}", worker):
            worker = "w" + hashlib.sha256(worker.encode()).hexdigest()[:16]
        self._presence_worker = worker
        self._presence_topic = contract.ingest_presence(worker)
        self.rng = rng or random.Random()
        self.store = BatchStore()
        self.metrics = IngestMetrics()
        self._pool: asyncpg.Pool | None = None
        self._db_ok = True
        self._batch_s = 0.05  # moving average of storing one batch
        self.ready = asyncio.Event()
        self._side: asyncio.Queue[tuple[str, SideWrite]] = asyncio.Queue(1000)

    async def _open_pool(self) -> asyncpg.Pool:
        reconnect = Reconnect(Backoff(0.5, 10))
        while True:
            try:
                return await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.concurrency,
                    init=BatchStore.init_connection,
                    timeout=10,
                    command_timeout=60,
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                delay_s = reconnect.failed(self.rng)
                if reconnect.first_failure:
                    log.warning("ingest: PostgreSQL unreachable (%s); retrying", exc)
                await asyncio.sleep(delay_s)

    async def run(self) -> None:
        """Subscribe to the gateways' batches and store them until cancelled; reconnects
        to the broker with backoff."""
        self._pool = await self._open_pool()
        reconnect = Reconnect(Backoff(0.5, 15))
        filters = contract.ingest_filters(shared=self.shared)
        try:
            while True:
                m = self.mqtt
                try:
                    async with cloud_client(
                        m,
                        self.client_id,
                        max_inflight_messages=100,
                        will=Will(self._presence_topic, b"", qos=1, retain=True),
                    ) as client:
                        for f in filters:
                            await client.subscribe(f, qos=1)
                        log.info(
                            "ingest %s: subscribed to %s on %s",
                            self.client_id,
                            ", ".join(filters),
                            m.url(),
                        )
                        reconnect.succeeded()
                        await self._announce(client)
                        self.ready.set()
                        try:
                            await self._serve(client)
                        finally:
                            await self._say_gone(client)
                except* (MqttError, OSError, TimeoutError) as group:
                    self.ready.clear()
                    delay_s = reconnect.failed(self.rng)
                    if reconnect.first_failure:
                        log.warning(
                            "ingest: broker %s lost (%s); reconnecting",
                            m.url(),
                            group.exceptions[0],
                        )
                    # batches queued for the lost connection will be resent by edges
                    self._drain_queue()
                    await asyncio.sleep(delay_s)
        finally:
            await self._pool.close()

    async def _serve(self, client: Client) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client), name="ingest-receive")
            for i in range(self.concurrency):
                tg.create_task(self._process(client), name=f"ingest-db-{i}")
            tg.create_task(self._report(), name="ingest-report")
            tg.create_task(self._side_writer(), name="ingest-side")

    async def _announce(self, client: Client) -> None:
        """Say (retained) that this worker is subscribed: edges resend at once the
        batches they published while no worker was, or whose answer a lost worker
        took with it, instead of waiting out their ack timeout."""
        presence = contract.IngestPresence(
            worker=self._presence_worker, sent_ms=int(time.time() * 1000)
        )
        await client.publish(
            self._presence_topic, contract.pack(presence), qos=1, retain=True
        )

    async def _say_gone(self, client: Client) -> None:
        """Clear the presence on a clean stop (a crash leaves it to the will).
        Best effort: the connection may be what failed."""
        with contextlib.suppress(MqttError, OSError, TimeoutError):
            async with asyncio.timeout(2):
                await client.publish(self._presence_topic, b"", qos=1, retain=True)

    def _drain_queue(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()

    async def _reply(self, client: Client, msg: Any) -> None:
        await client.publish(contract.down_ack(msg.gw), contract.pack(msg), qos=1)

    async def _receive(self, client: Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            payload = bytes(payload)
            if topic.endswith("/up/status"):
                self._status(topic, payload)
                continue
            try:
                batch = contract.unpack_batch(payload)
                if batch.gw != contract.gateway_of(topic):
                    raise contract.ContractError(
                        "gateway id in payload does not match topic"
                    )
            except contract.ContractError as exc:
                await self._reject(client, topic, payload, exc.reason)
                continue
            if not self._db_ok:
                await self._busy(
                    client, batch, _DB_RETRY_AFTER_S, "database unavailable"
                )
                continue
            if self.queue.full():
                await self._busy(
                    client, batch, self._retry_after(), "ingest queue full"
                )
                continue
            self.queue.put_nowait((batch, time.monotonic()))

    async def _busy(
        self, client: Client, batch: contract.Batch, after_s: float, why: str
    ) -> None:
        self.metrics.busy_sent += 1
        busy = contract.Busy(
            gw=batch.gw,
            epoch=batch.epoch,
            first_seq=batch.first_seq,
            last_seq=batch.last_seq,
            retry_after_s=after_s,
            reason=why,
        )
        await self._reply(client, busy)

    def _retry_after(self) -> float:
        # time to work off what is queued, with room for the batch being refused
        drain_s = (self.queue.qsize() + 1) * self._batch_s / self.concurrency
        return round(min(60.0, max(1.0, 2 * drain_s)), 2)

    async def _process(self, client: Client) -> None:
        assert self._pool is not None
        while True:
            batch, _queued_at = await self.queue.get()
            started = time.monotonic()
            try:
                async with self._pool.acquire(timeout=10) as conn:
                    stored_through = await self.store.store(conn, batch)
            except _DB_ERRORS as exc:
                self.metrics.db_failures += 1
                if self._db_ok:
                    log.error(
                        "ingest: cannot store in PostgreSQL (%s: %s); answering busy "
                        "until it recovers",
                        type(exc).__name__,
                        exc,
                    )
                self._db_ok = False
                await self._busy(
                    client, batch, _DB_RETRY_AFTER_S, "database unavailable"
                )
                # let new batches in again soon to probe the database
                asyncio.get_running_loop().call_later(_DB_RETRY_AFTER_S, self._probe_db)
                continue
            if not self._db_ok:
                log.info("ingest: PostgreSQL is back; storing again")
                self._db_ok = True
            took = time.monotonic() - started
            self._batch_s = 0.9 * self._batch_s + 0.1 * took
            self.metrics.busy_seconds += took
            self.metrics.batches_stored += 1
            if self.metrics.batches_stored == 1:
                log.info("ingest %s: first batch stored", self.client_id)
            self.metrics.readings_stored += len(batch.readings)
            self.metrics.events_stored += len(batch.events)
            await self._reply(
                client,
                contract.Ack(
                    gw=batch.gw,
                    epoch=batch.epoch,
                    first_seq=batch.first_seq,
                    last_seq=batch.last_seq,
                    stored_through_seq=stored_through,
                ),
            )

    def _probe_db(self) -> None:
        self._db_ok = True  # the next batch tells; if it fails we go back to busy

    def _side_write(self, what: str, write: SideWrite) -> None:
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
        assert self._pool is not None
        while True:
            what, write = await self._side.get()
            try:
                async with self._pool.acquire(timeout=30) as conn:
                    await write(conn)
            except _DB_ERRORS as exc:
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

        self._side_write(f"status of {st.gw}", write)

    async def _reject(
        self, client: Client, topic: str, payload: bytes, reason: str
    ) -> None:
        self.metrics.rejected += 1
        head = _head(payload)
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

        self._side_write("rejected batch", write)
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
            return  # the batch does not even name its range: nothing to answer
        if answer.gw == head.get("gw"):
            await self._reply(client, answer)

    async def _report(self) -> None:
        last_rows, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(10)
            now = time.monotonic()
            m = self.metrics
            rate = (m.readings_stored - last_rows) / (now - last_t)
            if m.readings_stored != last_rows or m.busy_sent:
                log.info(
                    "ingest: %.0f readings/s; stored %d batches, %d readings; busy %d, "
                    "rejected %d, quarantined %d, queue %d",
                    rate,
                    m.batches_stored,
                    m.readings_stored,
                    m.busy_sent,
                    m.rejected,
                    self.store.quarantine.total,
                    self.queue.qsize(),
                )
            last_rows, last_t = m.readings_stored, now


def _head(payload: bytes) -> dict[str, Any]:
    """Best-effort range of a batch that failed validation (for the Reject)."""
    try:
        data = msgpack.unpackb(payload[: contract.MAX_BATCH_BYTES], raw=False)
    except Exception:
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: data[k]
        for k in ("gw", "epoch", "first_seq", "last_seq")
        if isinstance(data.get(k), int | str)
    }
