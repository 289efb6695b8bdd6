"""The uplink: ships the outbox to the cloud and prunes only what the cloud stored.

Flow control (ARCHITECTURE decision 2): at most ``window`` unacknowledged batches
are in flight. The cloud answers each batch with ``Ack`` (prune it), ``Busy``
(send nothing until ``retry_after_s`` has passed, then resend) or ``Reject``
(quarantine it: it would fail again). A batch with no answer within
``ack_timeout_s`` is resent with capped full-jitter backoff; so is everything
unacknowledged after a reconnect. Duplicates are harmless: the cloud stores
idempotently on (gateway, seq).

Ordering: on each connection the outbox splits into *backlog* (everything up to
the last sequence at connect time) and *live* (everything appended since). Live
records go first, so the cloud sees the present even while a day of backlog
drains behind it; backlog fills the remaining window.

The sender state machine is ``SendPlan`` (pure, no I/O, ``now`` passed in); the
asyncio shell ``Uplink`` pumps MQTT and the outbox through it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from edge import OutboxError
from edge.mqtt_lib import Client, MqttError, TLSParameters, Will
from edge.outbox import Outbox, Row
from protocols import contract
from protocols.backoff import Backoff, Reconnect
from protocols.urls import MqttTarget

log = logging.getLogger("fusebox.edge.uplink")


@dataclass(slots=True)
class _InFlight:
    first: int
    last: int
    sent_at: float
    attempt: int


@dataclass(slots=True)
class SendPlan:
    """Which sequence range to send next, and what is in flight. Pure state.

    Ranges handed out are contiguous and cover every sequence number from
    ``acked_through + 1`` onwards exactly once per pass, so the cloud can count
    them as covered even where thinning left gaps.
    """

    acked_through: int
    live_from: int
    window: int
    ack_timeout_s: float
    backoff: Backoff
    rng: random.Random
    backlog_next: int = 0
    live_next: int = 0
    in_flight: dict[int, _InFlight] = field(default_factory=dict)
    retry: list[tuple[float, int, int, int]] = field(default_factory=list)
    paused_until: float = 0.0
    # live records wait up to ``linger_s`` for company, so a site's meters share
    # one batch (and one cloud transaction) instead of each taking its own
    linger_s: float = 0.0
    live_since: float | None = None

    def __post_init__(self) -> None:
        self.backlog_next = self.acked_through + 1
        self.live_next = max(self.live_from, self.backlog_next)

    @property
    def has_room(self) -> bool:
        """Whether the in-flight window allows another batch."""
        return len(self.in_flight) < self.window

    def due_retry(self, now: float) -> tuple[int, int, int] | None:
        """A range whose retry time has come: ``(first, last, attempt)``."""
        if now < self.paused_until:
            return None
        for i, (at, first, last, attempt) in enumerate(self.retry):
            if at <= now:
                del self.retry[i]
                return first, last, attempt
        return None

    def live_ready(self, now: float, waiting: int, batch_max: int) -> bool:
        """Whether the ``waiting`` live records should go now: a full batch goes at
        once, a smaller one once the oldest of them has lingered ``linger_s``."""
        if waiting <= 0:
            self.live_since = None
            return False
        if self.live_since is None:
            self.live_since = now
        return waiting >= batch_max or now - self.live_since >= self.linger_s

    def live_taken(self) -> None:
        """The waiting live records went into a batch; the next ones linger anew."""
        self.live_since = None

    def resend_in_flight(self, now: float) -> list[tuple[int, int]]:
        """Every batch in flight is due again now (their answers were lost with an
        ingest worker, or nobody was subscribed when they went); returns them. The
        attempt count stays: this is no failure of the link, so no longer backoff.
        A pause the cloud asked for (``busy``) still holds."""
        gone = list(self.in_flight.values())
        self.in_flight.clear()
        for f in gone:
            self.retry.append((now, f.first, f.last, f.attempt))
        self.retry.sort()
        return [(f.first, f.last) for f in gone]

    def next_wakeup(self, now: float) -> float:
        """Seconds until something may need doing without outside input."""
        candidates = [self.paused_until - now]
        if self.live_since is not None:
            candidates.append(self.live_since + self.linger_s - now)
        candidates += [at - now for at, *_ in self.retry]
        candidates += [
            f.sent_at + self.ack_timeout_s - now for f in self.in_flight.values()
        ]
        future = [c for c in candidates if c > 0]
        return min(future, default=1.0)

    def sent(self, first: int, last: int, now: float, attempt: int = 0) -> None:
        """Record batch ``first``..``last`` as sent at ``now`` (its ack timeout
        starts)."""
        self.in_flight[first] = _InFlight(first, last, now, attempt)

    def expire(self, now: float) -> list[tuple[int, int]]:
        """Move batches whose ack is overdue to the retry list; returns them."""
        overdue = [
            f for f in self.in_flight.values() if now - f.sent_at >= self.ack_timeout_s
        ]
        for f in overdue:
            del self.in_flight[f.first]
            at = now + self.backoff.delay(f.attempt, self.rng)
            self.retry.append((at, f.first, f.last, f.attempt + 1))
        return [(f.first, f.last) for f in overdue]

    def acked(self, first: int, last: int, stored_through: int) -> bool:
        """Record an ack; returns whether it matched a batch in flight."""
        matched = self.in_flight.pop(first, None) is not None
        if stored_through > self.acked_through:
            self.acked_through = stored_through
            for key in [
                k for k, f in self.in_flight.items() if f.last <= stored_through
            ]:
                del self.in_flight[key]
            self.retry = [r for r in self.retry if r[2] > stored_through]
        return matched

    def busy(self, first: int, last: int, retry_after_s: float, now: float) -> None:
        """The cloud refused this batch for now: pause everything, then resend."""
        f = self.in_flight.pop(first, None)
        # a little jitter on top so a fleet told "30 s" does not return in lockstep
        wait = retry_after_s * (1.0 + 0.25 * self.rng.random())
        self.paused_until = max(self.paused_until, now + wait)
        if f is not None:  # a stale answer (from before a reconnect) only pauses
            self.retry.append((now + wait, f.first, f.last, f.attempt + 1))

    def rejected(self, first: int) -> bool:
        """Forget the in-flight batch starting at ``first``; False if it was not in
        flight."""
        return self.in_flight.pop(first, None) is not None


def _codes(granted: Any) -> list[Any]:
    """paho/aiomqtt hand back SUBACK codes as ints (3.1.1) or ReasonCodes (5)."""
    if isinstance(granted, list | tuple):
        return list(granted)
    return [granted]


def _refused(code: Any) -> bool:
    value = getattr(code, "value", code)
    return isinstance(value, int) and value >= 0x80


# Upper bounds of what a batch's MessagePack takes (_fit): the head (type, gw,
# epoch, range, sent_ms, keys), a record's row without its event data (array,
# seq, ts, stream index, float), a stream's [device, name] without the strings.
_BATCH_HEAD_BYTES = 512
_ROW_BYTES = 1 + 9 + 9 + 5 + 9
_STREAM_BYTES = 1 + 5 + 5

# CONNACK codes of a refused login: MQTT 3.1.1 (4 bad user name or password, 5 not
# authorised) and v5 (0x85 client id not valid, 0x86, 0x87)
_LOGIN_REFUSED = {4, 5, 0x85, 0x86, 0x87}


def login_refused(exc: BaseException, cfg: UplinkConfig) -> str | None:
    """What to do when the cloud broker refused this gateway's login, else None.

    Mosquitto answers a wrong password and a client id the account is not bound to
    (cloud.broker_auth binds ``gw-<id>`` to ``fusebox-edge-<id>``) alike, so the
    message names both fixes."""
    rc = getattr(exc, "rc", None)
    if getattr(rc, "value", rc) not in _LOGIN_REFUSED:
        return None
    t = cfg.target
    return (
        f"uplink: the cloud broker {t.url()} refused the login of account "
        f"{t.username or '(none)'!r} with client id {cfg.client_id!r} ({exc}). "
        "Either the password is wrong or was rotated: install this gateway's new "
        "config bundle (POST /v1/gateways/"
        f"{cfg.gateway_id}/broker_credentials issues one); or the client id is not "
        "the one the account is bound to: a Fusebox account gw-<gateway_id> "
        "connects only as fusebox-edge-<gateway_id>, so remove cloud.client_id "
        "from the edge config. Readings stay in the outbox; retrying with backoff"
    )


@dataclass(slots=True)
class UplinkConfig:
    """How the uplink connects and sends: gateway, broker target, batching, window, ack
    timeout and backoffs."""

    gateway_id: str
    target: MqttTarget
    client_id: str
    batch_max_records: int = 5000
    window: int = 4
    ack_timeout_s: float = 30.0
    linger_s: float = 0.5
    reconnect: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))
    resend: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))
    status_interval_s: float = 10.0
    keepalive_s: int = 30
    software: str = "fusebox-edge"


@dataclass(slots=True)
class UplinkMetrics:
    """Counters of the uplink since start (batches, acks, rejects, timeouts, reconnects,
    ...) for /metrics and status."""

    connected: bool = False
    batches_sent: int = 0
    records_sent: int = 0
    acks: int = 0
    busy: int = 0
    rejects: int = 0
    timeouts: int = 0
    reconnects: int = 0
    records_acked: int = 0
    resent_on_presence: int = 0


class Uplink:
    """Runs until cancelled: connect, send, reconnect, forever."""

    def __init__(
        self,
        outbox: Outbox,
        config: UplinkConfig,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        extra_status: Callable[[], dict[str, Any]] | None = None,
        on_down: Callable[[str, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.on_down = on_down
        # small messages for the cloud (schedule status, command results), latest
        # per key, sent while connected (``post``)
        self._posts: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._posted = asyncio.Event()
        self.cfg = config
        self.rng = rng or random.Random()
        self.clock = clock
        self.metrics = UplinkMetrics()
        self.extra_status = extra_status or (lambda: {})
        self._plan: SendPlan | None = None
        self._answer = asyncio.Event()
        self._refusal: str | None = None  # the login refusal last logged

    # ------------------------------------------------------------------ status

    async def status_payload(self, state: str = "online") -> bytes:
        """The gateway status message (backlog, outbox use, software, plus
        ``extra_status``) as published retained."""
        s = await self.outbox.stats()
        msg = contract.GatewayStatus(
            gw=self.cfg.gateway_id,
            state="online" if state == "online" else "offline",
            sent_ms=int(time.time() * 1000),
            software=self.cfg.software,
            backlog_records=max(0, s.backlog_records),
            backlog_oldest_ms=s.backlog_oldest_ms,
            outbox_bytes=s.used_bytes,
            outbox_cap_bytes=s.cap_bytes,
            appended_total=s.counters["appended_total"],
            thinned_total=s.counters["thinned_total"],
            rejected_total=s.counters["rejected_total"],
            acked_through_seq=s.acked_through,
            **self.extra_status(),
        )
        return contract.pack(msg)

    # -------------------------------------------------------------------- run

    async def run(self) -> None:
        """Connect, subscribe, publish status and send the outbox until cancelled;
        reconnects with backoff after broker or network errors."""
        reconnect = Reconnect(self.cfg.reconnect)
        gw = self.cfg.gateway_id
        will = Will(
            contract.up_status(gw),
            contract.pack(contract.GatewayStatus(gw=gw, state="offline")),
            qos=1,
            retain=True,
        )
        while True:
            t = self.cfg.target
            try:
                async with Client(
                    t.host,
                    t.port,
                    username=t.username,
                    password=t.password,
                    identifier=self.cfg.client_id,
                    clean_session=True,
                    keepalive=self.cfg.keepalive_s,
                    will=will,
                    tls_params=TLSParameters() if t.tls else None,
                    max_inflight_messages=max(20, self.cfg.window * 2),
                    timeout=10,
                ) as client:
                    again = reconnect.succeeded()
                    self._refusal = None
                    log.info("uplink: connected to %s%s", t.url(), " again" * again)
                    self.metrics.connected = True
                    await client.subscribe(contract.down_filter(gw), qos=1)
                    await self._subscribe_presence(client)
                    await client.publish(
                        contract.up_status(gw),
                        await self.status_payload(),
                        qos=1,
                        retain=True,
                    )
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._receive(client), name="uplink-receive")
                        tg.create_task(self._send(client), name="uplink-send")
                        tg.create_task(self._status(client), name="uplink-status")
                        tg.create_task(self._send_posts(client), name="uplink-posts")
            except* (MqttError, OSError, TimeoutError) as group:
                self.metrics.connected = False
                self.metrics.reconnects += 1
                delay = reconnect.failed(self.rng)
                refusal = login_refused(group.exceptions[0], self.cfg)
                if refusal is not None and refusal != self._refusal:
                    log.error("%s", refusal)  # once, until the login works
                elif refusal is None and reconnect.first_failure:
                    log.warning(
                        "uplink: cloud broker %s unreachable (%s); readings stay in "
                        "the outbox; retrying with backoff",
                        t.url(),
                        group.exceptions[0],
                    )
                self._refusal = refusal
                await asyncio.sleep(delay)
            finally:
                self.metrics.connected = False
                self._plan = None

    async def _status(self, client: Client) -> None:
        while True:
            await asyncio.sleep(self.cfg.status_interval_s)
            await client.publish(
                contract.up_status(self.cfg.gateway_id),
                await self.status_payload(),
                qos=1,
                retain=True,
            )

    def post(self, leaf: str, payload: bytes, *, key: str | None = None) -> None:
        """Send ``payload`` on ``fusebox/v1/gw/{id}/{leaf}`` (QoS 1) when connected.
        Messages with the same ``key`` replace each other while waiting (only the
        latest state matters); at most 1,000 wait, the oldest go first."""
        key = key or f"{leaf}:{len(self._posts)}:{time.monotonic_ns()}"
        self._posts.pop(key, None)
        self._posts[key] = (leaf, payload)
        while len(self._posts) > 1000:
            self._posts.popitem(last=False)
        self._posted.set()

    async def _send_posts(self, client: Client) -> None:
        while True:
            await self._posted.wait()
            self._posted.clear()
            while self._posts:
                key, (leaf, payload) = next(iter(self._posts.items()))
                await client.publish(
                    contract.gateway_topic(self.cfg.gateway_id, leaf), payload, qos=1
                )
                if self._posts.get(key) == (leaf, payload):
                    del self._posts[key]

    async def _receive(self, client: Client) -> None:
        ack_topic = contract.down_ack(self.cfg.gateway_id)
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            topic = message.topic.value
            if message.topic.matches(contract.INGEST_PRESENCE_FILTER):
                self._presence(topic, bytes(payload), retained=bool(message.retain))
                continue
            if topic != ack_topic:
                if self.on_down is not None:
                    leaf = topic.split("/", 4)[-1] if topic.count("/") >= 4 else topic
                    try:
                        await self.on_down(leaf, bytes(payload))
                    except Exception:
                        log.exception("uplink: handling a message on %s failed", topic)
                continue
            try:
                answer = contract.unpack_down(bytes(payload))
            except contract.ContractError as exc:
                log.warning(
                    "uplink: ignoring malformed message on %s: %s", message.topic, exc
                )
                continue
            if (
                answer.gw != self.cfg.gateway_id
                or answer.epoch != self.outbox.store.epoch
            ):
                continue
            await self._handle_answer(answer)
            self._answer.set()

    async def _subscribe_presence(self, client: Client) -> None:
        """Follow the ingest workers' presence (see ``contract.ingest_presence``).
        A broker whose ACL predates it refuses the subscription: then a lost
        answer is resent after ``ack_timeout_s`` only, as before."""
        granted = await client.subscribe(contract.INGEST_PRESENCE_FILTER, qos=1)
        if any(_refused(code) for code in _codes(granted)):
            log.info(
                "uplink: the cloud broker refuses %s; a batch whose answer is lost "
                "is resent after %.0f s",
                contract.INGEST_PRESENCE_FILTER,
                self.cfg.ack_timeout_s,
            )

    def _presence(self, topic: str, payload: bytes, *, retained: bool) -> None:
        """An ingest worker came (a presence) or went (an empty payload). Retained
        copies arrive on every subscribe and say nothing new; a live one means
        batches in flight may have no one to answer them: resend them now."""
        try:
            contract.unpack_presence(payload)
        except contract.ContractError as exc:
            log.warning("uplink: ignoring malformed presence on %s: %s", topic, exc)
            return
        plan = self._plan
        if retained or plan is None:
            return
        again = plan.resend_in_flight(self.clock())
        if again:
            self.metrics.resent_on_presence += len(again)
            log.info(
                "uplink: ingest %s %s; resending %d batch(es) in flight now",
                topic.rsplit("/", 1)[-1],
                "came" if payload else "went",
                len(again),
            )
        self._answer.set()

    async def _handle_answer(
        self, answer: contract.Ack | contract.Busy | contract.Reject
    ) -> None:
        plan = self._plan
        if plan is None:
            return
        now = self.clock()
        if isinstance(answer, contract.Ack):
            self.metrics.acks += 1
            plan.acked(answer.first_seq, answer.last_seq, answer.stored_through_seq)
            # A full disk never fails a prune (the outbox retries it as space
            # allows); any other failure leaves the rows, which are resent after
            # a reconnect and acknowledged again: the uplink keeps running.
            try:
                self.metrics.records_acked += await self.outbox.prune_range(
                    answer.first_seq, answer.last_seq
                )
                if answer.stored_through_seq:
                    self.metrics.records_acked += await self.outbox.prune_through(
                        answer.stored_through_seq
                    )
            except (OutboxError, sqlite3.Error) as exc:
                log.error("uplink: pruning acknowledged records failed: %s", exc)
        elif isinstance(answer, contract.Busy):
            self.metrics.busy += 1
            if self.metrics.busy == 1 or self.metrics.busy % 100 == 0:
                log.info(
                    "uplink: cloud busy (%s), waiting %.1f s (busy answers so far: %d)",
                    answer.reason or "no reason",
                    answer.retry_after_s,
                    self.metrics.busy,
                )
            plan.busy(answer.first_seq, answer.last_seq, answer.retry_after_s, now)
        else:
            if plan.rejected(answer.first_seq):
                self.metrics.rejects += 1
                try:
                    n = await self.outbox.quarantine_range(
                        answer.first_seq, answer.last_seq, answer.reason
                    )
                except (OutboxError, sqlite3.Error) as exc:
                    # the rows stay; sent (and rejected) again after a reconnect
                    log.error(
                        "uplink: cloud rejected batch %d..%d (%s); quarantining it "
                        "failed: %s",
                        answer.first_seq,
                        answer.last_seq,
                        answer.reason,
                        exc,
                    )
                    return
                log.error(
                    "uplink: cloud rejected batch %d..%d (%s); %d records quarantined "
                    "in the outbox for inspection",
                    answer.first_seq,
                    answer.last_seq,
                    answer.reason,
                    n,
                )

    async def _send(self, client: Client) -> None:
        stats = await self.outbox.stats()
        plan = SendPlan(
            acked_through=stats.acked_through,
            live_from=stats.last_seq + 1,
            window=self.cfg.window,
            ack_timeout_s=self.cfg.ack_timeout_s,
            backoff=self.cfg.resend,
            rng=self.rng,
            linger_s=self.cfg.linger_s,
        )
        self._plan = plan
        backlog_end = stats.last_seq  # backlog region is acked_through+1 .. backlog_end
        if backlog_end > stats.acked_through:
            log.info(
                "uplink: %d records waiting (seq %d..%d); live readings go first",
                stats.backlog_records,
                stats.acked_through + 1,
                backlog_end,
            )
        topic = contract.up_batch(self.cfg.gateway_id)
        while True:
            now = self.clock()
            expired = plan.expire(now)
            if expired:
                self.metrics.timeouts += len(expired)
                log.info(
                    "uplink: no answer for %d batch(es); will resend", len(expired)
                )
            sent_any = False
            while plan.has_room and now >= plan.paused_until:
                pick = await self._pick(plan, backlog_end, now)
                if pick is None:
                    break
                first, last, attempt, rows = pick
                if rows is None:
                    rows = await self.outbox.read(first, last, last - first + 1)
                payload, n = self._payload(first, last, rows)
                await client.publish(topic, payload, qos=1)
                plan.sent(first, last, self.clock(), attempt)
                self.metrics.batches_sent += 1
                self.metrics.records_sent += n
                sent_any = True
            if sent_any:
                continue
            wait = plan.next_wakeup(self.clock())
            self._answer.clear()
            self.outbox.changed.clear()
            waiters = [
                asyncio.ensure_future(self._answer.wait()),
                asyncio.ensure_future(self.outbox.changed.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters, timeout=min(wait, 5.0), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waiters:
                    w.cancel()

    async def _pick(
        self, plan: SendPlan, backlog_end: int, now: float
    ) -> tuple[int, int, int, list[Row] | None] | None:
        """The next range to send: ``(first, last, attempt, rows or None)``."""
        limit = self.cfg.batch_max_records
        # 1. live records, newest region first, once they have lingered
        waiting = self.outbox.last_seq - plan.live_next + 1
        if plan.live_ready(now, waiting, limit):
            rows = self._fit(await self.outbox.read(plan.live_next, None, limit))
            if rows:
                first, last = plan.live_next, rows[-1].seq
                plan.live_next = last + 1
                plan.live_taken()
                return first, last, 0, rows
        # 2. batches due for a resend (rows are read again: some may be pruned)
        due = plan.due_retry(now)
        if due is not None:
            return due[0], due[1], due[2], None
        # 3. backlog, oldest first
        start = max(plan.backlog_next, plan.acked_through + 1)
        if start <= backlog_end:
            read = await self.outbox.read(start, backlog_end, limit)
            rows = self._fit(read)
            cut = len(read) == limit or len(rows) < len(read)
            last = rows[-1].seq if cut else backlog_end
            plan.backlog_next = last + 1
            return start, last, 0, rows
        return None

    def _fit(self, rows: list[Row]) -> list[Row]:
        """The longest prefix of ``rows`` (at least one) whose batch stays within
        ``contract.MAX_BATCH_BYTES``: the ingest worker refuses a bigger payload
        and the cloud broker's packet limit (protocols.broker_limits) is set from
        it. Estimated from above, so the packed batch is never bigger. A resend
        of the range reads the same rows or fewer (pruned), never more."""
        budget = contract.MAX_BATCH_BYTES - _BATCH_HEAD_BYTES
        streams: set[int] = set()
        used = 0
        for i, r in enumerate(rows):
            used += _ROW_BYTES + (len(r.data) if r.data is not None else 0)
            if r.stream not in streams:
                streams.add(r.stream)
                device, name = self.outbox.store.stream_name(r.stream)
                used += _STREAM_BYTES + len(device.encode()) + len(name.encode())
            if used > budget and i > 0:
                return rows[:i]
        return rows

    def _payload(self, first: int, last: int, rows: list[Row]) -> tuple[bytes, int]:
        store = self.outbox.store
        stream_index: dict[int, int] = {}
        streams: list[tuple[str, str]] = []
        readings: list[tuple[int, int, int, float]] = []
        events: list[tuple[int, int, int, dict[str, Any]]] = []
        for r in rows:
            idx = stream_index.get(r.stream)
            if idx is None:
                idx = stream_index[r.stream] = len(streams)
                streams.append(store.stream_name(r.stream))
            if r.data is None:
                readings.append((r.seq, r.ts_ms, idx, float(r.value or 0.0)))
            else:
                events.append((r.seq, r.ts_ms, idx, msgpack.unpackb(r.data)))
        payload = contract.pack(
            contract.batch_dict(
                gw=self.cfg.gateway_id,
                epoch=self.outbox.store.epoch,
                first_seq=first,
                last_seq=last,
                sent_ms=int(time.time() * 1000),
                streams=streams,
                readings=readings,
                events=events,
            )
        )
        return payload, len(rows)
