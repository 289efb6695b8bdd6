"""One simulated gateway: readings, outbox, ledger and its own MQTT connection.

It speaks sync contract v1 as the edge's uplink does (``edge/uplink.py``): a
retained ``up/status`` with a last will saying offline; ``Batch`` messages on
``up/batch`` with sequence ranges, chosen by :class:`FleetSendPlan` (live readings
before backlog, a window of batches in flight); answers on ``down/ack``: ``Ack``
prunes, ``Busy`` pauses everything for its ``retry_after_s`` (jittered), ``Reject``
quarantines; a batch unanswered within ``ack_timeout_s`` is resent with full-jitter
backoff, and so is everything unacknowledged after a reconnect; an ingest
worker's presence coming or going resends what is in flight at once. Reconnects
follow ``protocols.backoff.Reconnect`` (capped full jitter), so a fleet that
lost the cloud comes back spread over the backoff window, not in one wave.

Readings: every ``interval_s`` the gateway's one meter gives an energy register
(``import_energy_wh``, rising) and a power sample (``power_w``), two sequence
numbers. The ledger keeps every reading produced (timestamp and value, by
sequence number) in two flat arrays, 16 bytes a reading; the outbox holds only
which numbers are unacknowledged (``HeldSeqs``) and reads their rows from the
ledger, so an hour of backlog costs a gateway 11 KiB, not a dict per row.

Event-driven, no task while connected: a new reading, an answer or a timer calls
``pump``, which sends what the plan allows and arms one timer for the next
deadline. One task per gateway runs the connect/reconnect loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols import contract
from protocols.backoff import Backoff, Reconnect
from simulators.fleet._mqtt import MqttConnection, MqttLinkError, MqttWill, open_link
from simulators.fleet._plan import FleetSendPlan, HeldSeqs

log = logging.getLogger("fusebox.sim.fleet")

METER_ID = "meter-1"
STREAMS: tuple[tuple[str, str], ...] = (
    (METER_ID, "import_energy_wh"),
    (METER_ID, "power_w"),
)
SOFTWARE = "fusebox-sim-fleet"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How every gateway of a fleet connects and sends (the edge's defaults)."""

    host: str
    port: int
    batch_max_records: int = 5000
    window: int = 4
    ack_timeout_s: float = 30.0
    linger_s: float = 0.5
    reconnect: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))
    resend: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))
    status_interval_s: float = 10.0
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0


@dataclass(slots=True)
class GatewayCounters:
    """What one gateway did since start (summed per worker for progress lines)."""

    connects: int = 0
    batches: int = 0
    records_sent: int = 0
    acks: int = 0
    acked: int = 0
    busy: int = 0
    rejects: int = 0
    rejected: int = 0
    timeouts: int = 0
    resent: int = 0
    refused_logins: int = 0


