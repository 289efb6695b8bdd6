"""The ingest worker's MQTT front door: batches from an MQTT broker into PostgreSQL.

For one node and the embedded demo. Several workers may run at once: they share
the batches through an MQTT shared subscription (``$share/fusebox-ingest/...``)
and coordinate only through PostgreSQL. Everything but the transport (decoding,
screening, storing, the answers, side writes, counters) is the ingest core,
``cloud.ingest_core``, which the JetStream door (``cloud.ingest_jetstream``) runs
too; the names tests and tools import (``BatchStore``, ``IngestMetrics``) are
re-exported here.

What this door adds is MQTT's: admission control and presence. Batches wait in a
bounded queue for ``concurrency`` database connections. When the queue is full, or
PostgreSQL is known to be down, the worker answers ``Busy(retry_after_s)`` at once
instead of letting work pile up (an MQTT broker holds nothing for it); the edge
holds the readings meanwhile. While subscribed it keeps a retained presence on
``fusebox/v1/cloud/ingest/<worker>`` (its last will clears it), so edges resend at
once what they published while no worker was listening. A batch the core fails on
(``Poisoned``) is counted and logged once per gateway and not answered: the edge
keeps it and resends later, and the next batch flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import socket
import time
from typing import Any

from cloud.ingest_core import (
    DB_RETRY_AFTER_S,
    BatchStore,
    IngestCore,
    IngestMetrics,
    Poisoned,
)
from cloud.mqtt import Client, MqttError, Will, check_cloud_client_id, cloud_client
from protocols import contract
from protocols.backoff import Backoff, Reconnect
from protocols.urls import MqttTarget

__all__ = ["BatchStore", "IngestMetrics", "IngestWorker"]

log = logging.getLogger("fusebox.cloud.ingest")


def _no_delay(client: Client) -> None:
    """Turn Nagle's algorithm off on ``client``'s socket. Each answer is a small
    QoS 1 PUBLISH written while the PUBACK of the batch is still unacknowledged
    by TCP: Nagle holds it until the broker's delayed ACK (~40 ms), and a worker
    awaiting its PUBACK stores at most ~25 batches a second per connection
    (measured: 28 answers/s with Nagle, ~1,000/s without)."""
    sock = client._client.socket()  # paho's socket (aiomqtt has no switch)
    if isinstance(sock, socket.socket):  # also ssl.SSLSocket
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class IngestWorker:
    """One ingest worker process (or task) on MQTT. ``run`` until cancelled."""

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
        self.core = IngestCore(
            dsn=dsn, concurrency=concurrency, rng=self.rng, name=self.client_id
        )
        self.store = self.core.store
        self.metrics = self.core.metrics
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Subscribe to the gateways' batches and store them until cancelled; reconnects
        to the broker with backoff."""
        await self.core.open()
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
                        _no_delay(client)
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
            await self.core.close()

    async def _serve(self, client: Client) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client), name="ingest-receive")
            for i in range(self.concurrency):
                tg.create_task(self._process(client), name=f"ingest-db-{i}")
            tg.create_task(self.core.run_tasks(self.queue.qsize), name="ingest-core")

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
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            inbound = self.core.accept(message.topic.value, bytes(payload))
            if inbound.answer is not None:
                await self._reply(client, inbound.answer)
            batch = inbound.batch
            if batch is None:
                continue
            if not self.core.db_ok:
                busy = self.core.busy(batch, DB_RETRY_AFTER_S, "database unavailable")
                await self._reply(client, busy)
            elif self.queue.full():
                after_s = self.core.retry_after(self.queue.qsize())
                await self._reply(
                    client, self.core.busy(batch, after_s, "ingest queue full")
                )
            else:
                self.queue.put_nowait((batch, time.monotonic()))

    async def _process(self, client: Client) -> None:
        while True:
            batch, _queued_at = await self.queue.get()
            outcome = await self.core.store_batch(batch)
            if isinstance(outcome, Poisoned):
                continue  # counted and logged by the core; the edge resends later
            if isinstance(outcome, contract.Busy):
                # let new batches in again soon to probe the database
                self.core.probe_later()
            await self._reply(client, outcome)
