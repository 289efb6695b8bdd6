"""The meter drivers against a real site broker that crashes (issue 16, item 2).

Mosquitto writes a PUBLISH to the edge before its PUBACK to the meter, but keeps a
message in flight to a connected client only in memory until its next save: after a
SIGKILL the edge may hold the only copy. These tests hold a delivered reading inside
the outbox append, kill the broker, and check that the reading is still stored, that
the edge is back within its 1 s backoff cap, and that it notices when the broker
has lost its persistent session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

from edge.config import EdgeConfig
from edge.meters import MeterService
from edge.outbox import AppendResult
from protocols.meters import MeterFormat
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url
from simulators.meter import MeterSimConfig, MeterSimulator
from tests.harness.mosquitto import MosquittoServer
from tests.harness.timing import eventually, timeout


class _HeldOutbox:
    """Stores readings, but each append waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0
        self.stored: list[Reading] = []

    async def append(self, readings: Sequence[Reading]) -> AppendResult:
        self.waiting += 1
        await self.release.wait()
        self.stored.extend(readings)
        return AppendResult(accepted=len(readings))


def _glow_message() -> tuple[str, bytes]:
    config = MeterSimConfig(
        target=parse_mqtt_url("mqtt://127.0.0.1:1883"),
        meter_format=MeterFormat("glow"),
        device_id="glow-1",
    )
    _, topic, payload = MeterSimulator(config).prepare_at(
        datetime.now(UTC) + timedelta(seconds=10)
    )
    return topic, payload


@asynccontextmanager
async def _meters(
    broker: MosquittoServer, outbox: _HeldOutbox
) -> AsyncIterator[MeterService]:
    config = EdgeConfig.model_validate(
        {
            "gateway_id": "gw-crash",
            "cloud": {"mqtt_url": "mqtt://127.0.0.1:1"},
            "local": {"mqtt_url": broker.url},
            "meters": [{"type": "glow", "id": "glow-1", "topic": "glow/glow-1"}],
        }
    )
    service = MeterService(config, outbox)  # type: ignore[arg-type]
    task = asyncio.create_task(service.run())
    try:
        await eventually(
            lambda: service.connected, timeout_s=timeout(10), message="subscribed"
        )
        yield service
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _publish(broker: MosquittoServer, topic: str, payload: bytes) -> None:
    """As a meter: QoS 1, returns once the broker has sent its PUBACK."""
    async with aiomqtt.Client("127.0.0.1", broker.mqtt_port) as meter:
        await meter.publish(topic, payload, qos=1)


async def test_a_reading_delivered_before_a_broker_crash_is_stored(
    tmp_path: Path,
) -> None:
    broker = MosquittoServer(tmp_path)
    broker.use_settings_of()  # as shipped: save on every change
    broker.start()
    outbox = _HeldOutbox()
    try:
        async with _meters(broker, outbox) as service:
            topic, payload = _glow_message()
            await _publish(broker, topic, payload)  # the meter has its PUBACK
            await eventually(
                lambda: outbox.waiting == 1, timeout_s=timeout(5), message="delivered"
            )
            broker.kill()  # in flight to the edge: only in the broker's memory
            await eventually(
                lambda: not service.connected, timeout_s=timeout(5), message="lost"
            )
            outbox.release.set()
            await eventually(
                lambda: len(outbox.stored) > 0,
                timeout_s=timeout(5),
                message="the held reading stored although its link is gone",
            )
            broker.start()
            loop = asyncio.get_running_loop()
            restarted = loop.time()
            await eventually(
                lambda: service.connected, timeout_s=timeout(5), message="back"
            )
            # backoff capped at 1 s (local.reconnect_max_s), plus the connect
            assert loop.time() - restarted < timeout(2.5)
            assert service.sessions_kept == 1 and service.sessions_lost == 0
            assert {r.quantity for r in outbox.stored} >= {"import_energy_wh"}
    finally:
        broker.stop()


async def test_a_broker_that_lost_the_session_is_counted(tmp_path: Path) -> None:
    broker = MosquittoServer(tmp_path)
    broker.start()
    outbox = _HeldOutbox()
    outbox.release.set()
    try:
        async with _meters(broker, outbox) as service:
            broker.kill()
            (tmp_path / "persistence" / "mosquitto.db").unlink(missing_ok=True)
            broker.start()  # no persistence file: the session is gone
            await eventually(
                lambda: service.sessions_lost == 1,
                timeout_s=timeout(10),
                message="the lost session counted",
            )
            assert service.sessions_kept == 0
            assert service.connected
    finally:
        broker.stop()
