"""Meter drivers: subscribe on the site's broker, decode, append to the outbox.

One MQTT connection to the local broker carries every meter's subscription; each
meter has its own task and queue (a slow or broken meter delays no other). A
message is acknowledged to the broker (QoS 1 PUBACK) only after its readings are
durable in the outbox, so a gateway killed at any instant loses nothing: the broker
redelivers what was not acknowledged to the persistent session, and the outbox
drops the redelivered readings it already holds (same stream, same or older time).

The other way round, a message the broker has sent is stored even when the broker
dies before the edge could acknowledge it: Mosquitto writes the PUBLISH to the edge
before its PUBACK to the meter but keeps in-flight messages only in memory until
its next save, so after a broker crash the edge may hold the only copy. The meter
tasks therefore outlive connections; acks meant for a dead connection are dropped.
The reconnect backoff is capped low (``local.reconnect_max_s``, 1 s): the broker is
on the site, and the edge's session should be back before the meters are.
``edge.site_broker`` says what the broker's own config keeps across a crash.

A payload that cannot be decoded is counted by reason and logged when the meter's
state changes (ok -> failing, failing -> ok), then acknowledged: sending the same
bytes again would not help. When the outbox is full (only registers and events
left) the message stays unacknowledged and the driver retries, so the broker keeps
it meanwhile.

Drivers are built by ``meter_driver`` from the config's ``type`` and the registry
of meter models (``protocols.meters.METER_MODELS``: decoder and topic filters per
model), the registry the config's ``[[meters]]`` union is built from too. Adding a
meter model touches nothing here: see ``protocols/meters/_registry.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from edge import OutboxError
from edge.config import EdgeConfig, MeterConfig
from edge.mqtt_lib import (
    Client,
    Message,
    MqttError,
    TLSParameters,
    Topic,
    manual_acks,
    undelivered,
    watch_session_present,
)
from edge.outbox import AppendResult, Outbox
from edge.site_broker import Durability, read_durability
from protocols import meters as decoders
from protocols.backoff import Backoff, Reconnect
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url

log = logging.getLogger("fusebox.edge.meters")

Decode = Callable[[str, bytes, datetime], list[Reading]]


@dataclass(slots=True)
class MeterCounters:
    """What one meter's payloads did: messages, readings, duplicates and backwards steps
    dropped, bad payloads by reason, its last values."""

    messages: int = 0
    readings: int = 0
    duplicates: int = 0
    backwards: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    last_values: dict[str, float] = field(default_factory=dict)
    last_ts: datetime | None = None


class MeterDriver:
    """One configured meter: its topic filters, its decoder and its counters."""

    def __init__(self, config: MeterConfig, filters: list[str], decode: Decode) -> None:
        self.config = config
        self.id = config.id
        self.filters = filters
        self.decode = decode
        self.counters = MeterCounters()
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self._failing: str | None = None

    def wants(self, topic: Topic) -> bool:
        """Whether a message on ``topic`` is this meter's (matches one of its
        filters)."""
        return any(topic.matches(f) for f in self.filters)

    def note_ok(self) -> None:
        """A payload decoded: log the recovery once if the meter was failing."""
        if self._failing is not None:
            log.info("meter %s: payloads decode again", self.id)
            self._failing = None

    def note_bad(self, reason: str, detail: str, count: int = 1) -> None:
        """Count ``count`` bad payloads under ``reason``; logged once per change of
        reason, not per payload."""
        self.counters.bad[reason] += count
        if self._failing != reason:
            log.warning(
                "meter %s: bad payload (%s): %s; counted, other readings keep flowing",
                self.id,
                reason,
                detail[:300],
            )
            self._failing = reason


def meter_driver(config: MeterConfig) -> MeterDriver:
    """The driver of one configured meter: its model's topic filters and decoder
    (``protocols.meters.METER_MODELS[config.type]``) bound to ``config``.

    Raises ``ValueError`` for a topic its model cannot subscribe to.
    """
    model = decoders.meter_model(config.type)
    filters = list(model.subscriptions(config))
    return MeterDriver(config, filters, partial(model.decode, config))


class _InOrderAcks:
    """PUBACKs must go out in the order the PUBLISHes came in (MQTT 3.1.1,
    4.6.0-2) although meters finish at different times."""

    def __init__(self, send: Callable[[int, int], object]) -> None:
        self._send = send
        self._pending: deque[list[int | bool]] = deque()
        self.closed = False

    def track(self, mid: int, qos: int) -> list[int | bool]:
        """Queue the ack of message ``mid``; returns the entry to pass to
        :meth:`done`."""
        entry: list[int | bool] = [mid, qos, False]
        if not self.closed:
            self._pending.append(entry)
        return entry

    def done(self, entry: list[int | bool]) -> None:
        """Mark ``entry`` handled and send every ack now at the head of the queue, in
        order."""
        entry[2] = True
        while self._pending and self._pending[0][2]:
            mid, qos, _ = self._pending.popleft()
            if int(qos) > 0:
                self._send(int(mid), int(qos))

    def close(self) -> None:
        """The connection is gone: its message ids mean nothing to the next one
        (the broker redelivers what it still has), so send no more acks."""
        self.closed = True
        self._pending.clear()


class MeterService:
    """Runs every configured meter on one connection to the local broker."""

    def __init__(
        self,
        config: EdgeConfig,
        outbox: Outbox,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.clock = clock
        self.rng = rng or random.Random()
        self.drivers = [meter_driver(m) for m in config.meters]
        self.unmatched = 0
        self.connected = False
        # reconnects on which the broker still had (kept) or no longer had (lost)
        # this gateway's persistent session
        self.sessions_kept = 0
        self.sessions_lost = 0
        self._subscribed_before = False
        broker_config = config.local.broker_config
        self.site_broker: Durability | str = (
            read_durability(broker_config)
            if broker_config is not None
            else "unknown: set [local] broker_config to the site broker's config file"
        )
        # called with (meter id, readings) once they are stored (the fuse guard)
        self.observers: list[Callable[[str, Sequence[Reading]], None]] = []

    @property
    def bad_total(self) -> int:
        """Bad payloads counted over all meters."""
        return sum(sum(d.counters.bad.values()) for d in self.drivers)

    async def run(self) -> None:
        """Run every meter and the broker connection until cancelled (idle if no meters
        are configured)."""
        if not self.drivers:
            log.info("meters: none configured")
            await asyncio.Event().wait()
        # the meter tasks live as long as the service: a message received on a
        # connection that then dropped is still stored (see the module docstring)
        async with asyncio.TaskGroup() as tg:
            for d in self.drivers:
                tg.create_task(self._drive(d), name=f"meter-{d.id}")
            tg.create_task(self._connection(), name="meters-connection")

    async def _connection(self) -> None:
        """Connect, subscribe and dispatch; reconnect (backoff capped at
        ``local.reconnect_max_s``) whenever the broker goes away."""
        local = self.config.local
        target = parse_mqtt_url(local.mqtt_url)
        reconnect = Reconnect(Backoff(0.2, local.reconnect_max_s))
        while True:
            client = Client(
                target.host,
                target.port,
                username=local.username or target.username,
                password=local.password or target.password,
                identifier=f"fusebox-edge-{self.config.gateway_id}-meters",
                # persistent session: the broker queues readings while we are down
                clean_session=False,
                keepalive=30,
                tls_params=TLSParameters() if target.tls else None,
                timeout=10,
            )
            # acknowledged to the broker only once stored (see the docstring)
            paho = manual_acks(client)
            session = watch_session_present(paho)
            acks = _InOrderAcks(paho.ack)
            try:
                async with client:
                    self._note_session(bool(session and session[-1]), target.url())
                    for d in self.drivers:
                        for f in d.filters:
                            await client.subscribe(f, qos=1)
                    self.connected = True
                    log.info("meters: subscribed on %s", target.url())
                    reconnect.succeeded()
                    await self._dispatch(client, acks)
            except (MqttError, OSError, TimeoutError) as exc:
                self.connected = False
                # what the broker still has comes again after the reconnect
                acks.close()
                delay_s = reconnect.failed(self.rng)
                if reconnect.first_failure:
                    log.warning(
                        "meters: local broker %s lost (%s); reconnecting",
                        target.url(),
                        exc,
                    )
                await asyncio.sleep(delay_s)

    def _note_session(self, present: bool, url: str) -> None:
        """Count a reconnect on which the broker no longer knew this gateway's
        session: readings the meters published since it lost it went nowhere."""
        if present:
            self.sessions_kept += 1
        elif self._subscribed_before:
            self.sessions_lost += 1
            log.error(
                "meters: the site broker %s lost this gateway's session (restarted "
                "without persistence, or crashed before saving it); meter readings "
                "published meanwhile are lost. Give it the settings of "
                "deploy/mosquitto-site.conf (fusebox edge init writes them)",
                url,
            )
        self._subscribed_before = True

    async def _dispatch(self, client: Client, acks: _InOrderAcks) -> None:
        try:
            async for message in client.messages:
                self._route(message, acks)
        finally:
            # received but not yet handed out when the link dropped: store them
            # too (aiomqtt's iterator stops at the disconnect and leaves them)
            for message in undelivered(client):
                self._route(message, acks)
            acks.close()  # their acks would go to a dead connection

    def _route(self, message: Message, acks: _InOrderAcks) -> None:
        entry = acks.track(message.mid, message.qos)
        driver = next((d for d in self.drivers if d.wants(message.topic)), None)
        if driver is None:
            self.unmatched += 1
            acks.done(entry)
            return
        message._fusebox_ack = (acks, entry)  # type: ignore[attr-defined]
        driver.queue.put_nowait(message)

    async def _drive(self, driver: MeterDriver) -> None:
        while True:
            message = await driver.queue.get()
            acks, entry = message._fusebox_ack  # type: ignore[attr-defined]
            payload = message.payload
            raw = (
                payload
                if isinstance(payload, bytes | bytearray)
                else str(payload).encode()
            )
            driver.counters.messages += 1
            try:
                readings = driver.decode(message.topic.value, bytes(raw), self.clock())
            except decoders.MeterDecodeError as exc:
                driver.note_bad(str(exc.reason), str(exc))
                acks.done(entry)
                continue
            result: AppendResult | None = None
            retry = Reconnect(Backoff(1, 30))
            while result is None:
                try:
                    result = await self.outbox.append(readings)
                except OutboxError as exc:
                    # full, or the disk failing: keep the message unacknowledged
                    # (the broker holds it and everything behind it) and retry as
                    # soon as a prune makes room, or after the backoff
                    delay_s = retry.failed(self.rng)
                    if retry.first_failure:
                        log.error("meter %s: %s; retrying", driver.id, exc)
                    await self.outbox.wait_for_room(delay_s)
                except ValueError as exc:  # can never be stored: count, move on
                    driver.note_bad("unstorable", str(exc))
                    break
            if result is None:
                acks.done(entry)
                continue
            if not result.backwards:
                driver.note_ok()
            c = driver.counters
            c.readings += result.accepted
            c.duplicates += result.duplicates
            if result.backwards:
                c.backwards += result.backwards
                driver.note_bad(
                    "register_backwards",
                    f"{result.backwards} cumulative register reading(s) below the last",
                    result.backwards,
                )
            for r in readings:
                c.last_values[r.quantity] = r.value
                c.last_ts = r.ts
            acks.done(entry)
            for observer in self.observers:
                try:
                    observer(driver.id, readings)
                except Exception:
                    log.exception("meter %s: an observer failed", driver.id)