class SimGateway:
    """A gateway of the fleet. ``run()`` is its connection loop (a task);
    ``produce(ts_ms)`` appends one meter reading pair; ``online`` switches
    whether it may reach the cloud (an outage on its side of the link)."""

    def __init__(
        self,
        gateway_id: str,
        settings: GatewaySettings,
        rng: random.Random,
        *,
        username: str | None = None,
        password: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = gateway_id
        self.client_id = f"fusebox-edge-{gateway_id}"
        self.cfg = settings
        self.rng = rng
        self.clock = clock
        self.username = username
        self.password = password
        self.epoch = rng.randrange(1, 2**62)
        self.outbox = HeldSeqs()
        self.ledger_ts_ms = array("q")
        self.ledger_value = array("d")
        self.energy_wh = round(rng.uniform(1e5, 1e6), 3)
        self.counters = GatewayCounters()
        self.online = True
        self.link: MqttConnection | None = None
        self.plan: FleetSendPlan | None = None
        self._backlog_end = 0
        self._timer: asyncio.TimerHandle | None = None
        self._status_timer: asyncio.TimerHandle | None = None
        self._topic_batch = contract.up_batch(gateway_id)
        self._topic_ack = contract.down_ack(gateway_id)
        self._topic_status = contract.up_status(gateway_id)
        self._wake = asyncio.Event()

    # ----------------------------------------------------------------- readings

    def produce(self, ts_ms: int, interval_s: float) -> None:
        """One reading of the meter: the register and a power sample at ``ts_ms``."""
        power_w = round(self.rng.uniform(100.0, 7000.0), 1)
        self.energy_wh = round(self.energy_wh + power_w * interval_s / 3600.0, 3)
        self.outbox.append(2)
        self.ledger_ts_ms.append(ts_ms)
        self.ledger_ts_ms.append(ts_ms)
        self.ledger_value.append(self.energy_wh)
        self.ledger_value.append(power_w)
        if self.plan is not None:
            self.pump()

    @property
    def produced(self) -> int:
        """Readings appended since start (the ledger's length)."""
        return len(self.ledger_value)

    @property
    def last_ts_ms(self) -> int:
        """Timestamp of the newest reading, 0 if none."""
        return self.ledger_ts_ms[-1] if self.ledger_ts_ms else 0

    # -------------------------------------------------------------- connection

    def go_offline(self) -> None:
        """Lose the cloud: cut the link (the broker publishes the will) and make
        every reconnect attempt fail until ``go_online``."""
        self.online = False
        if self.link is not None:
            self.link.close(clean=False)

    def go_online(self) -> None:
        """The cloud is reachable again; the next attempt (after its backoff
        delay) connects."""
        self.online = True

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, serve, reconnect with backoff, until ``stop`` is set."""
        reconnect = Reconnect(self.cfg.reconnect)
        while not stop.is_set():
            if self.online:
                try:
                    link = await self._connect()
                except (MqttLinkError, OSError, TimeoutError) as exc:
                    self._note_failure(exc)
                else:
                    reconnect.succeeded()
                    await self._serve(link, stop)
            delay_s = reconnect.failed(self.rng)
            self._wake.clear()
            try:
                async with asyncio.timeout(delay_s):
                    await self._wake.wait()  # set on stop only
            except TimeoutError:
                pass

    def stop(self) -> None:
        """End the connection loop (``run`` returns) and close the link cleanly."""
        self._wake.set()
        if self.link is not None:
            self.link.close(clean=True)

    def _note_failure(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if code in (4, 5):
            self.counters.refused_logins += 1
            if self.counters.refused_logins == 1:
                log.error(
                    "fleet: the broker refused gateway %s (account %r, client id "
                    "%s): %s",
                    self.id,
                    self.username,
                    self.client_id,
                    exc,
                )

    async def _connect(self) -> MqttConnection:
        will = MqttWill(
            self._topic_status,
            contract.pack(contract.GatewayStatus(gw=self.id, state="offline")),
        )
        link = await open_link(
            self.cfg.host,
            self.cfg.port,
            self.client_id,
            self._received,
            username=self.username,
            password=self.password,
            will=will,
            keepalive_s=self.cfg.keepalive_s,
            timeout_s=self.cfg.connect_timeout_s,
        )
        try:
            await link.subscribe(
                [contract.down_filter(self.id), contract.INGEST_PRESENCE_FILTER],
                self.cfg.connect_timeout_s,
            )
        except BaseException:
            link.close(clean=False)
            raise
        return link

    async def _serve(self, link: MqttConnection, stop: asyncio.Event) -> None:
        self.link = link
        self.counters.connects += 1
        self._publish_status()
        held = self.outbox
        self.plan = FleetSendPlan(
            acked_through=held.acked_through,
            live_from=held.last_seq + 1,
            window=self.cfg.window,
            ack_timeout_s=self.cfg.ack_timeout_s,
            backoff=self.cfg.resend,
            rng=self.rng,
            linger_s=self.cfg.linger_s,
        )
        self._backlog_end = held.last_seq
        try:
            self.pump()
            await link.lost
        finally:
            self.plan = None
            self.link = None
            for timer in (self._timer, self._status_timer):
                if timer is not None:
                    timer.cancel()
            self._timer = self._status_timer = None

    def _publish_status(self) -> None:
        link = self.link
        if link is None:
            return
        held = self.outbox
        oldest = held.oldest
        status = contract.GatewayStatus(
            gw=self.id,
            state="online",
            sent_ms=int(time.time() * 1000),
            software=SOFTWARE,
            backlog_records=held.count,
            backlog_oldest_ms=None if oldest is None else self.ledger_ts_ms[oldest - 1],
            appended_total=held.last_seq,
            rejected_total=self.counters.rejected,
            acked_through_seq=held.acked_through,
        )
        link.publish(self._topic_status, contract.pack(status), qos=1, retain=True)
        self._status_timer = asyncio.get_running_loop().call_later(
            self.cfg.status_interval_s, self._publish_status
        )

    # ------------------------------------------------------------------ sending

    def pump(self) -> None:
        """Send what the plan allows now; arm a timer for its next deadline."""
        plan, link = self.plan, self.link
        if plan is None or link is None or not link.connected:
            return
        now = self.clock()
        self.counters.timeouts += len(plan.expire(now))
        while plan.has_room and now >= plan.paused_until:
            pick = self._pick(plan, now)
            if pick is None:
                break
            first, last, attempt = pick
            seqs = self.outbox.read(first, last, last - first + 1)
            link.publish(self._topic_batch, self._payload(first, last, seqs), qos=1)
            plan.sent(first, last, now, attempt)
            self.counters.batches += 1
            self.counters.records_sent += len(seqs)
            if attempt:
                self.counters.resent += len(seqs)
        if self._timer is not None:
            self._timer.cancel()
        wait_s = min(plan.next_wakeup(self.clock()), 5.0)
        self._timer = asyncio.get_running_loop().call_later(wait_s, self.pump)

    def _pick(self, plan: FleetSendPlan, now: float) -> tuple[int, int, int] | None:
        """The next range: live first, then a due resend, then backlog."""
        limit = self.cfg.batch_max_records
        held = self.outbox
        waiting = held.last_seq - plan.live_next + 1
        if plan.live_ready(now, waiting, limit):
            seqs = held.read(plan.live_next, None, limit)
            if seqs:
                first, last = plan.take_live(seqs[-1])
                return first, last, 0
        due = plan.due_retry(now)
        if due is not None:
            return due
        start = max(plan.backlog_next, plan.acked_through + 1)
        if start <= self._backlog_end:
            seqs = held.read(start, self._backlog_end, limit)
            last = seqs[-1] if len(seqs) == limit else self._backlog_end
            plan.backlog_next = last + 1
            return start, last, 0
        return None

    def _payload(self, first: int, last: int, seqs: list[int]) -> bytes:
        index: dict[int, int] = {}
        streams: list[tuple[str, str]] = []
        readings: list[tuple[int, int, int, float]] = []
        ts, values = self.ledger_ts_ms, self.ledger_value
        for seq in seqs:
            stream = (seq - 1) % len(STREAMS)
            at = index.get(stream)
            if at is None:
                at = index[stream] = len(streams)
                streams.append(STREAMS[stream])
            readings.append((seq, ts[seq - 1], at, values[seq - 1]))
        return contract.pack(
            contract.batch_dict(
                gw=self.id,
                epoch=self.epoch,
                first_seq=first,
                last_seq=last,
                sent_ms=int(time.time() * 1000),
                streams=streams,
                readings=readings,
                events=[],
            )
        )

    # ---------------------------------------------------------------- receiving

    def _received(self, topic: str, payload: bytes, retained: bool) -> None:
        plan = self.plan
        if plan is None:
            return
        if topic == self._topic_ack:
            try:
                answer = contract.unpack_down(payload)
            except contract.ContractError as exc:
                log.warning("fleet: %s ignores a malformed answer: %s", self.id, exc)
                return
            if answer.gw == self.id and answer.epoch == self.epoch:
                self._answer(plan, answer)
        elif topic.startswith(contract.CLOUD_ROOT + "/ingest/"):
            if not retained:  # a worker came or went just now
                plan.resend_in_flight(self.clock())
        else:
            return  # schedules and commands: not simulated
        self.pump()

    def _answer(
        self,
        plan: FleetSendPlan,
        answer: contract.Ack | contract.Busy | contract.Reject,
    ) -> None:
        c = self.counters
        if isinstance(answer, contract.Ack):
            c.acks += 1
            plan.acked(answer.first_seq, answer.stored_through_seq)
            c.acked += self.outbox.prune_range(answer.first_seq, answer.last_seq)
            if answer.stored_through_seq:
                c.acked += self.outbox.prune_through(answer.stored_through_seq)
        elif isinstance(answer, contract.Busy):
            c.busy += 1
            plan.busy(answer.first_seq, answer.retry_after_s, self.clock())
        elif plan.rejected(answer.first_seq):
            c.rejects += 1
            c.rejected += self.outbox.remove(answer.first_seq, answer.last_seq)
            log.error(
                "fleet: cloud rejected %s batch %d..%d: %s",
                self.id,
                answer.first_seq,
                answer.last_seq,
                answer.reason,
            )
