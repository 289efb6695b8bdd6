"""The ingest worker's JetStream front door: a durable pull consumer on the backbone.

Gateways publish their batches over MQTT to nats-server's MQTT listener; the
backbone's stream ``FUSEBOX_UP`` keeps everything on ``fusebox.v1.gw.*.up.>``
(``cloud.backbone``). This door is the durable consumer ``ingest`` on it: every
ingest process binds to the same consumer and they share the work. Per message it
runs the ingest core (``cloud.ingest_core``: the same decoding, screening, storing
and answers as the MQTT door), publishes the gateway's answer on
``fusebox.v1.gw.<id>.down.ack`` (the edge reads it over MQTT as
``fusebox/v1/gw/<id>/down/ack``) and only then acknowledges the message to
JetStream. A crash between COMMIT and that ack means a redelivery, which the
idempotent store turns into a no-op and a second ``Ack``.

Admission control is the consumer itself: a process holds at most
``concurrency`` messages (its PostgreSQL connections), the consumer at most
``max_ack_pending`` across all processes; the rest waits in the stream, not in
memory, and a stopped or lagging ingest catches up when it returns.

PostgreSQL down: the gateway is answered ``Busy`` (it keeps its readings) and the
message is held, not acked: the door retries it every ``DB_RETRY_AFTER_S`` and
tells JetStream it is still in progress, so the stream keeps it and its delivery
count is not spent on the outage. (A nak with a delay would count a delivery per
retry and turn a long outage into dead letters.) It stops fetching meanwhile.

Poison (the core cannot handle a message at all): it is copied to the
dead-letter stream on ``fusebox.dead.ingest.<gateway_id>`` with headers saying why
(``Fusebox-Reason``, the original subject, stream sequence and delivery count),
counted (``IngestMetrics.dead_lettered``), logged once per gateway and reason,
and terminated so the rest flows. That covers a batch failing the contract (it is
also answered ``Reject`` and recorded, as by the MQTT door), an exception in the
core that is not the database's, and a message delivered ``max_deliver`` times
without being finished (it crashed or hung its process each time). If the
dead-letter stream refuses the copy the message is not terminated but retried.

Pure helpers: :func:`subject_to_topic`, :func:`topic_to_subject` (nats-server's
MQTT mapping: ``/`` is ``.``, a ``.`` in a topic is ``//``) and
:func:`dead_letter_subject`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from cloud.backbone.streams import DEAD_SUBJECTS, UP_STREAM, UP_SUBJECTS
from cloud.ingest_core import (
    DB_RETRY_AFTER_S,
    Inbound,
    IngestCore,
    IngestMetrics,
    Poisoned,
)
from cloud.screening import Finding, Quarantine
from protocols import contract

__all__ = [
    "DEAD_PREFIX",
    "UP_FILTER",
    "UP_STREAM",
    "JetStreamConfig",
    "JetStreamIngest",
    "consumer_config",
    "dead_letter_subject",
    "subject_to_topic",
    "topic_to_subject",
]

log = logging.getLogger("fusebox.cloud.ingest")

UP_FILTER = UP_SUBJECTS[0]  # fusebox.v1.gw.*.up.>
DEAD_PREFIX = DEAD_SUBJECTS[0].removesuffix(".>")  # fusebox.dead
CONSUMER = "ingest"
_NATS_ERRORS = (nats.errors.Error, OSError)

# dead-letter reasons, as counted and logged
REJECTED = "rejected"
INGEST_ERROR = "ingest_error"
TOO_MANY_DELIVERIES = "too_many_deliveries"


def subject_to_topic(subject: str) -> str:
    """The MQTT topic nats-server mapped to ``subject`` (``a.b.c`` -> ``a/b/c``,
    ``//`` -> ``.``)."""
    return subject.replace("//", "\x00").replace(".", "/").replace("\x00", ".")


def topic_to_subject(topic: str) -> str:
    """The NATS subject an MQTT client on ``topic`` sees (the inverse)."""
    return topic.replace(".", "\x00").replace("/", ".").replace("\x00", "//")


def dead_letter_subject(consumer: str, subject: str) -> str:
    """``fusebox.dead.<consumer>.<gateway_id>`` for a message that came on
    ``subject`` (``_`` when it names no gateway)."""
    try:
        gw = contract.gateway_of(subject_to_topic(subject))
    except contract.ContractError:
        gw = "_"
    token = topic_to_subject(gw) if gw and "*" not in gw and ">" not in gw else "_"
    return f"{DEAD_PREFIX}.{consumer}.{token}"


@dataclass(frozen=True, slots=True)
class JetStreamConfig:
    """The consumer's settings: ``max_ack_pending`` bounds the messages held by
    every ingest process together; ``ack_wait_s`` is how long a silent holder
    keeps one (holders say "in progress" every third of it); a message delivered
    ``max_deliver`` times without being finished goes to the dead letters."""

    stream: str = UP_STREAM
    durable: str = CONSUMER
    filter_subject: str = UP_FILTER
    max_ack_pending: int = 256
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    fetch_wait_s: float = 1.0


def consumer_config(cfg: JetStreamConfig | None = None) -> ConsumerConfig:
    """The durable consumer ``ingest`` on ``FUSEBOX_UP`` (explicit ack). Its own
    ``max_deliver`` is unlimited: JetStream would silently stop delivering a
    message, this door dead-letters it instead (``JetStreamConfig.max_deliver``).
    The backbone's set-up may create it ahead of any ingest process: under the
    stream's interest retention, a message that no consumer wants is not kept."""
    cfg = cfg or JetStreamConfig()
    return ConsumerConfig(
        durable_name=cfg.durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=cfg.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=cfg.max_ack_pending,
        filter_subject=cfg.filter_subject,
    )


class JetStreamIngest:
    """One ingest process on the backbone. ``run`` until cancelled."""

    def __init__(
        self,
        *,
        dsn: str,
        nats_urls: list[str],
        concurrency: int = 4,
        config: JetStreamConfig | None = None,
        name: str | None = None,
        rng: random.Random | None = None,
        command_timeout_s: float = 60.0,
    ) -> None:
        self.nats_urls = nats_urls
        self.concurrency = concurrency
        self.cfg = config or JetStreamConfig()
        self.name = name or f"fusebox-ingest-{random.getrandbits(32):08x}"
        self.core = IngestCore(
            dsn=dsn,
            concurrency=concurrency,
            rng=rng,
            name=self.name,
            command_timeout_s=command_timeout_s,
        )
        self.metrics: IngestMetrics = self.core.metrics
        self.dead = Quarantine(log)  # dead letters by reason, logged once per gw
        self.ready = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._held = 0
        self._db_back = asyncio.Event()
        self._db_back.set()
        self._stopping = False
        self.nc: NatsClient | None = None  # while running: the backbone link

    def consumer_config(self) -> ConsumerConfig:
        """The durable pull consumer every ingest process binds to
        (:func:`consumer_config`)."""
        return consumer_config(self.cfg)

    async def run(self) -> None:
        """Bind to the consumer and store what it delivers until cancelled."""
        await self.core.open()
        nc = await nats.connect(
            servers=self.nats_urls,
            name=self.name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=5,
        )
        self.nc = nc
        try:
            js = nc.jetstream()
            sub = await self._subscribe(js)
            log.info(
                "ingest %s: consuming %s (durable %s) on %s",
                self.name,
                self.cfg.stream,
                self.cfg.durable,
                ", ".join(self.nats_urls),
            )
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.core.run_tasks(lambda: self._held), name="core")
                try:
                    await self._fetch_loop(nc, js, sub, tg)
                finally:
                    self._stopping = True
        finally:
            self.ready.clear()
            with contextlib.suppress(TimeoutError, *_NATS_ERRORS):
                async with asyncio.timeout(5):
                    await nc.close()
            await self.core.close()

    async def _subscribe(self, js: JetStreamContext) -> Any:
        """The pull subscription, waiting (and saying so once) until the stream
        exists: the backbone creates it (``fusebox cloud backbone``). The consumer
        is created, or updated to this process's settings (nats-server updates
        the editable ones: ack wait, max ack pending, ...)."""
        warned = False
        while True:
            try:
                await js.add_consumer(self.cfg.stream, self.consumer_config())
                return await js.pull_subscribe_bind(
                    self.cfg.durable, stream=self.cfg.stream
                )
            except (TimeoutError, *_NATS_ERRORS) as exc:
                if not warned:
                    log.warning(
                        "ingest: cannot bind to stream %s (%s: %s); is the backbone "
                        "set up (fusebox cloud backbone)? retrying",
                        self.cfg.stream,
                        type(exc).__name__,
                        exc,
                    )
                    warned = True
                await asyncio.sleep(2)

    async def _fetch_loop(
        self, nc: NatsClient, js: JetStreamContext, sub: Any, tg: asyncio.TaskGroup
    ) -> None:
        while True:
            await self._db_back.wait()
            await self._slots.acquire()
            free = 1
            while free < self.concurrency and not self._slots.locked():
                await self._slots.acquire()
                free += 1
            try:
                msgs: list[Msg] = await sub.fetch(free, timeout=self.cfg.fetch_wait_s)
            except (TimeoutError, *_NATS_ERRORS) as exc:
                msgs = []
                if not isinstance(exc, TimeoutError):
                    log.debug("ingest: fetch failed (%s); again", exc)
                    await asyncio.sleep(0.5)
            for _ in range(free - len(msgs)):
                self._slots.release()
            for msg in msgs:
                tg.create_task(self._handle_slot(nc, js, msg))

    async def _handle_slot(
        self, nc: NatsClient, js: JetStreamContext, msg: Msg
    ) -> None:
        self._held += 1
        done = False
        try:
            async with self._in_progress(msg):
                done = await self.handle(nc, js, msg)
        finally:
            self._held -= 1
            self._slots.release()
            if not done:
                # stopping (another process takes it at once), or the dead
                # letters refused it (try again later)
                delay_s = None if self._stopping else DB_RETRY_AFTER_S
                with contextlib.suppress(*_NATS_ERRORS):
                    await msg.nak(delay=delay_s)

    @contextlib.asynccontextmanager
    async def _in_progress(self, msg: Msg) -> AsyncIterator[None]:
        """Tell JetStream every third of ``ack_wait_s`` that ``msg`` is still being
        worked on, so a slow database does not make it redelivered elsewhere."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(self.cfg.ack_wait_s / 3)
                with contextlib.suppress(*_NATS_ERRORS):
                    await msg.in_progress()

        task = asyncio.create_task(beat(), name="ingest-in-progress")
        try:
            yield
        finally:
            task.cancel()

    async def handle(self, nc: NatsClient, js: JetStreamContext, msg: Msg) -> bool:
        """Run one message through the core, answer the gateway, then ack (or
        dead-letter and terminate) it. False if it must be delivered again."""
        deliveries = msg.metadata.num_delivered
        if deliveries > self.cfg.max_deliver:
            why = f"delivered {deliveries} times without being finished"
            return await self._dead_letter(js, msg, TOO_MANY_DELIVERIES, why)
        topic = subject_to_topic(msg.subject)
        try:
            inbound = self.core.accept(topic, msg.data)
        except Exception as exc:  # a bug meeting this message: not the database
            self.metrics.poisoned += 1
            why = f"{type(exc).__name__}: {exc}"[:300]
            return await self._dead_letter(js, msg, INGEST_ERROR, why)
        return await self._handle_inbound(nc, js, msg, inbound)

    async def _handle_inbound(
        self, nc: NatsClient, js: JetStreamContext, msg: Msg, inbound: Inbound
    ) -> bool:
        if inbound.answer is not None:
            await self._reply(nc, inbound.answer)
        if inbound.rejected is not None:
            return await self._dead_letter(js, msg, REJECTED, inbound.rejected)
        batch = inbound.batch
        busy_sent = False
        while batch is not None:
            outcome = await self.core.store_batch(batch)
            if not isinstance(outcome, contract.Busy):
                self._db_back.set()  # the database answered: fetch again
            if isinstance(outcome, Poisoned):
                return await self._dead_letter(js, msg, INGEST_ERROR, outcome.reason)
            if isinstance(outcome, contract.Ack):
                await self._reply(nc, outcome)
                break
            # PostgreSQL is down: the edge waits, the stream keeps the batch, we
            # stop fetching and try this one again
            self._db_back.clear()
            if not busy_sent:
                await self._reply(nc, outcome)
                busy_sent = True
            await asyncio.sleep(DB_RETRY_AFTER_S * (0.5 + self.core.rng.random()))
        await self.ack(msg)
        return True

    async def ack(self, msg: Msg) -> None:
        """Acknowledge ``msg`` to JetStream, after its answer went out. Lost (the
        process dies first, the link drops): it is delivered again, stored as a
        no-op and answered again."""
        with contextlib.suppress(*_NATS_ERRORS):
            await msg.ack()

    async def _reply(
        self, nc: NatsClient, answer: contract.Ack | contract.Busy | contract.Reject
    ) -> None:
        subject = topic_to_subject(contract.down_ack(answer.gw))
        with contextlib.suppress(*_NATS_ERRORS):
            # lost with the connection: the edge resends after its ack timeout
            await nc.publish(subject, contract.pack(answer))

    async def _dead_letter(
        self, js: JetStreamContext, msg: Msg, reason: str, detail: str
    ) -> bool:
        """Copy ``msg`` to the dead letters, count and log it, then terminate it.
        False (not terminated) if the dead-letter stream did not take the copy."""
        subject = dead_letter_subject(self.cfg.durable, msg.subject)
        meta = msg.metadata
        headers = {
            "Fusebox-Reason": reason,
            "Fusebox-Detail": detail.replace("\r", " ").replace("\n", " ")[:500],
            "Fusebox-Subject": msg.subject,
            "Fusebox-Stream": meta.stream,
            "Fusebox-Stream-Seq": str(meta.sequence.stream),
            "Fusebox-Deliveries": str(meta.num_delivered),
        }
        try:
            await js.publish(subject, msg.data, headers=headers, timeout=5)
        except (TimeoutError, *_NATS_ERRORS) as exc:
            log.error(
                "ingest: cannot dead-letter %s seq %d on %s (%s); keeping it",
                msg.subject,
                meta.sequence.stream,
                subject,
                exc,
            )
            return False
        self.metrics.dead_lettered += 1
        gw = subject.rsplit(".", 1)[-1]
        self.dead.record(
            Finding(reason, gw, meta.sequence.stream, detail[:200]),
            f"message moved to {subject}",
        )
        with contextlib.suppress(*_NATS_ERRORS):
            await msg.term()
        return True
