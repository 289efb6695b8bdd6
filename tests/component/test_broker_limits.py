"""Packet size limits of the shipped brokers (issue 10), against a real Mosquitto.

The shipped configs themselves are run (paths and ports moved into a tmp dir): a
message over the limit disconnects its sender (MQTT 3.1.1: the link drops; MQTT 5:
DISCONNECT 0x95 "packet too large") and reaches nobody, while everyone else's
traffic carries on; a packet exactly at the limit passes. The edge's largest
batches (20,000 records of big events, or of readings on long stream names) stay
within ``MAX_BATCH_BYTES`` and pass the cloud broker whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.outbox import Event, Outbox
from edge.site_broker import mosquitto_settings
from edge.uplink import Uplink, UplinkConfig
from fusebox.embedded import find_mosquitto, free_tcp_port, wait_for_port
from protocols import contract
from protocols.broker_limits import (
    CLOUD_MAX_PACKET_BYTES,
    SITE_MAX_PACKET_BYTES,
    max_payload_bytes,
    publish_packet_bytes,
)
from protocols.readings import Reading
from protocols.urls import parse_mqtt_url
from tests.harness.mosquitto import MosquittoServer
from tests.harness.procs import REPO_ROOT
from tests.harness.timing import eventually, timeout

DEPLOY = REPO_ROOT / "deploy"
PACKET_TOO_LARGE = 0x95
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class ShippedBroker:
    """A shipped mosquitto.conf run as it is, but for its listener (a free port on
    127.0.0.1), its data dir and its log (in ``tmp``)."""

    def __init__(self, conf: Path, tmp: Path) -> None:
        binary = find_mosquitto()
        if binary is None:
            pytest.skip("mosquitto is not installed")
        self.port = free_tcp_port()
        self.log = tmp / "mosquitto.log"
        (tmp / "data").mkdir()
        text = conf.read_text(encoding="utf-8")
        for old, new in (
            ("listener 1883", f"listener {self.port} 127.0.0.1"),
            ("/mosquitto/data/", f"{tmp}/data/"),
            ("log_dest stdout", f"log_dest file {self.log}"),
        ):
            assert old in text, (conf, old)
            text = text.replace(old, new)
        if os.geteuid() == 0:
            text += "user root\n"
        (tmp / "mosquitto.conf").write_text(text)
        self.process = subprocess.Popen(
            [binary, "-c", str(tmp / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s=timeout(10)):
            self.stop()
            raise AssertionError(f"{conf} did not start: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout(10))


@pytest.fixture
def cloud_broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    broker = ShippedBroker(DEPLOY / "mosquitto-cloud.conf", tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def site_broker(tmp_path: Path) -> Iterator[ShippedBroker]:
    broker = ShippedBroker(DEPLOY / "mosquitto-site.conf", tmp_path)
    try:
        yield broker
    finally:
        broker.stop()


def publish_once(port: int, topic: str, payload: bytes, *, v5: bool) -> dict[str, Any]:
    """Connect with paho, publish ``payload`` at QoS 1 and report what happened:
    ``puback`` (reason code) or ``disconnect`` (reason code, v5)."""
    done = threading.Event()
    out: dict[str, Any] = {}
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"size-probe-{random.getrandbits(32):08x}",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
    )

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, props: Any) -> None:
        out["server_max"] = getattr(props, "MaximumPacketSize", None)
        c.publish(topic, payload, qos=1)

    def on_publish(_c: Any, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        out["puback"] = rc.value
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not done.is_set():  # not our own disconnect at the end
            out["disconnect"] = rc.value
            done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(timeout(10)), "neither PUBACK nor a disconnect"
    finally:
        client.disconnect()
        client.loop_stop()
    return out


async def drain(client: aiomqtt.Client, quiet_s: float) -> list[tuple[str, int]]:
    """``(topic, payload length)`` of what arrives until ``quiet_s`` of quiet;
    raises if the link dropped."""
    got: list[tuple[str, int]] = []

    async def one() -> None:
        async for m in client.messages:
            assert isinstance(m.payload, bytes)
            got.append((str(m.topic), len(m.payload)))
            return
        raise AssertionError("the connection closed")

    with contextlib.suppress(TimeoutError):
        while True:
            await asyncio.wait_for(one(), quiet_s)
    return got


async def _oversize_is_refused_and_others_carry_on(
    broker: ShippedBroker, limit: int, topic: str
) -> None:
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, identifier="watcher") as watcher,
        aiomqtt.Client("127.0.0.1", broker.port, identifier="neighbour") as neighbour,
    ):
        await watcher.subscribe("#", qos=1)
        # a packet of exactly the limit passes; Mosquitto does not count the 1-4
        # bytes of "remaining length", so 5 bytes more is refused, both versions
        at_limit = max_payload_bytes(topic, limit, v5=False)
        assert publish_packet_bytes(topic, at_limit, v5=False) == limit
        ok = await asyncio.to_thread(
            publish_once, broker.port, topic, b"a" * at_limit, v5=False
        )
        assert "disconnect" not in ok and ok["puback"] == 0, ok
        for v5 in (False, True):
            payload = b"b" * (at_limit + 5)
            big = await asyncio.to_thread(
                publish_once, broker.port, topic, payload, v5=v5
            )
            assert "puback" not in big and "disconnect" in big, big
            if v5:
                assert big["server_max"] == limit  # told in the CONNACK
                # DISCONNECT 0x95, or the link reset while the client still sends
                # megabytes the broker will not read (128: paho's "unspecified")
                assert big["disconnect"] in (PACKET_TOO_LARGE, 128), big
        # 8 MB, what the cloud broker used to take
        huge = await asyncio.to_thread(
            publish_once, broker.port, topic, b"c" * 8_000_000, v5=False
        )
        assert "puback" not in huge, huge
        # the neighbour was never disturbed and normal traffic flows
        await neighbour.publish(topic, b"normal", qos=1)
        assert await drain(watcher, timeout(1)) == [(topic, at_limit), (topic, 6)]
    assert broker.log_text().count("disconnected due to oversize packet") == 3


async def test_the_cloud_broker_refuses_packets_over_its_limit(
    cloud_broker: ShippedBroker,
) -> None:
    conf = mosquitto_settings((DEPLOY / "mosquitto-cloud.conf").read_text())
    assert int(conf["max_packet_size"]) == CLOUD_MAX_PACKET_BYTES
    await _oversize_is_refused_and_others_carry_on(
        cloud_broker, CLOUD_MAX_PACKET_BYTES, contract.up_batch("gw-1")
    )


async def test_the_site_broker_refuses_packets_over_its_limit(
    site_broker: ShippedBroker,
) -> None:
    conf = mosquitto_settings((DEPLOY / "mosquitto-site.conf").read_text())
    assert int(conf["max_packet_size"]) == SITE_MAX_PACKET_BYTES
    await _oversize_is_refused_and_others_carry_on(
        site_broker, SITE_MAX_PACKET_BYTES, "tele/tasmota-1/SENSOR"
    )


def test_the_embedded_broker_has_a_limit(tmp_path: Path) -> None:
    """fusebox.embedded's Mosquitto (the demo's, the tests') has the cloud limit by
    default and applies another when given one."""
    default = MosquittoServer(tmp_path / "a").start()
    try:
        conf = mosquitto_settings(default.conf_path.read_text())
        assert int(conf["max_packet_size"]) == CLOUD_MAX_PACKET_BYTES
    finally:
        default.stop(timeout_s=timeout(5))
    small = MosquittoServer(tmp_path / "b", max_packet_size=1000).start()
    try:
        fits = max_payload_bytes("t", 1000)
        assert publish_once(small.mqtt_port, "t", b"x" * fits, v5=True)["puback"] < 0x80
        out = publish_once(small.mqtt_port, "t", b"x" * (fits + 5), v5=True)
        assert out == {"server_max": 1000, "disconnect": PACKET_TOO_LARGE}, out
    finally:
        small.stop(timeout_s=timeout(5))


# --------------------------------------------------------------------------- the edge


def _notices(n: int) -> list[Event]:
    """Charger notices as big as the edge stores them (8 KiB of payload text)."""
    return [
        Event(
            "cp-1",
            "security_event",
            T0 + timedelta(seconds=i),
            {"ocpp_version": "1.6", "payload_text": "n" * 8192, "truncated_from": 9000},
        )
        for i in range(n)
    ]


def _long_streams(n: int) -> list[Reading]:
    """Readings each on its own stream with a 128-character device id."""
    return [
        Reading(f"{i:06d}" + "m" * 122, "power_w", T0 + timedelta(seconds=i), 1.5)
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("items", "records"), [(_notices, 2000), (_long_streams, 20_000)]
)
async def test_the_edges_largest_batches_fit_and_pass_the_cloud_broker(
    tmp_path: Path, cloud_broker: ShippedBroker, items: Any, records: int
) -> None:
    outbox = Outbox.open(tmp_path / "o.db", cap_bytes=0)
    await outbox.start()
    gw = "gw-big"
    got: list[tuple[int, contract.Batch]] = []
    try:
        await outbox.append(items(records))
        async with aiomqtt.Client(
            "127.0.0.1", cloud_broker.port, identifier="cloud"
        ) as cloud:
            await cloud.subscribe(contract.up_batch(gw), qos=1)
            uplink = Uplink(
                outbox,
                UplinkConfig(
                    gateway_id=gw,
                    target=parse_mqtt_url(f"mqtt://127.0.0.1:{cloud_broker.port}"),
                    client_id=f"fusebox-edge-{gw}",
                    batch_max_records=20_000,  # the most edge.config allows
                    window=64,
                ),
                rng=random.Random(1),
            )
            task = asyncio.create_task(uplink.run())

            async def receive() -> None:
                async for m in cloud.messages:
                    payload = bytes(m.payload)  # type: ignore[arg-type]
                    got.append((len(payload), contract.unpack_batch(payload)))

            receiver = asyncio.create_task(receive())
            try:
                await eventually(
                    lambda: (
                        sum(b.last_seq - b.first_seq + 1 for _, b in got) >= records
                    ),
                    timeout_s=timeout(60),
                    message="every record arrived",
                )
            finally:
                for t in (task, receiver):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await t
    finally:
        await outbox.close()
    sizes = [size for size, _ in got]
    assert len(got) > 1, "the records did not need cutting: the test proves nothing"
    assert max(sizes) <= contract.MAX_BATCH_BYTES
    # filled close to the cap, not cut needlessly small
    assert max(sizes) > contract.MAX_BATCH_BYTES * 0.9, sizes
    seqs = sorted(r[0] for _, b in got for r in [*b.readings, *b.events])
    assert seqs == list(range(1, records + 1))
    assert "oversize" not in cloud_broker.log_text()
